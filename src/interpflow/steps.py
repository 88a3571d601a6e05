"""The one place where workflow steps configure logging, threads and stderr before calling the package."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("interpflow")


# The errors our steps raise on purpose, each naming the config key or file at fault (anything else is a bug
# and keeps its traceback on the terminal).
ANTICIPATED = (ValueError, OSError, RuntimeError)
LOG_LEVEL_ENV = "INTERPFLOW_LOG_LEVEL"  # not a config key: a log level changes no output


def log_level() -> int:
    """The steps' log level, from INTERPFLOW_LOG_LEVEL (DEBUG, INFO, WARNING or ERROR; default INFO)."""
    name = os.environ.get(LOG_LEVEL_ENV, "").strip().upper() or "INFO"
    if name not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SystemExit(f"{LOG_LEVEL_ENV}={name!r} is not a log level: use DEBUG, INFO, WARNING or ERROR")
    return logging.getLevelName(name)


@contextlib.contextmanager
def logged(log_path: str | os.PathLike, threads: int | None = None) -> Iterator[None]:
    """Send logging and stderr (tqdm bars, warnings) to a step's log file; log the traceback on failure."""
    level = log_level()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with open(log_path, "a", buffering=1) as stream, contextlib.redirect_stderr(stream):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(level)
        if threads:
            import torch

            torch.set_num_threads(threads)
        start = time.perf_counter()
        try:
            yield
        except ANTICIPATED as exc:  # a named problem: one line on the terminal, the traceback in the log
            log.exception("step failed")
            raise SystemExit(f"{type(exc).__name__}: {exc}\n(traceback in {log_path})") from None
        except Exception:
            log.exception("step failed")
            raise
        finally:
            log.info("step took %.1f s", time.perf_counter() - start)
            root.removeHandler(handler)
