"""Simulation scorer: an LLM predicts every token's activation from the explanation (Bills et al. 2023).

The "all at once" variant used by Paulo et al. 2024 (section 4): the simulator sees the explanation and a few
test windows, each split into numbered tokens, and writes one line per window with one integer 0-10 per
token, each after its token's number ("1: 1=0 2=7 3=0"): the numbers keep a small model counting right,
where a bare row of values drifts to the wrong length. Where the reply carries token logprobs, each value
becomes its expected value over the alternatives 0-10 of its token. A latent's score is the Pearson
correlation between predicted and true activations over all tokens of its successfully simulated windows
(true activations scaled 0-10 by the latent's max over its test windows).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from interpflow.metrics import metric_columns
from interpflow.scorers import run_llm_scorer, scorable_latents

log = logging.getLogger(__name__)

KIND = "simulation"
MAX_VALUE = 10
MIN_TOP_LOGPROBS = MAX_VALUE + 1  # room for every value 0-10 among a number token's alternatives
PREDICTION_COLUMNS = {
    "latent": "int64",
    "example_id": "int64",
    "activating": "bool",
    "predicted": "object",  # list float32 per token, None on failure
    "true": "object",  # list float32 per token, activations scaled 0-10 by the latent's max
    "expected": "bool",  # predicted holds expected values from logprobs (else the written integers)
    "prompt_index": "int64",
    "position": "int64",
    "status": "object",
    "error": "object",
}
METRIC_COLUMNS = metric_columns("correlation", "correlation_activating")

_TASK = """\
You predict where a latent of a language model is active. A latent is an internal feature that becomes \
active on certain tokens of a text. You get an explanation of what the latent detects, followed by \
numbered excerpts; each excerpt is split into numbered tokens.

For every token, predict the latent's activation on that token as a whole number from 0 to 10: 0 means \
not active, 10 means as active as the latent ever gets, numbers in between mean weaker activation. Tokens \
that fit the explanation get high numbers, all others 0.

Reply with one line per excerpt, in the excerpts' order. A line starts with the excerpt's number and a \
colon; then, for every token of the excerpt in order, the token's number, an equals sign and your \
prediction, separated by spaces. Write nothing else."""
# A worked example teaches the reply format: without it the local 1.5B model wrote 10 for every token.
# (It also biases weak models towards the example's active positions; strong models only take the format.)
_EXAMPLE_EXPLANATION = "Names of colours."
_EXAMPLE_WINDOWS = (("A", " red", " and", " blue", " car", "."), ("We", " went", " home", "."))
_EXAMPLE_REPLY = "1: 1=0 2=9 3=0 4=8 5=0 6=0\n2: 1=0 2=0 3=0 4=0"

# An answer line: "3: 1=0 2=7", also "Excerpt 3: ..." or "**3:** ..." (small models add markdown).
_LINE = re.compile(r"^[ \t>*#-]*(?:(?:excerpt|example)[ \t]*)?(\d+)[ \t]*\**[ \t]*:(.*)$", re.I | re.M)
_ITEM = re.compile(r"[^\s,]+")


def _quote(text: str) -> str:
    """JSON-quote text so spaces and line breaks stay visible on one line."""
    return json.dumps(text, ensure_ascii=False)


def token_list(token_strs: Sequence[str]) -> str:
    """One line of numbered, quoted tokens: 1 "The" | 2 " cat"."""
    return " | ".join(f"{i} {_quote(str(t))}" for i, t in enumerate(token_strs, start=1))


def _template(k: int, n: int) -> str:
    """The reply line excerpt k of n tokens asks for: "k: 1=<number> 2=<number> ... n=<number>"."""
    slots = [f"{i}=<number>" for i in range(1, n + 1)]
    return f"{k}: " + " ".join(slots if n <= 3 else [*slots[:2], "...", slots[-1]])


def simulation_user(explanation: str, windows: Sequence[Sequence[str]]) -> str:
    """The simulator's per-prompt message: the explanation, the numbered token lists, the reply template."""
    if not windows:
        raise ValueError("a simulation prompt needs at least one window")
    blocks = [
        f"Excerpt {k} ({len(toks)} tokens): {_quote(''.join(map(str, toks)))}\n{token_list(toks)}"
        for k, toks in enumerate(windows, start=1)
    ]
    template = "\n".join(_template(k, len(toks)) for k, toks in enumerate(windows, start=1))
    return (
        f"Explanation: {_quote(explanation)}\n\n" + "\n\n".join(blocks)
        + f"\n\nReply with {len(windows)} line{'s' if len(windows) != 1 else ''}:\n{template}"
    )  # fmt: skip


