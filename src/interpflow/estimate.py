"""What a run will cost before anything is sent: LLM calls, tokens, dollars and time per explainer and scorer,
and the forward-pass and SAE-training tokens of the stages before them.

The prompts are built by the workflow's own builders (explain, scorers, simulation) on one synthetic latent
whose examples have the configured sizes, so every prompt setting (examples per prompt, caps, contrastive
prompts, hard negatives, chunking) is followed without a second copy of its arithmetic. Tokens are counted
without a tokenizer download (estimate_tokens), or by a counter passed in.

Every selected latent is assumed to fire often enough to be explained and to get an explanation, so LLM
counts are upper bounds where the sampler skips latents or explanations fail to parse.

Usage: python -m interpflow.estimate config/config.yaml [more.yaml ...] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from interpflow.config import run_combinations

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
SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

# Word pieces of at most 8 characters, digits one by one, punctuation runs: on the default run's real prompts
# 2-10% above Qwen2.5's and Gemma 3's counts (explainer +2/+4%, detection +9/+10%, fuzzing +7/+8%,
# simulation +4/+4%; a simulator's reply exactly); chars / 4 is 35% low on simulation prompts, which are
# mostly digits and quotes. Tokenizers that group digits (GPT-4o, Llama 3) count fewer on number-heavy text.
_PIECE = re.compile(r" ?[^\W\d_]+|\d| ?(?:[^\w\s]|_)+|\s+")
PIECE_CHARS = 8
MESSAGE_TOKENS, REPLY_TOKENS = 4, 3  # chat-template tokens per message and before the reply
ACTIVE_TOKENS = 2  # active tokens per activating window (the default run: 1.3)
EXPLANATION_CHARS = 160  # the default run's explanations: 145-232 characters, mean 168
CALIBRATION_STEPS = 8  # intervention: KL evaluations per latent (1-24; doubling then bisection)
_FILLER = re.findall(
    r"\s?\w+|[^\w\s]",
    "The village lies on the north bank of the river, about forty kilometres from the coast. Its "
    "population was recorded at the census of 2011, and it is known for its stone bridge, an old mill "
    "and a music festival held every summer since the war.",
)  # English text of about 4.6 characters per token, as the default corpus's windows


def estimate_tokens(text: str) -> int:
    """Tokens of `text` by a tokenizer-free rule (see _PIECE); English-like text only."""
    return sum(math.ceil(len(m.group()) / PIECE_CHARS) for m in _PIECE.finditer(text))


def message_tokens(messages: Sequence[dict], count: Callable[[str], int] = estimate_tokens) -> int:
    """Prompt tokens of a chat request: its messages' contents plus the chat template's tokens."""
    return sum(count(m["content"]) + MESSAGE_TOKENS for m in messages) + REPLY_TOKENS


def synthetic_explanation(n_chars: int = EXPLANATION_CHARS) -> str:
    """An explanation-like sentence of about n_chars characters."""
    words, text = iter(_FILLER[1:] * (n_chars // 50 + 2)), "The latent detects"
    while len(text) < n_chars:
        text += next(words)
    return text + "."


def _window(i: int, length: int, n_active: int) -> tuple[list[str], np.ndarray]:
    """Window i: `length` filler tokens ([length] strings) and activations ([length], n_active > 0)."""
    toks = [_FILLER[(7 * i + j) % len(_FILLER)] for j in range(length)]
    acts = np.zeros(length, np.float32)
    where = (np.arange(1, n_active + 1) * length) // (n_active + 1)  # spread out: one mark pair each
    acts[where] = np.linspace(10.0, 2.0, n_active) * (1 + i % 5) / 5  # strengths vary across windows
    return toks, acts


def synthetic_examples(sampler: dict, active_tokens: int = ACTIVE_TOKENS) -> pd.DataFrame:
    """Examples table of one latent (latent 0) that fires often enough for every window the sampler asks."""
    from interpflow.sampling import _hard_settings

    n_neg = int(sampler.get("n_nonactivating", 100))
    groups = [  # (split, activating, negative, count)
        ("train", True, "", int(sampler.get("n_train", 40))),
        ("test", True, "", int(sampler.get("n_test", 100))),
        ("test", False, "random", n_neg),
        ("train", False, "random", int(sampler.get("n_train_nonactivating") or 0)),
        ("test", False, "hard", _hard_settings(sampler, n_neg)[1]),
    ]
    length, rows = int(sampler.get("example_ctx_len", 32)), []
    for split, on, negative, n in groups:
        for _ in range(n):
            toks, acts = _window(len(rows), length, active_tokens if on else 0)
            rows.append(dict(latent=0, example_id=len(rows), split=split, activating=on, negative=negative,
                             token_strs=toks, acts=acts, max_act=float(acts.max()),
                             quantile=len(rows) % 10 if on else -1))  # fmt: skip
    return pd.DataFrame(rows)


class _Recorder:
    """A stand-in LLM client that keeps the requests and answers each with `reply`."""

    def __init__(self, reply: str):
        self.model, self.reply, self.requests = "estimate", reply, []

    def complete_many(self, requests: list[list[dict]], desc: str = "llm") -> list:
        """Record the requests; every answer is `reply`."""
        from interpflow.llm import Completion

        self.requests += requests
        c = Completion(self.reply, "ok", "", 0, 0, 0.0, 0.0, False, None)
        return [c] * len(requests)


def explain_requests(
    examples: pd.DataFrame, cfg: dict, count: Callable[[str], int]
) -> list[tuple[int, int, int]]:
    """(input, expected output, max output) tokens of each request the explainer sends for one latent."""
    from interpflow.explain import explain_latents

    reply = f"Explanation: {synthetic_explanation()}"
    client = _Recorder(reply)
    latents = pd.DataFrame({"latent": [0], "status": ["ok"], "reason": [""]})
    explain_latents(examples, latents, cfg, client)
    cap = int(cfg["llm"].get("max_tokens") or 256)
    out = cap if cfg.get("cot") else min(count(reply), cap)  # a reasoning reply's length is unknown
    return [(message_tokens(r, count), out, cap) for r in client.requests]


def _labels_reply(n: int) -> str:
    """A judge's answer to n excerpts: [1, 0, 1, ...]."""
    return "[" + ", ".join("10"[k % 2] for k in range(n)) + "]"


