"""Simulation scorer: an LLM predicts every token's activation from the explanation (Bills et al. 2023).

Two methods, recorded per prediction row (`method`):
- "slots", the "all at once" method of Paulo et al. 2024 (App. D) and OpenAI's automated-interpretability:
  one prompt per few windows, the expected activation at each token read from the simulator's digit
  distribution at a placeholder slot, from one evaluation (scoring.simulation_slots). It needs prompt
  logprobs, which the in-process local models give.
- "reply", the fallback for providers without them: the simulator writes the numbers
  (interpflow.scoring.simulation_reply).
A latent's score is the Pearson correlation between predicted and true activations over all tokens of its
simulated windows pooled (true activations scaled 0-10 by the latent's max over its test windows).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from interpflow.defaults import with_defaults
from interpflow.scoring.common import choose_method, run_llm_scorer, scorable_latents
from interpflow.scoring.metrics import metric_columns
from interpflow.scoring.simulation_reply import (
    MAX_VALUE,
    MIN_TOP_LOGPROBS,
    read_reply,
    reply_budget,
    reply_messages,
)
from interpflow.scoring.simulation_slots import CANDIDATES, expected_activations, slot_messages
from interpflow.statuses import llm_failure

log = logging.getLogger(__name__)

KIND = "simulation"
PREDICTION_COLUMNS = {
    "latent": "int64",
    "example_id": "int64",
    "activating": "bool",
    "predicted": "object",  # list float32 per token, None on failure
    "true": "object",  # list float32 per token, activations scaled 0-10 by the latent's max
    "expected": "bool",  # predicted holds expected values from logprobs (else the written integers)
    "method": "object",  # "slots" or "reply"
    "prompt_index": "int64",
    "position": "int64",
    "status": "object",
    "error": "object",
}
METRIC_COLUMNS = metric_columns("correlation", "correlation_activating")


def _check_cfg(cfg: dict) -> tuple[int, str]:
    """Validate the scorer options; return (examples_per_prompt, method)."""
    cfg = with_defaults("scorers", cfg)
    per_prompt = int(cfg["examples_per_prompt"])
    if per_prompt < 1:
        raise ValueError(f"scorer option examples_per_prompt must be >= 1, got {per_prompt}")
    for key in ("max_activating", "max_nonactivating"):
        if cfg.get(key) is not None and int(cfg[key]) < 0:
            raise ValueError(f"scorer option {key} must be >= 0, got {cfg[key]}")
    return per_prompt, cfg["method"]


def build_prompts(
    examples: pd.DataFrame, explanations: pd.DataFrame, cfg: dict, method: str = "reply"
) -> tuple[list, list[tuple[int, int, pd.DataFrame, list[np.ndarray]]], dict[int, str]]:
    """Simulator prompts for every latent with an "ok" explanation.

    Returns the requests (reply: chat messages; slots: (messages, slot offsets)); per request (latent,
    prompt_index, its windows in order, their true activations scaled 0-10 by the latent's max over its test
    windows); the status of each latent that gets no prompt.
    """
    per_prompt, _ = _check_cfg(cfg)
    make = slot_messages if method == "slots" else reply_messages
    requests, meta, unscored = [], [], {}
    for lat, expl, ex, _ in scorable_latents(examples, explanations, cfg, unscored):
        acts = [np.asarray(a, dtype=np.float64) for a in ex["acts"]]
        top = max(float(a.max(initial=0.0)) for a in acts)
        true = [(MAX_VALUE * a / top if top > 0 else 0 * a).astype(np.float32) for a in acts]
        for p, s in enumerate(range(0, len(ex), per_prompt)):
            chunk = ex.iloc[s : s + per_prompt]
            requests.append(make(expl, [list(map(str, t)) for t in chunk["token_strs"]]))
            meta.append((lat, p, chunk, true[s : s + per_prompt]))
    return requests, meta, unscored


def _read_completion(c, counts: list[int], method: str) -> list[tuple[np.ndarray | None, bool, str]]:
    """Per window (predicted [T] or None, expected values?, error) from one completion."""
    if c.status != "ok":
        return [(None, False, c.error or "llm error")] * len(counts)
    if method == "reply":
        return read_reply(c.text, c.logprobs, counts)
    return [(ev, True, "") for ev in expected_activations(c.slot_logprobs, counts)]


def _read_simulation(
    lat: int, p: int, ex: pd.DataFrame, true: list[np.ndarray], c, method: str
) -> pd.DataFrame:
    """Prediction rows of one prompt's windows from the simulator's completion."""
    got = _read_completion(c, [len(t) for t in true], method)
    failed = llm_failure(c.status) if c.status != "ok" else "parse_error"
    return pd.DataFrame(
        {
            "latent": lat,
            "example_id": ex["example_id"].to_numpy(),
            "activating": ex["activating"].to_numpy(dtype=bool),
            "predicted": [g[0] for g in got],
            "true": true,
            "expected": [g[1] for g in got],
            "method": method,
            "prompt_index": p,
            "position": np.arange(len(ex)),
            "status": ["ok" if g[0] is not None else failed for g in got],
            "error": [g[2] for g in got],
        }
    )


def pearson(pred: np.ndarray, true: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is empty or constant."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if pred.size < 2 or np.ptp(pred) == 0 or np.ptp(true) == 0:
        return float("nan")
    return float(np.corrcoef(pred, true)[0, 1])


def _latent_scores(g: pd.DataFrame) -> dict:
    """Status, counts and correlations of one latent's prediction rows."""
    ok = (g["status"] == "ok").to_numpy()
    out = {"n": int(ok.sum()), "n_failed": int((~ok).sum()), "correlation": np.nan}
    out["correlation_activating"] = np.nan
    if not ok.any():  # nothing simulated: the latent carries its most common failure
        return out | {"status": str(g.loc[~ok, "status"].value_counts().index[0])}
    flat = lambda col, rows: np.concatenate(g.loc[rows, col].to_list()).astype(np.float64)  # noqa: E731
    pred, true = flat("predicted", ok), flat("true", ok)  # [n_tokens] over all simulated windows
    on = ok & g["activating"].to_numpy(dtype=bool)
    if on.any():
        out["correlation_activating"] = pearson(flat("predicted", on), flat("true", on))
    if np.ptp(true) == 0:  # no window with activation: no prediction could correlate
        return out | {"status": "constant_truth"}
    if np.ptp(pred) == 0:
        return out | {"status": "constant_prediction"}
    return out | {"status": "ok", "correlation": pearson(pred, true)}