def simulation_system() -> str:
    """The simulator's fixed instructions with a worked example (the same text for every latent)."""
    example = simulation_user(_EXAMPLE_EXPLANATION, _EXAMPLE_WINDOWS)
    return f"{_TASK}\n\nFor example, this request:\n\n{example}\n\ngets this reply:\n\n{_EXAMPLE_REPLY}"


def simulation_messages(explanation: str, windows: Sequence[Sequence[str]]) -> list[dict]:
    """Chat messages asking the simulator for one 0-10 activation per token of each window."""
    return [
        {"role": "system", "content": simulation_system()},
        {"role": "user", "content": simulation_user(explanation, windows)},
    ]


def reply_budget(counts: Sequence[int]) -> int:
    """Generated tokens a reply of windows with `counts` tokens needs, with a margin.

    Per token "i=v " (digits of i, "=", the value, a space) and per line "k: " and a line break; a
    tokenizer that splits digits spends one token per digit.
    """
    need = sum(sum(len(str(i)) + 3 for i in range(1, int(t) + 1)) + 4 for t in counts)
    return int(1.1 * need) + 8


def _answer_body(reply: str) -> tuple[str, int] | None:
    """The part of a reply after any <think> block and its offset, or None for an unfinished block."""
    start = reply.rfind("</think>")
    start = start + len("</think>") if start >= 0 else 0
    return None if "<think>" in reply[start:] else (reply[start:], start)


def _read_line(body: str, offset: int, k: int, n: int) -> tuple[np.ndarray, np.ndarray] | str:
    """(values [n] int64, spans [n, 2] of each value in the reply) of excerpt k's line, or the error.

    Items are "i=v" (i must be the item's position) or a bare "v"; separators are spaces or commas.
    """
    lead = len(body) - len(body.lstrip(" \t*"))
    core = body.strip(" \t*\r").removesuffix(".")
    if core.startswith("[") and core.endswith("]"):
        core, lead = core[1:-1], lead + 1
    vals, spans = [], []
    for j, m in enumerate(_ITEM.finditer(core), start=1):
        index, eq, value = m.group().rpartition("=")
        if eq and index != str(j):
            return f"excerpt {k}: value {j} is numbered {index[:20]!r}"
        if not (value.isascii() and value.isdigit()):
            return f"excerpt {k}: {value[:20]!r} is not a whole number"
        if int(value) > MAX_VALUE:
            return f"excerpt {k}: value {value} is outside 0-{MAX_VALUE}"
        start = offset + lead + m.start() + len(index) + len(eq)
        vals.append(int(value))
        spans.append((start, start + len(value)))
    if len(vals) != n:
        return f"excerpt {k}: expected {n} numbers, got {len(vals)}"
    return np.array(vals, dtype=np.int64), np.array(spans, dtype=np.int64).reshape(-1, 2)


def parse_reply(reply: str | None, counts: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray] | str]:
    """Per excerpt, (values, spans) of its answer line or the reason it has none.

    Answer lines are those starting with an excerpt number and a colon, in any order; other text is
    ignored. An excerpt fails when its line is missing, repeated, holds anything but integers 0-10, or has
    a count of numbers other than its token count. Lines of excerpts that do not exist are ignored.
    """
    found = _answer_body(reply) if reply else None
    if found is None:
        why = "empty reply" if not reply else "unfinished <think> block"
        return [why] * len(counts)
    body, start = found
    lines: dict[int, list[re.Match]] = {}
    for m in _LINE.finditer(body):
        lines.setdefault(int(m.group(1)), []).append(m)
    out: list[tuple[np.ndarray, np.ndarray] | str] = []
    for k, n in enumerate(counts, start=1):
        got = lines.get(k, [])
        if len(got) != 1:
            out.append(f"excerpt {k}: {'no line' if not got else 'more than one line'}")
            continue
        out.append(_read_line(got[0].group(2), start + got[0].start(2), k, int(n)))
    return out


