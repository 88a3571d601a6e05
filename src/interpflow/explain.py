"""Ask an LLM for a one-sentence explanation of each latent from its activating train examples."""

from __future__ import annotations

import logging
import os
import re
import time

import numpy as np
import pandas as pd

from interpflow import prompts
from interpflow.best_of import candidates_of, check_select, heldout_windows, select_best
from interpflow.defaults import with_defaults
from interpflow.explanations import EXPLANATION_COLUMNS, explanation_row
from interpflow.llm.client import raise_on_outage
from interpflow.statuses import llm_failure
from interpflow.store import read_parquet, write_parquet

log = logging.getLogger(__name__)

MAX_EXPLANATION_CHARS = 300
PROMPTS = ("default", "contrastive")  # cfg["prompt"]: contrastive also shows non-activating train windows

# the marker may carry markdown around it: "**Explanation:**", "- `Explanation`:", "> Explanation -"
_MARKER = re.compile(r"^[\s>*_#`\-•]*explanation[\s*_`]*[:\-–][\s*_]*(.*)$", re.IGNORECASE)
_INLINE_MARKER = re.compile(r"explanation[\s*_`]*:", re.IGNORECASE)
_THINK = re.compile(r"<think>.*?(</think>|$)", re.IGNORECASE | re.DOTALL)
_REFUSAL = re.compile(
    r"^(i\s*(cannot|can't|can not|am unable|'m unable|am not able|'m not able|won't)|sorry|"
    r"as an ai|unable to|i do not know|i don't know|n/?a$|none$|unknown$)",
    re.IGNORECASE,
)
_QUOTES = {'"': '"', "'": "'", "`": "`", "“": "”", "‘": "’", "«": "»"}


def _unwrap(text: str) -> str:
    """Strip whitespace, markdown emphasis and matching quote pairs around a sentence."""
    while True:
        text = text.strip().strip("*").strip()
        if text.count("`") % 2:  # the closer of a code span around the marker: "`Explanation:` x"
            text = text.strip("`").strip()
        if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
            text = text[1:-1]
            continue
        return text


def parse_explanation(reply: str | None) -> tuple[str | None, str, str]:
    """Extract the explanation from a reply: (explanation, "ok", "") or (None, "parse_error", reason)."""
    if reply is None or not reply.strip():
        return None, "parse_error", "empty reply"
    text = _THINK.sub("", reply)  # reasoning models' scratchpads are not the answer
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return None, "parse_error", "reply holds only a reasoning block"
    found = None
    for k, line in enumerate(lines):
        m = _MARKER.match(line)
        if m:
            body = m.group(1)
            if not body.strip("*_` \t") and k + 1 < len(lines):  # "Explanation:" then the sentence below
                body = lines[k + 1]
            found = body
    if found is None:
        if len(lines) != 1:
            return None, "parse_error", f"no 'Explanation:' line in a reply of {len(lines)} lines"
        found = lines[0]
    # a repeated marker within the line: the last one wins, as across lines
    found = _INLINE_MARKER.split(found)[-1]
    explanation = _unwrap(found)
    return _check_explanation(explanation)


def _check_explanation(explanation: str) -> tuple[str | None, str, str]:
    """Reject explanations that must not be scored (empty, too long, markup echo, refusal, placeholder)."""
    if not explanation:
        return None, "parse_error", "empty explanation"
    if len(explanation) > MAX_EXPLANATION_CHARS:
        return (
            None,
            "parse_error",
            f"explanation too long ({len(explanation)} > {MAX_EXPLANATION_CHARS} chars)",
        )
    if prompts.MARK_OPEN in explanation or prompts.MARK_CLOSE in explanation:
        return None, "parse_error", "explanation echoes the examples' << >> markup"
    if re.fullmatch(r"<[^<>]*>", explanation):
        return None, "parse_error", "explanation is the instruction's placeholder"
    if _REFUSAL.match(explanation):
        return None, "parse_error", "reply is a refusal or non-answer"
    return explanation, "ok", ""


def _thin(ex: pd.DataFrame, max_examples: int | None) -> pd.DataFrame:
    """Keep `max_examples` evenly spaced rows of an ordered frame (all rows if None or fewer)."""
    if max_examples is not None and len(ex) > max_examples:
        ex = ex.iloc[np.unique(np.linspace(0, len(ex) - 1, max_examples).round().astype(int))]
    return ex


def _select_examples(ex: pd.DataFrame, max_examples: int | None) -> pd.DataFrame:
    """Activating train windows, strongest first, thinned evenly across strengths to `max_examples`."""
    ex = ex[(ex["split"] == "train") & ex["activating"]].sort_values(
        ["max_act", "example_id"], ascending=[False, True], kind="stable"
    )
    # evenly spaced ranks keep the spread across activation quantiles (top-only is too specific)
    return _thin(ex, max_examples)


def _select_counterexamples(ex: pd.DataFrame, max_examples: int | None) -> pd.DataFrame:
    """Non-activating train windows (for the contrastive prompt), by example_id, thinned to `max_examples`."""
    ex = ex[(ex["split"] == "train") & ~ex["activating"].astype(bool)]
    return _thin(ex.sort_values("example_id", kind="stable"), max_examples)


