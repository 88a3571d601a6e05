"""Blinded human rating of explanations: tasks for the server, ratings appended per rater, read as a table.

A rater sees an explanation and a shuffled mix of a latent's activating and non-activating test windows, says
whether each window fits, and rates the explanation 1-5. The task names neither the explainer (baselines are
rated too: that is what blinding is for) nor any score or activation; its ids are opaque HMACs that the pool
maps back, derived from the data alone so they mean the same after a restart.

Ratings go to `{ratings_dir}/{rater}.jsonl`, one JSON object per line (fields: `RECORD_FIELDS`), appended
under an exclusive lock with a single write and fsync; a crash can at worst leave a partial last line, which
readers skip. Nothing is ever rewritten: a later rating of the same item by the same rater supersedes the
earlier one when read.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

RATER_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
DEFAULT_KEY = b"interpflow-ratings-v1"
RECORD_FIELDS = ("version", "time", "rater", "task", "unit", "latent", "explainer", "explanation", "rating",
                 "n_windows", "n_correct", "answers")  # fmt: skip
RATING_COLUMNS = ["rater", "task", "unit", "latent", "explainer", "rating", "n_windows", "n_correct",
                  "human_accuracy", "accuracy_metric", "n_versions", "time", "answers"]  # fmt: skip
EXAMPLE_COLUMNS = ["latent", "example_id", "split", "activating", "token_strs"]


@dataclass(frozen=True)
class Item:
    """One explanation to rate: a selected latent of a unit as one explainer explained it."""

    task: str
    """Opaque id shown to the rater (HMAC of unit, latent and explainer)."""
    unit: str
    """`{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}`."""
    shard: int
    latent: int
    explainer: str
    explanation: str


@dataclass(frozen=True)
class Window:
    """One test window of an item, as the pool knows it (the rater gets only `window` and `token_strs`)."""

    window: str
    """Opaque id (HMAC of the task id and example id)."""
    example_id: int
    activating: bool
    """Ground truth from the sampler; never sent to the rater."""
    token_strs: tuple[str, ...]


def _digest(key: bytes, text: str, n: int) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:n]


def _seed(*parts: object) -> int:
    """A stable 64-bit seed from strings (Python's hash() is salted per process, so it would not survive)."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def check_rater(rater: object) -> str:
    if not isinstance(rater, str) or not RATER_PATTERN.fullmatch(rater):
        raise ValueError(f"rater: {rater!r} is not 1-64 characters of letters, digits, '_', '.' or '-'")
    return rater


class RatingPool:
    """The rateable items of a run (entries rows with status ok and an explanation) and their test windows.

    Item order is one seeded shuffle shared by every rater, so that raters overlap on the same items early
    (agreement between raters needs items rated by two or more); the display order of an item's windows is
    shuffled per rater. Which windows an item shows depends only on its unit and latent (every explainer of a
    latent is judged on the same windows), so ids and truths are the same after a restart.
    """

    def __init__(self, entries: pd.DataFrame, results: str | os.PathLike, *, max_windows: int = 5,
                 seed: int = 0, key: bytes = DEFAULT_KEY):  # fmt: skip
        self.results = Path(results)
        self.max_windows = max_windows
        self.seed = seed
        self.key = key
        self.items = self._items(entries)
        self._by_task = {item.task: item for item in self.items}
        self._by_key = {(i.unit, i.latent, i.explainer): i for i in self.items}
        self._shards: dict[tuple[str, int], pd.DataFrame] = {}
        self._lock = threading.Lock()  # the server is threaded; shards load once

    def _items(self, entries: pd.DataFrame) -> list[Item]:
        if entries.empty:
            return []
        ok = entries[(entries["status"] == "ok") & entries["explanation"].notna()]
        ok = ok[ok["explanation"].astype(str).str.strip() != ""].sort_values(["unit", "latent", "explainer"])
        items = [Item(_digest(self.key, f"{r.unit}|{int(r.latent)}|{r.explainer}", 16), r.unit, int(r.shard),
                      int(r.latent), r.explainer, str(r.explanation))
                 for r in ok.itertuples(index=False)]  # fmt: skip
        order = np.random.default_rng(self.seed).permutation(len(items))
        return [items[i] for i in order]

    def __len__(self) -> int:
        return len(self.items)

    def item(self, task: object) -> Item:
        """The item behind a task id; ValueError naming the id if the pool has none."""
        if not isinstance(task, str) or task not in self._by_task:
            raise ValueError(f"task: unknown task id {task!r}")
        return self._by_task[task]

    def task_of(self, unit: str, latent: int, explainer: str) -> str | None:
        item = self._by_key.get((unit, int(latent), explainer))
        return item.task if item else None

    def _test_windows(self, unit: str, shard: int) -> pd.DataFrame:
        with self._lock:
            if (unit, shard) not in self._shards:
                path = self.results / unit / "examples" / f"shard-{shard}.parquet"
                if path.exists():
                    table = pd.read_parquet(path, columns=EXAMPLE_COLUMNS)
                else:  # one missing shard should not stop rating the rest: its items are passed over
                    log.warning("%s is missing: its latents are not offered for rating", path)
                    table = pd.DataFrame(columns=EXAMPLE_COLUMNS)
                self._shards[unit, shard] = table[table["split"] == "test"].reset_index(drop=True)
            return self._shards[unit, shard]

    def windows(self, task: str) -> list[Window]:
        """The item's windows: up to max_windows activating and max_windows non-activating test windows."""
        item = self.item(task)
        table = self._test_windows(item.unit, item.shard)
        rows = table[table["latent"] == item.latent].sort_values("example_id")
        rng = np.random.default_rng(_seed(item.unit, item.latent))
        chosen = []
        for _, group in rows.groupby("activating", sort=True):
            take = rng.choice(len(group), size=min(self.max_windows, len(group)), replace=False)
            chosen.append(group.iloc[np.sort(take)])
        if not chosen:
            return []
        return [Window(_digest(self.key, f"{task}|{int(r.example_id)}", 12), int(r.example_id),
                       bool(r.activating), tuple(str(t) for t in r.token_strs))
                for r in pd.concat(chosen).itertuples(index=False)]  # fmt: skip

    def rated_tasks(self, rater: str, ratings_dir: str | os.PathLike) -> set[str]:
        """Task ids of the pool that `rater` has rated (items no longer in the pool are left out)."""
        path = Path(ratings_dir) / f"{check_rater(rater)}.jsonl"
        keys = {(r["unit"], r["latent"], r["explainer"]) for r in read_records(path)}
        return {task for task in (self.task_of(*k) for k in keys) if task is not None}

    def progress(self, rater: str, ratings_dir: str | os.PathLike) -> dict[str, int]:
        return {"rated": len(self.rated_tasks(rater, ratings_dir)), "total": len(self.items)}

    def next_task(self, rater: str, ratings_dir: str | os.PathLike) -> dict | None:
        """The first item in the shared order that `rater` has not rated, blinded; None when all are rated.

        Returns `{"task", "explanation", "windows": [{"window", "token_strs"}]}`: no explainer, score,
        activation or truth. Items without test windows are passed over.
        """
        rated = self.rated_tasks(rater, ratings_dir)
        for item in self.items:
            if item.task in rated:
                continue
            windows = self.windows(item.task)
            if not windows:
                continue
            order = np.random.default_rng(_seed(self.seed, rater, item.task)).permutation(len(windows))
            return {"task": item.task, "explanation": item.explanation,
                    "windows": [{"window": windows[i].window, "token_strs": list(windows[i].token_strs)}
                                for i in order]}  # fmt: skip
        return None


def _check_rating(rating: object) -> int:
    # bool is an int in Python; JSON true must not pass as a rating of 1
    if isinstance(rating, bool) or not isinstance(rating, int | np.integer) or not 1 <= rating <= 5:
        raise ValueError(f"rating: {rating!r} is not an integer from 1 to 5")
    return int(rating)


def _check_answers(answers: object, windows: list[Window], task: str) -> list[dict]:
    if not isinstance(answers, dict):
        raise ValueError(f"answers: expected an object mapping window ids to true/false, got {answers!r}")
    known = {w.window for w in windows}
    unknown = sorted(set(answers) - known)
    if unknown:
        raise ValueError(f"answers: unknown window ids {unknown} for task {task}")
    missing = sorted(known - set(answers))
    if missing:
        raise ValueError(f"answers: windows {missing} of task {task} have no answer")
    not_bool = sorted(k for k, v in answers.items() if not isinstance(v, bool))
    if not_bool:
        raise ValueError(f"answers: windows {not_bool} have answers that are not true/false")
    return [{"window": w.window, "example_id": w.example_id, "activating": w.activating,
             "answer": answers[w.window]} for w in windows]  # fmt: skip


def record_rating(ratings_dir: str | os.PathLike, rater: object, task: object, answers: object,
                  rating: object, pool: RatingPool) -> dict:  # fmt: skip
    """Validate a rating, resolve its ids and append it to `{ratings_dir}/{rater}.jsonl`; returns the record.

    ValueError naming the field for a bad rater name, rating (an integer 1-5), task id, or answers (exactly
    the task's window ids, each true or false).
    """
    rater = check_rater(rater)
    rating = _check_rating(rating)
    item = pool.item(task)
    shown = _check_answers(answers, pool.windows(item.task), item.task)
    record = {"version": 1, "time": datetime.now(UTC).isoformat(timespec="milliseconds"), "rater": rater,
              "task": item.task, "unit": item.unit, "latent": item.latent, "explainer": item.explainer,
              "explanation": item.explanation, "rating": rating, "n_windows": len(shown),
              "n_correct": sum(a["answer"] == a["activating"] for a in shown), "answers": shown}  # fmt: skip
    append_line(Path(ratings_dir) / f"{rater}.jsonl", json.dumps(record, ensure_ascii=False))
    return record


def append_line(path: Path, line: str) -> None:
    """Append one whole line durably: exclusive lock, one write, fsync (and the folder's for a new file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = (line.rstrip("\n") + "\n").encode()
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a crash left a partial line: end it so that ours stays whole
        if os.write(fd, data) != len(data):
            raise OSError(f"short write appending to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock
    if new:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_records(path: str | os.PathLike) -> list[dict]:
    """Every complete JSON line of a ratings file, in order; partial or corrupt lines are skipped."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_SH)  # never read a line half-appended by another process
        data = f.read()
    records = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("%s: line %d is not a whole JSON record (interrupted write?); skipped", path, number)
            continue
        if isinstance(record, dict) and all(k in record for k in RECORD_FIELDS):
            records.append(record)
        else:
            log.warning("%s: line %d lacks rating fields; skipped", path, number)
    return records


def human_accuracy(answers: list[dict]) -> tuple[float, str]:
    """Balanced accuracy of yes/no answers against truth where both classes were shown, else accuracy."""
    if not answers:
        return float("nan"), ""
    truth = np.array([a["activating"] for a in answers], dtype=bool)
    said = np.array([a["answer"] for a in answers], dtype=bool)
    if truth.all() or not truth.any():
        return float((said == truth).mean()), "accuracy"
    return float((said[truth].mean() + (~said[~truth]).mean()) / 2), "balanced_accuracy"


def read_ratings(ratings_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per rater and item (unit, latent, explainer), the latest rating winning (RATING_COLUMNS).

    `human_accuracy` is balanced accuracy where the rater saw both activating and non-activating windows,
    else plain accuracy (`accuracy_metric` says which); `n_versions` counts the rater's lines for the item.
    """
    rows = {}
    paths = sorted(Path(ratings_dir).glob("*.jsonl")) if Path(ratings_dir).is_dir() else []
    for path in paths:
        if not RATER_PATTERN.fullmatch(path.stem):
            continue  # not written by record_rating
        for record in read_records(path):
            key = (record["rater"], record["unit"], int(record["latent"]), record["explainer"])
            versions = rows[key]["n_versions"] + 1 if key in rows else 1
            accuracy, metric = human_accuracy(record["answers"])
            rows[key] = {
                **{c: record.get(c) for c in RATING_COLUMNS},
                "latent": int(record["latent"]),
                "human_accuracy": accuracy,
                "accuracy_metric": metric,
                "n_versions": versions,
            }
    return pd.DataFrame(list(rows.values()), columns=RATING_COLUMNS)
