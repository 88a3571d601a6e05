from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd
import pytest
from conftest import completion, example_row

from interpflow.simulation import (
    METRIC_COLUMNS,
    PREDICTION_COLUMNS,
    build_prompts,
    expected_values,
    llm_config,
    parse_reply,
    pearson,
    reply_budget,
    run_simulation,
    score_simulation,
    simulation_messages,
)
from interpflow.store import read_parquet, write_parquet


@dataclass(frozen=True)
class Tok:
    """Same fields as interpflow.llm.TokenLogprob."""

    token: str
    logprob: float = 0.0
    top: dict = field(default_factory=dict)


# scripted replies are real Completions with this file's token counts
FakeCompletion = partial(completion, prompt_tokens=100, completion_tokens=20, cost_usd=0.002, latency_s=0.1)


# ---------------------------------------------------------------------------------------------- prompts


def test_prompt_text_hand_written():
    msgs = simulation_messages("Cats.", [["The", " cat"], ["2", " | ", "a\nb"]])
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[1]["content"] == (
        'Explanation: "Cats."\n'
        "\n"
        'Excerpt 1 (2 tokens): "The cat"\n'
        '1 "The" | 2 " cat"\n'
        "\n"
        'Excerpt 2 (3 tokens): "2 | a\\nb"\n'
        '1 "2" | 2 " | " | 3 "a\\nb"\n'
        "\n"
        "Reply with 2 lines:\n"
        "1: 1=<number> 2=<number>\n"
        "2: 1=<number> 2=<number> 3=<number>"
    )
    assert simulation_messages("x", [list("abcdefg")])[1]["content"].endswith(
        "Reply with 1 line:\n1: 1=<number> 2=<number> ... 7=<number>"
    )
    system = msgs[0]["content"]
    assert "0 to 10" in system and system.endswith(
        "gets this reply:\n\n1: 1=0 2=9 3=0 4=8 5=0 6=0\n2: 1=0 2=0 3=0 4=0"
    )
    # the worked example's reply parses as the answer to the worked example's request
    example = system.split("For example, this request:\n\n")[1].split("\n\ngets this reply")[0]
    counts = [int(n) for n in re.findall(r"^Excerpt \d+ \((\d+) tokens\)", example, re.M)]
    assert values(parse_reply(system.rsplit("\n\n", 1)[1], counts)) == [[0, 9, 0, 8, 0, 0], [0, 0, 0, 0]]
    # the system message is the same for every prompt, so a provider can cache it as a prefix
    assert simulation_messages("Dogs.", [["x"]])[0] == msgs[0]


def test_token_indices_are_unambiguous():
    toks = ["1", " 2", " |", '"', "\n", " ", "3 4"]
    line = simulation_messages("x", [toks])[1]["content"].split("\n")[3]
    # every entry is "<index> <JSON string>": reading them back gives the tokens in order
    entries = re.findall(r'(\d+) ("(?:[^"\\]|\\.)*")', line)
    assert [int(i) for i, _ in entries] == list(range(1, len(toks) + 1))
    assert [json.loads(s) for _, s in entries] == toks


def test_empty_prompt_is_an_error():
    with pytest.raises(ValueError, match="at least one window"):
        simulation_messages("x", [])


def test_reply_budget_covers_indexed_replies():
    # digit-splitting tokenizer: "1: " is 3 tokens, "i=v " is (digits of i) + 3, the line break 1
    line = 3 + sum(len(str(i)) + 3 for i in range(1, 33)) + 1
    assert line == 155  # measured: the local 1.5B model wrote 307 tokens for two such lines
    assert reply_budget([32]) == int(1.1 * 155) + 8 and reply_budget([32] * 5) == int(1.1 * 5 * 155) + 8


# ----------------------------------------------------------------------------------------------- parser


def values(parsed):
    return [p if isinstance(p, str) else p[0].tolist() for p in parsed]


