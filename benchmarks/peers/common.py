"""Shared by the peer scripts (run in the peers' own venv): argument parsing, peak RSS, JSON output."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run(task: Callable[[dict], dict]) -> None:
    """Call task(json argv[1]) with the benchmark's thread count; print its result with peak RSS."""
    import torch

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    result = task(json.loads(sys.argv[1]))
    result["peak_rss_mb"] = peak_rss_mb()
    sys.stdout.write(json.dumps(result) + "\n")


def read_tokens(path: str):
    """The token matrix int64 [n_seq, ctx_len] of an interpflow tokens.h5."""
    import h5py
    import numpy as np
    import torch

    with h5py.File(path, "r") as f:
        return torch.from_numpy(f["tokens"][:].astype(np.int64))
