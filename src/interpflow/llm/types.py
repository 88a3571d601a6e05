"""What an LLM request gives back (Completion, TokenLogprob), and reading OpenAI-style logprobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from interpflow.statuses import CompletionStatus


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token and its most likely alternatives."""

    token: str
    """The generated token's text."""
    logprob: float
    top: dict[str, float]
    """Alternatives' text -> logprob, including the chosen token."""


@dataclass(frozen=True)
class Completion:
    """The outcome of one chat request; failures are a status, never an exception."""

    text: str | None
    """The reply; None unless status is "ok"."""
    status: CompletionStatus
    """"ok", "error", or "budget" (not sent: the run's LLM budget is spent)."""
    error: str
    """"" when ok, else a short reason (API keys scrubbed)."""
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    """litellm's price where known, 0.0 for local models, None if unknown."""
    latency_s: float
    cached: bool
    """Served from the on-disk cache."""
    logprobs: tuple[TokenLogprob, ...] | None
    """Per generated token, when requested and offered by the provider."""
    cached_tokens: int = 0
    """Prompt tokens the provider served from its prefix cache, where it reports them (0 otherwise)."""
    slot_logprobs: tuple[dict[str, float], ...] | None = None
    """For a slot request (LLMClient.slot_logprobs_many): per slot, candidate -> next-token logprob."""


def _parse_logprobs(choice: Any) -> tuple[TokenLogprob, ...] | None:
    """Read OpenAI-style `choice.logprobs.content` into TokenLogprobs (None if absent)."""
    lp = getattr(choice, "logprobs", None)
    content = lp.get("content") if isinstance(lp, dict) else getattr(lp, "content", None)
    if not content:
        return None
    get = lambda o, k: o.get(k) if isinstance(o, dict) else getattr(o, k, None)  # noqa: E731
    out = []
    for entry in content:
        token, logprob = get(entry, "token"), float(get(entry, "logprob"))
        top: dict[str, float] = {}
        for alt in get(entry, "top_logprobs") or []:
            top.setdefault(get(alt, "token"), float(get(alt, "logprob")))  # first = likeliest on text clashes
        top.setdefault(token, logprob)
        out.append(TokenLogprob(token=token, logprob=logprob, top=top))
    return tuple(out)
