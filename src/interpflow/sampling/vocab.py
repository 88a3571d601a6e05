"""The vocabulary as the sampler reads it (vocab.parquet, indexed by token id), and windows' token strings,
each window decoded as one span so that a character split over tokens shows whole."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from interpflow.store import read_parquet

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


def span_strings(pieces: Sequence[bytes]) -> list[str]:
    """Per-token text of a token span decoded as one UTF-8 string: joined, they are exactly that string.

    A character split over tokens (byte-level BPE, SentencePiece byte fallback) goes whole to the token that
    completes it and the others get ""; only bytes the span itself cannot decode become U+FFFD (a character
    cut by the window's edge).
    """
    data = b"".join(pieces)
    lens = np.fromiter(map(len, pieces), np.int64, len(pieces))
    starts = np.cumsum(lens) - lens  # [n] byte offset of each token
    buf = np.frombuffer(data + b"\0", np.uint8)  # the end counts as a character start
    lead = np.flatnonzero((buf & 0xC0) != 0x80)  # bytes that begin a character (not 10xxxxxx)
    i = np.searchsorted(lead, starts, side="right") - 1
    back = lead[np.maximum(i, 0)]
    # a token boundary inside a character moves back to its first byte (UTF-8 characters have <= 4); a
    # decoder restarts at every such byte, so decoding the pieces apart equals decoding the span
    cut = np.append(np.where((i >= 0) & (starts - back < 4), back, starts), len(data))
    return [data[a:b].decode("utf-8", "replace") for a, b in zip(cut[:-1], cut[1:], strict=True)]


def window_strings(toks: np.ndarray, vocab: Vocab) -> np.ndarray:
    """Token strings [m, L] of windows toks [m, L], each window decoded as one span (span_strings).

    Windows of whole-character tokens (nearly all) are a lookup; only the others are decoded.
    """
    strs = vocab.text[toks]  # [m, L]
    for w in np.flatnonzero(~vocab.whole[toks].all(axis=1)):
        strs[w] = span_strings(vocab.raw[toks[w]])
    return strs


def read_vocab(path: str | os.PathLike) -> Vocab:
    """The vocabulary table as a Vocab indexed by token id (ids absent from the table map to '')."""
    vocab = read_parquet(path)
    if not {"token_id", "text"} <= set(vocab.columns):
        raise ValueError(f"vocabulary table {path} needs columns token_id, text")
    text = np.full(int(vocab.token_id.max()) + 1 if len(vocab) else 0, "", dtype=object)
    text[vocab.token_id.to_numpy()] = vocab.text.to_numpy()
    out = Vocab.from_texts(text)
    if "bytes" not in vocab.columns:  # written before the column existed
        log.warning("%s has no `bytes` column: tokens holding part of a character show U+FFFD", path)
        return out
    raw = vocab["bytes"].to_numpy()
    if not all(isinstance(b, bytes) for b in raw):
        raise ValueError(f"vocabulary table {path}: column `bytes` must hold bytes")
    out.raw[vocab.token_id.to_numpy()] = raw
    whole = np.array([_decodes_to(b, t) for b, t in zip(out.raw, text, strict=True)], dtype=bool)
    return Vocab(text, out.raw, whole)


def _decodes_to(raw: bytes, text: str) -> bool:
    """Whether `raw` is valid UTF-8 that decodes to exactly `text`."""
    try:
        return raw.decode("utf-8") == text
    except UnicodeDecodeError:
        return False
