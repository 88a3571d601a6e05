import json

import h5py
import numpy as np
import pandas as pd
import pytest

from interpflow.corpus import build_tokens, corpus_texts, file_texts, pack_sequences, wiki_offline_texts


def test_pack_sequences_hand_case():
    docs = iter([[1, 2, 3], [4, 5], [6, 7, 8, 9]])
    # ctx_len 4: BOS + 3 body tokens; documents joined with sep=0: 1 2 3 0 4 5 0 6 7 8 9 0
    rows = pack_sequences(docs, n_sequences=3, ctx_len=4, bos=99, sep=0)
    assert rows.tolist() == [[99, 1, 2, 3], [99, 0, 4, 5], [99, 0, 6, 7]]
    assert rows.dtype == np.int32


def test_pack_sequences_stops_when_corpus_runs_out():
    rows = pack_sequences(iter([[1, 2, 3, 4, 5]]), n_sequences=10, ctx_len=3, bos=9, sep=0)
    assert rows.tolist() == [[9, 1, 2], [9, 3, 4], [9, 5, 0]]
    assert pack_sequences(iter([]), 5, 8, 9, 0).shape == (0, 8)


def test_wiki_offline_corpus_is_there():
    texts = wiki_offline_texts()
    assert len(texts) > 10_000 - 100
    assert all(isinstance(t, str) and t for t in texts[:100])


def test_file_sources(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\nline two\n\nsecond doc\n\n\n")
    assert file_texts(str(tmp_path / "a.txt"), "text", "text") == ["first doc\nline two", "second doc"]
    (tmp_path / "a.jsonl").write_text(json.dumps({"body": "x y"}) + "\n" + json.dumps({"body": "z"}) + "\n")
    assert file_texts(str(tmp_path / "a.jsonl"), "jsonl", "body") == ["x y", "z"]
    pd.DataFrame({"text": ["p", "q"]}).to_parquet(tmp_path / "a.parquet")
    assert file_texts(str(tmp_path / "a.parquet"), "parquet", "text") == ["p", "q"]
    with pytest.raises(ValueError, match="'body' is not a field"):
        file_texts(str(tmp_path / "a.parquet"), "parquet", "body")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        file_texts(str(tmp_path / "nope.txt"), "text", "text")


def test_shuffle_is_seeded(tmp_path):
    (tmp_path / "a.txt").write_text("\n\n".join(f"doc {i}" for i in range(50)))
    cfg = {"source": "text", "path": str(tmp_path / "a.txt"), "text_field": "text", "seed": 3}
    assert list(corpus_texts(cfg)) == list(corpus_texts(cfg))
    assert list(corpus_texts(cfg)) != list(corpus_texts(dict(cfg, seed=4)))
    assert sorted(corpus_texts(cfg)) == sorted(f"doc {i}" for i in range(50))


def test_build_tokens_roundtrip(tmp_path, smollm2_spec):
    from interpflow.models import load_tokenizer

    (tmp_path / "c.txt").write_text("\n\n".join(["The cat sat on the mat."] * 40))
    cfg = {
        "source": "text",
        "path": str(tmp_path / "c.txt"),
        "text_field": "text",
        "n_sequences": 5,
        "ctx_len": 16,
        "seed": 0,
    }
    build_tokens(cfg, smollm2_spec, tmp_path / "tokens.h5")
    tok = load_tokenizer(smollm2_spec)
    with h5py.File(tmp_path / "tokens.h5") as f:
        tokens = f["tokens"][:]
        assert f.attrs["n_tokens"] == 5 * 16 and f.attrs["ctx_len"] == 16
    assert tokens.shape == (5, 16) and tokens.dtype == np.int32
    assert (tokens[:, 0] == tok.bos_token_id).all()
    assert "The cat sat on the mat." in tok.decode(tokens[0, 1:].tolist())


def test_empty_corpus_is_a_clear_error(tmp_path, smollm2_spec):
    (tmp_path / "c.txt").write_text("too short")
    cfg = {
        "source": "text",
        "path": str(tmp_path / "c.txt"),
        "text_field": "text",
        "n_sequences": 5,
        "ctx_len": 256,
        "seed": 0,
    }
    with pytest.raises(ValueError, match="fewer tokens than one context"):
        build_tokens(cfg, smollm2_spec, tmp_path / "tokens.h5")
    assert not (tmp_path / "tokens.h5").exists()


@pytest.mark.parametrize(("source", "byte"), [("text", 3), ("jsonl", 13)])
def test_a_corpus_file_that_is_not_utf8_is_named(tmp_path, source, byte):
    path = tmp_path / f"latin1.{source}"
    body = "Caf\u00e9 au lait\n\nna\u00efve" if source == "text" else '{"text": "Caf\u00e9"}\n'
    path.write_bytes(body.encode("latin-1"))
    named = rf"corpora\.\*\.path: corpus file .*latin1\.{source} is not UTF-8 text \(byte {byte}:"
    with pytest.raises(ValueError, match=named):
        file_texts(str(path), source, "text")
