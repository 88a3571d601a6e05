"""Tests for sparse dictionaries: each format written as its library writes it, checked against its math."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from interpflow.dictionaries.dictionary import SparseDictionary, check_dims, from_topk_sae, neuron_dictionary
from interpflow.dictionaries.gemma_scope import load_gemma_scope
from interpflow.dictionaries.pretrained import load_pretrained
from interpflow.dictionaries.saelens import load_saelens
from interpflow.dictionaries.sparsify import load_sparsify
from interpflow.sae.model import TopKSAE

D, W, B = 12, 40, 64  # d_in, width, batch
F64 = torch.float64  # float64 weights keep JumpReLU thresholds and top-k ranks free of rounding flips


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: with two threads on a busy machine, OpenMP hand-offs dominate the run time."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _rand(*shape, seed, scale=1.0):
    """Seeded float64 normal tensor."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64) * scale


def _x(seed=100, d=D):
    """A batch of raw inputs [B, d]."""
    return _rand(B, d, seed=seed)


def _dense(values, indices, width=W):
    """Sparse codes -> dense [B, width] activations."""
    return torch.zeros(len(values), width, dtype=values.dtype).scatter_add_(1, indices, values)


def _check(d, x, acts, y, *, full=None):
    """d's codes equal the reference activations acts [B, W]; its decode (and forward) equal y (and full)."""
    values, indices = d.encode(x)
    assert indices.dtype == torch.int64 and (values >= 0).all()
    torch.testing.assert_close(_dense(values, indices, acts.shape[1]), acts)
    torch.testing.assert_close(d.decode(values, indices), y)
    if full is not None:
        torch.testing.assert_close(d(x), full)


def _topk_ref(h, k):
    """Reference top-k: keep each row's k largest pre-activations, then ReLU."""
    out = torch.zeros_like(h)
    return out.scatter(1, h.topk(k, dim=1).indices, h.gather(1, h.topk(k, dim=1).indices)).relu()


def _jump_ref(h, threshold):
    """Reference JumpReLU: relu(h) where h > threshold, else 0."""
    return torch.where(h > threshold, h.relu(), torch.zeros_like(h))


# ---------------------------------------------------------------------------------------------- our TopK SAE


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_from_topk_sae_reproduces_encode_and_decode_exactly(dtype):
    gen = torch.Generator().manual_seed(0)
    sae = TopKSAE(D, W, 5, input_scale=0.37, generator=gen).to(dtype)
    with torch.no_grad():
        for p in (sae.encoder.weight, sae.encoder.bias, sae.W_dec, sae.b_dec):
            p.copy_(torch.randn(p.shape, generator=gen))
    x = _x().to(dtype)
    d = from_topk_sae(sae)
    (v1, i1), (v2, i2) = sae.encode(x), d.encode(x)
    assert torch.equal(v1, v2) and torch.equal(i1, i2)
    assert torch.equal(sae.decode(v1, i1), d.decode(v2, i2))
    assert (d.width, d.k, d.transcoder, d.meta["format"]) == (W, 5, False, "interpflow-topk")


# ------------------------------------------------------------------------------------------------ save / load


def _full_dictionary():
    """A JumpReLU transcoder using every tensor and a non-unit input scale."""
    return SparseDictionary(
        D, W, activation="jumprelu", W_enc=_rand(D, W, seed=1), b_enc=_rand(W, seed=2),
        threshold=_rand(W, seed=3).abs(), W_dec=_rand(W, 7, seed=4), b_dec=_rand(7, seed=5),
        b_pre=_rand(D, seed=6), W_skip=_rand(D, 7, seed=7), input_scale=0.5, transcoder=True,
        meta={"format": "test", "hookpoint": "layers.3"},
    )  # fmt: skip


