"""Failed LLM requests: key-free error texts, the Retry-After of the server, and which errors are retried."""

from __future__ import annotations

import asyncio
import email.utils
import os
import time

from interpflow.llm.backend import _litellm

MAX_RETRY_AFTER_S = 300.0
RETRYABLE_STATUS = {408, 409, 429}


def scrub(text: str) -> str:
    """Replace the value of every *_API_KEY / *_TOKEN environment variable in `text` by ***."""
    secrets = [v for k, v in os.environ.items() if k.upper().endswith(("_API_KEY", "_TOKEN")) and len(v) >= 4]
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _error_text(exc: BaseException, limit: int = 500) -> str:
    """A short, key-free reason for a failed request."""
    text = scrub(f"{type(exc).__name__}: {exc}".strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (Retry-After: seconds or an HTTP date), if the error carries it."""
    # litellm keeps the provider's headers in litellm_response_headers; its `response` is a stand-in
    places = (getattr(exc, "litellm_response_headers", None), getattr(exc, "headers", None),
              getattr(getattr(exc, "response", None), "headers", None))  # fmt: skip
    for headers in places:
        try:
            value = headers.get("retry-after") if headers else None
        except (AttributeError, TypeError):  # an odd header object
            continue
        if value is None:
            continue
        try:
            wait = float(value)
        except ValueError:
            try:
                wait = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                continue
        return min(MAX_RETRY_AFTER_S, max(0.0, wait))
    return None


def is_retryable(exc: BaseException) -> bool:
    """Rate limits, server errors, timeouts and connection errors are worth retrying; the rest is not."""
    litellm = _litellm()
    if isinstance(
        exc, litellm.ContextWindowExceededError | litellm.AuthenticationError | litellm.BadRequestError
    ):
        return False
    if isinstance(exc, litellm.Timeout | litellm.APIConnectionError | asyncio.TimeoutError | ConnectionError):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and (status in RETRYABLE_STATUS or status >= 500)


def _rejects_logprobs(exc: BaseException) -> bool:
    """True when the provider refused the request because of the logprobs parameters."""
    litellm = _litellm()
    return (
        isinstance(exc, litellm.UnsupportedParamsError | litellm.BadRequestError)
        and "logprob" in str(exc).lower()
    )
