"""Simulation scoring (interpflow.scoring.simulation) by both methods: scripted and local simulators."""

from __future__ import annotations

import json
import logging
import math
import re
from functools import partial

import numpy as np
import pandas as pd
import pytest
from conftest import completion, example_row, planted_digit_windows
from test_simulation_reply import L, Tok

from interpflow.scoring.simulation import (
    METRIC_COLUMNS,
    PREDICTION_COLUMNS,
    build_prompts,
    llm_config,
    pearson,
    run_simulation,
    score_simulation,
)
from interpflow.scoring.simulation_reply import reply_budget
from interpflow.scoring.simulation_slots import expected_activations, slot_messages
from interpflow.store import read_parquet, write_parquet

# scripted replies are real Completions with this file's token counts
FakeCompletion = partial(completion, prompt_tokens=100, completion_tokens=20, cost_usd=0.002, latency_s=0.1)


# ---------------------------------------------------------------------------------------------- scoring


def _window(latent, example_id, activating, tokens, acts, split="test"):
    return example_row(latent, example_id, split, activating, tokens, acts)


def shard(latents=(10, 11), n_pos=10, n_neg=10, length=8, seed=0):
    """Test windows with unique text; activating ones have graded activations on a few tokens."""
    rng = np.random.default_rng(seed)
    rows = []
    for lat in latents:
        for i in range(n_pos + n_neg):
            on = i < n_pos
            toks = [f" w{lat}x{i}"] + [f" t{j}" for j in range(length - 1)]
            acts = (
                np.where(rng.random(length) < 0.4, rng.uniform(0.5, 4.0, length), 0.0)
                if on
                else 0 * rng.random(length)
            )
            if on and acts.max() == 0:
                acts[1] = 1.0
            rows.append(_window(lat, i, on, toks, acts))
        rows.append(_window(lat, 500, True, [f" w{lat}train"], [9.0], split="train"))  # never scored
    return pd.DataFrame(rows)


def explanations(latents=(10, 11), statuses=None):
    statuses = statuses or ["ok"] * len(latents)
    return pd.DataFrame(
        {"latent": list(latents), "status": statuses,
         "explanation": ["Some tokens." if s == "ok" else None for s in statuses]}
    )  # fmt: skip


def truth_by_text(examples):
    """Each test window's text -> its activations scaled 0-10 by its latent's max over test windows."""
    test = examples[examples["split"] == "test"]
    top = test.groupby("latent")["acts"].agg(lambda s: max(a.max() for a in s))
    return {
        "".join(t): 10 * np.asarray(a) / top[lat]
        for lat, t, a in test[["latent", "token_strs", "acts"]].itertuples(index=False)
    }


def excerpts(request):
    """(text, token count) of each excerpt of a simulator request, in order."""
    found = re.findall(r'^Excerpt \d+ \((\d+) tokens\): (".*")$', request[1]["content"], re.M)
    return [(json.loads(text), int(n)) for n, text in found]


class Simulator:
    """A fake LLM client: `policy(list of true value arrays, rng) -> list of value arrays`, one line each."""

    model = "fake/simulator"

    def __init__(self, truth, policy, edit=None, seed=0, logprobs=False):
        self.truth, self.policy, self.edit, self.logprobs = truth, policy, edit, logprobs
        self.rng, self.calls = np.random.default_rng(seed), []

    def complete_many(self, requests, desc="llm"):
        self.calls.append(requests)
        out = []
        for i, req in enumerate(requests):
            found = excerpts(req)
            vals = self.policy([self.truth[text] for text, _ in found], self.rng)
            assert [len(v) for v in vals] == [n for _, n in found]
            lines = [
                f"{k}: " + " ".join(f"{i}={int(round(x))}" for i, x in enumerate(v, 1))
                for k, v in enumerate(vals, 1)
            ]
            text = "\n".join(lines)
            lps = half_sure_tokens([np.round(v).astype(int) for v in vals]) if self.logprobs else None
            assert lps is None or "".join(t.token for t in lps) == text
            out.append(self.edit(i, text) if self.edit else FakeCompletion(text, logprobs=lps))
        return out


