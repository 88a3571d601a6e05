"""The LLM-free tiny workflow run twice, on the workstation and through a real one-node SLURM cluster with
profiles/slurm: the same tables come out, and every job really went through SLURM (and GPU jobs to the GPU
partition)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, copy_workflow
from slurm.cluster import slurm_cluster  # noqa: F401  (a session fixture: pytest finds it here)

pytestmark = pytest.mark.slow
pytest.importorskip("snakemake_executor_plugin_slurm", reason="the slurm extra is not installed")

# Tables whose content must not depend on where the jobs ran (relative to the working directory).
TABLES = ["results/summary/*.parquet", "results/**/explanations-*.parquet", "results/**/metrics-*.parquet"]
EXPLAINED = ["explanations", "embedding/metrics", "surprisal/metrics"]  # per shard
# wall-clock seconds differ from run to run wherever the job runs
TIMING_COLUMNS = ["latency_s", "seconds", "tokens_per_s"]
# Rules that run a model: never local rules, always SLURM jobs.
MODEL_RULES = ["prepare_model", "cache_activations", "train_sae", "encode_latents", "score_surprisal"]


def start_snakemake(work: Path, *args: str, env: dict[str, str] | None = None):
    """Start snakemake in work: (process, its stdout file, its stderr file), the files beside work."""
    out, err = (open(work.parent / f"{work.name}.{name}", "w+") for name in ("out", "err"))
    cmd = [sys.executable, "-m", "snakemake", *args]
    return subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=err, text=True), out, err


def finish(run) -> str:
    """Wait for a started snakemake; its log, or an AssertionError carrying the end of it."""
    proc, out, err = run
    try:
        # a job SLURM can never place pends forever: fail instead (the fixture cancels what is left)
        proc.wait(timeout=600)
    finally:
        proc.kill()
    stdout, stderr = (f.seek(0) or f.read() for f in (out, err))
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(proc.args)} failed:\n{stdout[-3000:]}\n{stderr[-6000:]}")
    return stderr


def workflow_copy(dest: Path) -> Path:
    """A copy of the workflow in dest with the SLURM test config as its config."""
    work = copy_workflow(dest)
    shutil.copy(REPO / "tests/data/slurm.yaml", work / "config/config.yaml")
    return work


def cluster_profile(work: Path) -> Path:
    """The copied profiles/slurm edited as a user would for this cluster: a partition, train_sae on a GPU."""
    path = work / "profiles/slurm/config.yaml"
    profile = yaml.safe_load(path.read_text())
    profile["default-resources"]["slurm_partition"] = "cpu"
    profile["set-resources"]["train_sae"] |= {"slurm_partition": "gpu", "gpu": 1}
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path.parent


def read_tables(work: Path) -> dict[str, pd.DataFrame]:
    """Every compared table of a finished run, by path relative to work."""
    paths = sorted({p for pattern in TABLES for p in work.glob(pattern)})
    return {str(p.relative_to(work)): pd.read_parquet(p).drop(columns=TIMING_COLUMNS, errors="ignore")
            for p in paths}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory, slurm_cluster):  # noqa: F811  (the imported fixture)
    """(local workflow dir, SLURM workflow dir, cluster, {"local": log, "slurm": log}) after both runs."""
    # the local run goes on while the SLURM run mostly waits on the scheduler: the two share no file
    local = workflow_copy(tmp_path_factory.mktemp("local"))
    local_run = start_snakemake(local, "--cores", "2")
    remote = workflow_copy(tmp_path_factory.mktemp("slurm"))
    profile = cluster_profile(remote)
    slurm_run = start_snakemake(
        remote, "--workflow-profile", str(profile), "--slurm-no-account",
        "--cores", str(slurm_cluster.cpus),  # the node's CPUs: the most one job (or group job) may ask for
        "--slurm-status-command", "squeue",  # accounting is off: no sacct
        "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs",
        env=slurm_cluster.env,
    )  # fmt: skip
    try:
        logs = {"local": finish(local_run), "slurm": finish(slurm_run)}
    finally:
        slurm_run[0].kill()  # when the local run failed first
    return local, remote, slurm_cluster, logs


def test_slurm_run_writes_the_same_tables_as_a_local_run(runs):
    local, remote, _, _ = runs
    ours, theirs = read_tables(local), read_tables(remote)
    base = "results/wiki/smollm2/resid_post.3/topk-128/small/top-tokens"
    expected = {f"results/summary/{name}.parquet" for name in ("latents", "aggregates", "correlations")}
    expected |= {f"{base}/{kind}-{shard}.parquet" for kind in EXPLAINED for shard in (0, 1)}
    assert expected <= set(ours) and sorted(ours) == sorted(theirs)
    for name, table in ours.items():
        # this config has one explainer, no LLM-vs-floor pair: an empty comparisons table is right
        assert len(table) > 0 or name == "results/summary/comparisons.parquet", name
        pd.testing.assert_frame_equal(table, theirs[name], check_exact=False, rtol=1e-5, atol=1e-6, obj=name)
    summary = ours["results/summary/latents.parquet"]
    assert (summary["status"] == "ok").all() and summary["score"].between(0, 1).all()


LOCAL = r"^localrule (\w+):$"  # a job snakemake runs itself (every job of a local run)


def rule_jobs(log: str, pattern: str) -> Counter:
    """How many jobs of each rule a snakemake log announces with this line pattern (`all` left out)."""
    return Counter(r for r in re.findall(pattern, log, flags=re.M) if r != "all")


def test_every_job_ran_in_slurm(runs):
    _, remote, cluster, logs = runs
    run_id = re.search(r"SLURM run ID: (\S+)", logs["slurm"]).group(1)
    jobs = [j for j in cluster.jobs() if j["JobName"] == run_id]
    assert len(jobs) == logs["slurm"].count("has been submitted with SLURM jobid")
    assert all(j["JobState"] == "COMPLETED" for j in jobs)
    # the same jobs as the local run, submitted (alone or inside a group job) unless a rule is a localrule
    submitted, on_head = rule_jobs(logs["slurm"], r"^\s*rule (\w+):$"), rule_jobs(logs["slurm"], LOCAL)
    assert submitted + on_head == rule_jobs(logs["local"], LOCAL)
    assert set(MODEL_RULES) <= set(submitted)
    # grouped per-shard jobs: both shards in one SLURM job per group; the comment names the rule or group
    comments = Counter(j["Comment"].removeprefix("rule_").split("_wildcards_")[0] for j in jobs)
    assert comments["sampling_sample_examples"] == 1
    assert comments["baselines_explain_top_tokens_score_embedding"] == 1
    assert comments["score_surprisal"] == 2  # not grouped: one job per shard
    gpu_job = next(j for j in jobs if j["Comment"].startswith("rule_train_sae_"))
    assert gpu_job["Partition"] == "gpu" and gpu_job["TresPerJob"] == "gres:gpu:1"
    assert {j["Partition"] for j in jobs if j is not gpu_job} == {"cpu"}
    assert all(int(j["NumCPUs"]) <= cluster.cpus for j in jobs)
    slurm_logs = (remote / ".snakemake/slurm_logs").rglob("*.log")
    assert sorted(p.stem for p in slurm_logs) == sorted(j["JobId"] for j in jobs)
