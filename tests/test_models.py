import json

import pandas as pd
import pytest
import torch

from interpflow.models import load_model, load_tokenizer, locate_gguf, prepare_model


def test_converted_model_has_weights_and_vocab(smollm2_spec):
    spec = json.loads(smollm2_spec.read_text())
    assert spec["source"] == "converted"
    vocab = pd.read_parquet(smollm2_spec.parent / "vocab.parquet")
    tok = load_tokenizer(smollm2_spec)
    assert len(vocab) == len(tok) and vocab["token_id"].tolist() == list(range(len(tok)))
    ids = tok("Hello world", add_special_tokens=False).input_ids
    assert "".join(vocab["text"][ids]) == "Hello world"


def test_headless_load_keeps_the_tied_embedding(smollm2_spec):
    """The trap: a headless AutoModel must find the embedding, not start from a random one."""
    from transformers import AutoModel

    model, tok = load_model(smollm2_spec, {"device": "cpu"})
    base = AutoModel.from_pretrained(smollm2_spec.parent, dtype=torch.float32)
    torch.testing.assert_close(base.get_input_embeddings().weight, model.get_input_embeddings().weight)


def test_missing_gguf_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        locate_gguf({"source": "gguf", "path": str(tmp_path / "missing.gguf")}, tmp_path)
    with pytest.raises(FileNotFoundError, match="no/such/model"):
        prepare_model(
            {"source": "hf", "path": str(tmp_path / "no/such/model")},
            tmp_path / "m.json",
            tmp_path / "v.parquet",
        )
    assert not (tmp_path / "m.json").exists()


def test_auto_dtype_is_float32_on_cpu_and_names_are_mapped():
    from interpflow.models import resolve_dtype

    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