def half_sure_tokens(lines):
    """Digit-split tokens of an indexed reply; each nonzero value's first digit has P = 0.5, "0" the rest."""
    toks = []
    for k, vals in enumerate(lines, 1):
        toks += [Tok("\n")] * (k > 1) + [Tok(str(k)), Tok(":")]
        for i, v in enumerate(vals, 1):
            toks += [Tok(" "), *map(Tok, str(i)), Tok("=")]
            top = {"0": 0.0} if v == 0 else {str(v)[0]: L(0.5), "0": L(0.5)}
            toks += [Tok(str(v)[0], max(top.values()), top), *map(Tok, str(v)[1:])]
    return tuple(toks)


def oracle(truth, rng):
    return truth


def constant(truth, rng):
    return [np.full(len(t), 3) for t in truth]


def shuffled(truth, rng):
    """The true values of the prompt's tokens, dealt out to its tokens in a random order."""
    flat = rng.permutation(np.concatenate(truth))
    return np.split(flat, np.cumsum([len(t) for t in truth])[:-1])


CFG = {"kind": "simulation", "examples_per_prompt": 5, "seed": 0}


def test_oracle_simulator_correlates_fully():
    ex = shard()
    sim = Simulator(truth_by_text(ex), oracle)
    pred, met = score_simulation(ex, explanations(), CFG, sim)
    assert len(sim.calls) == 1 and len(sim.calls[0]) == 8  # 2 latents x 20 windows / 5, one batch
    assert list(pred.columns) == list(PREDICTION_COLUMNS) and list(met.columns) == list(METRIC_COLUMNS)
    assert len(pred) == 40 and (pred["status"] == "ok").all() and not pred["expected"].any()
    assert not pred["example_id"].eq(500).any()  # train windows are never scored
    for p, t in zip(pred["predicted"], pred["true"], strict=True):
        np.testing.assert_array_equal(p, np.round(t))  # the integers the oracle wrote
        assert p.dtype == np.float32 and t.dtype == np.float32 and 0 <= t.min() and t.max() <= 10
    assert met["latent"].tolist() == [10, 11] and (met["status"] == "ok").all()
    assert (met["score"] > 0.98).all() and (met["score"] == met["correlation"]).all()
    assert (met["correlation_activating"] > 0.97).all()
    assert (met["n"] == 20).all() and (met["n_failed"] == 0).all()
    assert (met["scorer"] == "simulation").all() and (met["kind"] == "simulation").all()
    assert (met["prompt_tokens"] == 400).all() and (met["completion_tokens"] == 80).all()
    np.testing.assert_allclose(met["cost_usd"], [0.008, 0.008])


def test_expected_values_flow_into_predictions():
    ex = shard()
    pred, met = score_simulation(ex, explanations(), CFG, Simulator(truth_by_text(ex), oracle, logprobs=True))
    assert (pred["status"] == "ok").all() and pred["expected"].all()
    for p, t in zip(pred["predicted"], pred["true"], strict=True):
        np.testing.assert_allclose(p, np.round(t) / 2, rtol=1e-6)  # E = 0.5 * value + 0.5 * 0, "10" too
    assert (met["score"] > 0.98).all()


def test_true_values_are_scaled_by_the_latents_max():
    ex = shard(latents=(10,))
    pred, _ = score_simulation(ex, explanations((10,)), CFG, Simulator(truth_by_text(ex), oracle))
    test = ex[ex["split"] == "test"].set_index("example_id")
    top = max(a.max() for a in test["acts"])
    for eid, t in zip(pred["example_id"], pred["true"], strict=True):
        np.testing.assert_allclose(t, 10 * test.loc[eid, "acts"] / top, rtol=1e-6)
    assert max(t.max() for t in pred["true"]) == pytest.approx(10)


def test_constant_simulator_is_flagged():
    ex = shard()
    pred, met = score_simulation(ex, explanations(), CFG, Simulator(truth_by_text(ex), constant))
    assert (pred["status"] == "ok").all()
    assert (met["status"] == "constant_prediction").all() and met["score"].isna().all()
    assert met["correlation"].isna().all() and (met["n"] == 20).all()


def test_shuffled_simulator_scores_near_zero():
    ex = shard(n_pos=20, n_neg=20, length=16)
    pred, met = score_simulation(ex, explanations(), CFG, Simulator(truth_by_text(ex), shuffled))
    assert (met["status"] == "ok").all()
    assert (met["score"].abs() < 0.15).all(), met["score"].tolist()


