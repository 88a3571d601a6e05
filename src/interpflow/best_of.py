"""Best-of explanations (issue 13): each latent's candidate explanations judged on held-out train windows.

A small explainer often names a theme where the latent fires on one token (a comma, a digit): on the planted
benchmark Qwen2.5-Coder-1.5B named 3 of 8 planted properties from 10 examples (benchmarks/explainers.json),
and adding the active tokens' counts to its prompt did not help. With the explainer option `select`, the step
also describes the windows the explainer was shown by their top tokens (interpflow.baselines.top_tokens), then
the explainer's own model judges the latent's *held-out train* windows under each candidate, with the
detection or fuzzing prompt of the scorers, and keeps the candidate of larger AUROC (ties: the earlier in
`candidates`). The held-out windows are the activating train windows not shown to the explainer (so
`max_examples` must be below the sampler's `n_train`) and the sampler's non-activating train windows
(`n_train_nonactivating`). Test windows are never read, so the scorers' later scores stay held out; the judge
calls' tokens and cost are added to the chosen row's.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from interpflow.baselines import explain_top_tokens
from interpflow.explanations import EXPLANATION_COLUMNS
from interpflow.scorers import score_latents

log = logging.getLogger(__name__)

CANDIDATES = ("llm", "top-tokens")
SELECTED_COLUMNS = EXPLANATION_COLUMNS | {"candidate": "object", "selection_auroc": "float64"}
USAGE = ("prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd")


def check_select(select: dict) -> dict:
    """The `select` options with their defaults: candidates (llm first), by (the judge prompt), n_tokens."""
    # by fuzzing: on the planted benchmark it kept the better candidate far more often than detection
    # (benchmarks/explainers.json: 7 vs 4 of 8 explanations naming their property)
    out = {"candidates": ["llm", "top-tokens"], "by": "fuzzing", "n_tokens": 5} | dict(select)
    if unknown := sorted(set(out) - {"candidates", "by", "n_tokens"}):
        raise ValueError(f"explainer option select has unknown keys {unknown}")
    cands = list(out["candidates"])
    if len(cands) < 2 or len(set(cands)) != len(cands) or not set(cands) <= set(CANDIDATES):
        raise ValueError(
            f"explainer option select.candidates must be two or more of {CANDIDATES}, got {cands}"
        )
    if out["by"] not in ("detection", "fuzzing"):
        raise ValueError(f"explainer option select.by must be detection or fuzzing, got {out['by']!r}")
    return out | {"candidates": cands}


def _is_shown(examples: pd.DataFrame, shown: pd.MultiIndex) -> np.ndarray:
    return pd.MultiIndex.from_frame(examples[["latent", "example_id"]]).isin(shown)


def heldout_windows(examples: pd.DataFrame, shown: pd.MultiIndex) -> pd.DataFrame:
    """The train windows not shown to the explainer (`shown`: their latent, example_id), relabelled as the
    split the scorers read, so the judge scores them exactly as it scores test windows later."""
    keep = (examples["split"] == "train").to_numpy() & ~_is_shown(examples, shown)
    return examples[keep].assign(split="test")


def candidates_of(llm: pd.DataFrame, examples: pd.DataFrame, latents: pd.DataFrame, shown: pd.MultiIndex,
                  select: dict) -> dict[str, pd.DataFrame]:  # fmt: skip
    """Each candidate's explanations table: the LLM's, and the top tokens of the windows it was shown."""
    out = {"llm": llm}
    if "top-tokens" in select["candidates"]:
        seen = examples[_is_shown(examples, shown) | ~examples["activating"].to_numpy(dtype=bool)]
        out["top-tokens"] = explain_top_tokens(seen, latents, {"n_tokens": int(select["n_tokens"])})
    return {name: out[name] for name in select["candidates"]}


def select_best(candidates: dict[str, pd.DataFrame], heldout: pd.DataFrame, select: dict, client,
                seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """Per latent, the candidate whose explanation the judge scores best on `heldout` (SELECTED_COLUMNS)."""
    judge = {"kind": select["by"], "name": f"select-{select['by']}", "seed": seed}
    aurocs, usage = {}, {}
    for name, table in candidates.items():
        _, metrics = score_latents(heldout, table, judge, client)
        m = metrics.set_index("latent")
        aurocs[name] = m["auroc"].where(m["status"] == "ok").astype(float)
        usage[name] = m.reindex(columns=list(USAGE)).fillna(0)
    first = next(iter(candidates.values())).set_index("latent", drop=False)
    names = list(candidates)
    table = pd.DataFrame({n: aurocs[n].reindex(first.index) for n in names})  # [latent, candidate]
    filled = table.fillna(-np.inf).to_numpy()
    best = np.where(np.isfinite(filled).any(axis=1), filled.argmax(axis=1), 0)  # argmax: first of ties
    rows = []
    for i, lat in enumerate(first.index):
        chosen = names[best[i]]
        row = candidates[chosen].set_index("latent", drop=False).loc[lat].to_dict()
        for key in USAGE:  # what the selection cost, on the row that paid for it
            row[key] = first.loc[lat, key] + sum(usage[n][key].get(lat, 0) for n in names)
        rows.append(row | {"candidate": chosen, "selection_auroc": table.iloc[i, best[i]]})
    out = pd.DataFrame(rows, columns=list(SELECTED_COLUMNS)).astype(SELECTED_COLUMNS)
    log.info(
        "best-of %s on held-out train windows: chosen %s", names, out["candidate"].value_counts().to_dict()
    )
    return out
