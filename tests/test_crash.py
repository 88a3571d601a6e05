"""Crash and resume: the fake-API workflow killed (SIGKILL, the whole process group) in the middle of
explaining, then rerun, ends with the same tables as an uninterrupted run, without asking the LLM again for
what it had already answered, and without taking a half-written file for a finished one."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
import yaml
from conftest import copy_workflow, fake_api_config
from fault_server import FaultServer, prompt_kind

from interpflow.llm.client import LLMClient

pytestmark = pytest.mark.slow

UPSTREAM = {"prepare_model", "tokenize_corpus", "cache_activations", "prepare_dictionary", "train_sae",
            "encode_latents", "sample_examples"}  # fmt: skip
VOLATILE = ["latency_s", "cached"]  # how long a reply took and whether it came from the cache
EXPLAIN_LATENCY_S = 1.0


def snakemake_cmd(*args: str) -> list[str]:
    """The command line of a snakemake run on 2 cores."""
    return [sys.executable, "-m", "snakemake", "--cores", "2", *args]


ENV = os.environ | {"OPENAI_API_KEY": "sk-test-crash"}  # the fake server takes any key; litellm needs one


def run(work: Path, *args: str) -> str:
    """Run snakemake to the end in `work`; return its output, or fail with it."""
    result = subprocess.run(snakemake_cmd(*args), cwd=work, capture_output=True, text=True, env=ENV)
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"snakemake {' '.join(args)} failed:\n{out[-6000:]}"
    return out


def rules_run(output: str) -> set[str]:
    """Names of the rules whose jobs a snakemake run started (from its log lines)."""
    return set(re.findall(r"^(?:local)?rule (\w+):", output, flags=re.M))


def explainer_requests(server: FaultServer, start: int = 0, stop: int | None = None) -> list[dict]:
    """The explainer request bodies among the server's requests[start:stop]."""
    return [b for b in server.requests[start:stop] if prompt_kind(b) == "explainer"]


def cache_entries(work: Path) -> set[str]:
    """Keys of the responses in the work dir's LLM cache."""
    return {p.stem for p in (work / "results/llm-cache").rglob("*.json")}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Path:
    """A workflow copy that ran the stages up to the examples (shared by both runs below; no LLM yet)."""
    work = copy_workflow(tmp_path_factory.mktemp("upstream"))
    (work / "config/config.yaml").write_text(yaml.safe_dump(fake_api_config("http://127.0.0.1:9/v1")))
    run(work, "--until", "sample_examples")
    return work


@pytest.fixture(scope="module")
def uninterrupted(upstream, tmp_path_factory) -> tuple[Path, list[dict]]:
    """The fake-API workflow run to the end in one go; its work dir and the explainer requests it sent."""
    work = tmp_path_factory.mktemp("uninterrupted") / "work"
    shutil.copytree(upstream, work, symlinks=True)  # copy2 keeps mtimes: the upstream stays up to date
    with FaultServer() as server:
        (work / "config/config.yaml").write_text(yaml.safe_dump(fake_api_config(server.url)))
        run(work)
        return work, explainer_requests(server)