@pytest.mark.parametrize("make", [_full_dictionary, lambda: neuron_dictionary(W, k=3)])
def test_save_load_round_trip(tmp_path, make):
    d = make()
    d.save(tmp_path / "dict")
    e = SparseDictionary.load(tmp_path / "dict")
    assert sorted(tmp_path.joinpath("dict").iterdir()) == [
        tmp_path / "dict" / "dictionary.json",
        tmp_path / "dict" / "dictionary.safetensors",
    ]
    assert (e.d_in, e.width, e.d_out, e.activation, e.k, e.input_scale, e.transcoder, e.meta) == (
        d.d_in, d.width, d.d_out, d.activation, d.k, d.input_scale, d.transcoder, d.meta
    )  # fmt: skip
    for (n1, b1), (n2, b2) in zip(d.named_buffers(), e.named_buffers(), strict=True):
        assert n1 == n2 and torch.equal(b1, b2)
    x = _x(d=d.d_in)
    assert all(torch.equal(a, b) for a, b in zip(d.encode(x), e.encode(x), strict=True))
    assert torch.equal(d(x), e(x))


def test_load_names_missing_and_corrupt_files(tmp_path):
    d = _full_dictionary()
    with pytest.raises(FileNotFoundError, match="dictionary.json"):
        SparseDictionary.load(tmp_path / "nothing")
    d.save(tmp_path / "a")
    (tmp_path / "a" / "dictionary.json").write_text("{not json")
    with pytest.raises(ValueError, match="dictionary.json"):
        SparseDictionary.load(tmp_path / "a")
    d.save(tmp_path / "b")
    (tmp_path / "b" / "dictionary.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="dictionary.safetensors"):
        SparseDictionary.load(tmp_path / "b")
    d.save(tmp_path / "c")
    cfg = json.loads((tmp_path / "c" / "dictionary.json").read_text())
    (tmp_path / "c" / "dictionary.json").write_text(json.dumps(cfg | {"d_in": D + 1}))
    with pytest.raises(ValueError, match=r"W_enc has shape \(12, 40\), expected \(13, 40\)"):
        SparseDictionary.load(tmp_path / "c")


def test_constructor_rejects_inconsistent_settings():
    with pytest.raises(ValueError, match="threshold"):
        SparseDictionary(D, W, activation="jumprelu", W_enc=_rand(D, W, seed=1))
    with pytest.raises(ValueError, match="k <= width"):
        SparseDictionary(D, W, activation="topk", k=W + 1, W_enc=_rand(D, W, seed=1))
    with pytest.raises(ValueError, match="identity encoder"):
        SparseDictionary(D, W, activation="relu")
    with pytest.raises(ValueError, match="finite"):
        SparseDictionary(D, W, activation="relu", W_enc=_rand(D, W, seed=1) * float("nan"))


# ------------------------------------------------------------------------------------------------ sparsify


def _write_sparsify(folder, *, transcode=False, skip=False, **cfg_extra):
    """A sparsify hookpoint folder as SparseCoder.save_to_disk writes it; returns its raw tensors."""
    t = {"encoder.weight": _rand(W, D, seed=11), "encoder.bias": _rand(W, seed=12, scale=0.3),
         "W_dec": _rand(W, D, seed=13), "b_dec": _rand(D, seed=14)}  # fmt: skip
    if skip:
        t["W_skip"] = _rand(D, D, seed=15)
    folder.mkdir(parents=True)
    save_file(t, str(folder / "sae.safetensors"))
    cfg = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True, "num_latents": W, "k": 4,
           "multi_topk": False, "skip_connection": skip, "transcode": transcode, "d_in": D}  # fmt: skip
    (folder / "cfg.json").write_text(json.dumps(cfg | cfg_extra))
    return t


