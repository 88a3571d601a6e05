"""The on-disk reply cache: each successful completion as one JSON file, named by its request's key."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from interpflow.llm.types import Completion, TokenLogprob
from interpflow.store import atomic_path

log = logging.getLogger(__name__)


def _completion_to_json(c: Completion) -> dict:
    """A JSON-able record of a completion for the cache."""
    return asdict(c) | {"logprobs": None if c.logprobs is None else [asdict(t) for t in c.logprobs]}


def _completion_from_json(d: dict, latency_s: float) -> Completion:
    """Rebuild a cached completion, marked cached, with the lookup's latency."""
    lps = d["logprobs"]
    lps = None if lps is None else tuple(TokenLogprob(t["token"], float(t["logprob"]), t["top"]) for t in lps)
    fields = {k: d[k] for k in ("text", "status", "error", "prompt_tokens", "completion_tokens", "cost_usd")}
    cached_tokens = int(d.get("cached_tokens", 0))
    slots = d.get("slot_logprobs")
    return Completion(**fields, latency_s=latency_s, cached=True, logprobs=lps, cached_tokens=cached_tokens,
                      slot_logprobs=None if slots is None else tuple(slots))  # fmt: skip


def cache_path(cache_dir: Path | None, key: str) -> Path | None:
    """Where the cache entry of `key` lives, or None without a cache."""
    return None if cache_dir is None else cache_dir / key[:2] / f"{key}.json"


def cache_get(cache_dir: Path | None, key: str, start: float) -> Completion | None:
    """The cached completion for `key`, or None (a corrupt entry counts as missing)."""
    path = cache_path(cache_dir, key)
    if path is None or not path.is_file():
        return None
    try:
        return _completion_from_json(json.loads(path.read_text("utf-8")), time.perf_counter() - start)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # unreadable: ask the provider again
        log.warning("ignoring unreadable LLM cache entry %s: %s", path, exc)
        return None


def cache_put(cache_dir: Path | None, key: str, completion: Completion) -> None:
    """Store a successful completion atomically (a failed write costs a re-ask later, not the reply)."""
    path = cache_path(cache_dir, key)
    if path is None or completion.status != "ok":
        return
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(_completion_to_json(completion), ensure_ascii=False), "utf-8")
    except OSError as exc:
        log.warning("could not cache an LLM reply in %s: %s", path, exc)
