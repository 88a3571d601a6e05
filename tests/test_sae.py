"""Tests for the TopK SAE: dense-reference oracle, planted features, AuxK, I/O and the HDF5 trainer."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from interpflow.sae.batches import _batches, _shuffled_buffers
from interpflow.sae.model import TopKSAE
from interpflow.sae.step import random_sae_from_h5, train_sae_from_h5
from interpflow.sae.train import estimate_input_scale, init_sae, train_sae


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: with two threads on a busy machine, OpenMP hand-offs dominate the run time."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _random_sae(d_in=24, width=48, k=4, scale=0.37, seed=0, dtype=torch.float64) -> TopKSAE:
    """An SAE with untied, non-zero parameters so that every term of the computation matters."""
    gen = torch.Generator().manual_seed(seed)
    sae = TopKSAE(d_in, width, k, scale, generator=gen).to(dtype)
    with torch.no_grad():
        sae.encoder.weight.copy_(torch.randn(width, d_in, generator=gen))
        sae.encoder.bias.copy_(torch.rand(width, generator=gen))  # positive: no ties at ReLU zero
        sae.W_dec.copy_(torch.randn(width, d_in, generator=gen))
        sae.b_dec.copy_(torch.randn(d_in, generator=gen))
    sae.set_decoder_norm_to_unit()
    return sae


def _dense_reference(sae: TopKSAE, x: torch.Tensor, dead: torch.Tensor | None = None, aux_k: int = 0):
    """Naive dense SAE (dense pre-acts, top-k mask, matmuls); returns (z_dense, x_hat, fvu, aux)."""
    s = sae.input_scale
    xs = x * s
    pre = torch.relu((xs - sae.b_dec) @ sae.encoder.weight.T + sae.encoder.bias)  # [B, width]
    top = pre.topk(sae.k, dim=1).indices
    z = torch.zeros_like(pre).scatter(1, top, pre.gather(1, top))  # differentiable through pre
    xs_hat = z @ sae.W_dec + sae.b_dec
    fvu = ((xs - xs_hat) ** 2).sum() / ((xs - xs.mean(0)) ** 2).sum()
    aux = torch.zeros(())
    if dead is not None:
        masked = pre.masked_fill(~dead, -1.0)
        aux_top = masked.topk(aux_k, dim=1).indices
        z_aux = torch.zeros_like(pre).scatter(1, aux_top, pre.gather(1, aux_top))
        e = (xs - xs_hat).detach()
        aux = ((e - z_aux @ sae.W_dec) ** 2).sum() / ((e - e.mean(0)) ** 2).sum()
    return z, xs_hat / s, fvu, aux


def test_encode_decode_match_dense_reference():
    sae = _random_sae()
    x = torch.randn(64, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 5 + 2
    values, indices = sae.encode(x)
    assert values.shape == (64, 4) and indices.shape == (64, 4) and indices.dtype == torch.int64
    assert (values >= 0).all()
    z_ref, x_hat_ref, fvu_ref, _ = _dense_reference(sae, x)
    z = torch.zeros(64, 48, dtype=torch.float64).scatter(1, indices, values)
    torch.testing.assert_close(z, z_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(sae.decode(values, indices), x_hat_ref, atol=1e-5, rtol=0)
    out = sae(x)
    torch.testing.assert_close(out.x_hat, x_hat_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.fvu, fvu_ref, atol=1e-7, rtol=0)
    assert out.auxk_loss.item() == 0.0 and out.pre_acts is None


def test_gradients_match_dense_reference_with_auxk():
    x = torch.randn(64, 24, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3
    dead = torch.zeros(48, dtype=torch.bool)
    dead[::3] = True  # 16 dead latents
    grads = []
    for fast in (True, False):
        sae = _random_sae(seed=3)
        if fast:
            out = sae(x, dead_mask=dead, aux_k=6)
            fvu, aux = out.fvu, out.auxk_loss
        else:
            _, _, fvu, aux = _dense_reference(sae, x, dead, aux_k=6)
        (fvu + 0.5 * aux).backward()
        grads.append([fvu.item(), aux.item()] + [p.grad.clone() for p in sae.parameters()])
    fast, ref = grads
    assert fast[1] > 0
    assert fast[0] == pytest.approx(ref[0], abs=1e-10) and fast[1] == pytest.approx(ref[1], abs=1e-10)
    for g, g_ref in zip(fast[2:], ref[2:], strict=True):
        torch.testing.assert_close(g, g_ref, atol=1e-9, rtol=1e-7)


def test_auxk_reaches_dead_latents_only_when_dead():
    sae = _random_sae(dtype=torch.float32)
    x = torch.randn(128, 24, generator=torch.Generator().manual_seed(4)) * 10
    dead = torch.zeros(48, dtype=torch.bool)
    dead[40:] = True
    out = sae(x, dead_mask=dead, aux_k=12)
    assert out.auxk_loss.item() > 0
    out.auxk_loss.backward()
    row_grad = sae.encoder.weight.grad.abs().sum(1)
    assert (row_grad[40:] > 0).all()  # every dead latent is among some token's top-12 dead latents
    assert (row_grad[:40] == 0).all()  # live latents get nothing from the AuxK loss
    for mask in (None, torch.zeros(48, dtype=torch.bool)):
        assert sae(x, dead_mask=mask).auxk_loss.item() == 0.0


def test_input_scale_and_unit_decoder_rows_after_training():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((4096, 16)) * 7 + 3).astype(np.float32)
    scale = estimate_input_scale(x)
    assert ((x * scale) ** 2).sum(1).mean() == pytest.approx(16, rel=1e-4)
    batches = (x[i : i + 256] for i in range(0, len(x), 256))
    sae, metrics = train_sae(batches, 16, {"width": 32, "k": 4, "seed": 0}, sample_for_init=x[:1000])
    assert sae.input_scale == pytest.approx(estimate_input_scale(x[:1000]))
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(32), atol=1e-5, rtol=0)
    assert metrics["tokens_trained"] == 4096 and 0 < metrics["fvu"] < 1
    assert metrics["epochs"] == []  # no n_tokens: epochs unknown
    sae.W_dec.grad = torch.randn(32, 16)
    sae.remove_gradient_parallel_to_decoder_directions()
    torch.testing.assert_close((sae.W_dec.grad * sae.W_dec).sum(1), torch.zeros(32), atol=1e-5, rtol=0)


@pytest.mark.parametrize("ratio", [1e-3, 1.0])
def test_sign_descent_moves_biases_at_their_ratio_of_the_rate(ratio):
    """Each sign step moves a coordinate by at most its rate, and schedule-free's weights stay within the
    iterates' hull: after n steps a bias lies within n * lr * ratio of its init, a weight moves further."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2048, 16)) * 5 + 2).astype(np.float32)
    lr, n = 1e-2, 8
    cfg = {"width": 32, "k": 4, "seed": 0, "lr": lr, "bias_lr_ratio": ratio}
    start = init_sae(x, 16, 32, 4, 0)
    sae, metrics = train_sae((x[i : i + 256] for i in range(0, len(x), 256)), 16, cfg, sample_for_init=x)
    assert metrics["train"]["bias_lr_ratio"] == ratio
    moved = {name: float((p.detach() - dict(start.named_parameters())[name].detach()).abs().max())
             for name, p in sae.named_parameters()}  # fmt: skip
    bound = n * lr * ratio * (1 + 1e-4)
    assert moved["b_dec"] <= bound and moved["encoder.bias"] <= bound
    assert moved["encoder.weight"] > 10 * n * lr * 1e-3
    if ratio == 1.0:  # at the full rate the biases do use their steps
        assert moved["b_dec"] > 10 * n * lr * 1e-3