def test_sparsify_sae_matches_its_definition(tmp_path):
    t = _write_sparsify(tmp_path / "run" / "layers.3")
    x = _x()
    h = (x - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"]  # sparsify subtracts b_dec first
    acts = _topk_ref(h, 4)
    for d in (load_sparsify(tmp_path / "run", "layers.3"), load_sparsify(tmp_path / "run" / "layers.3")):
        _check(d, x, acts, acts @ t["W_dec"] + t["b_dec"])
        assert (d.meta["format"], d.meta["hookpoint"], d.k, d.transcoder) == (
            "sparsify",
            "layers.3",
            4,
            False,
        )
    with pytest.raises(FileNotFoundError, match="layers.3"):  # the error lists the hookpoints found
        load_sparsify(tmp_path / "run")


def test_sparsify_skip_transcoder_matches_its_definition(tmp_path):
    t = _write_sparsify(tmp_path / "layers.2.mlp", transcode=True, skip=True)
    x = _x()
    acts = _topk_ref(x @ t["encoder.weight"].T + t["encoder.bias"], 4)  # a transcoder reads x as is
    y = acts @ t["W_dec"] + t["b_dec"]
    d = load_pretrained("sparsify", tmp_path, hookpoint="layers.2.mlp")
    _check(d, x, acts, y, full=y + x @ t["W_skip"].T)
    assert d.transcoder


@pytest.mark.parametrize(
    ("extra", "match"),
    [({"activation": "groupmax"}, "groupmax"), ({"signed": True}, "signed"), ({"d_in": D + 1}, "d_in"),
     ({"num_latents": W * 2}, "width"), ({"skip_connection": True}, "skip_connection")],
)  # fmt: skip
def test_sparsify_rejects_what_it_cannot_honour(tmp_path, extra, match):
    _write_sparsify(tmp_path / "h", **extra)
    with pytest.raises(ValueError, match=match):
        load_sparsify(tmp_path / "h")


def test_sparsify_missing_weights(tmp_path):
    _write_sparsify(tmp_path / "h")
    (tmp_path / "h" / "sae.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="sae.safetensors"):
        load_sparsify(tmp_path / "h")


# ------------------------------------------------------------------------------------------------ SAELens


def _v6_cfg(arch, d_out=None, **extra):
    """A SAELens >= 6 cfg.json (SAEConfig.to_dict: flat fields plus a nested metadata dict)."""
    cfg = {"d_in": D, "d_sae": W, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
           "normalize_activations": "none", "reshape_activations": "none", "architecture": arch,
           "metadata": {"model_name": "tiny", "hook_name": "blocks.2.hook_resid_post",
                        "sae_lens_version": "6.5.1", "sae_lens_training_version": "6.5.1"}}  # fmt: skip
    if d_out is not None:
        cfg["d_out"] = d_out
    return cfg | extra


def _write_saelens(folder, cfg, tensors):
    """A SAELens folder as SAE.save_model writes it."""
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(cfg))


def _sae_tensors(d_out=D, **extra):
    """W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_out] (non-unit rows), b_dec."""
    t = {"W_enc": _rand(D, W, seed=21), "b_enc": _rand(W, seed=22, scale=0.3),
         "W_dec": _rand(W, d_out, seed=23, scale=0.5), "b_dec": _rand(d_out, seed=24)}  # fmt: skip
    return t | extra


def _standard_case():
    t = _sae_tensors()
    acts = ((_x() - t["b_dec"]) @ t["W_enc"] + t["b_enc"]).relu()
    return _v6_cfg("standard"), t, acts, acts @ t["W_dec"] + t["b_dec"]


def _jumprelu_case():
    t = _sae_tensors(threshold=_rand(W, seed=25).abs())
    acts = _jump_ref(_x() @ t["W_enc"] + t["b_enc"], t["threshold"])  # apply_b_dec_to_input false
    return _v6_cfg("jumprelu", apply_b_dec_to_input=False), t, acts, acts @ t["W_dec"] + t["b_dec"]


def _topk_rescaled_case():
    t = _sae_tensors()
    norm = t["W_dec"].norm(dim=1)
    acts = _topk_ref(((_x() - t["b_dec"]) @ t["W_enc"] + t["b_enc"]) * norm, 5)  # ranks h * |W_dec|
    y = (acts / norm) @ t["W_dec"] + t["b_dec"]
    return _v6_cfg("topk", k=5, rescale_acts_by_decoder_norm=True), t, acts, y


def _gated_case():
    t = {"W_enc": _rand(D, W, seed=21), "b_gate": _rand(W, seed=26), "b_mag": _rand(W, seed=27),
         "r_mag": _rand(W, seed=28, scale=0.5), "W_dec": _rand(W, D, seed=23),
         "b_dec": _rand(D, seed=24)}  # fmt: skip
    z = _x() - t["b_dec"]
    gate = (z @ t["W_enc"] + t["b_gate"]) > 0
    acts = gate * (z @ (t["W_enc"] * t["r_mag"].exp()) + t["b_mag"]).relu()
    return _v6_cfg("gated"), t, acts, acts @ t["W_dec"] + t["b_dec"]


def _pre_v6_topk_case():
    """SAELens 3-5 layout: flat cfg, hook_point, activation_fn_str topk, per-latent finetuning scale."""
    s = _rand(W, seed=29).abs() + 0.5
    t = _sae_tensors(scaling_factor=s)
    acts = _topk_ref((_x() - t["b_dec"]) @ t["W_enc"] + t["b_enc"], 3)
    cfg = {"d_in": D, "d_sae": W, "dtype": "torch.float32", "architecture": "standard",
           "hook_point": "blocks.1.hook_resid_pre", "hook_point_layer": 1, "activation_fn_str": "topk",
           "activation_fn_kwargs": {"k": 3}, "apply_b_dec_to_input": True, "normalize_activations": False,
           "finetuning_scaling_factor": True, "sae_lens_training_version": "3.5.0"}  # fmt: skip
    return cfg, t, acts, (acts * s) @ t["W_dec"] + t["b_dec"]


def _old_jumprelu_case():
    """Pre-v6 JumpReLU checkpoint that stored log_threshold, with the constant-norm flag as a bool."""
    thr = _rand(W, seed=25).abs() + 0.1
    t = _sae_tensors(log_threshold=thr.log())
    acts = _jump_ref((_x() - t["b_dec"]) @ t["W_enc"] + t["b_enc"], thr)
    cfg = {"d_in": D, "d_sae": W, "architecture": "jumprelu", "hook_name": "blocks.4.hook_mlp_out",
           "activation_fn_str": "relu", "normalize_activations": False}  # fmt: skip
    return cfg, t, acts, acts @ t["W_dec"] + t["b_dec"]


@pytest.mark.parametrize(
    "case",
    [_standard_case, _jumprelu_case, _topk_rescaled_case, _gated_case, _pre_v6_topk_case, _old_jumprelu_case],
)
def test_saelens_architectures_match_their_definitions(tmp_path, case):
    cfg, t, acts, y = case()
    _write_saelens(tmp_path / "sae", cfg, t)
    d = load_saelens(tmp_path / "sae")
    _check(d, _x(), acts, y)
    hook = cfg.get("metadata", cfg).get("hook_name", cfg.get("hook_point"))
    assert (d.meta["format"], d.meta["hookpoint"], d.transcoder) == ("saelens", hook, False)


def test_saelens_jumprelu_skip_transcoder(tmp_path):
    d_out = 9
    t = _sae_tensors(d_out, threshold=_rand(W, seed=25).abs(), W_skip=_rand(d_out, D, seed=30))
    cfg = _v6_cfg("jumprelu_skip_transcoder", d_out=d_out, apply_b_dec_to_input=False)
    cfg["metadata"] |= {"hook_name": "blocks.2.ln2.hook_normalized", "hook_name_out": "blocks.2.hook_mlp_out"}
    _write_saelens(tmp_path / "tc", cfg, t)
    x = _x()
    acts = _jump_ref(x @ t["W_enc"] + t["b_enc"], t["threshold"])
    y = acts @ t["W_dec"] + t["b_dec"]
    d = load_pretrained("saelens", tmp_path, hookpoint="tc")
    _check(d, x, acts, y, full=y + x @ t["W_skip"].T)  # SAELens: x @ W_skip.T
    assert (d.d_out, d.transcoder, d.meta["hookpoint_out"]) == (d_out, True, "blocks.2.hook_mlp_out")


def test_saelens_expected_average_norm_needs_the_factor(tmp_path):
    t = _sae_tensors()
    _write_saelens(tmp_path / "s", _v6_cfg("standard", normalize_activations="expected_average_only_in"), t)
    with pytest.raises(ValueError, match="norm_scaling_factor"):
        load_saelens(tmp_path / "s")
    x, s = _x(), 2.5
    acts = ((x * s - t["b_dec"]) @ t["W_enc"] + t["b_enc"]).relu()  # the SAE saw inputs scaled by s
    _check(load_saelens(tmp_path / "s", norm_scaling_factor=s), x, acts, (acts @ t["W_dec"] + t["b_dec"]) / s)


@pytest.mark.parametrize(
    ("cfg", "tensors", "match"),
    [(_v6_cfg("standard", normalize_activations="layer_norm"), _sae_tensors(), "layer_norm"),
     (_v6_cfg("temporal"), _sae_tensors(), "temporal"),
     (_v6_cfg("standard", d_sae=W + 1), _sae_tensors(), "width"),
     (_v6_cfg("standard"), _sae_tensors(extra_bias=_rand(W, seed=1)), "unrecognised tensors"),
     (_v6_cfg("jumprelu"), _sae_tensors(), "missing tensors"),
     (_v6_cfg("topk"), _sae_tensors(), "int k")],
)  # fmt: skip
def test_saelens_rejects_what_it_cannot_honour(tmp_path, cfg, tensors, match):
    _write_saelens(tmp_path / "s", cfg, tensors)
    with pytest.raises(ValueError, match=match):
        load_saelens(tmp_path / "s")


def test_saelens_missing_files(tmp_path):
    _write_saelens(tmp_path / "s", _v6_cfg("standard"), _sae_tensors())
    (tmp_path / "s" / "sae_weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="sae_weights.safetensors"):
        load_saelens(tmp_path / "s")
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        load_saelens(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------------ Gemma Scope


def _gs_params(d_out=D):
    """JumpReLU parameters in Gemma Scope's layout: W_enc [d_in, width], W_dec [width, d_out]."""
    return {"W_enc": _rand(D, W, seed=41), "b_enc": _rand(W, seed=42, scale=0.3),
            "threshold": _rand(W, seed=43).abs(), "W_dec": _rand(W, d_out, seed=44),
            "b_dec": _rand(d_out, seed=45)}  # fmt: skip


@pytest.mark.parametrize("lower", [False, True])
def test_gemma_scope_npz_matches_its_definition(tmp_path, lower):
    p = _gs_params()
    folder = tmp_path / "gemma-scope-2b-pt-res" / "layer_7" / "width_16k" / "average_l0_9"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **{(k.lower() if lower else k): v.numpy() for k, v in p.items()})
    x = _x()
    acts = _jump_ref(x @ p["W_enc"] + p["b_enc"], p["threshold"])  # no b_dec shift of the input
    d = load_gemma_scope(folder)
    _check(d, x, acts, acts @ p["W_dec"] + p["b_dec"])
    assert d.b_pre is None and d.meta["hookpoint"] == "blocks.7.hook_resid_post" and d.meta["layer"] == 7


def _write_gs2(folder, config, tensors):
    """A Gemma Scope 2 folder: config.json and params.safetensors (lower-case keys)."""
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "params.safetensors"))
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))


