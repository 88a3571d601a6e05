"""Per-latent classification metrics of a judge's predictions (balanced accuracy, F1, AUROC)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

HEAD_COLUMNS = {
    "latent": "int64",
    "scorer": "object",
    "kind": "object",
    "status": "object",
    "n": "int64",
    "n_failed": "int64",
    "score": "float64",
}
USAGE_COLUMNS = {
    "prompt_tokens": "int64",
    "completion_tokens": "int64",
    "cached_tokens": "int64",
    "cost_usd": "float64",
}
NO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0, "cost_usd": 0.0}


def metric_columns(*metrics: str) -> dict[str, str]:
    """Every scorer's metrics table: the shared head, its own float metrics, then token usage and cost."""
    return HEAD_COLUMNS | dict.fromkeys(metrics, "float64") | USAGE_COLUMNS


METRIC_COLUMNS = metric_columns("balanced_accuracy", "f1", "precision", "recall", "auroc") | {
    "score_metric": "object"  # which metric `score` is: "auroc" or "balanced_accuracy"
}
_SCORES = ("balanced_accuracy", "f1", "precision", "recall", "auroc")
_USAGE = ("prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd")


def binary_metrics(truth: np.ndarray, pred: np.ndarray, p_yes: np.ndarray | None = None) -> dict:
    """Balanced accuracy, F1, precision, recall and AUROC (from p_yes, NaN if unusable) of 0/1 predictions."""
    from sklearn.metrics import (
        balanced_accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    truth, pred = np.asarray(truth, dtype=bool), np.asarray(pred, dtype=bool)
    if truth.shape != pred.shape:
        raise ValueError(f"truth has shape {truth.shape} but predictions {pred.shape}")
    out = dict.fromkeys(_SCORES, float("nan")) | {"n": int(truth.size)}
    if truth.size == 0:
        return out
    with warnings.catch_warnings():  # one class only: sklearn warns but the value is still defined
        warnings.simplefilter("ignore")
        out["balanced_accuracy"] = float(balanced_accuracy_score(truth, pred))
    out["f1"] = float(f1_score(truth, pred, zero_division=0))
    out["precision"] = float(precision_score(truth, pred, zero_division=0))
    out["recall"] = float(recall_score(truth, pred, zero_division=0))
    if p_yes is not None:
        p = np.asarray(p_yes, dtype=np.float64)
        if p.shape == truth.shape and np.isfinite(p).all() and 0 < truth.sum() < truth.size:
            out["auroc"] = float(roc_auc_score(truth, p))
    return out


def _usage_per_latent(usage: pd.DataFrame | None, latents: pd.Index) -> pd.DataFrame:
    """Prompt/completion tokens and cost summed per latent (cost NaN if any prompt's cost is unknown)."""
    if usage is None or usage.empty:
        return pd.DataFrame(
            {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0, "cost_usd": np.nan},
            index=latents,
        )
    usage = usage.assign(cached_tokens=usage.get("cached_tokens", 0))
    g = usage.groupby("latent")
    out = g[["prompt_tokens", "completion_tokens", "cached_tokens"]].sum()
    out["cost_usd"] = g["cost_usd"].agg(lambda s: s.sum() if s.notna().all() else np.nan)
    out = out.reindex(latents)
    return out.fillna({"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0})


def _headline(m: dict) -> dict:
    """The score and its name: AUROC where defined, else balanced accuracy."""
    use = "auroc" if np.isfinite(m["auroc"]) else "balanced_accuracy"
    return {"score": m[use], "score_metric": use}


def ranking(g: pd.DataFrame) -> np.ndarray:
    """What AUROC ranks a latent's judged windows by: the log-odds of Yes under the explanation minus
    under the neutral description where every window has both (calibrated slots), else P(yes)."""
    p = g["p_yes"].to_numpy(dtype=np.float64)
    if "p_yes_neutral" not in g:
        return p
    q = g["p_yes_neutral"].to_numpy(dtype=np.float64)
    if len(q) == 0 or not np.isfinite(q).all():
        return p
    logit = lambda x: np.log(x) - np.log1p(-x)  # noqa: E731
    eps = np.finfo(np.float64).eps  # a probability that rounded to 0 or 1 still ranks
    return logit(np.clip(p, eps, 1 - eps)) - logit(np.clip(q, eps, 1 - eps))


def latent_metrics(
    predictions: pd.DataFrame, scorer: str, usage: pd.DataFrame | None = None, kind: str = "detection"
) -> pd.DataFrame:
    """One metrics row per latent of `predictions`: metrics over its successful rows, failures counted.

    `usage` has one row per prompt with `latent`, `prompt_tokens`, `completion_tokens`, `cost_usd`.
    The headline `score` is the AUROC of P(yes) (calibrated: see `ranking`) where the judge gave one for
    every scored window, else the balanced accuracy (the paper's metric): a small judge that says yes to
    almost everything has a balanced accuracy of 0.5 whatever the explanation, while the ranking of its
    P(yes) still tells windows apart.
    Which one it is shows in `score_metric`.
    """
    rows = []
    for lat, g in predictions.groupby("latent", sort=True):
        ok = (g["status"] == "ok").to_numpy()
        truth = g["activating"].to_numpy(dtype=bool)[ok]
        pred = g["prediction"].to_numpy(dtype=bool, na_value=False)[ok]
        m = binary_metrics(truth, pred, ranking(g[ok]))
        # nothing scored: the latent carries its most common failure instead of "ok"
        status = "ok" if ok.any() else str(g.loc[~ok, "status"].value_counts().index[0])
        if ok.any() and (truth.all() or not truth.any()):
            status = "constant_truth"  # one class only (e.g. a dense neuron: no silent window): no test
        rows.append(
            dict(latent=int(lat), scorer=scorer, kind=kind, status=status, n_failed=int((~ok).sum()), **m)
            | _headline(m)
        )
    out = pd.DataFrame(rows, columns=[c for c in METRIC_COLUMNS if c not in _USAGE])
    cost = _usage_per_latent(usage, pd.Index(out["latent"], name="latent"))
    out = out.join(cost, on="latent")
    return out[list(METRIC_COLUMNS)].astype(METRIC_COLUMNS)