def test_malformed_replies_are_failures_not_zeros():
    ex = shard()

    def drop_last_line(i, text):
        return FakeCompletion(text.rsplit("\n", 1)[0] if i % 2 == 0 else text.replace("0", "zero", 1))

    pred, met = score_simulation(
        ex, explanations(), CFG, Simulator(truth_by_text(ex), oracle, drop_last_line)
    )
    bad = pred[pred["status"] != "ok"]
    assert (bad["status"] == "parse_error").all() and bad["predicted"].isna().all()
    assert not bad["expected"].any()
    # even prompts lose their 5th excerpt; odd prompts have a word in one line (the first line with a 0)
    assert bad["error"].str.contains("excerpt 5: no line").sum() == 4
    assert bad["error"].str.contains("is not a whole number").sum() == 4
    assert (met["n_failed"] == 4).all() and (met["n"] == 16).all()
    assert (met["status"] == "ok").all() and (met["score"] > 0.98).all()  # scored on the rest


def test_llm_errors_and_unscored_latents_keep_their_rows():
    ex = shard(latents=(10, 11))
    ex = ex[~((ex["latent"] == 11) & (ex["split"] == "test"))]  # latent 11: no test windows
    expl = explanations((10, 11, 12), ["ok", "ok", "parse_error"])

    def fail(i, text):
        return FakeCompletion(None, status="error", error="RateLimitError: slow down", cost_usd=None)

    pred, met = score_simulation(ex, expl, CFG, Simulator(truth_by_text(ex), oracle, fail))
    assert (pred["status"] == "llm_error").all() and (pred["error"] == "RateLimitError: slow down").all()
    assert met["latent"].tolist() == [10, 11, 12]
    assert met["status"].tolist() == ["llm_error", "no_test_examples", "no_explanation: parse_error"]
    assert met["n"].tolist() == [0, 0, 0] and met["n_failed"].tolist() == [20, 0, 0]
    assert met["score"].isna().all()
    assert np.isnan(met["cost_usd"].iloc[0]) and met["cost_usd"].iloc[1:].tolist() == [0.0, 0.0]


def test_no_activating_window_means_constant_truth():
    ex = shard(latents=(10,))
    ramp = Simulator(truth_by_text(ex), lambda truth, rng: [np.arange(len(t)) for t in truth])
    pred, met = score_simulation(ex, explanations((10,)), CFG | {"max_activating": 0}, ramp)
    assert not pred["activating"].any() and (pred["status"] == "ok").all()
    assert met["status"].tolist() == ["constant_truth"] and np.isnan(met["correlation_activating"].iloc[0])


def test_prompts_are_seeded_capped_and_mixed():
    ex = shard(latents=(10,))
    cfg = CFG | {"max_activating": 4, "max_nonactivating": 6}
    req_a, meta_a, _ = build_prompts(ex, explanations((10,)), cfg)
    req_b, meta_b, _ = build_prompts(ex, explanations((10,)), cfg)
    assert req_a == req_b  # same seed, same windows in the same order
    windows = pd.concat([m[2] for m in meta_a])
    assert windows["activating"].sum() == 4 and (~windows["activating"]).sum() == 6
    assert [len(m[2]) for m in meta_a] == [5, 5] and [m[1] for m in meta_a] == [0, 1]
    order = windows["activating"].tolist()
    assert order != sorted(order) and order != sorted(order, reverse=True)  # classes are shuffled together
    req_c, _, _ = build_prompts(ex, explanations((10,)), cfg | {"seed": 1})
    assert req_c != req_a
    with pytest.raises(ValueError, match="examples_per_prompt"):
        build_prompts(ex, explanations((10,)), CFG | {"examples_per_prompt": 0})


def test_pearson():
    assert pearson(np.array([1.0, 2, 3]), np.array([2.0, 4, 6])) == pytest.approx(1)
    assert pearson(np.array([1.0, 2, 3]), np.array([3.0, 2, 1])) == pytest.approx(-1)
    assert math.isnan(pearson(np.array([1.0, 1]), np.array([1.0, 2])))
    assert math.isnan(pearson(np.array([1.0]), np.array([1.0])))