def _simulation_reply(counts: Sequence[int]) -> str:
    """A simulator's answer: one "k: 1=0 2=0 ..." line per window of `counts` tokens."""
    return "\n".join(f"{k}: " + " ".join(f"{i}=0" for i in range(1, n + 1)) for k, n in enumerate(counts, 1))


def score_requests(
    examples: pd.DataFrame, cfg: dict, count: Callable[[str], int]
) -> list[tuple[int, int, int]]:
    """(input, expected output, max output) tokens of each request an LLM scorer sends for one latent."""
    from interpflow import scorers, simulation

    explanations = pd.DataFrame({"latent": [0], "explanation": [synthetic_explanation()], "status": ["ok"]})
    cap = int(cfg["llm"].get("max_tokens") or 256)
    method = scorers.choose_method(cfg, cfg["llm"]["model"].startswith("local/"))
    build = simulation.build_prompts if cfg["kind"] == "simulation" else scorers.build_prompts
    requests, meta, _ = build(examples, explanations, cfg, method)
    if method == "slots":  # one evaluation of the prompt, nothing generated
        return [(message_tokens(m, count), 0, 0) for m, _ in requests]
    if cfg["kind"] == "simulation":
        cap = int(simulation.llm_config(cfg, examples)["max_tokens"])  # sized to the reply, config-capped
        replies = [_simulation_reply([len(t) for t in m[3]]) for m in meta]
    else:
        replies = [_labels_reply(len(m[2])) for m in meta]
    return [
        (message_tokens(r, count), min(count(a), cap), cap) for r, a in zip(requests, replies, strict=True)
    ]


def pricer(model: str, spec: dict) -> tuple[Callable[[int, int], float], str]:
    """(usd of one call from its input and output tokens, a note); NaN prices where nothing is known."""
    if "input_cost_per_token" in spec:
        i, o = float(spec["input_cost_per_token"]), float(spec.get("output_cost_per_token", 0.0))
        return (lambda a, b: a * i + b * o), ""
    if model.startswith("local/"):
        return (lambda a, b: 0.0), ""
    from interpflow.llm import _litellm

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
    from interpflow.sampling import select_test_examples

    n_win = len(select_test_examples(examples, 0, cfg))
    length, expl = len(examples["token_strs"].iloc[0]), estimate_tokens(" " + synthetic_explanation())
    if kind == "embedding":
        note = "embedder tokens, counted with the estimate for the subject's windows"
        return dict(
            engine=cfg.get("model") or "all-MiniLM-L6-v2", forward_tokens=n_win * length + expl, note=note
        )
    engine = cfg.get("scorer_model") or model
    if kind == "surprisal":  # each window read after the explanation and after the neutral description
        from interpflow.surprisal import DEFAULT_NEUTRAL, DEFAULT_TEMPLATE

        template = cfg.get("prompt_template") or DEFAULT_TEMPLATE
        texts = (synthetic_explanation(), cfg.get("neutral") or DEFAULT_NEUTRAL)
        per_window = sum(estimate_tokens(template.replace("{description}", t)) + 1 + length for t in texts)
        return dict(engine=engine, forward_tokens=n_win * per_window)
    from interpflow.intervention_inputs import estimated_forward_tokens

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


