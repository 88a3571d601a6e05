import h5py
import numpy as np
import pytest
import torch

from interpflow.activations import cache_activations, hidden_states, parse_hookpoint
from interpflow.models import load_model


def test_parse_hookpoint():
    assert parse_hookpoint("resid_post.12") == ("resid_post", 12)
    assert parse_hookpoint("mlp_act.0") == ("mlp_act", 0)
    with pytest.raises(ValueError, match="resid_post"):
        parse_hookpoint("mlp.3")


@pytest.fixture(scope="module")
def smollm2(smollm2_spec):
    return load_model(smollm2_spec, {"dtype": "float32", "device": "cpu"})


def test_cut_forward_equals_full_forward(smollm2):
    model, _ = smollm2
    ids = torch.randint(0, 1000, (2, 12))
    with torch.no_grad():
        full = model(ids, output_hidden_states=True).hidden_states  # [embeddings, layer 0, layer 1, ...]
    seen = hidden_states(model, ids, ["resid_post.2", "resid_post.5"])
    torch.testing.assert_close(seen["resid_post.2"], full[3])
    torch.testing.assert_close(seen["resid_post.5"], full[6])


def test_sites_compose_into_the_residual_stream(smollm2):
    """Llama blocks: resid_post.L = resid_post.(L-1) + attn_out.L + mlp_out.L, mlp_out = mlp(mlp_in) and
    mlp_out = down_proj(mlp_act): each site is read where the block says it is."""
    model, _ = smollm2
    ids = torch.randint(0, 1000, (2, 12))
    hps = ["resid_post.3", "attn_out.4", "mlp_in.4", "mlp_act.4", "mlp_out.4", "resid_post.4"]
    seen = hidden_states(model, ids, hps)
    assert seen["mlp_act.4"].shape == (2, 12, 1536) and seen["mlp_in.4"].shape == (2, 12, 576)
    torch.testing.assert_close(
        seen["resid_post.4"],
        seen["resid_post.3"] + seen["attn_out.4"] + seen["mlp_out.4"],
        atol=1e-4,
        rtol=1e-4,
    )
    mlp = model.model.layers[4].mlp
    with torch.no_grad():
        torch.testing.assert_close(mlp(seen["mlp_in.4"]), seen["mlp_out.4"])
        torch.testing.assert_close(mlp.down_proj(seen["mlp_act.4"]), seen["mlp_out.4"])
        act = mlp.act_fn(mlp.gate_proj(seen["mlp_in.4"])) * mlp.up_proj(seen["mlp_in.4"])
        torch.testing.assert_close(act, seen["mlp_act.4"])


def test_missing_layer_is_a_clear_error(smollm2):
    model, _ = smollm2
    with pytest.raises(ValueError, match="layer 99 does not exist, the model has 30 layers"):
        hidden_states(model, torch.zeros(1, 4, dtype=torch.long), ["mlp_out.99"])


def test_cache_streams_batches_to_hdf5(tmp_path, smollm2, smollm2_spec):
    model, _ = smollm2
    tokens = np.random.default_rng(0).integers(0, 1000, (5, 8)).astype(np.int32)
    with h5py.File(tmp_path / "tokens.h5", "w") as f:
        f["tokens"] = tokens
    paths = [tmp_path / "a3.h5", tmp_path / "a1.h5"]
    cache_activations(
        tmp_path / "tokens.h5",
        smollm2_spec,
        {"batch_size": 2, "device": "cpu"},
        ["resid_post.3", "resid_post.1"],
        paths,
    )
    with torch.no_grad():
        full = model(torch.from_numpy(tokens.astype(np.int64)), output_hidden_states=True).hidden_states
    for path, layer in zip(paths, [3, 1], strict=True):
        with h5py.File(path) as f:
            acts = f["activations"][:]
            assert f.attrs["n_seq"] == 5 and f.attrs["ctx_len"] == 8 and f.attrs["d_model"] == 576
        assert acts.shape == (40, 576)
        np.testing.assert_allclose(acts, full[layer + 1].reshape(40, 576).numpy(), atol=1e-4, rtol=1e-4)
