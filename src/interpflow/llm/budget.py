"""The run's LLM budget: checking its setting, and the spend ledger that processes share through a folder."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

BUDGET_KEYS = ("max_usd", "max_tokens", "ledger")
LEDGER_REFRESH_S = 1.0  # how stale other processes' spending may be when checked


def check_budget(budget: dict | None) -> dict | None:
    """Validate a `budget` mapping (max_usd, max_tokens, optional ledger folder); None means no limit."""
    if budget is None:
        return None
    if not isinstance(budget, dict):
        raise ValueError(f"budget must be a mapping with keys {BUDGET_KEYS}, got {budget!r}")
    if unknown := sorted(set(budget) - set(BUDGET_KEYS)):
        raise ValueError(f"budget has unknown keys {unknown}; allowed: {list(BUDGET_KEYS)}")
    for key, kind in (("max_usd", (int, float)), ("max_tokens", (int,))):
        value = budget.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind) or value < 0):
            raise ValueError(f"budget.{key} must be null or a number >= 0, got {value!r}")
    return dict(budget)


class SpendLedger:
    """Tokens and dollars of uncached LLM replies, shared across processes through a folder.

    Each ledger appends JSON lines to its own file (so writers never contend); totals sum every file of
    the folder, re-reading other files only from where it left off and at most every LEDGER_REFRESH_S.
    Without a folder the ledger only counts this process's spending.
    """

    def __init__(self, folder: str | Path | None):
        self.folder = None if folder is None else Path(folder)
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self.path = None if self.folder is None else self.folder / name
        self.tokens, self.usd, self.unpriced = 0, 0.0, 0  # this ledger's own spending
        self._others: dict[str, tuple[int, int, float]] = {}  # file name -> (bytes read, tokens, usd)
        self._scanned = -float("inf")
        self._lock = threading.Lock()

    def record(self, model: str, prompt_tokens: int, completion_tokens: int, cost_usd: float | None) -> None:
        """Add one reply's spending (unknown prices count as $0 and are tallied as unpriced)."""
        line = {"time": time.time(), "model": model, "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens, "cost_usd": cost_usd}  # fmt: skip
        with self._lock:
            self.tokens += prompt_tokens + completion_tokens
            self.usd += cost_usd or 0.0
            self.unpriced += cost_usd is None
            if self.path is None:
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as f:  # one short write: lines never interleave
                    f.write(json.dumps(line) + "\n")
            except OSError as exc:  # this process still counts it; other processes will not see it
                log.warning("could not write the LLM spend ledger %s: %s", self.path, exc)

    def _read_others(self) -> None:
        """Fold in what other ledgers of the folder appended since the last look."""
        if self.folder is None or not self.folder.is_dir():
            return
        for entry in os.scandir(self.folder):
            if not entry.name.endswith(".jsonl") or self.path is not None and entry.name == self.path.name:
                continue
            done, tokens, usd = self._others.get(entry.name, (0, 0, 0.0))
            if entry.stat().st_size <= done:
                continue
            with open(entry.path, "rb") as f:
                f.seek(done)
                chunk = f.read()
            chunk = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written is read next time
            for raw in chunk.splitlines():
                try:
                    rec = json.loads(raw)
                    tokens += int(rec["prompt_tokens"]) + int(rec["completion_tokens"])
                    usd += float(rec["cost_usd"] or 0.0)
                except (ValueError, KeyError, TypeError):
                    log.warning("ignoring a corrupt line of the LLM spend ledger %s", entry.path)
            self._others[entry.name] = (done + len(chunk), tokens, usd)

    def totals(self, max_age_s: float = LEDGER_REFRESH_S) -> tuple[int, float]:
        """(tokens, usd) spent by every ledger of the folder; others' part at most `max_age_s` old."""
        with self._lock:
            if time.monotonic() - self._scanned >= max_age_s:
                try:
                    self._read_others()
                except OSError as exc:  # keep the last known totals rather than failing the request
                    log.warning("could not read the LLM spend ledger %s: %s", self.folder, exc)
                self._scanned = time.monotonic()
            others = self._others.values()
            return self.tokens + sum(t for _, t, _ in others), self.usd + sum(u for _, _, u in others)