def simulation_metrics(
    predictions: pd.DataFrame, usage: pd.DataFrame, latents: Sequence[int], unscored: dict, name: str
) -> pd.DataFrame:
    """One metrics row per latent, in `latents` order; `usage` has per prompt latent, tokens, cost."""
    groups = dict(tuple(predictions.groupby("latent", sort=False))) if len(predictions) else {}
    g = usage.groupby("latent")
    spent = g[["prompt_tokens", "completion_tokens", "cached_tokens"]].sum()
    spent["cost_usd"] = g["cost_usd"].agg(lambda s: s.sum() if s.notna().all() else np.nan)  # NaN: unknown
    rows = []
    for lat in map(int, latents):
        if lat in unscored:
            rows.append(dict(latent=lat, status=unscored[lat], n=0, n_failed=0, prompt_tokens=0,
                             completion_tokens=0, cached_tokens=0, cost_usd=0.0))  # fmt: skip
            continue
        rows.append(dict(latent=lat, **_latent_scores(groups[lat]), **spent.loc[lat].to_dict()))
    out = pd.DataFrame(rows, columns=[*METRIC_COLUMNS]).assign(scorer=name, kind=KIND)
    out["score"] = out["correlation"].where(out["status"] == "ok")
    return out.astype(METRIC_COLUMNS)


