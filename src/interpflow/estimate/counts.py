"""The counting model: every stage's LLM calls, tokens, dollars, forward and training tokens (estimate_run),
and the workflow step writing them (write_estimate).

Rows: activations (forward tokens per corpus, model, hookpoint), sae (training tokens per dictionary),
explain (per subject) and score (per run combination); LLM rows from one synthetic latent's requests times
the latents selected, local scorers' rows from their forward tokens.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable

import numpy as np
import pandas as pd

from interpflow.config import run_combinations
from interpflow.estimate.synthetic import (
    estimate_tokens,
    explain_requests,
    score_requests,
    synthetic_examples,
    synthetic_explanation,
)

log = logging.getLogger(__name__)

SUBJECT = ["corpus", "model", "hookpoint", "dictionary", "sampler", "explainer"]
COLUMNS = {
    "stage": "object",  # activations, sae, explain or score
    **dict.fromkeys([*SUBJECT, "scorer"], "object"),  # "" where a key does not shape the stage
    "engine": "object",  # who does the work: litellm model, subject/scorer model, embedder, dictionary
    "latents": "int64",
    "llm_calls": "int64",
    "input_tokens": "int64",
    "output_tokens": "int64",  # the replies' expected length
    "output_tokens_max": "int64",  # every reply at its max_tokens
    "usd": "float64",  # NaN: litellm has no price for the model
    "usd_max": "float64",
    "forward_tokens": "int64",  # tokens through a local model (subject, scorer model or embedder)
    "train_tokens": "int64",  # SAE training tokens
    "seconds": "float64",  # NaN unless model_specs gives the engine's throughput
    "note": "object",
}
LLM_KINDS = ("detection", "fuzzing", "simulation")
CALIBRATION_STEPS = 8  # intervention: KL evaluations per latent (1-24; doubling then bisection)


def pricer(model: str, spec: dict) -> tuple[Callable[[int, int], float], str]:
    """(usd of one call from its input and output tokens, a note); NaN prices where nothing is known."""
    if "input_cost_per_token" in spec:
        i, o = float(spec["input_cost_per_token"]), float(spec.get("output_cost_per_token", 0.0))
        return (lambda a, b: a * i + b * o), ""
    if model.startswith("local/"):
        return (lambda a, b: 0.0), ""
    from interpflow.llm.backend import _litellm

    litellm = _litellm()
    try:
        litellm.cost_per_token(model=model, prompt_tokens=1, completion_tokens=1)
    except Exception:  # unmapped and self-hosted models have no price
        return (lambda a, b: math.nan), f"litellm has no price for {model}: usd NaN (give one in model_specs)"
    return (
        lambda a, b: float(sum(litellm.cost_per_token(model=model, prompt_tokens=a, completion_tokens=b)))
    ), ""


def n_latents(config: dict, dictionary: str, sampler: str) -> int:
    """Latents a sampler selects over all shards of a dictionary: latents.n per shard (null: all)."""
    d = config["dictionaries"][dictionary]
    width, size = int(d["width"]), int(d.get("shard_size") or config["latent_store"]["shard_size"])
    n = (config["samplers"][sampler].get("latents") or {}).get("n")
    return sum(min(width - s, size) if n is None else min(n, width - s, size) for s in range(0, width, size))


def _llm_usage(one_latent: tuple[list, Callable, str], latents: int, model: str) -> dict:
    """A row's LLM columns from one latent's (requests, pricer, note), times the latents."""
    requests, price, note = one_latent
    one = np.array(requests, dtype=np.int64).reshape(-1, 3)  # [requests, (input, output, max output)]
    total = latents * one.sum(0)  # [3]
    usd = latents * sum(price(int(a), int(b)) for a, b, _ in one)
    usd_max = latents * sum(price(int(a), int(c)) for a, _, c in one)
    return dict(engine=model, llm_calls=latents * len(one), input_tokens=int(total[0]),
                output_tokens=int(total[1]), output_tokens_max=int(total[2]), usd=usd, usd_max=usd_max,
                note=note)  # fmt: skip


def _local_scorer(kind: str, cfg: dict, examples: pd.DataFrame, model: str) -> dict:
    """Engine, forward tokens per latent and note of a scorer that runs a local model (no LLM calls)."""
    from interpflow.sampling.scored import select_test_examples

    n_win = len(select_test_examples(examples, 0, cfg))
    length, expl = len(examples["token_strs"].iloc[0]), estimate_tokens(" " + synthetic_explanation())
    if kind == "embedding":
        note = "embedder tokens, counted with the estimate for the subject's windows"
        return dict(
            engine=cfg.get("model") or "all-MiniLM-L6-v2", forward_tokens=n_win * length + expl, note=note
        )
    engine = cfg.get("scorer_model") or model
    if kind == "surprisal":  # each window read after the explanation and after the neutral description
        from interpflow.scoring.surprisal import DEFAULT_NEUTRAL, DEFAULT_TEMPLATE

        template = cfg.get("prompt_template") or DEFAULT_TEMPLATE
        texts = (synthetic_explanation(), cfg.get("neutral") or DEFAULT_NEUTRAL)
        per_window = sum(estimate_tokens(template.replace("{description}", t)) + 1 + length for t in texts)
        return dict(engine=engine, forward_tokens=n_win * per_window)
    from interpflow.scoring.intervention_inputs import estimated_forward_tokens

    tokens = estimated_forward_tokens(cfg, length, expl, CALIBRATION_STEPS)
    return dict(
        engine=engine, forward_tokens=tokens, note=f"assumes {CALIBRATION_STEPS} calibration steps (1-24)"
    )


def _explain_rows(config: dict, subjects: dict, per_latent: Callable) -> list[dict]:
    """One explain row per subject (corpus, model, hookpoint, dictionary, sampler, explainer)."""
    rows = []
    for key, why in subjects.items():
        s = dict(zip(SUBJECT, key, strict=True))
        cfg = config["explainers"][s["explainer"]]
        row = _row(stage="explain", **s, latents=n_latents(config, s["dictionary"], s["sampler"]))
        if cfg.get("kind", "llm") == "llm":
            one = per_latent(s["sampler"], "explainers", s["explainer"])
            row |= _llm_usage(one, row["latents"], cfg["llm"]["model"])
            row["note"] = "; ".join(filter(None, [why, row["note"]]))
        else:
            row["note"] = f"baseline {cfg['kind']}: no LLM"
        rows.append(row)
    return rows


def _score_rows(config: dict, per_latent: Callable, examples: Callable) -> list[dict]:
    """One score row per run combination."""
    rows = []
    for c in run_combinations(config):
        cfg = config["scorers"][c["scorer"]]
        row = _row(stage="score", **c, latents=n_latents(config, c["dictionary"], c["sampler"]))
        if cfg["kind"] in LLM_KINDS:
            row |= _llm_usage(
                per_latent(c["sampler"], "scorers", c["scorer"]), row["latents"], cfg["llm"]["model"]
            )
        else:
            local = _local_scorer(cfg["kind"], cfg, examples(c["sampler"]), c["model"])
            row |= local | dict(forward_tokens=row["latents"] * local["forward_tokens"])
        rows.append(row)
    return rows


def _upstream_rows(config: dict) -> list[dict]:
    """Activations (forward tokens per corpus, model, hookpoint) and SAE training (tokens per dictionary)."""
    rows, seen, shared = [], set(), {}
    for c in run_combinations(config):
        corpus = config["corpora"][c["corpus"]]
        n_seq, ctx = int(corpus["n_sequences"]), int(corpus["ctx_len"])
        where = dict(corpus=c["corpus"], model=c["model"], hookpoint=c["hookpoint"])
        if tuple(where.values()) not in seen:
            seen.add(tuple(where.values()))
            rows.append(_row(stage="activations", **where, engine=c["model"], forward_tokens=n_seq * ctx))
            shared[c["corpus"], c["model"]] = shared.get((c["corpus"], c["model"]), 0) + 1
        d, key = config["dictionaries"][c["dictionary"]], (*where.values(), c["dictionary"])
        if key in seen or d["kind"] != "topk-sae":  # other kinds are not trained here
            continue
        seen.add(key)
        tokens = n_seq * (ctx - 1) * int(d.get("epochs") or 1)  # BOS positions are left out of training
        if d.get("max_tokens") is not None:
            tokens = min(tokens, int(d["max_tokens"]))
        rows.append(_row(stage="sae", **where, dictionary=c["dictionary"], engine=c["dictionary"],
                         train_tokens=tokens))  # fmt: skip
    for r in rows:  # the workflow reads several missing hookpoints of one model in one pass
        if r["stage"] == "activations" and shared[r["corpus"], r["model"]] > 1:
            r["note"] = (
                f"one forward pass serves all {shared[r['corpus'], r['model']]} hookpoints when run together"
            )
    return rows


def _subjects(config: dict) -> dict[tuple, str]:
    """Explained subjects in run order, with the source explainers random baselines need (and why)."""
    subjects = {tuple(c[k] for k in SUBJECT): "" for c in run_combinations(config)}
    for key in list(subjects):
        cfg = config["explainers"][key[-1]]
        src = cfg.get("source")
        if cfg.get("kind") == "random" and src and (*key[:-1], src) not in subjects:
            subjects[(*key[:-1], src)] = f"source of the random baseline {key[-1]}"
    return subjects


def _seconds(df: pd.DataFrame, config: dict, specs: dict) -> pd.Series:
    """Seconds per row from the engine's throughput in specs (tokens per second), NaN where not given."""

    def one(r) -> float:
        spec = specs.get(r.engine, {})
        cols = ("input_tokens", "output_tokens", "forward_tokens", "train_tokens")
        used = [(getattr(r, c), spec.get(f"{c}_per_s")) for c in cols if getattr(r, c)]
        if not used or any(rate is None for _, rate in used):
            return math.nan
        return sum(n / float(rate) for n, rate in used) / _concurrency(config, r)

    return pd.Series([one(r) for r in df.itertuples(index=False)], index=df.index, dtype="float64")


