"""Pearson correlation of two dictionaries' latent activations over the tokens of one corpus, read from their
sparse latent shards: every pair (to mix into a matching) or the matched pairs only."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from interpflow.crosslayer.limits import MAX_PAIRS, _check_pairs

__all__ = ["activation_correlation", "paired_correlation"]

_CHUNK_CELLS = 1 << 24  # cells of one dense block of the correlation product (128 MiB in float64)


def _shard_attrs(path: str | os.PathLike) -> dict[str, int]:
    """A latent shard's range and corpus attrs, without reading its arrays."""
    import h5py

    if not Path(path).is_file():
        raise FileNotFoundError(f"missing latent shard: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:  # h5py's message does not name the file
        raise ValueError(f"cannot read latent shard {path}: {exc}") from exc
    with f:
        keys = ("latent_start", "latent_end", "n_seq", "ctx_len", "n_tokens")
        missing = [k for k in keys if k not in f.attrs]
        if missing:
            raise ValueError(f"latent shard {path} lacks attrs {', '.join(missing)}")
        return {k: int(f.attrs[k]) for k in keys}


def _latent_rows(shard_paths: Sequence[str | os.PathLike], latents: Any) -> tuple[Any, dict[str, int]]:
    """CSR [len(latents), n_seq * ctx_len] (float64) of the latents' activations, and the corpus attrs."""
    from scipy import sparse

    from interpflow.latents import read_shard

    latents = np.asarray(latents, dtype=np.int64).ravel()
    parts: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(latents)
    corpus: dict[str, int] | None = None
    for path in shard_paths:
        attrs = _shard_attrs(path)
        here = {k: attrs[k] for k in ("n_seq", "ctx_len", "n_tokens")}
        if corpus is not None and here != corpus:
            raise ValueError(f"latent shard {path} has corpus attrs {here}, the other shards {corpus}")
        corpus = here
        inside = np.flatnonzero((latents >= attrs["latent_start"]) & (latents < attrs["latent_end"]))
        if inside.size:
            shard = read_shard(path)  # one read per shard, not per latent
            for i in inside:
                parts[i] = shard.latent(int(latents[i]))
    if corpus is None:
        raise ValueError("no latent shards given")
    if missing := [int(latents[i]) for i, p in enumerate(parts) if p is None]:
        raise ValueError(f"latents {missing[:10]} are in none of the {len(shard_paths)} shards given")
    counts = np.array([len(p[0]) for p in parts], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    indices = np.concatenate([p[0] for p in parts]).astype(np.int64) if len(parts) else np.zeros(0, np.int64)
    data = np.concatenate([p[1] for p in parts]).astype(np.float64) if len(parts) else np.zeros(0)
    shape = (len(latents), corpus["n_seq"] * corpus["ctx_len"])
    return sparse.csr_array((data, indices, indptr), shape=shape), corpus


def _moments(x: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean and standard deviation over n tokens of a sparse matrix (absent entries are zeros)."""
    mean = np.asarray(x.sum(axis=1)).ravel() / n
    var = np.asarray(x.multiply(x).sum(axis=1)).ravel() / n - mean**2
    return mean, np.sqrt(np.maximum(var, 0.0))


def _load_pair(shards_a, shards_b, latents_a, latents_b, n_tokens: int | None) -> tuple[Any, Any, int]:
    """Both sides' sparse activation rows, checked to index the same tokens, and the token count."""
    xa, ca = _latent_rows(shards_a, latents_a)
    xb, cb = _latent_rows(shards_b, latents_b)
    if ca != cb:
        raise ValueError(f"the two dictionaries' shards come from different corpora: {ca} vs {cb}")
    n = ca["n_tokens"] if n_tokens is None else int(n_tokens)
    if n < 2:
        raise ValueError(f"n_tokens must be >= 2 for a correlation, got {n}")
    return xa, xb, n


def activation_correlation(
    shard_paths_a: Sequence[str | os.PathLike],
    shard_paths_b: Sequence[str | os.PathLike],
    latents_a: Any,
    latents_b: Any,
    n_tokens: int | None = None,
    *,
    max_pairs: int = MAX_PAIRS,
) -> np.ndarray:
    """Pearson correlation [len(latents_a), len(latents_b)] (float32) of latent activations over tokens.

    Read from the sparse shards of two dictionaries on the same corpus; tokens a latent does not store count
    as 0, and n_tokens (default: the shards' non-BOS token count) is the number of observations. NaN where a
    latent never fires. The product is computed in row blocks, never as a dense token x latent matrix.
    """
    from tqdm.auto import tqdm

    n_a, n_b = len(np.ravel(latents_a)), len(np.ravel(latents_b))
    _check_pairs(n_a, n_b, max_pairs, "activation correlation")
    xa, xb, n = _load_pair(shard_paths_a, shard_paths_b, latents_a, latents_b, n_tokens)
    mean_a, std_a = _moments(xa, n)
    mean_b, std_b = _moments(xb, n)
    xb_t = xb.T.tocsc()  # [n_pos, n_b]
    out = np.empty((n_a, n_b), dtype=np.float32)
    step = max(1, _CHUNK_CELLS // max(n_b, 1))
    for lo in tqdm(range(0, n_a, step), desc="correlation", unit="block", disable=n_a <= step):
        hi = min(lo + step, n_a)
        sxy = (xa[lo:hi] @ xb_t).toarray()  # [block, n_b]
        cov = sxy / n - np.outer(mean_a[lo:hi], mean_b)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = cov / np.outer(std_a[lo:hi], std_b)
        out[lo:hi] = np.where(np.isfinite(r), np.clip(r, -1, 1), np.nan)
    return out


def paired_correlation(
    shard_paths_a: Sequence[str | os.PathLike],
    shard_paths_b: Sequence[str | os.PathLike],
    latents_a: Any,
    latents_b: Any,
    n_tokens: int | None = None,
) -> np.ndarray:
    """Pearson correlation [n] of latents_a[i] with latents_b[i] only (the matched pairs), as above."""
    if len(np.ravel(latents_a)) != len(np.ravel(latents_b)):
        raise ValueError("paired_correlation needs as many latents_a as latents_b")
    xa, xb, n = _load_pair(shard_paths_a, shard_paths_b, latents_a, latents_b, n_tokens)
    mean_a, std_a = _moments(xa, n)
    mean_b, std_b = _moments(xb, n)
    sxy = np.asarray(xa.multiply(xb).sum(axis=1)).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (sxy / n - mean_a * mean_b) / (std_a * std_b)
    return np.where(np.isfinite(r), np.clip(r, -1, 1), np.nan)
