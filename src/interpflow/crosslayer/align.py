"""Aligning two dictionaries' latents one to one: the Hungarian matching on decoder directions (optionally
mixed with activation correlation), the random-pair cosine baseline, and the workflow step that writes
matches.parquet (before sampling)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interpflow.crosslayer.compare import _lazy_embedder, _read_explanations, explanation_similarity
from interpflow.crosslayer.correlation import activation_correlation, paired_correlation
from interpflow.crosslayer.limits import MAX_PAIRS, _check_pairs
from interpflow.defaults import with_defaults
from interpflow.store import write_parquet

__all__ = ["cross_layer", "match_latents", "sae_decoder"]

log = logging.getLogger(__name__)

MATCH_COLUMNS = {
    "latent_a": "int64",
    "latent_b": "int64",
    "cosine": "float64",
    "correlation": "float64",
    "score": "float64",
    "similarity": "float64",
    "layer_a": "int64",
    "layer_b": "int64",
    "distance": "int64",
}


def _unit_rows(x: Any, name: str) -> np.ndarray:
    """Rows of a 2-D array scaled to unit norm, float32 (all-zero rows stay zero)."""
    if hasattr(x, "detach"):  # a torch tensor, e.g. SparseDictionary.decoder_directions()
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"{name} must be a non-empty 2-D array [latents, d], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _ids(latents: Any, n: int, name: str) -> np.ndarray:
    """Latent ids labelling n rows: `latents` if given (checked), else 0..n-1."""
    if latents is None:
        return np.arange(n, dtype=np.int64)
    ids = np.asarray(latents, dtype=np.int64).ravel()
    if len(ids) != n:
        raise ValueError(f"{name} has {len(ids)} ids for {n} rows")
    return ids


def match_latents(
    dec_a: np.ndarray,
    dec_b: np.ndarray,
    *,
    corr: np.ndarray | None = None,
    corr_weight: float = 0.0,
    latents_a: np.ndarray | None = None,
    latents_b: np.ndarray | None = None,
    max_pairs: int = MAX_PAIRS,
) -> pd.DataFrame:
    """One-to-one matching maximising decoder cosine (optionally mixed with activation correlation).

    dec_a [n_a, d], dec_b [n_b, d]: decoder directions (normalised here); corr [n_a, n_b]: Pearson
    correlations, NaN counted as 0 in the score; score = (1 - corr_weight) * cosine + corr_weight * corr.
    Returns min(n_a, n_b) rows sorted by latent_a: latent_a, latent_b, cosine, and with corr also
    correlation and score. Rows are labelled by latents_a / latents_b (default: row numbers).
    """
    from scipy.optimize import linear_sum_assignment

    a, b = _unit_rows(dec_a, "dec_a"), _unit_rows(dec_b, "dec_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"decoder directions differ in dimension: dec_a {a.shape}, dec_b {b.shape}")
    ids_a, ids_b = _ids(latents_a, len(a), "latents_a"), _ids(latents_b, len(b), "latents_b")
    _check_pairs(len(a), len(b), max_pairs, "matching")
    if not 0.0 <= corr_weight <= 1.0:
        raise ValueError(f"corr_weight must be in [0, 1], got {corr_weight}")
    if corr is None and corr_weight > 0:
        raise ValueError("corr_weight > 0 needs the activation correlations (corr)")
    cos = a @ b.T  # [n_a, n_b]
    score = cos
    if corr is not None:
        corr = np.asarray(corr, dtype=np.float32)
        if corr.shape != cos.shape:
            raise ValueError(f"corr has shape {corr.shape}, the decoders make {cos.shape}")
        score = (1 - corr_weight) * cos + corr_weight * np.nan_to_num(corr, nan=0.0)  # [n_a, n_b]
    rows, cols = linear_sum_assignment(score, maximize=True)  # rows ascend
    out = pd.DataFrame(
        {"latent_a": ids_a[rows], "latent_b": ids_b[cols], "cosine": cos[rows, cols].astype(np.float64)}
    )
    if corr is not None:
        out["correlation"] = corr[rows, cols].astype(np.float64)
        out["score"] = score[rows, cols].astype(np.float64)
    return out.sort_values("latent_a", kind="stable", ignore_index=True)


def sae_decoder(sae_dir: str | os.PathLike) -> np.ndarray:
    """The decoder W_dec [width, d_in] of an SAE folder (sae.safetensors), without building the module."""
    from safetensors.numpy import load_file

    path = Path(sae_dir) / "sae.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"missing SAE weights: {path}")
    weights = load_file(str(path))
    if "W_dec" not in weights:
        raise ValueError(f"SAE weights {path} lack W_dec")
    return weights["W_dec"]


def _layer(layer: int | str) -> int:
    """A layer index from an int or a hookpoint name such as resid_post.6."""
    if isinstance(layer, str):
        from interpflow.activations import parse_hookpoint

        return parse_hookpoint(layer).layer
    return int(layer)


def _decoders(decoder_a: Any, decoder_b: Any, ids_a: Any, ids_b: Any) -> tuple[np.ndarray, ...]:
    """Unit decoder rows of both dictionaries (restricted to the given latents) and their ids."""
    out = []
    for dec, ids, name in ((decoder_a, ids_a, "a"), (decoder_b, ids_b, "b")):
        dec = _unit_rows(dec() if callable(dec) else dec, f"decoder_{name}")  # [width, d]
        if ids is None:
            out += [dec, np.arange(len(dec), dtype=np.int64)]
            continue
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if len(ids) == 0 or ids.min() < 0 or ids.max() >= len(dec):
            raise ValueError(f"latents_{name} must be non-empty ids in [0, {len(dec)})")
        out += [dec[ids], ids]
    return tuple(out)


def _match(
    dec_a: np.ndarray, dec_b: np.ndarray, ids_a: np.ndarray, ids_b: np.ndarray,
    shards_a: Sequence, shards_b: Sequence, corr_weight: float, max_pairs: int,
) -> pd.DataFrame:  # fmt: skip
    """Matched pairs with cosine, correlation (NaN without shards) and score."""
    corr = None
    if corr_weight > 0:
        if not (shards_a and shards_b):
            raise ValueError("corr_weight > 0 needs the latent shards of both dictionaries (shards_a/b)")
        corr = activation_correlation(shards_a, shards_b, ids_a, ids_b, max_pairs=max_pairs)
    m = match_latents(
        dec_a,
        dec_b,
        corr=corr,
        corr_weight=corr_weight,
        latents_a=ids_a,
        latents_b=ids_b,
        max_pairs=max_pairs,
    )
    if corr is None:  # the matching used no correlation: compute only the matched pairs'
        have = bool(shards_a and shards_b)
        m["correlation"] = (
            paired_correlation(shards_a, shards_b, m["latent_a"], m["latent_b"]) if have else np.nan
        )
        m["score"] = m["cosine"]
    return m


def cross_layer(
    decoder_a: Any,
    decoder_b: Any,
    matches_out: str | os.PathLike,
    *,
    layer_a: int | str,
    layer_b: int | str,
    explanations_a: Sequence[str | os.PathLike] = (),
    explanations_b: Sequence[str | os.PathLike] = (),
    shards_a: Sequence[str | os.PathLike] = (),
    shards_b: Sequence[str | os.PathLike] = (),
    latents_a: np.ndarray | None = None,
    latents_b: np.ndarray | None = None,
    corr_weight: float = 0.0,
    embed: Callable[[list[str]], np.ndarray] | None = None,
    embedder: str = "all-MiniLM-L6-v2",
    n_random: int = 500,
    seed: int = 0,
    max_pairs: int = MAX_PAIRS,
    similarity_out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Workflow step for one pair of dictionaries: match latents, write matches.parquet, return a summary.

    decoder_a/b: arrays or tensors [width, d] (or callables returning one); latents_a/b: the rows to match
    (default all). Shards give activation correlations (needed when corr_weight > 0); explanation shards
    give the similarity of matched explanations and the random-pair baseline (all pairs optionally written
    to similarity_out). Returns layer_a, layer_b, distance, n_a, n_b, n_matched, mean_cosine,
    mean_cosine_random, mean_correlation, n_explained_pairs, mean_similarity_matched, n_random_pairs,
    mean_similarity_random (NaN where not computable).
    """
    la, lb = _layer(layer_a), _layer(layer_b)
    dec_a, ids_a, dec_b, ids_b = _decoders(decoder_a, decoder_b, latents_a, latents_b)
    matches = _match(dec_a, dec_b, ids_a, ids_b, shards_a, shards_b, corr_weight, max_pairs)
    rng_expl, rng_cos = np.random.default_rng(seed).spawn(2)
    explained = bool(explanations_a and explanations_b)
    sims = explanation_similarity(
        matches,
        _read_explanations(explanations_a),
        _read_explanations(explanations_b),
        embed or _lazy_embedder(embedder),
        n_random=n_random if explained else 0,
        rng=rng_expl,
    )
    matched, rand = sims[sims["pair"] == "matched"], sims.loc[sims["pair"] == "random", "similarity"]
    keys = ["latent_a", "latent_b"]
    matches = matches.merge(matched[[*keys, "similarity"]], on=keys, how="left")
    matches = matches.assign(layer_a=la, layer_b=lb, distance=abs(lb - la))[[*MATCH_COLUMNS]]
    write_parquet(matches.astype(MATCH_COLUMNS), matches_out)
    if similarity_out is not None:
        write_parquet(sims, similarity_out)
    # baseline for the matched cosine: decoder directions of random (a, b) pairs
    ra, rb = rng_cos.integers(len(dec_a), size=n_random), rng_cos.integers(len(dec_b), size=n_random)
    random_cos = np.einsum("nd,nd->n", dec_a[ra], dec_b[rb]).astype(np.float64)
    summary = dict(
        layer_a=la,
        layer_b=lb,
        distance=abs(lb - la),
        n_a=len(dec_a),
        n_b=len(dec_b),
        n_matched=len(matches),
        mean_cosine=float(matches["cosine"].mean()),
        mean_cosine_random=float(random_cos.mean()) if n_random else np.nan,
        mean_correlation=float(matches["correlation"].mean()),
        n_explained_pairs=len(matched),
        mean_similarity_matched=float(matched["similarity"].mean()),
        n_random_pairs=len(rand),
        mean_similarity_random=float(rand.mean()),
    )
    log.info(
        "layers %d-%d: %d matches, mean cosine %.3f (random %.3f), explanation similarity %.3f (random %.3f)",
        *(summary[k] for k in ("layer_a", "layer_b", "n_matched", "mean_cosine", "mean_cosine_random")),
        *(summary[k] for k in ("mean_similarity_matched", "mean_similarity_random")),
    )
    return summary


def match_layers(
    dictionary_a: str | os.PathLike,
    dictionary_b: str | os.PathLike,
    cfg: dict,
    out_path: str | os.PathLike,
    *,
    latents_dirs: Sequence[str | os.PathLike] = (),
) -> dict[str, Any]:
    """Workflow step: align two prepared dictionaries' latents (decoder cosine, optionally correlation)."""
    from interpflow.dictionaries.dictionary import SparseDictionary
    from interpflow.sampling.selection import shard_files

    cfg = with_defaults("cross_layer", cfg)
    da, db = SparseDictionary.load(dictionary_a), SparseDictionary.load(dictionary_b)
    shards_a, shards_b = (shard_files(d) for d in latents_dirs) if latents_dirs else ((), ())
    return cross_layer(
        da.decoder_directions,
        db.decoder_directions,
        out_path,
        layer_a=da.meta.get("hookpoint", 0),
        layer_b=db.meta.get("hookpoint", 0),
        shards_a=shards_a,
        shards_b=shards_b,
        corr_weight=cfg["corr_weight"],
        n_random=cfg["n_random"],
        seed=cfg["seed"],
        max_pairs=cfg["max_cells"],
    )
