"""Hard negatives: non-activating windows that resemble a latent's activating ones (`hard_negatives`).

Method cooccurrence scores windows by where the latents that co-occur most with the latent fire (from the
window x latent incidence of all shards); method lexical by the tokens the latent fires on most.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from interpflow.defaults import with_defaults
from interpflow.latents import read_shard

if TYPE_CHECKING:
    from scipy import sparse

log = logging.getLogger(__name__)

HARD_METHODS = ("none", "cooccurrence", "lexical")


def _hard_settings(cfg: dict, n_nonactivating: int) -> tuple[str, int, int]:
    """Read and check cfg['hard_negatives']: (method, n windows per latent, top_k latents or tokens)."""
    hard = with_defaults("samplers", cfg)["hard_negatives"]
    method = hard["method"]
    if method not in HARD_METHODS:
        raise ValueError(f"hard_negatives.method must be one of {HARD_METHODS}, got {method!r}")
    n, top_k = hard["n"], hard["top_k"]
    n = n_nonactivating if n is None else n
    for key, value, low in (("n", n, 0), ("top_k", top_k, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"hard_negatives.{key} must be an integer >= {low}, got {value!r}")
    return method, (0 if method == "none" else n), top_k


def _hardest(score: np.ndarray, used: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """The n windows of highest positive score that are not in `used` (ties broken at random), sorted."""
    cand = np.setdiff1d(np.flatnonzero(score > 0), used)
    order = np.lexsort((rng.random(cand.size), -score[cand]))
    return np.sort(cand[order[:n]])


def cooccurrence_scores(
    incidence: sparse.csc_matrix, latent: int, active: np.ndarray, top_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hard-negative score of every window for `latent` by co-occurrence, and the latents it used.

    Latents are ranked by the Jaccard index of their window set B with this latent's window set A,
    |A & B| / |A | B| (raw counts would favour latents that fire everywhere); a window's score is the summed
    Jaccard index of the top_k latents that fire in it.
    """
    x = np.zeros(incidence.shape[0], np.float32)
    x[active] = 1.0
    inter = np.asarray(incidence.T @ x, dtype=np.float64)  # [n_latents]: windows shared with A
    union = active.size + np.diff(incidence.indptr) - inter
    jac = inter / np.maximum(union, 1)
    jac[latent] = 0.0
    top = np.argsort(-jac, kind="stable")[:top_k]
    top = top[jac[top] > 0]
    return np.asarray(incidence[:, top] @ jac[top], dtype=np.float64), top  # [n_windows]


def lexical_scores(
    tokens_w: np.ndarray, pos: np.ndarray, vals: np.ndarray, top_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hard-negative score of every window (tokens_w [n_windows, L]) by shared tokens, and the token ids used.

    The top_k token ids carrying most of the latent's activation mass (the sum of its activations on each
    id); a window's score is the summed mass share of those ids that occur in it.
    """
    ids = tokens_w.ravel()[pos]  # token id at each nonzero (flat token index = window * L + offset)
    mass = np.bincount(ids, weights=vals.astype(np.float64))
    top = np.argsort(-mass, kind="stable")[:top_k]
    top = top[mass[top] > 0]
    score = np.zeros(tokens_w.shape[0])
    for t, share in zip(top, mass[top] / mass.sum(), strict=True):
        score += share * (tokens_w == t).any(axis=1)
    return score, top


def _hard_scores(
    method: str,
    latent: int,
    pos: np.ndarray,
    vals: np.ndarray,
    tokens_w: np.ndarray,
    incidence: sparse.csc_matrix | None,
    top_k: int,
) -> np.ndarray | None:
    """Every window's hard-negative score for `latent` under `method` (None when hard negatives are off)."""
    if method == "none":
        return None
    if method == "lexical":
        score, used = lexical_scores(tokens_w, pos, vals, top_k)
    else:
        active = np.unique(pos.astype(np.int64) // tokens_w.shape[1])
        score, used = cooccurrence_scores(incidence, latent, active, top_k)
    log.debug("latent %d: %s hard negatives from %s", latent, method, used.tolist())
    return score


def window_incidence(shard_paths: Sequence[str | os.PathLike], example_ctx_len: int) -> sparse.csc_matrix:
    """Which latents fire in which window: bool CSC [n_windows, n_latents] from shards in latent order."""
    from scipy import sparse

    indptr, indices, end, dims = [np.zeros(1, np.int64)], [], 0, None
    for path in shard_paths:
        shard = read_shard(path)
        if shard.latent_start != end:
            raise ValueError(f"latent shard {path} starts at latent {shard.latent_start}, expected {end}")
        if dims not in (None, (shard.n_seq, shard.ctx_len)):
            raise ValueError(
                f"latent shard {path} has (n_seq, ctx_len) {shard.n_seq, shard.ctx_len}, not {dims}"
            )
        dims, end = (shard.n_seq, shard.ctx_len), shard.latent_end
        # positions ascend within a latent, so its window ids do too: keep the first of each run
        wid = (shard.positions // example_ctx_len).astype(np.int32)
        new = np.ones(wid.size, bool)
        new[1:] = wid[1:] != wid[:-1]
        new[shard.offsets[:-1][np.diff(shard.offsets) > 0]] = True  # a latent's first entry
        kept = np.concatenate([[0], np.cumsum(new)])[shard.offsets]  # [n_latents + 1]
        indptr.append(indptr[-1][-1] + kept[1:])
        indices.append(wid[new])
    if dims is None:
        raise ValueError("window_incidence needs at least one latent shard")
    if dims[1] % example_ctx_len:
        raise ValueError(f"example_ctx_len ({example_ctx_len}) must divide the context length {dims[1]}")
    idx = np.concatenate(indices)
    shape = (dims[0] * (dims[1] // example_ctx_len), end)
    return sparse.csc_matrix((np.ones(idx.size, bool), idx, np.concatenate(indptr)), shape=shape)
