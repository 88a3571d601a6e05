"""The one LLM boundary: every LLM call of interpflow goes through LLMClient, cached and retried."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import threading
import time
from pathlib import Path
from typing import Any

import tenacity

from interpflow.llm.backend import _litellm
from interpflow.llm.budget import SpendLedger, check_budget
from interpflow.llm.cache import cache_get, cache_put
from interpflow.llm.errors import _error_text, _rejects_logprobs, _retry_after, is_retryable
from interpflow.llm.types import Completion, _parse_logprobs

log = logging.getLogger(__name__)

LOCAL_PREFIX = "local/"
MAX_BACKOFF_S = 60.0
EMPTY_REPLY = "empty reply"  # the error of a reply without text
MAX_EMPTY_RETRIES = 2  # asked again at most this often (and never more than max_retries)


def check_credentials(model: str, api_base: str | None = None) -> None:
    """Raise before anything is sent when the provider's key (or base URL) is missing from the environment."""
    missing = _litellm().validate_environment(model, api_base=api_base).get("missing_keys") or []
    if missing:
        raise ValueError(
            f"llm model {model!r} needs {', '.join(missing)} in the environment (keys are read from the "
            "environment only, never from the config)"
        )


def raise_on_outage(table, entry: str, client: LLMClient | None = None) -> None:
    """Fail a step, writing nothing, when every LLM request it made failed (the budget aside): that is an
    outage or a wrong setting, not a result; a failed job is rerun next time, a written one is not.
    `entry` is the config entry whose `llm` section the step used, e.g. "explainers.qwen-1.5b"."""
    asked = table[table["status"].isin(["ok", "parse_error", "llm_error", "budget"])]
    if len(asked) and (asked["status"] == "llm_error").all():
        to = "" if client is None else f" to {client.model!r}"
        if client is not None and client.api_base:
            to += f" at {client.api_base}"
        raise RuntimeError(
            f"all {len(asked)} LLM requests of the {entry} step{to} failed (check {entry}.llm.model, "
            f"{entry}.llm.api_base and the API key); nothing was written, so rerunning retries it. "
            f"First error: {asked['error'].iloc[0]}"
        )