def _p_ten(logprobs, k: int) -> float:
    """P(the number whose first token k is "1" goes on as "10"): next token "0" against a non-digit."""
    if k + 1 >= len(logprobs):
        return 0.0
    nxt = logprobs[k + 1]
    top = dict(nxt.top) | {nxt.token: nxt.logprob}
    zero = [lp for a, lp in top.items() if a[:1] == "0" and not a[1:2].isdigit()]
    stop = [lp for a, lp in top.items() if not a[:1].isdigit()]
    l0 = np.logaddexp.reduce(zero) if zero else -np.inf
    ls = np.logaddexp.reduce(stop) if stop else -np.inf
    return 0.0 if not np.isfinite(max(l0, ls)) else float(np.exp(l0 - np.logaddexp(l0, ls)))


def number_expectation(logprobs, ends: np.ndarray, text: str, s: int, e: int) -> float | None:
    """Expected value of the number at [s, e) of the generated text over its first token's alternatives.

    Alternatives count when they spell an integer 0-10 in the same place (same text before and after it in
    the token), renormalised over those. Where "10" takes two tokens ("1", "0"), an alternative "1" may be
    1 or the start of 10: when "1" was written, the next token's P("0") against P(non-digit) splits it;
    otherwise it is read as whichever of 1 and 10 lies nearer the written number. None when the number is
    split over tokens in another way.
    """
    k = int(np.searchsorted(ends, s, side="right"))  # the token holding the number's first character
    tok = logprobs[k].token
    t0 = int(ends[k]) - len(tok)
    cut = min(e, int(ends[k]))
    pre, head, post = tok[: s - t0], tok[s - t0 : cut - t0], tok[cut - t0 :]
    digits = text[s:e]
    if head != digits and not (head == "1" and digits == "10" and logprobs[k + 1].token.startswith("0")):
        return None
    top = dict(logprobs[k].top) | {tok: logprobs[k].logprob}
    vals, lps = [], []
    for alt, lp in top.items():
        mid = alt[len(pre) : len(alt) - len(post)]
        if alt.startswith(pre) and alt.endswith(post) and mid.isascii() and mid.isdigit():
            if mid == str(int(mid)) and int(mid) <= MAX_VALUE:
                vals.append(int(mid))
                lps.append(lp)
    v, p = np.array(vals, dtype=np.float64), np.exp(np.array(lps) - max(lps))  # [n_alternatives]
    if post == "":  # an alternative "1" might be continued by "0"
        if head == "1":
            q = _p_ten(logprobs, k)
        else:
            q = 0.0 if MAX_VALUE in vals else float(abs(MAX_VALUE - int(digits)) < abs(1 - int(digits)))
        v = np.where(v == 1, 1 + (MAX_VALUE - 1) * q, v)
    return float((p * v).sum() / p.sum())


def expected_values(logprobs, counts: Sequence[int], parsed: list) -> list[np.ndarray | None]:
    """Per excerpt, expected values [T] from logprobs; None where the excerpt failed or they are unusable."""
    out: list[np.ndarray | None] = [None] * len(counts)
    if not logprobs:
        return out
    text = "".join(t.token for t in logprobs)
    ends = np.cumsum([len(t.token) for t in logprobs])  # [n_generated] end offset of each token
    for i, (again, first) in enumerate(zip(parse_reply(text, counts), parsed, strict=True)):
        if isinstance(again, str) or isinstance(first, str) or not np.array_equal(again[0], first[0]):
            continue  # the tokens do not spell the parsed reply
        ev = [number_expectation(logprobs, ends, text, int(s), int(e)) for s, e in again[1]]
        if all(x is not None for x in ev):
            out[i] = np.array(ev, dtype=np.float32)
    return out


def _check_cfg(cfg: dict) -> tuple[int, int]:
    """Validate the scorer options; return (examples_per_prompt, seed)."""
    per_prompt = int(cfg.get("examples_per_prompt", 5))
    if per_prompt < 1:
        raise ValueError(f"scorer option examples_per_prompt must be >= 1, got {per_prompt}")
    for key in ("max_activating", "max_nonactivating"):
        if cfg.get(key) is not None and int(cfg[key]) < 0:
            raise ValueError(f"scorer option {key} must be >= 0, got {cfg[key]}")
    return per_prompt, int(cfg.get("seed", 0))