def _gs2(affine=False, **cfg_extra):
    """Gemma Scope 2 config and tensors (transcoder with an affine skip when affine)."""
    p = {k.lower(): v for k, v in _gs_params().items()}
    hook_in, hook_out = "model.layers.5.output", "model.layers.5.output"
    if affine:
        p["affine_skip_connection"] = _rand(D, D, seed=46)
        hook_in = "model.layers.5.pre_feedforward_layernorm.output"
        hook_out = "model.layers.5.post_feedforward_layernorm.output"
    cfg = {"hf_hook_point_in": hook_in, "hf_hook_point_out": hook_out, "width": W, "model_name": "google/x",
           "architecture": "jump_relu", "l0": 20, "affine_connection": affine,
           "type": "transcoder" if affine else "sae"}  # fmt: skip
    return cfg | cfg_extra, p


@pytest.mark.parametrize("affine", [False, True])
def test_gemma_scope_2_matches_its_definition(tmp_path, affine):
    cfg, p = _gs2(affine)
    _write_gs2(tmp_path / "layer_5_width_16k_l0_small", cfg, p)
    x = _x()
    acts = _jump_ref(x @ p["w_enc"] + p["b_enc"], p["threshold"])
    y = acts @ p["w_dec"] + p["b_dec"]
    d = load_pretrained("gemma-scope", tmp_path, hookpoint="layer_5_width_16k_l0_small")
    _check(d, x, acts, y, full=y + x @ p["affine_skip_connection"] if affine else y)  # x @ affine, no .T
    assert (d.transcoder, d.meta["hookpoint"], d.meta["format"]) == (
        affine,
        cfg["hf_hook_point_in"],
        "gemma-scope-2",
    )