class LLMClient:
    """An async chat client over litellm with a disk cache, retries and a concurrency bound."""

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 256,
        max_concurrency: int = 4,
        max_retries: int = 5,
        timeout_s: float = 120.0,
        logprobs: bool = False,
        top_logprobs: int = 5,
        cache_dir: str | Path | None = None,
        local_gguf: str | Path | None = None,
        n_ctx: int = 8192,
        seed: int = 0,
        extra: dict | None = None,
        retry_base_s: float = 1.0,
        n_threads: int | None = None,
        budget: dict | None = None,
    ):
        if max_concurrency < 1 or max_retries < 0 or max_tokens < 1:
            raise ValueError("llm: max_concurrency and max_tokens must be >= 1, max_retries >= 0")
        if model.startswith(LOCAL_PREFIX) and local_gguf is None:
            raise ValueError(f"llm model {model!r} is local: pass local_gguf, the path of its GGUF file")
        if local_gguf is not None and model.startswith(LOCAL_PREFIX) and not Path(local_gguf).is_file():
            raise FileNotFoundError(f"local_gguf of {model!r} does not exist: {local_gguf}")
        self.model, self.api_base = model, api_base
        self.temperature, self.max_tokens, self.seed = temperature, max_tokens, seed
        self.logprobs, self.top_logprobs = logprobs, top_logprobs
        self.max_concurrency, self.max_retries = max_concurrency, max_retries
        self.timeout_s, self.retry_base_s = timeout_s, retry_base_s
        self.extra = dict(extra or {})
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.local_gguf, self.n_ctx, self.n_threads = local_gguf, n_ctx, n_threads
        self.local_model = None  # the LocalChatModel, loaded on first uncached local call
        self._load_lock = threading.Lock()
        self._rng = random.Random(seed)  # backoff jitter only
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None
        self.budget = check_budget(budget)
        self.ledger = None
        if self.budget is not None:
            default = None if self.cache_dir is None else self.cache_dir / "spend"
            self.ledger = SpendLedger(self.budget.get("ledger") or default)
        self._warned: set[str] = set()  # budget warnings already logged, each once per client

    @classmethod
    def from_config(cls, cfg: dict, *, cache_dir=None, local_gguf=None) -> LLMClient:
        """Build a client from a config mapping whose keys are the constructor's keyword arguments."""
        import inspect

        cfg = dict(cfg)
        gguf = cfg.pop("gguf", None)
        local_gguf = local_gguf or gguf  # the workflow passes it as a rule input instead
        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        if unknown := sorted(set(cfg) - known):
            raise ValueError(f"llm config has unknown keys {unknown}; allowed: {sorted(known)}")
        if "model" not in cfg:
            raise ValueError("llm config needs a 'model' key")
        given = {"cache_dir": cache_dir, "local_gguf": local_gguf}
        if not cfg["model"].startswith(LOCAL_PREFIX):
            check_credentials(cfg["model"], cfg.get("api_base"))
        return cls(**cfg | {k: v for k, v in given.items() if v is not None})

    @property
    def is_local(self) -> bool:
        """Whether the model runs in-process (model string `local/<name>`)."""
        return self.model.startswith(LOCAL_PREFIX)

    def cache_key(self, messages: list[dict], slots: dict | None = None) -> str:
        """sha256 of everything that determines the reply: never the API key, nor where the model is served
        (api_base), so the same model behind another host or port answers from the cache."""
        request = {
            "model": self.model, "messages": messages,
            "temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed,
            "logprobs": self.logprobs, "top_logprobs": self.top_logprobs if self.logprobs else None,
            "extra": self.extra,
        }  # fmt: skip
        if slots is not None:  # only then, so keys of ordinary requests stay as they were
            request["slots"] = slots
        blob = json.dumps(request, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _ensure_local(self) -> None:
        """Load the local GGUF and register it with litellm, once."""
        from interpflow.llm.local_provider import register_local_model

        with self._load_lock:
            if self.local_model is None:
                name = self.model[len(LOCAL_PREFIX) :]
                gguf, n_ctx, n_threads = self.local_gguf, self.n_ctx, self.n_threads
                self.local_model = register_local_model(name, gguf, n_ctx=n_ctx, n_threads=n_threads)

    def _semaphore(self) -> asyncio.Semaphore:
        """The concurrency bound of the running event loop (a semaphore is tied to one loop)."""
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:
            self._sem, self._sem_loop = asyncio.Semaphore(self.max_concurrency), loop
        return self._sem

    def _request(self, messages: list[dict], logprobs: bool, slots: dict | None = None) -> dict:
        """The litellm keyword arguments of one attempt."""
        kwargs = dict(
            model=self.model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens,
            timeout=self.timeout_s, seed=self.seed, num_retries=0, max_retries=0, drop_params=True,
        )  # fmt: skip
        if self.api_base is not None:
            kwargs["api_base"] = self.api_base
        if logprobs and slots is None:
            kwargs |= {"logprobs": True, "top_logprobs": self.top_logprobs}
        kwargs |= self.extra
        if slots is not None:  # the local provider reads the slots from extra_body; nothing is generated
            kwargs |= {
                "max_tokens": 1,
                "extra_body": dict(kwargs.get("extra_body") or {}, slot_logprobs=slots),
            }
        return kwargs

    @property
    def supports_slots(self) -> bool:
        """Whether the provider gives next-token logprobs at places of a prompt (slot_logprobs_many)."""
        return self.is_local

    async def _call(self, messages: list[dict], slots: dict | None = None) -> Any:
        """Call litellm with retries (tenacity: the provider's Retry-After, else exponential backoff with
        jitter); raise the last error when they are used up. A provider that rejects logprobs is asked again
        at once without them, which is not a retry (the caller then gets no P(yes))."""
        litellm, logprobs = _litellm(), [self.logprobs]
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            retry=tenacity.retry_if_exception(is_retryable),
            wait=self._backoff,
            before_sleep=self._log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    return await litellm.acompletion(**self._request(messages, logprobs[0], slots))
                except Exception as exc:
                    if not (logprobs[0] and _rejects_logprobs(exc)):
                        raise
                log.warning("%s rejects logprobs; asking without them", self.model)
                logprobs[0] = False
                return await litellm.acompletion(**self._request(messages, False, slots))

    def _backoff(self, state: tenacity.RetryCallState) -> float:
        """Seconds before the next try: what the provider's Retry-After says, else base * 2^(try - 1)
        with jitter (0.5-1.5x), at most MAX_BACKOFF_S."""
        wait = _retry_after(state.outcome.exception())
        if wait is not None:
            return wait
        base = min(MAX_BACKOFF_S, self.retry_base_s * 2 ** (state.attempt_number - 1))
        return base * (0.5 + self._rng.random())

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        log.info("retry %d/%d of %s in %.2fs: %s", state.attempt_number, self.max_retries, self.model,
                 state.upcoming_sleep, _error_text(state.outcome.exception(), 200))  # fmt: skip

    def _cost(self, response: Any) -> float | None:
        """litellm's price of a response; 0.0 for local models; None when unknown."""
        if self.is_local:
            return 0.0
        hidden = getattr(response, "_hidden_params", None) or {}
        if "response_cost" in hidden:  # litellm priced it while logging the call; pricing again costs ~1 ms
            cost = hidden["response_cost"]
        else:
            try:
                cost = _litellm().completion_cost(completion_response=response)
            except Exception:  # unmapped models and self-hosted servers have no price
                return None
        return None if cost is None else float(cost)

    def _to_completion(self, response: Any, latency_s: float, slots: dict | None = None) -> Completion:
        """Turn a litellm ModelResponse into a Completion ("empty reply" is an error)."""
        usage = getattr(response, "usage", None)
        pt = int(getattr(usage, "prompt_tokens", 0) or 0)
        ct = int(getattr(usage, "completion_tokens", 0) or 0)
        details = getattr(usage, "prompt_tokens_details", None)
        # OpenAI-style usage reports cached prefix tokens in prompt_tokens_details; Anthropic as cache reads
        cached_tokens = int(
            getattr(details, "cached_tokens", 0) or getattr(usage, "cache_read_input_tokens", 0) or 0
        )
        choice = response.choices[0]
        text = getattr(choice.message, "content", None)
        ok, error = bool(text and text.strip()), EMPTY_REPLY
        slot_lps = getattr(response, "slot_logprobs", None) if slots is not None else None
        if slots is not None and (slot_lps is None or len(slot_lps) != len(slots["offsets"])):
            ok, error = False, f"the provider returned no logprobs for the {len(slots['offsets'])} slots"
        return Completion(
            text=text if ok else None, status="ok" if ok else "error", error="" if ok else error,
            prompt_tokens=pt, completion_tokens=ct, cost_usd=self._cost(response), latency_s=latency_s,
            cached=False, logprobs=_parse_logprobs(choice) if self.logprobs and slots is None else None,
            cached_tokens=cached_tokens,
            slot_logprobs=None if slot_lps is None else tuple(dict(d) for d in slot_lps),
        )  # fmt: skip

    def _over_budget(self) -> str | None:
        """Why no further uncached request may be sent (the budget is spent), or None."""
        if self.ledger is None:
            return None
        tokens, usd = self.ledger.totals()
        cap_tokens, cap_usd = self.budget.get("max_tokens"), self.budget.get("max_usd")
        where = f" (spend ledger: {self.ledger.folder})" if self.ledger.folder else ""
        if cap_tokens is not None and tokens >= cap_tokens:
            return f"budget reached: {tokens:,} LLM tokens spent, budget.max_tokens is {cap_tokens:,}{where}"
        # a local model costs nothing, so a dollar cap never stops it
        if cap_usd is not None and usd >= cap_usd and not self.is_local:
            return f"budget reached: ${usd:.4f} spent, budget.max_usd is {cap_usd}{where}"
        return None

    def _spent(self, c: Completion) -> None:
        """Record an uncached reply in the spend ledger (warn once if its price is unknown)."""
        if self.ledger is None:
            return
        self.ledger.record(self.model, c.prompt_tokens, c.completion_tokens, c.cost_usd)
        if c.cost_usd is None and self.budget.get("max_usd") is not None and "unpriced" not in self._warned:
            self._warned.add("unpriced")
            log.warning("litellm has no price for %s: budget.max_usd cannot limit it (budget.max_tokens can)",
                        self.model)  # fmt: skip

    def _failure(self, status: str, error: str, latency_s: float) -> Completion:
        """A Completion that carries no reply; its price is unknown unless it was never sent (budget)."""
        cost = 0.0 if status == "budget" else None
        return Completion(None, status, error, 0, 0, cost, latency_s, False, None)

    async def acomplete(self, messages: list[dict], slots: dict | None = None) -> Completion:
        """Answer one chat request; failures come back as status "error" or "budget", never as exceptions.

        With `slots` ({"offsets": [...], "candidates": [...]}: see slot_logprobs_many) the reply is the
        next-token logprobs of the candidates at those places of the last (assistant) message instead.
        An empty reply (a transient fault of some servers) is asked again, at most MAX_EMPTY_RETRIES times.
        """
        start = time.perf_counter()
        key = self.cache_key(messages, slots)
        if (hit := cache_get(self.cache_dir, key, start)) is not None:
            return hit
        # an in-process model is deterministic: asking it again would give the same empty reply
        retries = 0 if self.is_local else min(self.max_retries, MAX_EMPTY_RETRIES)
        for attempt in range(retries + 1):
            completion = await self._attempt(messages, slots)
            if completion.error != EMPTY_REPLY:
                break
            if attempt < retries:
                log.info("empty reply from %s; asking again (%d/%d)", self.model, attempt + 1, retries)
        await asyncio.to_thread(cache_put, self.cache_dir, key, completion)  # file I/O off the event loop
        return completion

    async def _attempt(self, messages: list[dict], slots: dict | None) -> Completion:
        """One request to the provider within the concurrency bound (its own retries on transport errors)."""
        async with self._semaphore():
            start = time.perf_counter()  # latency of the call itself, not of waiting for a slot
            if (reason := self._over_budget()) is not None:  # checked per request: other processes spend too
                if "spent" not in self._warned:
                    self._warned.add("spent")
                    log.warning("%s: further uncached requests are not sent: %s", self.model, reason)
                return self._failure("budget", reason, 0.0)
            try:
                if self.is_local and self.local_model is None:
                    await asyncio.to_thread(self._ensure_local)
                response = await self._call(messages, slots)
            except Exception as exc:
                log.warning("%s request failed: %s", self.model, _error_text(exc, 200))
                return self._failure("error", _error_text(exc), time.perf_counter() - start)
            latency = time.perf_counter() - start
        # the slot is free again: reading the reply is not a request to the provider
        try:
            completion = self._to_completion(response, latency, slots)
        except Exception as exc:  # a response litellm accepted but that holds no usable choice
            log.warning("%s sent an unreadable response: %s", self.model, _error_text(exc, 200))
            return self._failure("error", _error_text(exc), latency)
        self._spent(completion)
        return completion

    async def _gather(
        self, requests: list[list[dict]], desc: str, slots: list | None = None
    ) -> list[Completion]:
        """Run all requests concurrently (bounded by the semaphore) with a progress bar; keep their order."""
        from tqdm.auto import tqdm

        with tqdm(total=len(requests), desc=desc, leave=False) as bar:

            async def one(messages: list[dict], slot: dict | None) -> Completion:
                result = await self.acomplete(messages, slot)
                bar.update(1)
                return result

            slots = slots or [None] * len(requests)
            return list(await asyncio.gather(*(one(m, s) for m, s in zip(requests, slots, strict=True))))

    def complete_many(self, requests: list[list[dict]], desc: str = "llm") -> list[Completion]:
        """Answer many chat requests, in the same order; blocking (call it outside an event loop)."""
        return self._run(self._gather(requests, desc))

    def slot_logprobs_many(
        self, requests: list[tuple[list[dict], list[int]]], candidates: list[str], desc: str = "llm"
    ) -> list[Completion]:
        """Next-token logprobs of `candidates` at places of prompts, one evaluation each, in order; blocking.

        Each request is (messages, offsets): the last message is the assistant's reply so far, and offsets are
        character positions in it; each Completion's `slot_logprobs` holds, per offset, candidate -> logprob
        of
        the token that would be written there, given only the text before it.
        """
        if not self.supports_slots:
            raise ValueError(f"{self.model} gives no prompt logprobs; only in-process local/ models do")
        slots = [{"offsets": list(map(int, offs)), "candidates": list(candidates)} for _, offs in requests]
        return self._run(self._gather([m for m, _ in requests], desc, slots))

    @staticmethod
    def _run(coro):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        coro.close()
        raise RuntimeError("LLMClient batch calls block; inside an event loop await acomplete instead")

    def close(self) -> None:
        """Free the local model, if one was loaded."""
        if self.local_model is not None:
            from interpflow.llm.local_provider import unregister_local_model

            unregister_local_model(self.model[len(LOCAL_PREFIX) :])
            self.local_model = None

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