def _concurrency(config: dict, r) -> int:
    """Parallel LLM requests of a row's stage (1 for local work)."""
    section, name = ("explainers", r.explainer) if r.stage == "explain" else ("scorers", r.scorer)
    llm = config.get(section, {}).get(name, {}).get("llm") if r.llm_calls else None
    return int(llm.get("max_concurrency") or 1) if llm and not llm["model"].startswith("local/") else 1


def _row(**values) -> dict:
    """A table row: the given values over the defaults ("" for names, 0 for counts and dollars)."""
    return {c: "" if t == "object" else 0 for c, t in COLUMNS.items()} | {"seconds": math.nan} | values


def estimate_run(
    config: dict,
    *,
    model_specs: dict[str, dict] | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> pd.DataFrame:
    """Estimate every stage's LLM calls, tokens, dollars, forward and training tokens from a validated config.

    `model_specs` maps an engine (a litellm model string, a subject model, an embedder, a dictionary) to
    optional `input_cost_per_token`, `output_cost_per_token` (USD, overriding litellm), `count_tokens` (a
    str -> int counter, e.g. a tokenizer on disk), and `input_tokens_per_s`, `output_tokens_per_s`,
    `forward_tokens_per_s`, `train_tokens_per_s` (for the seconds column). `count_tokens` is the counter
    for models without their own (default estimate_tokens).
    """
    specs = model_specs or {}

    def count(model: str) -> Callable[[str], int]:
        return specs.get(model, {}).get("count_tokens") or count_tokens or estimate_tokens

    prices = functools.cache(lambda model: pricer(model, specs.get(model, {})))
    examples = functools.cache(lambda sampler: synthetic_examples(config["samplers"][sampler]))

    @functools.cache
    def per_latent(sampler: str, section: str, name: str) -> tuple[list, Callable, str]:
        """One latent's requests (input, output, max output tokens) to an LLM, its pricer and price note."""
        cfg, build = config[section][name], explain_requests if section == "explainers" else score_requests
        return build(examples(sampler), cfg, count(cfg["llm"]["model"])), *prices(cfg["llm"]["model"])

    rows = _upstream_rows(config) + _explain_rows(config, _subjects(config), per_latent)
    df = pd.DataFrame(rows + _score_rows(config, per_latent, examples), columns=[*COLUMNS])
    partners = [s for s, c in config["samplers"].items() if (c.get("latents") or {}).get("partners")]
    extra = "plus the cross-layer partners of the layer below (not counted)"
    df.loc[df["sampler"].isin(partners), "note"] = df["note"].map(
        lambda n: "; ".join(filter(None, [n, extra]))
    )
    df = df.astype(COLUMNS)
    df["seconds"] = _seconds(df, config, specs)
    return df


def write_estimate(config: dict, out_path: str | os.PathLike, *, model_specs: dict | None = None) -> None:
    """Workflow step: estimate a validated config's run and write the table to Parquet atomically."""
    from interpflow.store import write_parquet

    df = estimate_run(config, model_specs=model_specs)
    write_parquet(df, out_path)
    log.info("estimate: %d LLM calls, %d input + %d output tokens, $%.4f (known part) -> %s",
             df["llm_calls"].sum(), df["input_tokens"].sum(), df["output_tokens"].sum(), df["usd"].sum(),
             out_path)  # fmt: skip
