"""What every scorer shares: which latents and windows it scores, how an LLM scorer reads its model, the
AUROC metrics table of the continuous scorers, and writing a scorer's two tables.

The scorers themselves (judge.py: detection and fuzzing; simulation.py; embedding.py; surprisal.py;
intervention.py) import from here and never from each other.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from interpflow.defaults import with_defaults
from interpflow.llm.client import raise_on_outage
from interpflow.sampling.scored import select_test_examples
from interpflow.scoring.metrics import HEAD_COLUMNS, NO_USAGE, USAGE_COLUMNS
from interpflow.statuses import NO_TEST_EXAMPLES, NOT_SAMPLED, no_explanation
from interpflow.store import atomic_path, read_parquet, write_parquet

log = logging.getLogger(__name__)

BASE_COLUMNS = HEAD_COLUMNS | {"auroc": "float64"}


def scored_windows(ex: pd.DataFrame, cfg: dict, rng: np.random.Generator) -> pd.DataFrame:
    """A latent's test windows (select_test_examples: negatives, caps) in a seeded random order."""
    if ex.empty:
        return ex
    chosen = select_test_examples(ex, int(ex["latent"].iloc[0]), cfg, rng)
    return chosen.iloc[rng.permutation(len(chosen))]


def scorable_latents(
    examples: pd.DataFrame, explanations: pd.DataFrame, cfg: dict, unscored: dict[int, str]
) -> Iterator[tuple[int, str, pd.DataFrame, np.random.Generator]]:
    """Yield (latent, explanation, its test windows, its rng) for every latent a scorer can score.

    Latents without an ok explanation or without test windows, and those past the scorer's `max_latents`
    (status "not_sampled"; the sampler's latents are a seeded random sample, so the first n are one too), are
    recorded in `unscored` with the reason;
    the rng is np.random.default_rng([seed, latent]), already used to pick and order the windows.
    """
    cfg = with_defaults("scorers", cfg)
    seed, cap, n = int(cfg["seed"]), cfg["max_latents"], 0
    by_latent = dict(tuple(examples.groupby("latent", sort=False))) if len(examples) else {}
    for lat, expl, status in explanations[["latent", "explanation", "status"]].itertuples(index=False):
        lat = int(lat)
        if status != "ok":
            unscored[lat] = no_explanation(status)
            continue
        if cap is not None and n >= int(
            cap
        ):  # an expensive scorer on the first max_latents (a random sample)
            unscored[lat] = NOT_SAMPLED
            continue
        rng = np.random.default_rng([seed, lat])
        ex = scored_windows(by_latent.get(lat, examples.iloc[:0]), cfg, rng)
        if ex.empty:
            unscored[lat] = NO_TEST_EXAMPLES
            continue
        n += 1
        yield lat, expl, ex, rng


METHODS = ("auto", "slots", "reply")


def choose_method(cfg: dict, supports_slots: bool) -> str:
    """How an LLM scorer reads its model: "slots" (next-token logprobs at places of the prompt, one
    evaluation, nothing generated) where the model gives them and the config allows, else "reply"."""
    method = with_defaults("scorers", cfg)["method"]
    if method not in METHODS:
        raise ValueError(f"scorer option method must be one of {METHODS}, got {method!r}")
    if method == "slots" and not supports_slots:
        name = cfg.get("name") or cfg.get("kind")
        raise ValueError(f"scorer {name}: method 'slots' needs prompt logprobs, "
                         "which only in-process local/ models give (use method: reply or auto)")  # fmt: skip
    return "slots" if method == "slots" or (method == "auto" and supports_slots) else "reply"


def check_caps(cfg: dict) -> None:
    """Validate the options every continuous scorer shares (batch size, class caps)."""
    cfg = with_defaults("scorers", cfg)
    if int(cfg["batch_size"]) < 1:
        raise ValueError(f"scorer option batch_size must be >= 1, got {cfg['batch_size']}")
    for key in ("max_activating", "max_nonactivating"):
        if cfg.get(key) is not None and int(cfg[key]) < 0:
            raise ValueError(f"scorer option {key} must be >= 0, got {cfg[key]}")


def window_texts(examples: pd.DataFrame) -> list[str]:
    """Each window's plain text: its token strings joined as decoded, no marks."""
    return ["".join(map(str, t)) for t in examples["token_strs"]]


def select_windows(
    examples: pd.DataFrame, explanations: pd.DataFrame, cfg: dict
) -> tuple[pd.DataFrame, dict[int, str]]:
    """Test windows to score, with their latent's explanation, and the status of latents left unscored.

    Returns one row per (latent, window) with `latent`, `explanation`, `example_id`, `activating`, `text`,
    and {latent: "no_explanation: <status>" or "no_test_examples"} for the rest.
    """
    parts, unscored = [], {}
    for lat, expl, ex, _ in scorable_latents(examples, explanations, cfg, unscored):
        ex = ex.sort_values("example_id", kind="stable")
        parts.append(
            pd.DataFrame(
                {
                    "latent": lat,
                    "explanation": str(expl),
                    "example_id": ex["example_id"].to_numpy(dtype=np.int64),
                    "activating": ex["activating"].to_numpy(dtype=bool),
                    "text": window_texts(ex),
                }
            )
        )
    cols = ["latent", "explanation", "example_id", "activating", "text"]
    return (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)), unscored


