"""How close LLMClient.complete_many comes to a server's ideal throughput (max_concurrency / latency).

Runs n_requests distinct chat requests against the test suite's FaultServer, which answers each after
`latency_s` and processes at most `max_concurrency` at a time; the client is given the same bound.
Usage: python benchmarks/llm_concurrency.py [max_concurrency] [latency_s] [n_requests]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"  # fault_server.py lives with the tests


def measure(max_concurrency: int = 8, latency_s: float = 0.2, n_requests: int = 200) -> dict:
    """Requests/s achieved by complete_many, the ideal max_concurrency / latency_s, their ratio, peak."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("OPENAI_API_KEY", "sk-benchmark")  # litellm's openai route wants some key
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from fault_server import FaultServer

    from interpflow.llm.client import LLMClient

    requests = [[{"role": "user", "content": f"request {i}"}] for i in range(n_requests)]
    with FaultServer(latency_s=latency_s, max_concurrency=max_concurrency) as server:
        with tempfile.TemporaryDirectory() as cache:
            client = LLMClient("openai/bench", api_base=server.url, max_concurrency=max_concurrency,
                               cache_dir=cache, timeout_s=30.0)  # fmt: skip
            client.complete_many([[{"role": "user", "content": "warm-up"}]])  # import and client setup
            server.reset()
            t0 = time.perf_counter()
            out = client.complete_many(requests, desc="benchmark")
            seconds = time.perf_counter() - t0
    failed = sum(c.status != "ok" for c in out)
    achieved = n_requests / seconds
    ideal = max_concurrency / latency_s if latency_s > 0 else float("inf")  # no latency: no ideal rate
    return {
        "n_requests": n_requests, "max_concurrency": max_concurrency, "latency_s": latency_s,
        "seconds": round(seconds, 3), "requests_per_s": round(achieved, 2), "ideal_per_s": round(ideal, 2),
        "ratio": round(achieved / ideal, 3), "peak_concurrency": server.peak_concurrency, "failed": failed,
    }  # fmt: skip


if __name__ == "__main__":
    args = [float(a) for a in sys.argv[1:4]]
    kw = dict(zip(("max_concurrency", "latency_s", "n_requests"), args, strict=False))
    kw = {k: int(v) if k != "latency_s" else v for k, v in kw.items()}
    print(json.dumps(measure(**kw)))  # noqa: T201