def _complete(client, requests: list, method: str, name: str) -> list:
    """The simulator's completions of all requests, in order (one evaluation each for slots)."""
    if not requests:
        return []
    if method == "slots":
        return client.slot_logprobs_many(requests, CANDIDATES, desc=name)
    return client.complete_many(requests, desc=name)


def score_simulation(
    examples: pd.DataFrame, explanations: pd.DataFrame, cfg: dict, client
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate all latents' test windows in one batch of prompts; return (predictions, metrics)."""
    name, method = str(cfg.get("name") or KIND), choose_method(cfg, getattr(client, "supports_slots", False))
    requests, meta, unscored = build_prompts(examples, explanations, cfg, method)
    log.info("%s (%s): %d prompts for %d latents (%d without prompts)", name, method, len(requests),
             len(explanations), len(unscored))  # fmt: skip
    pairs = list(zip(meta, _complete(client, requests, method, name), strict=True))
    frames = [_read_simulation(lat, p, ex, true, c, method) for (lat, p, ex, true), c in pairs]
    empty = pd.DataFrame(columns=[*PREDICTION_COLUMNS])
    predictions = pd.concat(frames, ignore_index=True) if frames else empty
    usage = pd.DataFrame(
        [(m[0], c.prompt_tokens, c.completion_tokens, c.cached_tokens, c.cost_usd) for m, c in pairs],
        columns=["latent", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd"],
    ).astype({"latent": "int64", "cost_usd": "float64"})
    metrics = simulation_metrics(predictions, usage, explanations["latent"].tolist(), unscored, name)
    return predictions.astype(PREDICTION_COLUMNS), metrics


def llm_config(cfg: dict, examples: pd.DataFrame) -> dict:
    """The simulator's client settings for the reply method: logprobs on, at least 11 alternatives per
    token, and max_tokens sized to the longest reply a prompt can ask for (the config's max_tokens caps it).
    The slots method generates nothing and ignores these."""
    per_prompt, method = _check_cfg(cfg)
    llm = {"logprobs": True, **cfg["llm"]}
    llm["top_logprobs"] = max(int(llm.get("top_logprobs") or 0), MIN_TOP_LOGPROBS)
    test = examples["split"] == "test" if len(examples) else pd.Series(dtype=bool)
    longest = int(examples.loc[test, "token_strs"].map(len).max()) if test.any() else 1
    need, cap = reply_budget([longest] * per_prompt), llm.get("max_tokens")
    writes = method == "reply" or not llm["model"].startswith("local/")  # local models take slots
    if cap is not None and int(cap) < need and writes:
        log.warning("llm max_tokens %d is below the %d a reply of %d windows of %d tokens needs; long "
                    "replies will be cut and fail to parse", int(cap), need, per_prompt, longest)  # fmt: skip
    llm["max_tokens"] = need if cap is None else min(int(cap), need)
    return llm


def _predictions_schema():
    """Arrow schema of the predictions table (fixed, so all-failed shards keep their list types)."""
    import pyarrow as pa

    types = {"int64": pa.int64(), "bool": pa.bool_(), "object": pa.string()}
    lists = {"predicted", "true"}
    return pa.schema(
        [(c, pa.list_(pa.float32()) if c in lists else types[t]) for c, t in PREDICTION_COLUMNS.items()]
    )


def run_simulation(
    examples_path: str | os.PathLike,
    explanations_path: str | os.PathLike,
    cfg: dict,
    predictions_out: str | os.PathLike,
    metrics_out: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None,
    local_gguf: str | os.PathLike | None = None,
    client=None,
) -> None:
    """Workflow step: simulate a shard's explanations; write predictions-{shard}, metrics-{shard}.parquet."""
    if client is None and "llm" not in cfg:
        raise ValueError("scorer config needs an 'llm' section")
    run_llm_scorer(
        score_simulation, lambda examples: llm_config(cfg, examples), examples_path, explanations_path, cfg,
        predictions_out, metrics_out,
        cache_dir=cache_dir, local_gguf=local_gguf, client=client, schema=_predictions_schema(),
    )  # fmt: skip