@pytest.mark.parametrize(
    "reply",
    [
        "1: 1=0 2=0 3=5\n2: 1=0 2=10",
        "1: 0 0 5\n2: 0 10",  # bare values
        "2: 1=0 2=10\n1: 1=0 2=0 3=5",  # out of order
        "Here are my predictions:\n\n1: 0 0 5\n2: 0 10\nHope this helps.",  # text around the lines
        "Excerpt 1: 0 0 5\nexample 2: 0 10",
        "**1:** 0 0 5\n- 2: 0 10",
        "1: [0, 0, 5]\n2: 0, 10.",
        "1:0 0 5\n2:0 10\n3: 4 4 4",  # a line of an excerpt that does not exist is ignored
        "<think>1: 9 9 9\n2: 9 9</think>\n1: 0 0 5\n2: 0 10",
    ],
)
def test_parse_good_replies(reply):
    assert values(parse_reply(reply, [3, 2])) == [[0, 0, 5], [0, 10]]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("1: 0 0\n2: 0 10", ["excerpt 1: expected 3 numbers, got 2", [0, 10]]),
        ("1: 1=0 2=0\n2: 1=0 2=10", ["excerpt 1: expected 3 numbers, got 2", [0, 10]]),
        ("1: 1=0 2=0 3=5 4=0\n2: 1=0 2=10", ["excerpt 1: expected 3 numbers, got 4", [0, 10]]),
        ("1: 1=0 3=0 4=5\n2: 1=0 2=10", ["excerpt 1: value 2 is numbered '3'", [0, 10]]),  # skipped token
        ("1: 1=0 2=0 2=5\n2: 1=0 2=10", ["excerpt 1: value 3 is numbered '2'", [0, 10]]),
        ("1: 1=0 2=0 3=\n2: 1=0 2=10", ["excerpt 1: '' is not a whole number", [0, 10]]),
        ("1: 1=0 2=x=5 3=0\n2: 1=0 2=10", ["excerpt 1: value 2 is numbered '2=x'", [0, 10]]),
        ("1: 0 0 5 0\n2: 0 10", ["excerpt 1: expected 3 numbers, got 4", [0, 10]]),
        ("1: 0 11 5\n2: 0 10", ["excerpt 1: value 11 is outside 0-10", [0, 10]]),
        ("1: 0 100 5\n2: 0 10", ["excerpt 1: value 100 is outside 0-10", [0, 10]]),
        ("1: 0 cat 5\n2: 0 10", ["excerpt 1: 'cat' is not a whole number", [0, 10]]),
        ("1: 0 5.5 5\n2: 0 10", ["excerpt 1: '5.5' is not a whole number", [0, 10]]),
        ("1: -1 0 5\n2: 0 10", ["excerpt 1: '-1' is not a whole number", [0, 10]]),
        ("1: 0 0 5 (the cat)\n2: 0 10", ["excerpt 1: '(the' is not a whole number", [0, 10]]),
        ("1: 0 0 5", [[0, 0, 5], "excerpt 2: no line"]),
        ("1: 0 0 5\n2: 0 10\n2: 0 9", [[0, 0, 5], "excerpt 2: more than one line"]),
        ("Excerpt 1 has 3 tokens, excerpt 2 has 2.", ["excerpt 1: no line", "excerpt 2: no line"]),
        ("0: 0 0 5\n1: 0 10", ["excerpt 1: expected 3 numbers, got 2", "excerpt 2: no line"]),
        ("", ["empty reply", "empty reply"]),
        (None, ["empty reply", "empty reply"]),
        ("<think>1: 0 0 5\n2: 0 10", ["unfinished <think> block"] * 2),
    ],
)
def test_parse_bad_replies_fail_per_excerpt(reply, expected):
    assert values(parse_reply(reply, [3, 2])) == expected


def test_parse_spans_point_at_the_values():
    reply = "Sure.\n**2:** [1=0, 2=10]\n1: 3 0 7"
    parsed = parse_reply(reply, [3, 2])
    for vals, spans in parsed:
        assert [int(reply[s:e]) for s, e in spans] == vals.tolist()


# ------------------------------------------------------------------------------------ expected values


def L(p):
    return math.log(p)