def test_metrics_per_epoch():
    """Two epochs over the same rows: each epoch's mean fvu, L0 and the dead fraction at its end."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2048, 16)).astype(np.float32)
    batches = [x[i : i + 256] for i in range(0, len(x), 256)] * 2
    cfg = {"width": 64, "k": 4, "epochs": 2, "dead_tokens": 10**6, "seed": 0}
    _, metrics = train_sae(batches, 16, cfg, n_tokens=4096, sample_for_init=x)
    first, second = metrics["epochs"]
    assert (first["epoch"], first["tokens"], second["epoch"], second["tokens"]) == (1, 2048, 2, 4096)
    assert second["fvu"] < first["fvu"] < 1  # the second epoch's batches were trained on before
    assert 0 < first["l0"] <= 4 and 0 < second["l0"] <= 4
    assert first["dead_fraction"] == second["dead_fraction"] == 0.0  # dead_tokens above the run's length


def _planted(rng: np.random.Generator, n: int, truth: np.ndarray, active: int = 3) -> np.ndarray:
    """Tokens = sums of `active` ground-truth unit directions with coefficients in [1, 2], plus noise."""
    idx = np.argsort(rng.random((n, len(truth))), axis=1)[:, :active]
    coef = rng.uniform(1.0, 2.0, (n, active))
    x = np.einsum("na,nad->nd", coef, truth[idx]) + 0.01 * rng.standard_normal((n, truth.shape[1]))
    return x.astype(np.float32)


@pytest.mark.parametrize(("optimizer", "lr"), [("signum", None), ("adam", 1e-2)])
def test_planted_features_are_recovered(optimizer, lr):
    """Both optimizers find the planted directions (signum at its default rate; Adam's default needs more
    than these 131k tokens: fvu 0.104)."""
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((64, 32))
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    x = _planted(rng, 131072, truth)
    batches = (x[i : i + 512] for i in range(0, len(x), 512))
    cfg = {"width": 128, "k": 3, "batch_size": 512, "optimizer": optimizer, "lr": lr, "seed": 1}
    sae, metrics = train_sae(batches, 32, cfg, n_tokens=len(x), sample_for_init=x[:4096])
    assert metrics["fvu"] < 0.1
    # fvu of fresh data from the same generator, with the final weights
    x_new = torch.from_numpy(_planted(rng, 4096, truth))
    with torch.no_grad():
        assert sae(x_new).fvu.item() < 0.1
    best_cos = (truth @ sae.W_dec.detach().numpy().T).max(1)  # [64]
    assert (best_cos > 0.9).mean() >= 0.9


def test_save_load_round_trip(tmp_path):
    sae = _random_sae(dtype=torch.float32)
    sae.save(tmp_path / "sae", extra_cfg={"model": "m", "fvu": 0.1})
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg == {
        "d_in": 24,
        "width": 48,
        "k": 4,
        "input_scale": pytest.approx(0.37),
        "model": "m",
        "fvu": 0.1,
    }
    loaded = TopKSAE.load(tmp_path / "sae")
    x = torch.randn(32, 24, generator=torch.Generator().manual_seed(6))
    for a, b in zip(sae.encode(x), loaded.encode(x), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(sae.decode(*sae.encode(x)), loaded.decode(*loaded.encode(x)))
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == ["cfg.json", "sae.safetensors"]


def test_load_names_missing_or_invalid_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        TopKSAE.load(tmp_path / "nowhere")
    _random_sae().save(tmp_path / "a")
    (tmp_path / "a" / "sae.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="sae.safetensors"):
        TopKSAE.load(tmp_path / "a")
    _random_sae().save(tmp_path / "b")
    (tmp_path / "b" / "cfg.json").write_text("{not json")
    with pytest.raises(ValueError, match="cfg.json"):
        TopKSAE.load(tmp_path / "b")


def test_stream_skips_bos_and_yields_every_row_once_per_epoch():
    n_seq, ctx_len = 30, 16
    rows = np.arange(n_seq * ctx_len, dtype=np.float32)[:, None].repeat(2, 1)  # column = flat token index
    rng = np.random.default_rng(7)
    batches = list(
        _batches(_shuffled_buffers(rows, ctx_len, 2, rng, block_rows=50, buffer_blocks=3), 64, None)
    )
    seen = np.concatenate([b[:, 0] for b in batches]).astype(int)
    non_bos = np.flatnonzero(np.arange(len(rows)) % ctx_len != 0)
    assert len(seen) == 2 * len(non_bos)
    np.testing.assert_array_equal(np.sort(seen), np.repeat(non_bos, 2))
    assert all(len(b) >= 64 for b in batches)  # the tail is merged, never a tiny batch
    assert not np.array_equal(seen[: len(non_bos)], non_bos)  # shuffled
    capped = list(_batches(_shuffled_buffers(rows, ctx_len, 2, rng, 50, 3), 64, 300))
    assert sum(len(b) for b in capped) == 300


def test_train_sae_from_h5_skips_bos_outliers(tmp_path):
    n_seq, ctx_len, d = 40, 64, 16
    rng = np.random.default_rng(8)
    mean = np.linspace(-2, 2, d).astype(np.float32)
    acts = (rng.standard_normal((n_seq * ctx_len, d)) + mean).astype(np.float32)
    acts[::ctx_len] = 1000.0  # BOS rows: huge outliers that must not reach the SAE
    path = tmp_path / "activations.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("activations", data=acts)
        f.attrs.update(
            {"model": "tiny", "hookpoint": "layers.3", "d_model": d, "n_seq": n_seq, "ctx_len": ctx_len}
        )
    cfg = {
        "width": 32,
        "k": 4,
        "batch_size": 256,
        "epochs": 2,
        "seed": 0,
        "block_rows": 500,
        "buffer_blocks": 2,
    }
    metrics = train_sae_from_h5(path, cfg, tmp_path / "sae", device="auto")
    n_train = n_seq * (ctx_len - 1)
    assert metrics["tokens_trained"] == 2 * n_train
    saved = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    for key in ("fvu", "dead_fraction", "tokens_trained", "seconds", "model", "hookpoint"):
        assert saved[key] == metrics[key]
    assert saved["model"] == "tiny" and saved["hookpoint"] == "layers.3"
    assert 0 < saved["fvu"] < 1 and 0 <= saved["dead_fraction"] <= 1
    sae = TopKSAE.load(tmp_path / "sae")
    clean = acts[np.arange(len(acts)) % ctx_len != 0]
    assert sae.input_scale == pytest.approx(estimate_input_scale(clean), rel=0.05)
    # with the outliers the scale would be ~30x smaller
    assert estimate_input_scale(acts) < 0.1 * sae.input_scale
    b_dec_raw = sae.b_dec.detach().numpy() / sae.input_scale
    assert np.abs(b_dec_raw - clean.mean(0)).max() < 0.5


def test_random_sae_is_the_trained_sae_at_step_zero(tmp_path):
    """The control dictionary has the trained SAE's shape and initialisation, and no training."""
    n_seq, ctx_len, d = 10, 32, 8
    acts = np.random.default_rng(1).standard_normal((n_seq * ctx_len, d)).astype(np.float32) + 3.0
    path = tmp_path / "activations.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("activations", data=acts)
        f.attrs.update({"n_seq": n_seq, "ctx_len": ctx_len})
    cfg = {"width": 16, "k": 2, "seed": 3}
    sae = random_sae_from_h5(path, cfg)
    assert (sae.d_in, sae.width, sae.k) == (8, 16, 2)
    reference = TopKSAE(8, 16, 2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(sae.W_dec, reference.W_dec)  # the same random unit directions
    clean = acts[np.arange(len(acts)) % ctx_len != 0]
    assert sae.input_scale == pytest.approx(estimate_input_scale(clean), rel=1e-5)
    np.testing.assert_allclose(sae.b_dec.detach().numpy() / sae.input_scale, clean.mean(0), atol=0.3)
    with pytest.raises(ValueError, match="'k'"):
        random_sae_from_h5(path, {"width": 16})


def test_bad_config_names_key(tmp_path):
    x = np.zeros((8, 4), np.float32) + np.arange(4)
    with pytest.raises(ValueError, match="'k'"):
        train_sae([x], 4, {"width": 8, "k": 0}, sample_for_init=x)
    with pytest.raises(ValueError, match="k .* width"):
        train_sae([x], 4, {"width": 8, "k": 9}, sample_for_init=x)
    with pytest.raises(ValueError, match="'optimizer'"):
        train_sae([x], 4, {"width": 8, "k": 2, "optimizer": "sgd"}, sample_for_init=x)
    with pytest.raises(ValueError, match="'bias_lr_ratio'"):
        train_sae([x], 4, {"width": 8, "k": 2, "bias_lr_ratio": 0}, sample_for_init=x)
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        train_sae_from_h5(tmp_path / "missing.h5", {"width": 8, "k": 2}, tmp_path / "out")


def test_nan_activations_stop_training():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((512, 8)).astype(np.float32)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="diverged"):
        train_sae([x, bad, x], 8, {"width": 16, "k": 2}, sample_for_init=x)


def test_training_table_reads_each_saes_epochs(tmp_path):
    """The summary's per-epoch table comes from the metrics train_sae keeps in the saved cfg.json."""
    from interpflow.sae.summary import training_table

    x = np.random.default_rng(6).standard_normal((1024, 8)).astype(np.float32)
    batches = [x[i : i + 256] for i in range(0, len(x), 256)] * 2
    sae, metrics = train_sae(batches, 8, {"width": 16, "k": 2, "epochs": 2}, n_tokens=2048, sample_for_init=x)
    sae.save(tmp_path / "sae", extra_cfg=metrics)
    record = dict(corpus="c", model="m", hookpoint="h", dictionary="d", cfg=tmp_path / "sae/cfg.json")
    table = training_table([record], tmp_path / "out.parquet")
    assert table["epoch"].tolist() == [1, 2] and table["tokens"].tolist() == [1024, 2048]
    assert table["fvu"].tolist() == [e["fvu"] for e in metrics["epochs"]]
    assert (table["optimizer"] == "signum").all() and (table["tokens_trained"] == 2048).all()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out.parquet"), table)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json"):
        training_table([dict(record, cfg=tmp_path / "bad.json")], tmp_path / "out2.parquet")