def explain_latents(examples: pd.DataFrame, latents: pd.DataFrame, cfg: dict, client) -> pd.DataFrame:
    """Explain every selected latent (one row per row of `latents`; skipped latents make no LLM call)."""
    cfg = with_defaults("explainers", cfg)
    max_examples = cfg["max_examples"]
    if max_examples is not None and int(max_examples) < 1:
        raise ValueError(f"explainer option max_examples must be >= 1, got {max_examples}")
    show, cot, prompt = bool(cfg["show_activations"]), bool(cfg["cot"]), cfg["prompt"]
    if prompt not in PROMPTS:
        raise ValueError(f"explainer option prompt must be one of {PROMPTS}, got {prompt!r}")
    by_latent = dict(tuple(examples.groupby("latent", sort=False))) if len(examples) else {}
    rows, requests, asked, fallback = {}, [], [], []
    for lat, status, reason in latents[["latent", "status", "reason"]].itertuples(index=False):
        if status != "ok":
            rows[lat] = explanation_row(lat, client.model, error=reason or f"latent status {status}")
            continue
        group = by_latent.get(lat, examples.iloc[:0])
        ex = _select_examples(group, max_examples)
        if ex.empty:
            rows[lat] = explanation_row(lat, client.model, error="no activating train examples")
            continue
        neg = _select_counterexamples(group, max_examples) if prompt == "contrastive" else None
        if neg is not None and neg.empty:
            fallback.append(int(lat))
            neg = None
        requests.append(
            prompts.explainer_messages(
                [list(t) for t in ex["token_strs"]],
                list(ex["acts"]),
                show_activations=show,
                cot=cot,
                negative_strs=None if neg is None else [list(t) for t in neg["token_strs"]],
                top_tokens=int(cfg["top_tokens"]),
            )
        )
        asked.append(lat)
    if fallback:
        log.warning(
            "contrastive prompt: %d latents have no non-activating train examples (sampler "
            "n_train_nonactivating); they get the default prompt: %s",
            len(fallback),
            fallback,
        )
    completions = client.complete_many(requests, desc="explain") if requests else []
    for lat, c in zip(asked, completions, strict=True):
        usage = dict(
            completion=c.text,
            prompt_tokens=int(c.prompt_tokens),
            completion_tokens=int(c.completion_tokens),
            cached_tokens=int(c.cached_tokens),
            cost_usd=c.cost_usd,
            latency_s=float(c.latency_s),
            cached=bool(c.cached),
        )
        if c.status != "ok":
            failed = llm_failure(c.status)
            rows[lat] = explanation_row(lat, client.model, status=failed, error=c.error, **usage)
        else:
            expl, st, err = parse_explanation(c.text)
            rows[lat] = explanation_row(lat, client.model, explanation=expl, status=st, error=err, **usage)
    out = pd.DataFrame([rows[lat] for lat in latents["latent"]], columns=list(EXPLANATION_COLUMNS))
    return out.astype(EXPLANATION_COLUMNS)


def shown_windows(examples: pd.DataFrame, cfg: dict) -> pd.MultiIndex:
    """(latent, example_id) of every window the explainer's prompt shows (its examples and counterexamples);
    example ids are numbered per latent."""
    cfg, shown = with_defaults("explainers", cfg), []
    for _, group in examples.groupby("latent", sort=False):
        shown.append(_select_examples(group, cfg["max_examples"]))
        if cfg["prompt"] == "contrastive":
            shown.append(_select_counterexamples(group, cfg["max_examples"]))
    keys = pd.concat(shown)[["latent", "example_id"]] if shown else examples[["latent", "example_id"]][:0]
    return pd.MultiIndex.from_frame(keys)


def explain_and_select(
    examples: pd.DataFrame, latents: pd.DataFrame, cfg: dict, client, name: str = "explain"
) -> pd.DataFrame:
    """explain_latents, then, with the option `select`, the best-of choice among the LLM's explanation and the
    other candidates, judged on held-out train windows by the same client (interpflow.best_of).
    `name` is the explainer's config entry, named in the error of an outage."""
    out = explain_latents(examples, latents, cfg, client)
    raise_on_outage(out, f"explainers.{name}", client)  # before any judge call: an outage is not a candidate
    if cfg.get("select") is None:  # {} selects with the defaults
        return out
    select = check_select(cfg["select"])
    shown = shown_windows(examples, cfg)
    candidates = candidates_of(out, examples, latents, shown, select)
    seed = int(with_defaults("explainers", cfg)["seed"])
    return select_best(candidates, heldout_windows(examples, shown), select, client, seed)


def run_explain(
    examples_path: str | os.PathLike,
    latents_path: str | os.PathLike,
    cfg: dict,
    out_path: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None,
    local_gguf: str | os.PathLike | None = None,
    client=None,
    name: str = "explain",
) -> None:
    """Workflow step: explain a shard's latents from its examples; write explanations-{shard}.parquet.
    `name` is the explainer's entry under `explainers:` (for error messages only)."""
    if client is None and "llm" not in cfg:
        raise ValueError("explainer config needs an 'llm' section")
    t0 = time.perf_counter()
    examples, latents = read_parquet(examples_path), read_parquet(latents_path)
    if client is None:
        from interpflow.llm.client import LLMClient

        with LLMClient.from_config(cfg["llm"], cache_dir=cache_dir, local_gguf=local_gguf) as client:
            out = explain_and_select(examples, latents, cfg, client, name)
    else:
        out = explain_and_select(examples, latents, cfg, client, name)
    write_parquet(out, out_path)
    counts = out["status"].value_counts().to_dict()
    log.info(
        "explained %d latents %s; %d prompt + %d completion tokens; %.1f s -> %s",
        len(out),
        counts,
        out["prompt_tokens"].sum(),
        out["completion_tokens"].sum(),
        time.perf_counter() - t0,
        out_path,
    )