def _short(df: pd.DataFrame) -> pd.DataFrame:
    """Display columns: where (the path of names), what (explainer, scorer or engine) and the counts."""
    where = df[["corpus", "model", "hookpoint", "dictionary", "sampler"]].agg(
        lambda r: "/".join(filter(None, r)), axis=1
    )
    what = np.where(df["stage"] == "score", df["explainer"] + " > " + df["scorer"], df["explainer"])
    out = pd.DataFrame({"stage": df["stage"], "where": where, "what": what, "engine": df["engine"]})
    return out.join(df[["latents", "llm_calls", "input_tokens", "output_tokens", "output_tokens_max", "usd",
                        "usd_max", "forward_tokens", "train_tokens", "seconds"]])  # fmt: skip


def _usd(x: float) -> str:
    """Dollars for display; "?" where unknown."""
    return "?" if not np.isfinite(x) else f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


def format_estimate(df: pd.DataFrame, budget: dict | None = None) -> str:
    """A readable table of an estimate with a totals line, its notes and, given `budget`, how it compares."""
    df = df.reset_index(drop=True)
    t = _short(df)
    total = t.drop(columns=["stage", "where", "what", "engine"]).sum(min_count=1)  # unknown dollars skipped
    t.loc[len(t)] = {"stage": "total", "where": "", "what": "", "engine": "", **total}
    shown, last = t.astype(object), len(t) - 1
    for c in ("latents", "llm_calls", "input_tokens", "output_tokens", "output_tokens_max", "forward_tokens",
              "train_tokens"):  # fmt: skip
        shown[c] = t[c].map(lambda v: f"{int(v):,}")
    shown["usd"], shown["usd_max"] = t["usd"].map(_usd), t["usd_max"].map(_usd)
    shown["seconds"] = t["seconds"].map(lambda v: "?" if not np.isfinite(v) else f"{v:,.0f}")
    unknown = int(df["usd"].isna().sum())
    if unknown:  # the total holds the priced rows only
        shown.loc[last, ["usd", "usd_max"]] = [f">= {_usd(total['usd'])}", f">= {_usd(total['usd_max'])}"]
    if df["seconds"].isna().all():
        shown = shown.drop(columns="seconds")
    elif df["seconds"].isna().any():
        shown.loc[last, "seconds"] += " + ?"
    lines = [shown.to_string(index=False)]
    if unknown:
        lines.append(f"{unknown} row{'s' * (unknown != 1)} without a price: not in the dollar total")
    label = t["what"].where(t["what"] != "", t["where"])[:last]
    notes = (df["stage"] + " " + label + ": " + df["note"])[df["note"] != ""].drop_duplicates()
    lines += ["notes:", *("  " + n for n in notes)] if len(notes) else []
    return "\n".join(lines + _budget_lines(df, budget or {}))


def _budget_lines(df: pd.DataFrame, budget: dict) -> list[str]:
    """How the estimate compares with the config's `budget` (max_usd, max_tokens), one line per cap set."""
    lines = []
    tokens = int(df["input_tokens"].sum() + df["output_tokens"].sum())
    if budget.get("max_tokens") is not None:
        cap = int(budget["max_tokens"])
        lines.append(f"budget.max_tokens {cap:,}: the estimate needs {tokens:,} LLM tokens"
                     + (" (over the cap)" if tokens > cap else ""))  # fmt: skip
    if budget.get("max_usd") is not None:
        cap, usd = float(budget["max_usd"]), float(df["usd"].sum())
        most = _usd(df["usd_max"].sum())
        lines.append(f"budget.max_usd {_usd(cap)}: the estimate is {_usd(usd)} (at most {most})"
                     + (" (over the cap)" if usd > cap else ""))  # fmt: skip
    return lines