def test_llm_config_asks_for_logprobs_and_sizes_the_reply(caplog):
    ex = shard(latents=(10,), length=8)
    cfg = CFG | {"llm": {"model": "local/x", "top_logprobs": 5, "max_tokens": 4096}}
    llm = llm_config(cfg, ex)
    assert llm["logprobs"] is True and llm["top_logprobs"] == 11
    assert llm["max_tokens"] == reply_budget([8] * 5) and llm["model"] == "local/x"
    assert (
        llm_config(CFG | {"llm": {"model": "m", "top_logprobs": 20, "logprobs": False}}, ex)["top_logprobs"]
        == 20
    )
    with caplog.at_level(logging.WARNING, logger="interpflow.scoring.simulation"):
        small = llm_config(CFG | {"llm": {"model": "m", "max_tokens": 30}}, ex)
    assert small["max_tokens"] == 30 and "below" in caplog.text


def test_run_simulation_writes_both_tables(tmp_path):
    ex = shard()
    write_parquet(ex, tmp_path / "examples.parquet")
    write_parquet(explanations(), tmp_path / "explanations.parquet")
    out_p, out_m = tmp_path / "s" / "predictions-0.parquet", tmp_path / "s" / "metrics-0.parquet"
    sim = Simulator(truth_by_text(ex), oracle)
    run_simulation(tmp_path / "examples.parquet", tmp_path / "explanations.parquet", CFG | {"name": "sim"},
                   out_p, out_m, cache_dir=None, client=sim)  # fmt: skip
    pred, met = read_parquet(out_p), read_parquet(out_m)
    assert len(pred) == 40 and list(met.columns) == list(METRIC_COLUMNS) and (met["scorer"] == "sim").all()
    assert pred["predicted"].iloc[0].dtype == np.float32 and (met["score"] > 0.98).all()
    # a shard where everything failed keeps the list column types
    failed = Simulator(truth_by_text(ex), oracle, lambda i, t: FakeCompletion("no idea"))
    run_simulation(tmp_path / "examples.parquet", tmp_path / "explanations.parquet", CFG, out_p, out_m,
                   cache_dir=None, client=failed)  # fmt: skip
    import pyarrow.parquet as pq

    schema = pq.read_schema(out_p)
    assert str(schema.field("predicted").type) == "list<element: float>"
    assert read_parquet(out_m)["status"].eq("parse_error").all()
    with pytest.raises(ValueError, match="'llm' section"):
        run_simulation(tmp_path / "examples.parquet", tmp_path / "explanations.parquet", CFG, out_p, out_m,
                       cache_dir=None)  # fmt: skip


# ------------------------------------------------------------------------------------ the slots method


def test_slot_prompt_hand_written():
    msgs, offsets = slot_messages("Cats.", [["The", " cat"], ["a\tb"]])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert msgs[1]["content"] == 'Explanation: "Cats."\n\nList each excerpt\'s tokens with their activations.'
    reply = msgs[2]["content"]
    assert reply == 'Excerpt 1:\n"The"\tunknown\n" cat"\tunknown\n\nExcerpt 2:\n"a\\tb"\tunknown\n'
    # one slot per token, each where a value would be written: right after the tab, at the placeholder
    assert len(offsets) == 3 and all(
        reply[o:].startswith("unknown\n") and reply[o - 1] == "\t" for o in offsets
    )
    assert [json.loads(reply[: o - 1].rsplit("\n", 1)[1]) for o in offsets] == ["The", " cat", "a\tb"]
    # no value anywhere in the prompt: nothing for the simulator to copy, no slot sees another's guess
    assert not re.search(r"\t\d", reply) and "For example" not in msgs[0]["content"]
    assert slot_messages("Dogs.", [["x"]])[0][0] == msgs[0]  # a cacheable prefix


def test_slot_expected_values_hand_computed():
    lp = lambda probs: {str(v): math.log(probs.get(v, 1e-12)) for v in range(10)}  # noqa: E731
    slots = [lp({0: 1.0}), lp({9: 0.5, 0: 0.5}), lp({3: 0.2, 6: 0.2})]  # the last renormalised over digits
    ev = expected_activations(slots, [2, 1])
    np.testing.assert_allclose(ev[0], [0.0, 4.5 * 10 / 9], atol=1e-6)
    np.testing.assert_allclose(ev[1], [4.5 * 10 / 9], atol=1e-6)
    with pytest.raises(ValueError, match="3 slots"):
        expected_activations(slots, [2, 2])


