"""The vocabulary as the sampler reads it (vocab.parquet, indexed by token id), and windows' token strings,
each window decoded as one span so that a character split over tokens shows whole."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from interpflow.store import read_arrow

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)


class Vocab(NamedTuple):
    """A model's vocabulary as the sampler reads it from vocab.parquet, indexed by token id."""

    text: np.ndarray
    """object [n_vocab]; each token's own decoded text."""
    raw: np.ndarray
    """object [n_vocab]; the bytes each token adds to a decoded span."""
    whole: np.ndarray
    """bool [n_vocab]; the token is whole characters (its text is exact); else part of a multi-byte one."""

    @classmethod
    def from_texts(cls, text: np.ndarray) -> Vocab:
        """A vocabulary in which every token is whole characters."""
        text = np.asarray(text, dtype=object)
        raw = np.empty(text.size, dtype=object)
        raw[:] = [str(t).encode() for t in text]
        return cls(text, raw, np.ones(text.size, bool))


def span_strings(pieces: Sequence[bytes], span_len: int | None = None) -> list[str]:
    """Per-token text of token spans, each decoded as one UTF-8 string (joined, its texts are that string).

    `pieces` [n] are the spans' token bytes one after another, every span `span_len` tokens (default: one
    span of them all). A character split over tokens (byte-level BPE, SentencePiece byte fallback) goes whole
    to the token that completes it and the others get ""; only bytes a span itself cannot decode become
    U+FFFD (a character cut by the span's edge).
    """
    return span_array(pieces, span_len).to_pylist()


def span_array(pieces: Sequence[bytes], span_len: int | None = None) -> pa.StringArray:
    """span_strings' texts [n] as an Arrow string array, built from the bytes without a str per token."""
    data = b"".join(pieces)
    lens = np.fromiter(map(len, pieces), np.int64, len(pieces))
    starts = np.cumsum(lens) - lens  # [n] byte offset of each token
    buf = np.frombuffer(data + b"\0", np.uint8)  # the end counts as a character start
    lead = np.flatnonzero((buf & 0xC0) != 0x80)  # bytes that begin a character (not 10xxxxxx)
    length = span_len or max(len(pieces), 1)
    first = starts[::length]  # [spans] each span's first byte
    span_start = np.repeat(first, length)[: len(pieces)]  # [n]
    span_end = np.repeat(np.append(first[1:], len(data)), length)[: len(pieces)]  # [n]
    i = np.searchsorted(lead, starts, side="right") - 1
    back = np.where(i >= 0, lead[np.maximum(i, 0)], -1)  # the last character start at or before the token
    # one in the span before does not count (a span decodes alone), and a span's end is a character start
    back = np.where((back >= span_start) & (starts < span_end), back, starts)
    # a token boundary inside a character moves back to its first byte (UTF-8 characters have <= 4); a
    # decoder restarts at every such byte, so decoding the pieces apart equals decoding the span
    cut = np.append(np.where(starts - back < 4, back, starts), len(data))  # [n + 1] each text's bytes
    return _decode(data, cut, length)


def _decode(data: bytes, cut: np.ndarray, length: int) -> pa.StringArray:
    """Texts [n] data[cut[i]:cut[i + 1]] decoded (errors: U+FFFD), spans of `length` tiling the data.

    In a span that is valid UTF-8 every cut is at a character start (span_array), so its texts are its
    bytes as they are; only the spans that are not (a character cut by their edge) decode in Python.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = cut.size - 1
    bounds = np.append(cut[:-1:length], len(data)).tolist()  # [spans + 1] byte bounds of the spans
    bad = np.zeros(n, bool)
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        try:
            data[a:b].decode("utf-8")
        except UnicodeDecodeError:
            bad[k * length : (k + 1) * length] = True
    texts = pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(cut), pa.py_buffer(data)])
    if bad.any():
        lo, hi = cut[:-1][bad].tolist(), cut[1:][bad].tolist()
        fixed = [data[a:b].decode("utf-8", "replace") for a, b in zip(lo, hi, strict=True)]
        texts = pc.replace_with_mask(texts, pa.array(bad), pa.array(fixed, pa.large_string()))
    return texts.cast(pa.string())


def window_string_ids(toks: np.ndarray, vocab: Vocab) -> tuple[np.ndarray, pa.StringArray]:
    """Token strings of windows toks [m, L] as ids: [m, L] into `vocab.text` followed by the returned extras.

    Windows of whole-character tokens (nearly all) keep their token ids; the others are decoded each as one
    span (span_array, all in one call) and point at their strings, the extras.
    """
    import pyarrow as pa

    # [m, L]; int32 while the ids fit (halves the largest array of the examples table)
    ids = toks.astype(np.int32 if vocab.text.size + toks.size < 2**31 else np.int64)
    split = np.flatnonzero(~vocab.whole[toks].all(axis=1))  # [s]
    if not split.size:
        return ids, pa.array([], pa.string())
    extra = span_array(vocab.raw[toks[split]].ravel(), toks.shape[1])  # [s * L]
    ids[split] = vocab.text.size + np.arange(len(extra)).reshape(split.size, toks.shape[1])
    return ids, extra


def window_strings(toks: np.ndarray, vocab: Vocab) -> np.ndarray:
    """Token strings [m, L] of windows toks [m, L], each window decoded as one span (span_strings)."""
    ids, extra = window_string_ids(toks, vocab)
    return np.concatenate([vocab.text, extra.to_numpy(zero_copy_only=False)])[ids]


def read_vocab(path: str | os.PathLike) -> Vocab:
    """The vocabulary table as a Vocab indexed by token id (ids absent from the table map to '')."""
    import pyarrow as pa
    import pyarrow.compute as pc

    vocab = read_arrow(path)
    if not {"token_id", "text"} <= set(vocab.column_names):
        raise ValueError(f"vocabulary table {path} needs columns token_id, text")
    ids = vocab["token_id"].to_numpy()
    text = np.full(int(ids.max()) + 1 if len(vocab) else 0, "", dtype=object)
    text[ids] = vocab["text"].to_numpy()
    if "bytes" not in vocab.column_names:  # written before the column existed
        log.warning("%s has no `bytes` column: tokens holding part of a character show U+FFFD", path)
        return Vocab.from_texts(text)
    raw_col = vocab["bytes"]
    if not pa.types.is_binary(raw_col.type) or raw_col.null_count:
        raise ValueError(f"vocabulary table {path}: column `bytes` must hold bytes")
    # whole = the bytes are valid UTF-8 decoding to exactly the text, i.e. the text's UTF-8 is the bytes
    whole_col = pc.equal(pc.cast(vocab["text"], pa.binary()), raw_col)
    raw, whole = np.full(text.size, b"", dtype=object), np.ones(text.size, bool)
    raw[ids] = raw_col.to_numpy()
    whole[ids] = whole_col.fill_null(False).to_numpy()
    return Vocab(text, raw, whole)
