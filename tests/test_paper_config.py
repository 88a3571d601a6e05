"""The paper's two configs build their DAG (dry-run), and the local one plans exactly the jobs its tables
read: one explanation job set per ablation row and subject, no more."""

import re
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, copy_workflow

pytestmark = pytest.mark.slow

UNIT_KEYS = ("corpus", "model", "hookpoint", "dictionary", "sampler", "explainer")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = copy_workflow(tmp_path_factory.mktemp("paper"))
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    for entry in paper["dictionaries"].values():  # the SAE folders a user points the config at
        if entry["kind"] == "pretrained":
            for layer in (9, 20, 23, 31):
                (work / entry["path"].format(layer=layer)).mkdir(parents=True, exist_ok=True)
    return work


def planned(work, configfile: str) -> list[tuple[str, str]]:
    """(rule, first output) of every job `snakemake -n paper` plans with this config file."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "2", f"--configfile={configfile}", "paper"]
    result = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return re.findall(r"^rule (\w+):\n(?:.*\n)*?\s+output: ([^\n,]+)", result.stdout, flags=re.M)


def paper_rows(paper: dict) -> list[dict]:
    """Every setting the paper section's tables read: the reference with each row's overrides."""
    rows = [*paper["subjects"], *paper.get("explainers", [])]
    rows += [r for ablation in paper["ablations"].values() for r in ablation]
    rows += [paper["intervention_random"]] if paper.get("intervention_random") else []
    rows += [{"hookpoint": h} for h in paper["layers"]]
    ref = paper["reference"]
    return [{k: row.get(k, ref[k]) for k in UNIT_KEYS} for row in rows]


def test_local_paper_plans_exactly_the_rows_of_its_tables(work):
    config = yaml.safe_load((REPO / "config/paper-local.yaml").read_text())
    jobs = planned(work, "config/paper-local.yaml")
    assert ("paper", "results/paper") in jobs
    explained = set()
    for rule, out in jobs:
        if rule in ("explain", "explain_random"):
            parts = out.split("/")  # results/corpus/model/hookpoint/dictionary/sampler/explainer/file
            explained.add(tuple(parts[1:7]))
    expected = {tuple(r[k] for k in UNIT_KEYS) for r in paper_rows(config["paper"])}
    assert explained == expected  # every row is explained, and nothing the tables do not read
    by_explainer = {}
    for rule, out in jobs:
        if rule == "explain":
            by_explainer.setdefault(out.split("/")[6], set()).add(out.split("/")[5])
    # an ablation of the explainer shares the reference's windows: only the sampler ablations sample anew
    assert by_explainer["qwen-10"] == {"paper"} and by_explainer["qwen-cot"] == {"paper"}
    samplers = {out.split("/")[5] for rule, out in jobs if rule == "sample_examples"}
    assert samplers == {"paper", "paper-w16", "paper-w64", "paper-random", "paper-top"}


def test_paper_scale_config_builds_its_dag(work):
    config = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    jobs = planned(work, "config/paper.yaml")
    rules = {rule for rule, _ in jobs}
    assert {"paper", "prepare_model", "cache_activations_redpajama_gemma2_9b", "score_intervention"} <= rules
    explainers = {out.split("/")[6] for rule, out in jobs if rule == "explain"}
    assert explainers == {n for n, e in config["explainers"].items() if e.get("kind", "llm") == "llm"}
    assert config["budget"]["max_usd"] > 0  # the cap is on: the paper's scale costs real money
