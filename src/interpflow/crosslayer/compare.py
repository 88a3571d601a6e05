"""Comparing matched latents' explanations: cosine similarity of the embedded explanations of matched pairs,
against random pairs of explained latents (the baseline), and the workflow step run after explaining."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from interpflow.defaults import with_defaults
from interpflow.store import read_parquet, write_parquet

__all__ = ["explanation_similarity"]

log = logging.getLogger(__name__)

SIMILARITY_COLUMNS = {
    "pair": "object",
    "latent_a": "int64",
    "latent_b": "int64",
    "explanation_a": "object",
    "explanation_b": "object",
    "similarity": "float64",
}


def _ok_explanations(expl: pd.DataFrame, name: str) -> pd.Series:
    """latent -> explanation text, for the rows with status ok and a non-empty explanation."""
    missing = {"latent", "explanation", "status"} - set(expl.columns)
    if missing:
        raise ValueError(f"{name} lacks columns {sorted(missing)}")
    ok = expl[(expl["status"] == "ok") & expl["explanation"].notna()]
    ok = ok[(ok["explanation"].astype(str).str.strip() != "") & ~ok["latent"].duplicated()]
    return pd.Series(ok["explanation"].astype(str).to_numpy(), index=ok["latent"].to_numpy(dtype=np.int64))


def _random_pairs(
    ok_a: np.ndarray, ok_b: np.ndarray, matched: set[tuple[int, int]], n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n random (a, b) pairs of explained latents, drawn with replacement, none of them a matched pair."""
    got_a, got_b = np.zeros(0, np.int64), np.zeros(0, np.int64)
    for _ in range(100):  # rejection: ends early only when nearly every candidate pair is matched
        if len(got_a) >= n or not len(ok_a) or not len(ok_b):
            break
        a, b = rng.choice(ok_a, n - len(got_a)), rng.choice(ok_b, n - len(got_a))
        keep = np.array([(int(x), int(y)) not in matched for x, y in zip(a, b, strict=True)], dtype=bool)
        got_a, got_b = np.concatenate([got_a, a[keep]]), np.concatenate([got_b, b[keep]])
    if len(got_a) < n:
        log.warning("only %d of %d random explanation pairs could be drawn", len(got_a), n)
    return got_a, got_b


def explanation_similarity(
    pairs: pd.DataFrame,
    expl_a: pd.DataFrame,
    expl_b: pd.DataFrame,
    embed: Callable[[list[str]], np.ndarray],
    *,
    n_random: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Cosine similarity of embedded explanations for matched pairs and for random pairs (the baseline).

    One row per pair (`pair` = "matched" or "random") with latent_a, latent_b, explanation_a, explanation_b,
    similarity. Matched pairs appear only when both latents have an ok explanation; random pairs draw
    n_random (a, b) from the explained latents of each side, with replacement, excluding matched pairs.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError("rng must be a numpy.random.Generator (seeded by the caller)")
    if n_random < 0:
        raise ValueError(f"n_random must be >= 0, got {n_random}")
    text_a, text_b = _ok_explanations(expl_a, "expl_a"), _ok_explanations(expl_b, "expl_b")
    la, lb = pairs["latent_a"].to_numpy(np.int64), pairs["latent_b"].to_numpy(np.int64)
    both = np.isin(la, text_a.index) & np.isin(lb, text_b.index)
    ra, rb = _random_pairs(
        text_a.index.to_numpy(),
        text_b.index.to_numpy(),
        set(zip(la.tolist(), lb.tolist(), strict=True)),
        n_random,
        rng,
    )
    out = pd.DataFrame(
        {
            "pair": ["matched"] * int(both.sum()) + ["random"] * len(ra),
            "latent_a": np.concatenate([la[both], ra]),
            "latent_b": np.concatenate([lb[both], rb]),
        }
    )
    out["explanation_a"] = text_a.reindex(out["latent_a"]).to_numpy(dtype=object)
    out["explanation_b"] = text_b.reindex(out["latent_b"]).to_numpy(dtype=object)
    out["similarity"] = np.nan
    if len(out):
        # each distinct text is embedded once
        both_texts = np.concatenate([out["explanation_a"], out["explanation_b"]]).astype(str)
        texts, idx = np.unique(both_texts, return_inverse=True)
        e = np.asarray(embed(list(texts)), dtype=np.float64)  # [n_texts, dim]
        if e.ndim != 2 or len(e) != len(texts):
            raise ValueError(f"embed returned shape {e.shape} for {len(texts)} texts")
        e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        ia, ib = idx[: len(out)], idx[len(out) :]
        out["similarity"] = np.einsum("nd,nd->n", e[ia], e[ib])
    return out.astype(SIMILARITY_COLUMNS)


def _lazy_embedder(name: str) -> Callable[[list[str]], np.ndarray]:
    """An embed function that loads the sentence embedder on first use only."""
    from interpflow.scoring.embedding import embed, load_embedder

    model = None

    def run(texts: list[str]) -> np.ndarray:
        nonlocal model
        model = model if model is not None else load_embedder(name, "cpu")
        return embed(model, texts, batch_size=64)

    return run


def _read_explanations(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """All explanation shards of one dictionary as one table."""
    if not paths:
        return pd.DataFrame({"latent": [], "explanation": [], "status": []})
    return pd.concat([read_parquet(p) for p in paths], ignore_index=True)


def compare_explanations(
    matches_path: str | os.PathLike,
    explanations_a: Sequence[str | os.PathLike],
    explanations_b: Sequence[str | os.PathLike],
    cfg: dict,
    out_path: str | os.PathLike,
) -> pd.DataFrame:
    """Workflow step: embedding similarity of matched pairs' explanations, and of random pairs."""
    cfg = with_defaults("cross_layer", cfg)
    sims = explanation_similarity(
        read_parquet(matches_path),
        _read_explanations(explanations_a),
        _read_explanations(explanations_b),
        _lazy_embedder(cfg["embedding_model"]),
        n_random=cfg["n_random"],
        rng=np.random.default_rng(cfg["seed"]),
    )
    write_parquet(sims, out_path)
    matched = sims["pair"] == "matched"
    log.info("%d explained matched pairs, %d random pairs", matched.sum(), (~matched).sum())
    return sims
