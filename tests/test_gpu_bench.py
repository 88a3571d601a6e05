"""benchmarks/gpu.sh and gpu.py, the device benchmark of issue 12, on the CPU with the tiny model: every stage
runs through the package's step functions and reports what it measured."""

import json
import os
import shutil
import subprocess
import sys

from conftest import REPO


def test_every_stage_runs_and_reports_its_rate(tmp_path, smollm2_spec):
    shutil.copytree(smollm2_spec.parent, tmp_path / "out" / "model")  # the converted model, reused
    n_seq, ctx = 24, 64
    args = ["--model", "smollm2-135m-pypi", "--hookpoint", "resid_post.3", "--n-sequences", str(n_seq),
            "--ctx-len", str(ctx), "--batch-size", "8", "--width", "256", "--k", "8", "--latents", "4",
            "--device", "cpu",
            "--out", str(tmp_path / "out"), "--json", str(tmp_path / "gpu.json")]  # fmt: skip
    env = dict(os.environ, VENV=sys.prefix)  # the test's environment: gpu.sh installs nothing then
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    rows = {r["stage"]: r for r in result["rows"]}
    assert list(rows) == ["forward", "caching", "training", "encoding", "surprisal"]
    assert result["device"] == "cpu"
    assert rows["forward"]["tokens"] == rows["caching"]["tokens"] == n_seq * ctx
    assert rows["training"]["tokens"] == rows["encoding"]["tokens"] == n_seq * (ctx - 1)  # BOS rows left out
    assert 0 < rows["surprisal"]["windows"] <= 4 * 16  # at most 4 latents x (8 + 8) test windows
    assert all(r["seconds"] > 0 and r["device"] == "cpu" for r in rows.values())
    table = done.stdout.split("device: cpu\n")[1]
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(lines) == 6 and "tokens/s" in table and "windows/s" in table  # header + 5 stages
