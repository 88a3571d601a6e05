"""Every status word interpflow writes, typed: one `Literal` per table, and the reason always in `error`.

A latent or window that gets no result still gets a row whose `status` says why (README, "Failures,
resuming and the budget"). The words are fixed here, so a reader (stats.status_counts, the report, a
researcher's pandas) can match them exactly: `budget` is its own status from the LLM client to the
metrics table, never an `llm_error` recognised by its message.
"""

from __future__ import annotations

from typing import Literal, get_args

CompletionStatus = Literal["ok", "error", "budget"]
"""One LLM request (llm.types.Completion): answered, failed after retries, or not sent (budget spent)."""

LLMFailure = Literal["llm_error", "budget"]
"""A request that gave no reply, as tables record it: the provider failed, or the budget stopped it."""

LatentSelection = Literal["ok", "skipped"]
"""examples/latents-{shard}.parquet: enough activations to explain and score, or not (`reason` says)."""

ExplanationStatus = Literal["ok", "skipped", "parse_error", "llm_error", "budget"]
"""explanations-{shard}.parquet; `skipped` carries the sampler's reason, the failures theirs, in `error`."""

WindowStatus = Literal[
    "ok", "parse_error", "llm_error", "budget",  # LLM scorers (judge, simulation)
    "empty_text", "too_long", "nonfinite_loss",  # embedding and surprisal
    "calibration_failed",  # intervention: no steering strength reached the target KL
]  # fmt: skip
"""One row of a scorer's predictions-{shard}.parquet (a window, or a prompt for intervention)."""

NOT_SAMPLED = "not_sampled"  # past the scorer's max_latents: not scored, by design
NO_TEST_EXAMPLES = "no_test_examples"
NO_EXPLANATION = "no_explanation: "  # + the explanation's status, e.g. "no_explanation: skipped"
LatentScoreStatus = Literal[
    "ok", "not_sampled", "no_test_examples", "constant_prediction", "constant_truth", WindowStatus
]
"""metrics-{shard}.parquet: `ok`, a reason the latent was not scored, or the most common failure of its
windows; besides these, "no_explanation: <ExplanationStatus or empty>"."""


def llm_failure(completion_status: str) -> LLMFailure:
    """The table status of a request that gave no reply."""
    return "budget" if completion_status == "budget" else "llm_error"


def no_explanation(status: str) -> str:
    """The metrics status of a latent whose explanation is not ok."""
    return f"{NO_EXPLANATION}{status}"


def _words(t) -> set[str]:
    return {w for a in get_args(t) for w in (_words(a) if get_args(a) else {a})}


def is_score_status(status: str) -> bool:
    """Whether `status` is a word a metrics table may hold."""
    if status.startswith(NO_EXPLANATION):  # intervention adds "empty": status ok, but a blank explanation
        return status[len(NO_EXPLANATION) :] in _words(ExplanationStatus) | {"empty"}
    return status in _words(LatentScoreStatus)


WORDS = {
    "completion": _words(CompletionStatus),
    "latents": _words(LatentSelection),
    "explanations": _words(ExplanationStatus),
    "predictions": _words(WindowStatus),
    "metrics": _words(LatentScoreStatus),
}
"""The status words of each table, for checks; a metrics table may also hold "no_explanation: ..."
(is_score_status checks both)."""