def build_prompts(
    examples: pd.DataFrame, explanations: pd.DataFrame, cfg: dict
) -> tuple[list[list[dict]], list[tuple[int, int, pd.DataFrame, list[np.ndarray]]], dict[int, str]]:
    """Simulator prompts for every latent with an "ok" explanation.

    Returns the chat requests; per request (latent, prompt_index, its windows in order, their true
    activations scaled 0-10 by the latent's max over its test windows); the status of each latent that
    gets no prompt.
    """
    per_prompt, _ = _check_cfg(cfg)
    requests, meta, unscored = [], [], {}
    for lat, expl, ex, _ in scorable_latents(examples, explanations, cfg, unscored):
        acts = [np.asarray(a, dtype=np.float64) for a in ex["acts"]]
        top = max(float(a.max(initial=0.0)) for a in acts)
        true = [(MAX_VALUE * a / top if top > 0 else 0 * a).astype(np.float32) for a in acts]
        for p, s in enumerate(range(0, len(ex), per_prompt)):
            chunk = ex.iloc[s : s + per_prompt]
            requests.append(simulation_messages(expl, [list(map(str, t)) for t in chunk["token_strs"]]))
            meta.append((lat, p, chunk, true[s : s + per_prompt]))
    return requests, meta, unscored


def _read_simulation(lat: int, p: int, ex: pd.DataFrame, true: list[np.ndarray], c) -> pd.DataFrame:
    """Prediction rows of one prompt's windows from the simulator's completion."""
    n, counts = len(ex), [len(t) for t in true]
    predicted, expected = [None] * n, [False] * n
    status, error = ["llm_error"] * n, [c.error or "llm error"] * n
    if c.status == "ok":
        parsed = parse_reply(c.text, counts)
        for i, (got, ev) in enumerate(zip(parsed, expected_values(c.logprobs, counts, parsed), strict=True)):
            if isinstance(got, str):
                status[i], error[i] = "parse_error", got
                continue
            status[i], error[i], expected[i] = "ok", "", ev is not None
            predicted[i] = ev if ev is not None else got[0].astype(np.float32)
    return pd.DataFrame(
        {
            "latent": lat,
            "example_id": ex["example_id"].to_numpy(),
            "activating": ex["activating"].to_numpy(dtype=bool),
            "predicted": predicted,
            "true": true,
            "expected": expected,
            "prompt_index": p,
            "position": np.arange(n),
            "status": status,
            "error": error,
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


def score_simulation(
    examples: pd.DataFrame, explanations: pd.DataFrame, cfg: dict, client
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate all latents' test windows in one batch of prompts; return (predictions, metrics)."""
    name = str(cfg.get("name") or KIND)
    requests, meta, unscored = build_prompts(examples, explanations, cfg)
    log.info("%s: %d prompts for %d latents (%d without prompts)", name, len(requests), len(explanations),
             len(unscored))  # fmt: skip
    completions = client.complete_many(requests, desc=name) if requests else []
    pairs = list(zip(meta, completions, strict=True))
    frames = [_read_simulation(lat, p, ex, true, c) for (lat, p, ex, true), c in pairs]
    empty = pd.DataFrame(columns=[*PREDICTION_COLUMNS])
    predictions = pd.concat(frames, ignore_index=True) if frames else empty
    usage = pd.DataFrame(
        [(m[0], c.prompt_tokens, c.completion_tokens, c.cached_tokens, c.cost_usd) for m, c in pairs],
        columns=["latent", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd"],
    ).astype({"latent": "int64", "cost_usd": "float64"})
    metrics = simulation_metrics(predictions, usage, explanations["latent"].tolist(), unscored, name)
    return predictions.astype(PREDICTION_COLUMNS), metrics


def llm_config(cfg: dict, examples: pd.DataFrame) -> dict:
    """The simulator's client settings: logprobs on, at least 11 alternatives per token, and max_tokens
    sized to the longest reply a prompt can ask for (the config's max_tokens caps it)."""
    per_prompt, _ = _check_cfg(cfg)
    llm = {"logprobs": True, **cfg["llm"]}
    llm["top_logprobs"] = max(int(llm.get("top_logprobs") or 0), MIN_TOP_LOGPROBS)
    test = examples["split"] == "test" if len(examples) else pd.Series(dtype=bool)
    longest = int(examples.loc[test, "token_strs"].map(len).max()) if test.any() else 1
    need, cap = reply_budget([longest] * per_prompt), llm.get("max_tokens")
    if cap is not None and int(cap) < need:
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