class SlotSimulator:
    """A fake client with prompt logprobs: per slot, P(digit) from `policy(true values on 0-9, rng)`."""

    model, supports_slots = "local/fake", True

    def __init__(self, truth, policy, seed=0):
        self.truth, self.policy, self.rng, self.calls = truth, policy, np.random.default_rng(seed), []

    def slot_logprobs_many(self, requests, candidates, desc="llm"):
        assert candidates == [str(v) for v in range(10)]
        self.calls.append(requests)
        out = []
        for messages, offsets in requests:
            reply = messages[-1]["content"]
            windows = [[json.loads(line.rsplit("\t", 1)[0]) for line in block.splitlines()[1:]]
                       for block in reply.strip().split("\n\n")]  # fmt: skip
            assert sum(map(len, windows)) == len(offsets)
            vals = self.policy([self.truth["".join(w)] * 0.9 for w in windows], self.rng)
            slots = [
                {c: (0.0 if int(c) == round(v) else -30.0) for c in candidates} for v in np.concatenate(vals)
            ]
            out.append(FakeCompletion(" ".join("0" * len(offsets)), completion_tokens=0, slot_logprobs=slots))
        return out


def test_slot_oracle_correlates_fully_and_records_the_method():
    ex = shard()
    sim = SlotSimulator(truth_by_text(ex), oracle)
    pred, met = score_simulation(ex, explanations(), CFG, sim)
    assert len(sim.calls) == 1 and len(sim.calls[0]) == 8
    assert (pred["method"] == "slots").all() and pred["expected"].all() and (pred["status"] == "ok").all()
    assert (met["score"] > 0.98).all() and (met["completion_tokens"] == 0).all()
    shuffled_pred, shuffled_met = score_simulation(
        shard(n_pos=20, n_neg=20, length=16), explanations(), CFG,
        SlotSimulator(truth_by_text(shard(n_pos=20, n_neg=20, length=16)), shuffled),
    )  # fmt: skip
    assert (shuffled_met["score"].abs() < 0.15).all()


def test_method_follows_the_client():
    ex = shard(latents=(10,))
    pred, _ = score_simulation(ex, explanations((10,)), CFG, Simulator(truth_by_text(ex), oracle))
    assert (pred["method"] == "reply").all()  # no prompt logprobs: the simulator writes the numbers
    with pytest.raises(ValueError, match="method 'slots' needs prompt logprobs"):
        score_simulation(
            ex, explanations((10,)), CFG | {"method": "slots"}, Simulator(truth_by_text(ex), oracle)
        )
    sim = SlotSimulator(truth_by_text(ex), oracle)
    with pytest.raises(ValueError, match="method must be one of"):
        score_simulation(ex, explanations((10,)), CFG | {"method": "guess"}, sim)


# ----------------------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_real_simulator_slots_depend_on_the_explanation(qwen_gguf, tmp_path):
    """The local 1.5B simulator, by the slots method, on a planted digits latent: the right explanation
    correlates with the truth, an unrelated one does not (fails if the score ignores the explanation)."""
    pytest.importorskip("llama_cpp")
    write_parquet(planted_digit_windows(7), tmp_path / "examples.parquet")
    expl = pd.DataFrame({"latent": [7, 7], "status": ["ok", "ok"],
                         "explanation": ["Digits of numbers.", "Words about weather and rain."]})  # fmt: skip
    llm = {"model": "local/qwen2.5-coder-1.5b-instruct", "max_concurrency": 1, "n_ctx": 4096, "n_threads": 2}
    scores = []
    for i in range(2):
        write_parquet(expl.iloc[[i]], tmp_path / f"explanations-{i}.parquet")
        out_p, out_m = tmp_path / f"predictions-{i}.parquet", tmp_path / f"metrics-{i}.parquet"
        expl_path = tmp_path / f"explanations-{i}.parquet"
        run_simulation(tmp_path / "examples.parquet", expl_path, CFG | {"llm": llm}, out_p, out_m,
                       cache_dir=tmp_path / "cache", local_gguf=qwen_gguf)  # fmt: skip
        pred, met = read_parquet(out_p), read_parquet(out_m)
        assert (pred["status"] == "ok").all() and (pred["method"] == "slots").all(), pred["error"].tolist()
        scores.append(float(met["score"].iloc[0]))
    # measured: 0.61 for the right explanation, 0.41 for the unrelated one (a judge blind to it: equal)
    assert scores[0] > 0.5 and scores[0] > scores[1] + 0.1, scores