def test_expected_values_digit_tokenizer_hand_computed():
    # a tokenizer that writes every digit as its own token (Qwen, Llama-2, Gemma): "10" is "1", "0"
    toks = (
        Tok("1"), Tok(":"), Tok(" "), Tok("1"), Tok("="),
        Tok("0", L(0.6), {"0": L(0.6), "1": L(0.3), "2": L(0.1)}),  # "1" read as 1: nearer to 0 than 10
        Tok(" "), Tok("2"), Tok("="),
        Tok("7", L(0.5), {"7": L(0.5), "8": L(0.2), "1": L(0.2), "x": L(0.1)}),  # "1" read as 10, "x" dropped
        Tok(" "), Tok("3"), Tok("="),
        Tok("1", L(0.6), {"1": L(0.6), "2": L(0.4)}),
        Tok(" ", L(0.75), {" ": L(0.75), "0": L(0.25)}),  # after "1": P(10) = 0.25, P(1) = 0.75
        Tok("4"), Tok("="),
        Tok("1", L(0.9), {"1": L(0.9), "8": L(0.1)}),
        Tok("0", L(0.8), {"0": L(0.8), "\n": L(0.1), "5": L(0.1)}),  # "15" is no value: P(10 | 1) = 8/9
        Tok("\n"),
    )  # fmt: skip
    text = "".join(t.token for t in toks)
    assert text == "1: 1=0 2=7 3=1 4=10\n"
    parsed = parse_reply(text, [4])
    [ev] = expected_values(toks, [4], parsed)
    hand = [0.3 * 1 + 0.1 * 2, (0.5 * 7 + 0.2 * 8 + 0.2 * 10) / 0.9, 0.6 * 3.25 + 0.4 * 2, 0.9 * 9 + 0.1 * 8]
    np.testing.assert_allclose(ev, hand, rtol=1e-6)
    assert ev.dtype == np.float32


def test_expected_values_whole_number_tokenizer_hand_computed():
    # a tokenizer with " 0" ... " 10" as single tokens (OpenAI's): " 1" is one, "10" lacks the space
    toks = (
        Tok("1"), Tok(":"),
        Tok(" 0", L(0.7), {" 0": L(0.7), " 1": L(0.2), " 10": L(0.1)}),
        Tok(" 10", L(0.5), {" 10": L(0.5), " 9": L(0.3), " 1": L(0.1), "10": L(0.1)}),
        Tok("\n2"), Tok(":"),
        Tok(" 3\n", L(0.5), {" 3\n": L(0.5), " 4\n": L(0.25), " 4": L(0.25)}),  # text after the number too
    )  # fmt: skip
    parsed = parse_reply("".join(t.token for t in toks), [2, 1])
    ev = expected_values(toks, [2, 1], parsed)
    np.testing.assert_allclose(ev[0], [1.2, 7.8 / 0.9], rtol=1e-6)
    np.testing.assert_allclose(ev[1], [(0.5 * 3 + 0.25 * 4) / 0.75], rtol=1e-6)


def test_expected_values_unavailable():
    parsed = parse_reply("1: 0 5\n2: 3", [2, 1])
    assert expected_values(None, [2, 1], parsed) == [None, None]
    other = (Tok("1: 0 6\n"), Tok("2: 3"))  # the tokens spell another reply for excerpt 1
    ev = expected_values(other, [2, 1], parsed)
    assert ev[0] is None and ev[1].tolist() == [3.0]
    bad = parse_reply("1: 0 5", [2, 1])  # excerpt 2 failed: no values for it
    assert expected_values((Tok("1: 0 5"),), [2, 1], bad)[1] is None


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
    with caplog.at_level(logging.WARNING, logger="interpflow.simulation"):
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


# ----------------------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_real_simulator_reply_parses(qwen_gguf, tmp_path):
    """The 1.5B local model answers a planted digits latent in the format the parser reads."""
    pytest.importorskip("llama_cpp")
    windows = [
        ["In", " ", "1", "9", "8", "4", " he", " left"],
        ["The", " cat", " sat", " on", " the", " mat"],
        ["Room", " ", "4", "2", " is", " open"],
    ]
    rows = [
        _window(7, i, any(t.strip().isdigit() for t in toks), toks, [3.0 * t.strip().isdigit() for t in toks])
        for i, toks in enumerate(windows)
    ]
    write_parquet(pd.DataFrame(rows), tmp_path / "examples.parquet")
    expl = pd.DataFrame({"latent": [7], "status": ["ok"], "explanation": ["Digits of numbers."]})
    write_parquet(expl, tmp_path / "explanations.parquet")
    llm = {"model": "local/qwen2.5-coder-1.5b-instruct", "max_concurrency": 1, "n_ctx": 2048, "n_threads": 2}
    cfg = CFG | {"llm": llm}
    out_p, out_m = tmp_path / "predictions.parquet", tmp_path / "metrics.parquet"
    run_simulation(tmp_path / "examples.parquet", tmp_path / "explanations.parquet", cfg, out_p, out_m,
                   cache_dir=tmp_path / "cache", local_gguf=qwen_gguf)  # fmt: skip
    pred, met = read_parquet(out_p), read_parquet(out_m)
    assert (pred["status"] == "ok").all(), pred["error"].tolist()
    assert pred["expected"].all()  # the local provider returns logprobs
    assert met["n"].tolist() == [3] and np.isfinite(met["correlation"]).all()