def compare(estimate: pd.DataFrame, costs: pd.DataFrame) -> pd.DataFrame:
    """The estimate beside what a finished run spent (report's costs.parquet), per subject, stage and name.

    Columns: the keys, est_latents / latents, est_input_tokens / prompt_tokens / input_ratio,
    est_output_tokens / completion_tokens / output_ratio, est_usd / cost_usd (ratios are actual / estimate).
    """
    keys = [*SUBJECT, "stage", "name"]
    need = [*keys, "latents", "prompt_tokens", "completion_tokens", "cost_usd"]
    missing = [c for c in need if c not in costs.columns]
    if missing:
        raise ValueError(f"costs table lacks columns {missing} (expected report's costs.parquet)")
    est = estimate[estimate["stage"].isin(["explain", "score"])]
    est = est.assign(name=est["scorer"].where(est["stage"] == "score", est["explainer"]))
    est = est[[*keys, "latents", "input_tokens", "output_tokens", "usd"]].add_prefix("est_")
    out = est.rename(columns={f"est_{k}": k for k in keys}).merge(costs[need], on=keys, how="outer")
    ratio = lambda a, e: (out[a] / out[e].where(out[e] > 0)).astype("float64")  # noqa: E731
    out["input_ratio"] = ratio("prompt_tokens", "est_input_tokens")
    out["output_ratio"] = ratio("completion_tokens", "est_output_tokens")
    order = [*keys, "est_latents", "latents", "est_input_tokens", "prompt_tokens", "input_ratio",
             "est_output_tokens", "completion_tokens", "output_ratio", "est_usd", "cost_usd"]  # fmt: skip
    return out[order].sort_values(keys, ignore_index=True)


def write_estimate(config: dict, out_path: str | os.PathLike, *, model_specs: dict | None = None) -> None:
    """Workflow step: estimate a validated config's run and write the table to Parquet atomically."""
    from interpflow.store import write_parquet

    df = estimate_run(config, model_specs=model_specs)
    write_parquet(df, out_path)
    log.info("estimate: %d LLM calls, %d input + %d output tokens, $%.4f (known part) -> %s",
             df["llm_calls"].sum(), df["input_tokens"].sum(), df["output_tokens"].sum(), df["usd"].sum(),
             out_path)  # fmt: skip


def _assign(config: dict, item: str) -> None:
    """Apply one --set key.path=value (value read as YAML) to `config` in place.

    Names may hold dots ("qwen-1.5b"): at each level the longest existing key wins; list items by index.
    """
    import yaml

    key, eq, raw = item.partition("=")
    if not eq or not key:
        raise ValueError(f"--set expects key.path=value, got {item!r}")
    node, parts = config, key.split(".")
    while True:
        if isinstance(node, list):
            j, k = 1, int(parts[0])
        else:
            j = next((j for j in range(len(parts), 0, -1) if ".".join(parts[:j]) in node), 1)
            k = ".".join(parts[:j])
        parts = parts[j:]
        if not parts:
            node[k] = yaml.safe_load(raw)
            return
        node = node[k] if isinstance(node, list) else node.setdefault(k, {})


def load_config(paths: Sequence[str | os.PathLike], sets: Sequence[str] = (), schema=SCHEMA) -> dict:
    """Merge config files (later over earlier, as --configfile does), apply sets, validate, fill defaults."""
    import yaml
    from snakemake.utils import update_config, validate

    from interpflow.config import check_config

    config: dict = {}
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        update_config(config, yaml.safe_load(Path(path).read_text()) or {})
    for item in sets:
        _assign(config, item)
    if not Path(schema).is_file():
        raise FileNotFoundError(f"config schema not found: {schema} (pass --schema)")
    validate(config, str(schema))  # fills the schema's defaults, as the Snakefile does
    check_config(config)
    return config


def load_specs(path: str | os.PathLike) -> dict[str, dict]:
    """Model specs from YAML (engine -> spec); a spec's `tokenizer` (tokenizer.json on disk) counts tokens."""
    import yaml

    specs = yaml.safe_load(Path(path).read_text()) or {}
    for spec in specs.values():
        if spec.get("tokenizer"):
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(spec.pop("tokenizer")))
            spec["count_tokens"] = lambda text, tok=tok: len(tok.encode(text, add_special_tokens=False).ids)
    return specs


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print a config's estimate (optionally write it, or compare it with a run's costs)."""
    parser = argparse.ArgumentParser(prog="python -m interpflow.estimate", description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="+", help="config YAML files, later ones merged over earlier ones")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. samplers.default.n_test=100"
    )
    parser.add_argument("--schema", default=SCHEMA, help="the config's JSON schema (YAML)")
    parser.add_argument("--specs", help="YAML: engine -> prices, throughput, tokenizer (see estimate_run)")
    parser.add_argument("--out", help="also write the table to this Parquet file")
    parser.add_argument("--costs", help="a finished run's results/summary/costs.parquet to compare with")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    config = load_config(args.configs, args.set, args.schema)
    df = estimate_run(config, model_specs=load_specs(args.specs) if args.specs else None)
    if args.out:
        from interpflow.store import write_parquet

        write_parquet(df, args.out)
    text = format_estimate(df, config.get("budget"))
    if args.costs:
        from interpflow.store import read_parquet

        with pd.option_context("display.width", 250, "display.max_columns", 30):
            text += "\n\nestimate vs actual:\n" + compare(df, read_parquet(args.costs)).to_string(index=False)
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
