"""LLM faults end to end: the real explain and scorer steps against an OpenAI-compatible server that fails.

Every latent must end with a result or an explicit failure status and reason; retryable faults are retried;
persistent ones end as failures; a rerun over the same cache re-sends only what failed; the budget stops
uncached requests cleanly, across processes.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, example_row
from fault_server import FaultServer, contains, default_responder, judge_count, prompt_kind

from interpflow import prompts
from interpflow.explain import run_explain
from interpflow.llm.budget import SpendLedger, check_budget
from interpflow.llm.client import LLMClient
from interpflow.scoring.judge import run_score
from interpflow.scoring.simulation import run_simulation
from interpflow.scoring.simulation_reply import reply_messages as simulation_messages
from interpflow.statuses import WORDS, is_score_status
from interpflow.store import read_parquet, write_parquet

MODEL = "openai/fake-judge"
LATENTS = (7, 8, 9)  # latent L's activating token is " zebraL", so a predicate can single out its prompts
PER_PROMPT = 2
N_TEST = 6  # test windows per latent: 3 activating, 3 not -> 3 prompts per latent and scorer


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fault-test")  # litellm's openai route wants some key


@pytest.fixture
def server():
    with FaultServer(retry_after_s=0.05, hang_s=5.0) as s:
        yield s


def windows(lat: int) -> list[dict]:
    """Train and test windows of one latent (example ids unique per latent)."""
    on = ["The", f" zebra{lat}", " ran", " home", "."], [0.0, 4.0 + lat, 0.0, 0.0, 0.0]
    off = ["A", " cat", " sat", " down", "."], [0.0] * 5
    rows = [example_row(lat, 100 * lat + k, "train", True, *on) for k in range(2)]
    rows += [example_row(lat, 100 * lat + 10 + k, "test", True, *on) for k in range(3)]
    rows += [example_row(lat, 100 * lat + 20 + k, "test", False, *off) for k in range(3)]
    return rows


@pytest.fixture
def data(tmp_path):
    """Examples and latents tables on disk: three explainable latents and one skipped (rare) latent."""
    write_parquet(pd.DataFrame([r for lat in LATENTS for r in windows(lat)]), tmp_path / "examples.parquet")
    latents = pd.DataFrame({"latent": [*LATENTS, 3], "status": ["ok"] * 3 + ["rare"],
                            "reason": [""] * 3 + ["fewer than 200 activations"]})  # fmt: skip
    write_parquet(latents, tmp_path / "latents.parquet")
    return tmp_path


def llm(server: FaultServer, **kw) -> dict:
    """A fast-failing client config pointed at the fault server."""
    return {"model": MODEL, "api_base": server.url, "max_retries": 2, "retry_base_s": 0.01, "timeout_s": 0.5,
            "max_concurrency": 4} | kw  # fmt: skip


def explain(data, server, cache, **kw) -> pd.DataFrame:
    """run_explain (the workflow's explain step, entry `explainers.api-llm`) over the test shard."""
    run_explain(data / "examples.parquet", data / "latents.parquet", {"llm": llm(server, **kw)},
                data / "explanations.parquet", cache_dir=cache, name="api-llm")  # fmt: skip
    return read_parquet(data / "explanations.parquet")


def score(data, server, cache, kind="detection", **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    """run_score / run_simulation (the workflow's score step) over the test shard; (predictions, metrics)."""
    run = run_simulation if kind == "simulation" else run_score
    cfg = {"kind": kind, "name": f"{kind}-api", "examples_per_prompt": PER_PROMPT, "seed": 0,
           "llm": llm(server, **kw)}  # fmt: skip
    out = data / kind
    run(data / "examples.parquet", data / "explanations.parquet", cfg, out / "predictions.parquet",
        out / "metrics.parquet", cache_dir=cache)  # fmt: skip
    return read_parquet(out / "predictions.parquet"), read_parquet(out / "metrics.parquet")


def of(lat: int):
    """A predicate for the requests about latent `lat` (its explainer prompt and every judge prompt)."""
    return contains(f"zebra{lat}")


def check_complete(expl: pd.DataFrame, preds: pd.DataFrame, metrics: pd.DataFrame) -> None:
    """No latent or window silently dropped: one metrics row per latent, one prediction row per window."""
    assert list(expl["latent"]) == [*LATENTS, 3]
    assert list(metrics["latent"]) == list(expl["latent"])
    assert (expl["status"] == "ok").sum() + (expl["error"] != "").sum() == len(expl)  # a failure has a reason
    scored = expl.loc[expl["status"] == "ok", "latent"]
    assert sorted(preds["latent"].unique()) == sorted(scored)
    assert (preds.groupby("latent").size() == N_TEST).all()
    failed = preds["status"] != "ok"
    assert (preds.loc[failed, "error"].str.len() > 0).all() and (preds.loc[~failed, "error"] == "").all()


# ---------------------------------------------------------------- the server itself


def test_default_responder_answers_each_prompt_kind_in_its_parsers_format():
    from interpflow.explain import parse_explanation
    from interpflow.scoring.judge import parse_labels
    from interpflow.scoring.simulation_reply import parse_reply

    expl = prompts.explainer_messages([["a", " zebra", "."]], [np.array([0, 2.0, 0])])
    text, status, _ = parse_explanation(default_responder({"messages": expl}))
    assert status == "ok" and '"zebra"' in text
    judge = {"messages": prompts.judge_messages("fuzzing", "zebras", ["x <<y>>", "z", "w"])}
    assert prompt_kind(judge) == "judge" and judge_count(judge["messages"][1]["content"]) == 3
    assert parse_labels(default_responder(judge), 3) is not None
    assert default_responder(judge) == default_responder(judge)  # deterministic
    sim = {"messages": simulation_messages("zebras", [["a", "b"], ["c", "d", "e"]])}
    assert [len(v[0]) for v in parse_reply(default_responder(sim), [2, 3])] == [2, 3]


def test_server_counts_concurrency_and_applies_queued_then_persistent_faults(server):
    client = LLMClient(MODEL, api_base=server.url, max_retries=0, max_concurrency=3)
    server.inject("500", "empty")
    server.fail_when(contains("always"), "wrong_length")
    asks = [[{"role": "user", "content": c}] for c in ("a", "b", "always", "c")]
    out = client.complete_many(asks)
    assert sorted(server.served) == sorted(["500", "empty", "wrong_length", "ok"])
    assert server.count(contains("always")) == 1 and 1 <= server.peak_concurrency <= 3
    assert sorted(c.status for c in out) == ["error", "error", "ok", "ok"]
    with pytest.raises(ValueError, match="unknown fault"):
        server.inject("boom")


# ---------------------------------------------------------------- faults


def test_clean_run_scores_every_latent_with_logprobs(data, server):
    cache = data / "cache"
    expl = explain(data, server, cache)
    assert list(expl["status"]) == ["ok", "ok", "ok", "skipped"]
    assert expl["explanation"].iloc[0].startswith('The token "zebra7" and words')
    preds, metrics = score(data, server, cache)
    check_complete(expl, preds, metrics)
    assert list(metrics["status"]) == ["ok", "ok", "ok", "no_explanation: skipped"]
    assert preds["p_yes"].notna().all()  # the server's logprobs reached the AUROC path
    assert server.count() == 3 + 3 * 3  # 3 explanations, 3 judge prompts per latent
    sim_preds, sim_metrics = score(data, server, cache, kind="simulation")
    check_complete(expl, sim_preds, sim_metrics)
    assert (sim_preds["status"] == "ok").all() and sim_preds["expected"].all()


@pytest.mark.parametrize("fault", ["500", "429", "drop", "hang", "malformed", "empty"])
def test_retryable_faults_are_retried_and_succeed(data, server, fault):
    server.inject(fault, fault)  # the first two requests fail, whichever prompts they carry
    expl = explain(data, server, data / "cache")
    assert list(expl["status"]) == ["ok", "ok", "ok", "skipped"]
    assert server.served.count(fault) == 2 and server.count() == 3 + 2


def test_rate_limit_waits_as_long_as_retry_after_says(data, caplog):
    with FaultServer(retry_after_s=0.25) as server, caplog.at_level(logging.INFO, "interpflow.llm"):
        server.inject("429")
        expl = explain(data, server, None, retry_base_s=0.001)
    assert (expl["status"] == "ok").sum() == 3
    assert "in 0.25s" in caplog.text  # not the 0.001 s backoff


@pytest.mark.parametrize(("fault", "tries"), [("500", 3), ("drop", 3), ("malformed", 3), ("empty", 3)])
def test_persistent_explainer_fault_ends_as_failure_row(data, server, fault, tries):
    server.fail_when(of(8), fault)
    expl = explain(data, server, data / "cache")
    assert list(expl["status"]) == ["ok", "llm_error", "ok", "skipped"]
    row = expl.set_index("latent").loc[8]
    assert pd.isna(row["explanation"]) and pd.isna(row["completion"]) and row["error"]
    assert server.count(of(8)) == tries  # max_retries=2: three attempts (empty: 1 + MAX_EMPTY_RETRIES)
    preds, metrics = score(data, server, data / "cache")
    check_complete(expl, preds, metrics)
    assert list(metrics["status"]) == ["ok", "no_explanation: llm_error", "ok", "no_explanation: skipped"]


def test_wrong_length_replies_are_parse_failures_with_reasons(data, server):
    server.fail_when(of(9), "wrong_length")
    expl = explain(data, server, data / "cache")
    assert expl.set_index("latent").loc[9, "status"] == "parse_error"
    assert "too long" in expl.set_index("latent").loc[9, "error"]
    server.clear()
    expl = explain(data, server, data / "cache2")
    server.fail_when(of(8), "wrong_length")
    for kind in ("detection", "simulation"):
        preds, metrics = score(data, server, data / "cache", kind=kind)
        check_complete(expl, preds, metrics)
        bad = preds[preds["latent"] == 8]
        assert (bad["status"] == "parse_error").all() and bad["error"].str.contains(r"expected|labels").all()
        assert metrics.set_index("latent").loc[8, "status"] == "parse_error"
        assert (metrics.set_index("latent").loc[[7, 9], "status"] == "ok").all()


def test_persistent_judge_fault_fails_one_latent_with_explicit_rows(data, server):
    expl = explain(data, server, data / "cache")
    server.fail_when(of(7), "500")
    preds, metrics = score(data, server, data / "cache")
    check_complete(expl, preds, metrics)
    m = metrics.set_index("latent")
    assert m.loc[7, "status"] == "llm_error" and m.loc[7, "n"] == 0 and m.loc[7, "n_failed"] == N_TEST
    assert np.isnan(m.loc[7, "score"]) and m.loc[7, "prompt_tokens"] == 0
    assert (preds.loc[preds["latent"] == 7, "error"].str.contains("InternalServerError")).all()
    assert server.count(of(7)) == 1 + 3 * 3  # its explanation once, then 3 prompts x 3 attempts


def test_rerun_resends_only_failed_prompts_and_reuses_the_cache(data, server):
    cache = data / "cache"
    server.fail_when(of(8), "500")
    expl = explain(data, server, cache)
    assert list(expl["status"]) == ["ok", "llm_error", "ok", "skipped"]
    server.clear()
    server.reset()
    expl = explain(data, server, cache)
    assert list(expl["status"]) == ["ok", "ok", "ok", "skipped"]
    assert server.count() == 1 and server.count(of(8)) == 1  # only latent 8's prompt went out again
    assert list(expl["cached"]) == [True, False, True, False]

    server.fail_when(of(9), "drop")
    server.reset()
    preds, _ = score(data, server, cache)
    assert server.count(of(9)) == 3 * 3 and server.count() == 3 * 3 + 2 * 3  # 3 attempts per failing prompt
    server.clear()
    server.reset()
    preds, metrics = score(data, server, cache)
    assert server.count() == 3 and server.count(of(9)) == 3  # latent 9's three prompts, nothing else
    assert list(metrics["status"]) == ["ok", "ok", "ok", "no_explanation: skipped"]


# ---------------------------------------------------------------- budget


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_budget_validation():
    assert check_budget(None) is None
    assert check_budget({"max_usd": None, "max_tokens": 10}) == {"max_usd": None, "max_tokens": 10}
    bad_budgets = [({"max_dollars": 1}, "unknown keys"), ({"max_usd": -1}, "budget.max_usd"),
                   ({"max_tokens": 1.5}, "budget.max_tokens"), ({"max_tokens": True}, "budget.max_tokens"),
                   ([1], "mapping")]  # fmt: skip
    for bad, match in bad_budgets:
        with pytest.raises(ValueError, match=match):
            check_budget(bad)
    with pytest.raises(ValueError, match="budget.max_tokens"):
        LLMClient.from_config({"model": MODEL, "budget": {"max_tokens": -5}})


def test_token_budget_stops_uncached_requests_but_serves_the_cache(data, server):
    cache = data / "cache"
    first = explain(data, server, cache, max_concurrency=1)  # no budget: learn what one explanation costs
    per = int(first["prompt_tokens"].iloc[0] + first["completion_tokens"].iloc[0])
    server.reset()
    expl = explain(data, server, data / "cache2", max_concurrency=1, budget={"max_tokens": per + 1})
    # the first prompt is sent (0 spent), the second too (per < per + 1), then the budget is spent
    assert list(expl["status"]) == ["ok", "ok", "budget", "skipped"]  # its own status, the reason in error
    why = expl["error"].iloc[2]
    assert why.startswith("budget reached:") and "budget.max_tokens" in why
    assert server.count() == 2
    spend = list((data / "cache2" / "spend").glob("*.jsonl"))
    lines = [json.loads(x) for f in spend for x in f.read_text().splitlines()]
    assert len(lines) == 2 and sum(x["prompt_tokens"] + x["completion_tokens"] for x in lines) >= per + 1
    server.reset()
    again = explain(data, server, data / "cache2", max_concurrency=1, budget={"max_tokens": per + 1})
    assert server.count() == 0 and list(again["cached"]) == [True, True, False, False]
    assert list(again["status"]) == ["ok", "ok", "budget", "skipped"]
    preds, metrics = score(data, server, data / "cache2", budget={"max_tokens": per + 1})
    check_complete(again, preds, metrics)  # the scorer records every blocked prompt as a failure row
    assert server.count() == 0 and (metrics["status"] != "ok").all()
    assert preds["error"].str.startswith("budget reached").all() and (preds["status"] == "budget").all()
    assert set(metrics["status"]) <= {"budget", "no_explanation: budget", "no_explanation: skipped"}
    assert "budget" in set(metrics["status"])
    assert all(map(is_score_status, metrics["status"])) and set(expl["status"]) <= WORDS["explanations"]
    raised = explain(data, server, data / "cache2", max_concurrency=1, budget={"max_tokens": 10 * per})
    assert list(raised["status"]) == ["ok", "ok", "ok", "skipped"] and server.count() == 1


def test_dollar_budget_uses_litellm_prices(server, tmp_path, caplog):
    client = LLMClient("openai/gpt-4o-mini", api_base=server.url, max_concurrency=1, cache_dir=tmp_path,
                       budget={"max_usd": 1e-9, "max_tokens": None})  # fmt: skip
    with caplog.at_level(logging.WARNING, "interpflow.llm"):
        out = client.complete_many([ask("one"), ask("two"), ask("three")])
    assert [c.status for c in out] == ["ok", "budget", "budget"] and server.count() == 1
    assert caplog.text.count("further uncached requests are not sent") == 1  # said once, not per request
    assert out[0].cost_usd > 0 and "budget.max_usd" in out[1].error and out[1].cost_usd == 0.0  # not sent
    assert client.ledger.usd == pytest.approx(out[0].cost_usd)


def test_unpriced_model_warns_that_max_usd_cannot_bound_it(server, caplog):
    client = LLMClient(MODEL, api_base=server.url, budget={"max_usd": 1.0})
    with caplog.at_level(logging.WARNING, "interpflow.llm"):
        out = client.complete_many([ask("one"), ask("two")])
    assert [c.status for c in out] == ["ok", "ok"] and out[0].cost_usd is None
    assert caplog.text.count("has no price") == 1 and client.ledger.unpriced == 2
    assert "not sent" not in caplog.text


def test_budget_is_shared_across_processes(server, tmp_path):
    ledger = tmp_path / "spend"
    code = (
        "import sys; from interpflow.llm.client import LLMClient\n"
        "budget = {'max_tokens': 10**9, 'ledger': sys.argv[3]}\n"
        "c = LLMClient(sys.argv[1], api_base=sys.argv[2], budget=budget)\n"
        "r = c.complete_many([[{'role': 'user', 'content': 'from the other process'}]], desc='other')[0]\n"
        "print(r.status, r.prompt_tokens + r.completion_tokens)\n"
    )
    env = {"PYTHONPATH": str(REPO / "src"), "LITELLM_LOCAL_MODEL_COST_MAP": "True", "OPENAI_API_KEY": "sk-x"}
    done = subprocess.run([sys.executable, "-c", code, MODEL, server.url, str(ledger)], env=env,
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    status, spent = done.stdout.split()
    assert status == "ok" and int(spent) > 0 and len(list(ledger.glob("*.jsonl"))) == 1
    server.reset()
    budget = {"max_tokens": int(spent) + 1, "ledger": str(ledger)}
    client = LLMClient(MODEL, api_base=server.url, max_concurrency=1, budget=budget)
    out = client.complete_many([ask("a"), ask("b")])  # the other process's spending counts here
    assert [c.status for c in out] == ["ok", "budget"] and server.count() == 1
    blocked = LLMClient(MODEL, api_base=server.url, budget={"max_tokens": int(spent), "ledger": str(ledger)})
    assert blocked.complete_many([ask("c")])[0].status == "budget" and server.count() == 1
    assert blocked.ledger.totals()[0] == int(spent) + out[0].prompt_tokens + out[0].completion_tokens


def test_ledger_reads_only_complete_lines_of_other_writers(tmp_path):
    mine, other = SpendLedger(tmp_path), tmp_path / "other.jsonl"
    line = {"prompt_tokens": 10, "completion_tokens": 5, "cost_usd": 0.5}
    other.write_text(json.dumps(line) + "\n" + '{"prompt_tokens": 7, "compl')  # a writer mid-line
    mine.record(MODEL, 1, 2, None)
    assert mine.totals(max_age_s=0) == (18, 0.5)
    with open(other, "a") as f:
        f.write('etion_tokens": 3, "cost_usd": null}\nnot json\n')
    assert mine.totals(max_age_s=0) == (28, 0.5)
    assert mine.totals(max_age_s=0) == (28, 0.5)  # lines are counted once
    assert SpendLedger(None).totals() == (0, 0.0)


def test_unwritable_cache_and_ledger_cost_a_warning_not_the_reply(server, tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")  # folders cannot be made under a file
    client = LLMClient(MODEL, api_base=server.url, cache_dir=blocker, budget={"max_tokens": 10**6})
    with caplog.at_level(logging.WARNING, "interpflow.llm"):
        out = client.complete_many([ask("one")])
    assert out[0].status == "ok" and out[0].text == "OK."
    assert "could not cache" in caplog.text and "could not write the LLM spend ledger" in caplog.text
    assert client.ledger.tokens == out[0].prompt_tokens + out[0].completion_tokens  # still counted here


def test_an_outage_fails_the_step_and_writes_nothing(data, server):
    """Every request failing (a dead server, a bad key) is not a result: the step raises, writes nothing, and
    so Snakemake reruns it next time; the next run with the server back sends every prompt."""
    server.fail_when(lambda body: True, "500")
    with pytest.raises(RuntimeError, match="all 3 LLM requests of the explainers.api-llm step") as info:
        explain(data, server, data / "cache")
    assert f"to '{MODEL}' at {server.url} failed" in str(info.value)
    assert "check explainers.api-llm.llm.model, explainers.api-llm.llm.api_base" in str(info.value)
    assert not (data / "explanations.parquet").exists()
    server.clear()
    assert list(explain(data, server, data / "cache")["status"]) == ["ok", "ok", "ok", "skipped"]
    server.fail_when(lambda body: True, "drop")
    entry = r"scorers.detection-api step to .* failed \(check scorers.detection-api.llm.model"
    with pytest.raises(RuntimeError, match=entry):
        score(data, server, data / "cache")
    assert not (data / "detection" / "metrics.parquet").exists()
