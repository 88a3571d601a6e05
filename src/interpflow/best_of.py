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
from interpflow.scoring.judge import score_latents

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
    """Per latent, the candidate whose explanation the judge scores best on `heldout` (SELECTED_COLUMNS);
    its cost columns hold every candidate's own cost plus every judge call made for the latent."""
    judge = {"kind": select["by"], "name": f"select-{select['by']}", "seed": seed}
    names = list(candidates)
    tables = {n: t.set_index("latent", drop=False) for n, t in candidates.items()}
    latents = tables[names[0]].index
    aurocs, cost = [], pd.DataFrame(0.0, index=latents, columns=list(USAGE))
    for name in names:
        _, metrics = score_latents(heldout, candidates[name], judge, client)
        m = metrics.set_index("latent").reindex(latents)
        aurocs.append(m["auroc"].where(m["status"] == "ok").astype(float).to_numpy())
        cost += m[list(USAGE)].fillna(0) + tables[name][list(USAGE)].reindex(latents).fillna(0)
    filled = np.nan_to_num(np.stack(aurocs, axis=1), nan=-np.inf)  # [latent, candidate]
    best = np.where(np.isfinite(filled).any(axis=1), filled.argmax(axis=1), 0)  # argmax: first of ties
    chosen = np.array(names, dtype=object)[best]
    picked = filled[np.arange(len(best)), best]
    out = pd.concat([tables[n].loc[latents[chosen == n]] for n in names]).reindex(latents)
    out = out.assign(**{k: cost[k] for k in USAGE}, candidate=chosen,
                     selection_auroc=np.where(np.isfinite(picked), picked, np.nan))  # fmt: skip
    out = out.reset_index(drop=True).reindex(columns=list(SELECTED_COLUMNS)).astype(SELECTED_COLUMNS)
    log.info(
        "best-of %s on held-out train windows: chosen %s", names, out["candidate"].value_counts().to_dict()
    )
    return out