def kill_when(proc: subprocess.Popen, ready, timeout_s: float = 600) -> None:
    """SIGKILL the process group of proc once ready() holds; fail if the run ends or times out first."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None, "the run finished before the kill point: raise EXPLAIN_LATENCY_S"
        assert time.monotonic() < deadline, "the kill point never came"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(250):  # the job's own processes die with the group; wait until none is left
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError("processes of the killed snakemake group are still alive")


@pytest.fixture(scope="module")
def crashed(upstream, tmp_path_factory):
    """The same workflow killed mid-explaining and rerun; what the server and the cache saw at the kill."""
    work = tmp_path_factory.mktemp("crashed") / "work"
    shutil.copytree(upstream, work, symlinks=True)
    with FaultServer(latency_s=EXPLAIN_LATENCY_S) as server:
        config = fake_api_config(server.url)
        (work / "config/config.yaml").write_text(yaml.safe_dump(config))

        def mid_explaining() -> bool:
            done = list((work / "results").rglob("explanations-*.parquet"))
            return not done and len(cache_entries(work)) >= 1

        with open(work.parent / "killed.log", "w") as log:
            proc = subprocess.Popen(snakemake_cmd(), cwd=work, stdout=log, stderr=subprocess.STDOUT, env=ENV,
                                    start_new_session=True)  # fmt: skip
            kill_when(proc, mid_explaining)
        time.sleep(0.5)  # a request sent just before the kill is recorded by the server before we count
        at_kill = dict(cached=cache_entries(work), n_requests=len(server.requests),
                       files={p for p in (work / "results").rglob("*") if p.is_file()})  # fmt: skip
        server.latency_s = 0.0  # the rerun need not be slow
        run(work, "--unlock")
        rerun = run(work)  # the default profile sets --rerun-incomplete
        with mock.patch.dict(os.environ, ENV):  # the credentials check wants the key here too
            client = LLMClient.from_config(config["explainers"]["api"]["llm"])
        return work, server, at_kill, rerun, client


def comparable(path: Path) -> pd.DataFrame:
    """A table without the columns that differ between identical runs (timings, cache hits)."""
    table = pd.read_parquet(path)
    return table.drop(columns=[c for c in VOLATILE if c in table.columns])


def test_resumed_run_ends_with_the_uninterrupted_tables(uninterrupted, crashed):
    work_a, _ = uninterrupted
    work_b = crashed[0]
    names = ["explanations-*.parquet", "metrics-*.parquet", "predictions-*.parquet", "summary/*.parquet"]
    tables_a = sorted(p.relative_to(work_a) for n in names for p in (work_a / "results").rglob(n))
    tables_b = sorted(p.relative_to(work_b) for n in names for p in (work_b / "results").rglob(n))
    assert tables_a == tables_b and len(tables_a) >= 2 * (1 + 3 + 3) + 4
    for rel in tables_a:
        a, b = comparable(work_a / rel), comparable(work_b / rel)
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6, obj=str(rel))
    explanations = pd.concat(pd.read_parquet(p) for p in (work_b / "results").rglob("explanations-*.parquet"))
    assert (explanations["status"] == "ok").sum() >= 6  # the comparison is about real explanations
    assert explanations["cached"].any() and not explanations["cached"].all()  # some answered before the kill


def test_answered_prompts_are_not_sent_again(uninterrupted, crashed):
    _, sent_a = uninterrupted
    work, server, at_kill, _, client = crashed
    before = explainer_requests(server, 0, at_kill["n_requests"])
    after = explainer_requests(server, at_kill["n_requests"])
    key = lambda body: client.cache_key(body["messages"])  # noqa: E731
    assert at_kill["cached"] and at_kill["cached"] <= {key(b) for b in before}  # the cache held answers
    in_flight = [b for b in before if key(b) not in at_kill["cached"]]
    assert len(in_flight) <= 1  # max_concurrency 1: at most one request was cut off by the kill
    assert not [b for b in after if key(b) in at_kill["cached"]]  # nothing answered was asked again
    assert len(before) + len(after) == len(sent_a) + len(in_flight)
    # every prompt of the uninterrupted run was asked; only the one in flight twice
    keys_b = sorted(key(b) for b in before + after)
    expected = sorted([key(b) for b in sent_a] + [key(b) for b in in_flight])
    assert keys_b == expected


def test_no_half_written_file_is_taken_as_finished(crashed):
    work, _, at_kill, rerun, _ = crashed
    assert not [p for p in at_kill["files"] if p.name.startswith("explanations-")]  # killed before any
    assert "explain" in rules_run(rerun) and not rules_run(rerun) & UPSTREAM  # the finished stages were kept
    # a kill between a cache entry's temporary file and its rename may leave that file: it is never read
    leftovers = [p for p in work.rglob("*.tmp") if "llm-cache" not in p.parts]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    for entry in (work / "results/llm-cache").rglob("*.json"):  # no cut-off reply is served from the cache
        assert json.loads(entry.read_text())["status"] == "ok"
    incomplete = work / ".snakemake/incomplete"
    assert not incomplete.exists() or not any(incomplete.iterdir())


def test_a_transport_setting_changed_on_a_finished_run_deletes_nothing(uninterrupted, tmp_path):
    """Issue 15: api_base, timeouts, retries and concurrency say how the model is reached, not what it
    answers. Pointed at a dead port on a finished run, nothing LLM-made reruns (Snakemake would delete the
    finished explanations first and the dead server could not replace them) and every table stays."""
    work = tmp_path / "work"
    shutil.copytree(uninterrupted[0], work, symlinks=True)
    names = ["explanations-*.parquet", "metrics-*.parquet", "predictions-*.parquet"]
    before = {p: p.read_bytes() for n in names for p in (work / "results").rglob(n)}
    config = fake_api_config("http://127.0.0.1:9/v1")  # nothing listens there
    for section in ("explainers", "scorers"):
        for entry in config[section].values():
            if "llm" in entry:
                entry["llm"] |= {"timeout_s": 7, "max_retries": 1, "max_concurrency": 3}
    (work / "config/config.yaml").write_text(yaml.safe_dump(config))
    rerun = run(work)
    # LLM-free: the estimate reads concurrency, and what reads the summary follows it
    assert rules_run(rerun) <= {"all", "estimate", "summarize", "browser", "export_table", "paper"}
    after = {p: p.read_bytes() for n in names for p in (work / "results").rglob(n)}
    assert len(before) >= 2 * (1 + 3 + 3) and after == before