@pytest.mark.parametrize(
    ("cfg_extra", "drop", "match"),
    [({"affine_connection": True}, False, "affine"), ({"type": "clt"}, False, "clt"),
     ({"width": W * 2}, False, "width"), ({"architecture": "topk"}, False, "architecture"),
     ({}, True, "missing tensors")],
)  # fmt: skip
def test_gemma_scope_2_rejects_what_it_cannot_honour(tmp_path, cfg_extra, drop, match):
    cfg, p = _gs2(**cfg_extra)
    if drop:
        del p["threshold"]
    _write_gs2(tmp_path / "g", cfg, p)
    with pytest.raises(ValueError, match=match):
        load_gemma_scope(tmp_path / "g")


def test_gemma_scope_missing_and_unsupported_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="params"):
        load_gemma_scope(tmp_path)
    folder = tmp_path / "embedding" / "width_4k"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **{k: v.numpy() for k, v in _gs_params().items()})
    with pytest.raises(ValueError, match="embedding"):
        load_gemma_scope(folder / "params.npz")


# ------------------------------------------------------------------------------------------------ neurons


def test_neuron_dictionaries_have_the_expected_sparsity():
    x = _x(d=W)  # about half the neurons of each row are positive
    positives = (x > 0).sum(1)
    raw = neuron_dictionary(W)
    values, indices = raw.encode(x)
    assert values.shape[1] == int(positives.max())  # m = most active latents of any row
    assert torch.equal((values > 0).sum(1), positives)
    torch.testing.assert_close(_dense(values, indices), x.clamp_min(0))
    top = neuron_dictionary(W, k=4)
    values, indices = top.encode(x)
    assert values.shape == (B, 4) and (positives >= 4).all()
    assert ((values > 0).sum(1) == 4).all()
    torch.testing.assert_close(values.sort(1).values, x.topk(4, dim=1).values.sort(1).values)
    assert torch.equal(raw.decoder_directions(), torch.eye(W, dtype=torch.float32))


