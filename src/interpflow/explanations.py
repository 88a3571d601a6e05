"""The explanations table every explainer writes (one row per latent of a shard) and its empty row.

LLM explainers (interpflow.explain), the baselines (interpflow.baselines), the file explainer and the
best-of selection (interpflow.best_of, which adds `candidate` and `selection_auroc`) all write it, so every
scorer reads one schema.
"""

from __future__ import annotations

EXPLANATION_COLUMNS = {
    "latent": "int64",
    "explanation": "object",
    "status": "object",
    "error": "object",
    "completion": "object",
    "model": "object",
    "prompt_tokens": "int64",
    "completion_tokens": "int64",
    "cached_tokens": "int64",
    "cost_usd": "float64",
    "latency_s": "float64",
    "cached": "bool",
}


def explanation_row(latent: int, model: str, **kw) -> dict:
    """One explanations row with the defaults of a latent that made no LLM call (a skipped one)."""
    row = dict(
        latent=int(latent),
        explanation=None,
        status="skipped",
        error="",
        completion=None,
        model=model,
        prompt_tokens=0,
        completion_tokens=0,
        cached_tokens=0,
        cost_usd=0.0,
        latency_s=0.0,
        cached=False,
    )
    return row | kw