def auroc(truth: np.ndarray, score: np.ndarray) -> float:
    """AUROC of `score` for truth True against False; NaN when a class is missing."""
    from sklearn.metrics import roc_auc_score

    truth = np.asarray(truth, dtype=bool)
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, np.asarray(score, dtype=np.float64)))


def auroc_metrics(
    predictions: pd.DataFrame,
    value: str,
    explanations: pd.DataFrame,
    unscored: dict[int, str],
    name: str,
    kind: str,
    means: dict[str, Callable[[pd.DataFrame], float]],
) -> pd.DataFrame:
    """One metrics row per explanation row: AUROC of `value` (the headline score) plus the `means` columns.

    A latent none of whose windows scored carries its windows' most common failure status.
    """
    groups = dict(tuple(predictions.groupby("latent", sort=False))) if len(predictions) else {}
    rows = []
    for lat in explanations["latent"].astype(int):
        row = dict(latent=lat, scorer=name, kind=kind, n=0, n_failed=0, score=np.nan, auroc=np.nan)
        row |= dict.fromkeys(means, np.nan)
        g = groups.get(lat)
        if g is None:
            rows.append(row | {"status": unscored.get(lat, NO_TEST_EXAMPLES)})
            continue
        ok = g[g["status"] == "ok"]
        row |= dict(n=len(ok), n_failed=len(g) - len(ok))
        if ok.empty:
            rows.append(row | {"status": str(g["status"].value_counts().index[0])})
            continue
        a = auroc(ok["activating"].to_numpy(dtype=bool), ok[value].to_numpy(dtype=np.float64))
        row |= dict(status="ok", score=a, auroc=a) | {k: float(f(ok)) for k, f in means.items()}
        rows.append(row)
    columns = BASE_COLUMNS | dict.fromkeys(means, "float64")
    out = pd.DataFrame(rows, columns=[*columns]).astype(columns)
    # no LLM is called: zero tokens, and a local model costs nothing
    return out.assign(**NO_USAGE).astype(USAGE_COLUMNS)


def class_mean(column: str, activating: bool) -> Callable[[pd.DataFrame], float]:
    """A function giving the mean of `column` over one class of scored windows (NaN if none)."""
    return lambda ok: ok.loc[ok["activating"] == activating, column].mean()


def save_scores(
    predictions: pd.DataFrame,
    metrics: pd.DataFrame,
    predictions_out,
    metrics_out,
    name: str,
    seconds: float,
    schema=None,
) -> None:
    """Write a scorer's two tables atomically and log what it did (latents, units, failures, tokens)."""
    with atomic_path(predictions_out) as tmp:
        predictions.to_parquet(tmp, index=False, schema=schema)
    write_parquet(metrics, metrics_out)
    tokens = metrics.get("prompt_tokens", pd.Series(dtype=int)).sum()
    log.info(
        "%s: %d latents (%d scored), %d units, %d failed; %d prompt + %d completion tokens; %.1f s", name,
        len(metrics), int((metrics["status"] == "ok").sum()), len(predictions),
        int((predictions["status"] != "ok").sum()), tokens,
        metrics.get("completion_tokens", pd.Series(dtype=int)).sum(), seconds,
    )  # fmt: skip


def run_llm_scorer(
    score,
    llm_cfg,
    examples_path,
    explanations_path,
    cfg: dict,
    predictions_out,
    metrics_out,
    *,
    cache_dir,
    local_gguf=None,
    client=None,
    schema=None,
) -> None:
    """Workflow step of an LLM scorer: `score(examples, explanations, cfg, client)` over one shard, saved.

    `llm_cfg` is the client's config, or a function of the shard's examples returning it.
    """
    from interpflow.llm.client import LLMClient

    t0 = time.perf_counter()
    examples, explanations = read_parquet(examples_path), read_parquet(explanations_path)
    if callable(llm_cfg) and client is None:
        llm_cfg = llm_cfg(examples)
    with (
        contextlib.nullcontext(client)
        if client is not None
        else LLMClient.from_config(llm_cfg, cache_dir=cache_dir, local_gguf=local_gguf)
    ) as judge:
        predictions, metrics = score(examples, explanations, cfg, judge)
    name = str(cfg.get("name") or cfg.get("kind"))
    raise_on_outage(predictions, f"scorers.{name}", judge)
    save_scores(predictions, metrics, predictions_out, metrics_out, name, time.perf_counter() - t0, schema)


