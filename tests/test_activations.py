import h5py
import numpy as np
import pytest
import torch

from interpflow.activations import cache_activations, hidden_states, parse_hookpoint
from interpflow.models import load_model


def test_parse_hookpoint():
    assert parse_hookpoint("resid_post.12") == 12
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
    seen = hidden_states(model, ids, [2, 5])
    torch.testing.assert_close(seen[2], full[3])
    torch.testing.assert_close(seen[5], full[6])


def test_missing_layer_is_a_clear_error(smollm2):
    model, _ = smollm2
    with pytest.raises(ValueError, match="layer 99 does not exist: the model has 30 layers"):
        hidden_states(model, torch.zeros(1, 4, dtype=torch.long), [99])


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