def test_neuron_dictionary_decodes_through_the_down_projection():
    W_out = _rand(D, W, seed=51)  # nn.Linear(d_mlp, d_model).weight is [d_model, d_mlp]
    d = neuron_dictionary(W, W_out=W_out)
    x = _x(d=W)
    torch.testing.assert_close(d.decode(*d.encode(x)), x.relu() @ W_out.T)
    dirs = d.decoder_directions()
    torch.testing.assert_close(dirs, (W_out / W_out.norm(dim=0)).T)
    assert d.transcoder and d.d_out == D
    all_negative = -x.abs() - 1  # no neuron fires: empty codes decode to zero
    values, indices = d.encode(all_negative)
    assert values.shape == (B, 0)
    assert torch.equal(d.decode(values, indices), torch.zeros(B, D, dtype=F64))


# ------------------------------------------------------------------------------------------------ helpers


def test_check_dims_names_both_sizes():
    d = _full_dictionary()
    check_dims(d, D, "resid_post.3")
    with pytest.raises(ValueError, match=r"resid_post\.3.*width 12.*width 640"):
        check_dims(d, 640, "resid_post.3")


def test_load_pretrained_rejects_unknown_formats(tmp_path):
    with pytest.raises(ValueError, match="sparsify, saelens, gemma-scope"):
        load_pretrained("transformer-lens", tmp_path)
