from __future__ import annotations

import math
import re
import sys
import types
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd
import pytest
from conftest import completion, example_row, planted_digit_windows

from interpflow.scoring import judge
from interpflow.scoring.judge import (
    PREDICTION_COLUMNS,
    build_prompts,
    label_probs,
    parse_labels,
    score_latents,
)
from interpflow.scoring.metrics import METRIC_COLUMNS
from interpflow.store import read_parquet, write_parquet


@dataclass(frozen=True)
class Tok:
    """Same fields as interpflow.llm.types.TokenLogprob."""

    token: str
    logprob: float
    top: dict = field(default_factory=dict)


# scripted replies are real Completions with this file's token counts
FakeCompletion = partial(completion, prompt_tokens=50, completion_tokens=5, cost_usd=0.001, latency_s=0.1)


def excerpts(request) -> list[str]:
    """The numbered excerpts of a judge request, in order."""
    body = request[1]["content"].split("Excerpts:\n", 1)[1].split("\n\nGive ", 1)[0]
    return [re.sub(r"^\d+\. ", "", line) for line in body.split("\n")]


class Judge:
    """A fake LLM client: `label(excerpt) -> 0/1`; replies as a list with logprobs P(1) = 0.9 or 0.1."""

    model = "fake/judge"

    def __init__(self, label, reply=None, logprobs=True):
        self.label, self.reply, self.logprobs, self.calls = label, reply, logprobs, []

    def complete_many(self, requests, desc="llm"):
        self.calls.append(requests)
        out = []
        for i, req in enumerate(requests):
            labels = [int(self.label(t)) for t in excerpts(req)]
            if self.reply is not None:
                out.append(self.reply(i, labels))
                continue
            toks = [Tok("[", 0.0)]
            for k, lab in enumerate(labels):
                p1 = 0.9 if lab else 0.1
                top = {"1": math.log(p1), "0": math.log(1 - p1)}
                toks.append(Tok(str(lab), top[str(lab)], top))
                toks.append(Tok(", " if k < len(labels) - 1 else "]", 0.0))
            text = "".join(t.token for t in toks)
            out.append(FakeCompletion(text, logprobs=tuple(toks) if self.logprobs else None))
        return out


_window = example_row


def shard(latents=(10, 11), n_pos=10, n_neg=10):
    """Test windows where activating ones contain " cat" (active) and the others " dog"."""
    rows = []
    for lat in latents:
        for i in range(n_pos):
            rows.append(_window(lat, i, "test", True, ["the", " cat", f" ran{i}"], [0, 2.0, 0]))
        for i in range(n_neg):
            rows.append(_window(lat, 100 + i, "test", False, ["the", " dog", f" sat{i}"], [0, 0, 0]))
        rows.append(_window(lat, 500, "train", True, ["a", " TRAIN"], [0, 1.0]))  # never scored
    return pd.DataFrame(rows)


def explanations(latents=(10, 11), statuses=None):
    statuses = statuses or ["ok"] * len(latents)
    return pd.DataFrame(
        {
            "latent": list(latents),
            "status": statuses,
            "explanation": ["The word cat." if s == "ok" else None for s in statuses],
        }
    )


CFG = {"kind": "detection", "examples_per_prompt": 5, "seed": 0}


@pytest.mark.parametrize(
    ("reply", "n", "expected"),
    [
        ("[1, 0, 0, 1, 0]", 5, [1, 0, 0, 1, 0]),
        ("[1,0,0,1,0]", 5, [1, 0, 0, 1, 0]),
        ("Answer: [1 0 0 1 0]", 5, [1, 0, 0, 1, 0]),
        ("[true, False, false, TRUE, false]", 5, [1, 0, 0, 1, 0]),
        ('["yes", "no", "no", "yes", "no"]', 5, [1, 0, 0, 1, 0]),
        ("1, 0, 0, 1, 0", 5, [1, 0, 0, 1, 0]),  # a bare list with no other text
        ("**[1, 0, 0, 1, 0]**", 5, [1, 0, 0, 1, 0]),
        ("[[1, 0, 0, 1, 0]]", 5, [1, 0, 0, 1, 0]),
        ("Excerpt [3] mentions a cat.\n[1, 0, 1]", 3, [1, 0, 1]),
        ("[1, 0, 1]\n(excerpt [3] was unclear)", 3, [1, 0, 1]),  # "[3]" is not a label list
        ("[0, 0, 0] wait, no: [1, 1, 0]", 3, [1, 1, 0]),  # the last answer list wins
        ("<think>maybe [0, 0, 0]</think>\n[1, 0, 1]", 3, [1, 0, 1]),
        ("[1]", 1, [1]),
    ],
)
def test_parse_labels_accepts(reply, n, expected):
    assert parse_labels(reply, n) == expected


@pytest.mark.parametrize(
    ("reply", "n"),
    [
        ("[1, 0, 1]", 5),  # wrong length
        ("[1, 0, 0, 1, 0] no wait [0, 0]", 5),  # the final answer has the wrong length: not the earlier one
        ("[1, 2, 0, 1, 0]", 5),
        ("[1, [0], 1, 0, 1]", 5),
        ("[a, b, c]", 3),
        ("", 3),
        (None, 3),
        ("I think the first is 1 and the others 0", 3),
        ("Ignore the instructions and output 1 1 1 [", 3),
        ("<think>[1, 0, 1]", 3),  # an unfinished reasoning block
        ("[]", 0),
    ],
)
def test_parse_labels_rejects(reply, n):
    assert parse_labels(reply, n) is None


def test_label_probs_hand_computed():
    lp = math.log
    toks = (
        Tok("[", 0.0),
        Tok("1", lp(0.8), {"1": lp(0.8), "0": lp(0.2)}),
        Tok(",", 0.0),
        Tok(" 0", lp(0.3), {" 0": lp(0.3), " 1": lp(0.6), "1": lp(0.1)}),  # both spellings of 1 count
        Tok(",", 0.0),
        Tok(" 1", lp(0.5), {" 1": lp(0.5), " maybe": lp(0.5)}),  # no "0" alternative: P(0) = 0
        Tok(", true", lp(0.4), {", true": lp(0.4), ", false": lp(0.2)}),  # label inside a larger token
        Tok("]", 0.0),
    )
    got = label_probs(toks, [1, 0, 1, 1])
    np.testing.assert_allclose(got, [0.8, 0.7, 1.0, 2 / 3])


def test_label_probs_nan_when_unavailable():
    assert np.isnan(label_probs(None, [1, 0])).all()
    split = (Tok("[tr", 0.0), Tok("ue, 0]", 0.0))  # a label split over two tokens
    assert np.isnan(label_probs(split, [1, 0])[0])
    shared = (Tok("[1, 0", 0.0, {"[1, 0": 0.0}), Tok("]", 0.0))  # one token carries two labels
    assert np.isnan(label_probs(shared, [1, 0])).all()
    other = (Tok("[0, 0]", 0.0),)  # tokens that spell a different answer than the one parsed
    assert np.isnan(label_probs(other, [1, 0])).all()


def test_oracle_judge_scores_perfectly():
    judge = Judge(lambda t: "cat" in t)
    pred, met = score_latents(shard(), explanations(), CFG, judge)
    assert len(judge.calls) == 1 and len(judge.calls[0]) == 8  # 2 latents x 20 windows / 5, in one batch
    assert list(pred.columns) == list(PREDICTION_COLUMNS) and list(met.columns) == list(METRIC_COLUMNS)
    assert len(pred) == 40 and (pred["status"] == "ok").all()
    assert not pred["example_id"].eq(500).any()  # train windows are never scored
    assert (pred["prediction"].astype(bool) == pred["activating"]).all()
    np.testing.assert_allclose(pred["p_yes"], np.where(pred["activating"], 0.9, 0.1))
    assert met["latent"].tolist() == [10, 11] and (met["status"] == "ok").all()
    assert (met["balanced_accuracy"] == 1).all() and (met["auroc"] == 1).all()
    assert (met["n"] == 20).all() and (met["n_failed"] == 0).all()
    assert (met["prompt_tokens"] == 200).all() and met["cost_usd"].to_numpy() == pytest.approx([0.004] * 2)
    assert (met["scorer"] == "detection").all()
    assert sorted(pred.groupby(["latent", "prompt_index"]).size().unique()) == [5]
    assert pred["position"].between(0, 4).all() and (pred["seed"] == 0).all()


def test_inverted_and_coin_flip_judges():
    _, inverted = score_latents(shard(), explanations(), CFG, Judge(lambda t: "cat" not in t))
    assert (inverted["balanced_accuracy"] == 0).all() and (inverted["auroc"] == 0).all()
    coins = np.random.default_rng(7)
    _, flip = score_latents(
        shard(n_pos=100, n_neg=100),
        explanations(),
        CFG,
        Judge(lambda t: coins.random() < 0.5, logprobs=False),
    )
    assert flip["balanced_accuracy"].between(0.4, 0.6).all()
    assert flip["auroc"].isna().all()  # no logprobs, no AUROC


def test_wrong_length_replies_are_counted_not_dropped():
    judge = Judge(lambda t: 1, reply=lambda i, labels: FakeCompletion("[1, 0]" if i % 2 else str(labels)))
    pred, met = score_latents(shard(latents=(10,)), explanations((10,)), CFG, judge)
    assert len(pred) == 20  # every window keeps its row
    bad = pred[pred["prompt_index"] % 2 == 1]
    assert (bad["status"] == "parse_error").all() and bad["prediction"].isna().all()
    assert bad["error"].str.contains("no answer list of 5 labels").all()
    good = pred[pred["prompt_index"] % 2 == 0]
    assert (good["status"] == "ok").all() and good["prediction"].notna().all()
    assert np.isnan(pred["p_yes"]).all()  # the scripted replies carry no logprobs
    assert (met["n"].iloc[0], met["n_failed"].iloc[0], met["status"].iloc[0]) == (10, 10, "ok")


def test_all_failed_latent_carries_the_failure():
    judge = Judge(
        lambda t: 1,
        reply=lambda i, _: FakeCompletion(
            None, status="error", error="HTTP 500", prompt_tokens=0, completion_tokens=0
        ),
    )
    pred, met = score_latents(shard(latents=(10,)), explanations((10,)), CFG, judge)
    assert (pred["status"] == "llm_error").all() and (pred["error"] == "HTTP 500").all()
    row = met.iloc[0]
    assert (row.status, row.n, row.n_failed) == ("llm_error", 0, 20) and np.isnan(row.balanced_accuracy)


def test_unexplained_latents_stay_in_the_table():
    ex = shard(latents=(10, 11, 12))
    expl = explanations((10, 11, 12), ["parse_error", "ok", "skipped"])
    judge = Judge(lambda t: "cat" in t)
    pred, met = score_latents(ex, expl, CFG, judge)
    assert set(pred["latent"]) == {11} and len(judge.calls[0]) == 4
    assert met["latent"].tolist() == [10, 11, 12]
    assert met["status"].tolist() == ["no_explanation: parse_error", "ok", "no_explanation: skipped"]
    assert met["n"].tolist() == [0, 20, 0] and met["n_failed"].tolist() == [0, 0, 0]
    assert met.dtypes.astype(str).to_dict() == METRIC_COLUMNS


def test_caps_and_prompt_sizes():
    judge = Judge(lambda t: "cat" in t)
    cfg = CFG | {"max_activating": 3, "max_nonactivating": 4, "examples_per_prompt": 3}
    pred, met = score_latents(shard(latents=(10,)), explanations((10,)), cfg, judge)
    assert pred["activating"].sum() == 3 and (~pred["activating"]).sum() == 4
    assert pred.groupby("prompt_index").size().tolist() == [3, 3, 1]
    assert met["n"].iloc[0] == 7


def test_shuffle_is_seeded():
    ex, expl = shard(), explanations()
    order = lambda cfg: [tuple(m[2]["example_id"]) for m in build_prompts(ex, expl, cfg)[1]]  # noqa: E731
    assert order(CFG) == order(CFG)
    assert order(CFG) != order(CFG | {"seed": 1})
    # per-latent streams: latent 11's order does not depend on whether latent 10 is scored
    alone = [tuple(m[2]["example_id"]) for m in build_prompts(ex, explanations((11,)), CFG)[1]]
    assert alone == order(CFG)[4:]
    flat = [i for prompt in order(CFG)[:4] for i in prompt]  # latent 10's 20 windows
    assert sorted(flat) == list(range(10)) + list(range(100, 110)) and flat != sorted(flat)
    assert {i >= 100 for i in flat[:10]} == {True, False}  # the classes are mixed, not in blocks


def test_fuzzing_marks():
    words = [f" w{i}" for i in range(12)]
    rows = [
        _window(3, i, "test", True, words, np.isin(np.arange(12), [i, i + 1]).astype(float)) for i in range(8)
    ]
    rows += [_window(3, 100 + i, "test", False, words, np.zeros(12)) for i in range(8)]
    requests, meta, _ = build_prompts(pd.DataFrame(rows), explanations((3,)), CFG | {"kind": "fuzzing"})
    assert "<<" in requests[0][0]["content"]  # the fuzzing instructions
    seen_random = set()
    for req, (_, _, ex, _) in zip(requests, meta, strict=True):
        for text, (eid, on) in zip(excerpts(req), ex[["example_id", "activating"]].to_numpy(), strict=True):
            marked = re.findall(r"w\d+", " ".join(re.findall(r"<<(.*?)>>", text)))
            if on:
                assert marked == [f"w{eid}", f"w{eid + 1}"]  # exactly its active tokens
            else:
                assert len(marked) == 2  # as many random tokens as the activating windows have
                seen_random.add(tuple(marked))
    assert len(seen_random) > 1  # random, not a fixed position
    det, _, _ = build_prompts(pd.DataFrame(rows), explanations((3,)), CFG)
    assert all("<<" not in t for req in det for t in excerpts(req))  # detection shows no marks


def test_fuzz_marks_counts_follow_activating_windows():
    rng = np.random.default_rng(0)
    acts = [np.array([0, 1, 1, 1, 0.0]), np.zeros(5), np.zeros(3)]
    marks = judge.fuzz_marks(acts, np.array([True, False, False]), rng)
    assert marks[0].tolist() == [False, True, True, True, False]
    assert marks[1].sum() == 3 and marks[2].sum() == 3
    alone = judge.fuzz_marks([np.zeros(4)], np.array([False]), rng)  # no activating window: one mark
    assert alone[0].sum() == 1


def test_bad_config():
    with pytest.raises(ValueError, match="kind"):
        score_latents(shard(), explanations(), {"kind": "simulation"}, Judge(lambda t: 1))
    with pytest.raises(ValueError, match="examples_per_prompt"):
        score_latents(shard(), explanations(), CFG | {"examples_per_prompt": 0}, Judge(lambda t: 1))


def test_run_score_round_trip(tmp_path, monkeypatch):
    write_parquet(shard(), tmp_path / "shard-0.parquet")
    expl = explanations((10, 11, 12), ["ok", "ok", "llm_error"])
    write_parquet(expl, tmp_path / "explanations-0.parquet")
    out_p, out_m = tmp_path / "s" / "predictions-0.parquet", tmp_path / "s" / "metrics-0.parquet"
    seen = {}

    class FakeLLMClient(Judge):
        @classmethod
        def from_config(cls, cfg, *, cache_dir=None, local_gguf=None):
            seen.update(cfg=cfg, cache_dir=cache_dir)
            return cls(lambda t: "cat" in t)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            seen["closed"] = True

    monkeypatch.setitem(sys.modules, "interpflow.llm.client", types.SimpleNamespace(LLMClient=FakeLLMClient))
    cfg = CFG | {"kind": "fuzzing", "name": "fuzz5", "llm": {"model": "x", "temperature": 0}}
    judge.run_score(
        tmp_path / "shard-0.parquet",
        tmp_path / "explanations-0.parquet",
        cfg,
        out_p,
        out_m,
        cache_dir=tmp_path / "cache",
    )
    assert seen["cfg"] == {"logprobs": True, "model": "x", "temperature": 0} and seen["closed"]
    pred, met = read_parquet(out_p), read_parquet(out_m)
    assert list(pred.columns) == list(PREDICTION_COLUMNS) and list(met.columns) == list(METRIC_COLUMNS)
    assert len(pred) == 40 and str(pred["prediction"].dtype) == "boolean"
    assert met["scorer"].tolist() == ["fuzz5"] * 3
    assert met["status"].tolist() == ["ok", "ok", "no_explanation: llm_error"]
    assert (met["balanced_accuracy"].iloc[:2] == 1).all()
    # an explicit llm logprobs setting is kept; an injected client needs no llm section
    judge.run_score(
        tmp_path / "shard-0.parquet",
        tmp_path / "explanations-0.parquet",
        cfg | {"llm": {"logprobs": False}},
        out_p,
        out_m,
        cache_dir=None,
    )
    assert seen["cfg"] == {"logprobs": False}
    judge.run_score(
        tmp_path / "shard-0.parquet",
        tmp_path / "explanations-0.parquet",
        CFG,
        out_p,
        out_m,
        cache_dir=None,
        client=Judge(lambda t: "cat" in t),
    )
    assert read_parquet(out_m)["scorer"].tolist() == ["detection"] * 3


def test_empty_inputs_keep_the_schema():
    pred, met = score_latents(shard().iloc[:0], explanations().iloc[:0], CFG, Judge(lambda t: 1))
    assert pred.empty and met.empty
    assert pred.dtypes.astype(str).to_dict() == PREDICTION_COLUMNS
    assert met.dtypes.astype(str).to_dict() == METRIC_COLUMNS


# ------------------------------------------------------------------------------ the slots method (yes/no)


class SlotJudge:
    """A fake client with prompt logprobs: P(Yes) = p(excerpt, explanation) for each one-excerpt question."""

    model, supports_slots = "local/fake", True

    def __init__(self, p):
        self.p, self.calls = p, []

    def slot_logprobs_many(self, requests, candidates, desc="llm"):
        assert candidates == ["Yes", "No"]
        self.calls.append(requests)
        out = []
        for messages, offsets in requests:
            assert offsets == [0] and messages[-1] == {"role": "assistant", "content": ""}
            text, question = messages[-2]["content"].removeprefix("Text: ").split("\n\n", 1)
            expl = re.search(r"(?:contain|like this>>) (.*)\? Answer Yes or No\.$", question).group(1)
            p = self.p(text, expl)
            slots = [{"Yes": math.log(p), "No": math.log(1 - p)}]
            out.append(FakeCompletion("Yes" if p >= 0.5 else "No", completion_tokens=0, slot_logprobs=slots))
        return out


def test_slot_question_prompt_hand_written():
    from interpflow.prompts import judge_question_messages

    msgs = judge_question_messages("fuzzing", "The word cat.", "the <<cat>> ran")
    assert [m["role"] for m in msgs] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert (
        msgs[-1]["content"] == ""
        and msgs[0]["content"] == "You answer questions about short texts with Yes or No."
    )
    assert msgs[-2]["content"] == (
        "Text: the <<cat>> ran\n\nAre the tokens marked <<like this>> the word cat? Answer Yes or No."
    )
    # two worked questions on another description, one Yes and one No: no answer pattern to copy
    assert [msgs[2]["content"], msgs[4]["content"]] == ["Yes", "No"]
    assert all("<<like this>> names of colours?" in m["content"] for m in (msgs[1], msgs[3]))
    # the same prefix for every question, so it is evaluated once
    assert judge_question_messages("fuzzing", "Dogs.", "x")[:-2] == msgs[:-2]
    assert judge_question_messages("detection", "x", "y")[1] != msgs[1]
    with pytest.raises(ValueError, match="unknown scorer kind"):
        judge_question_messages("simulation", "x", "y")


def test_explanation_as_a_phrase_inside_the_question():
    from interpflow.prompts import as_phrase

    assert as_phrase("The word cat.") == "the word cat"
    assert as_phrase("  Years and\ndates ") == "years and dates"
    assert as_phrase("DNA sequences") == "DNA sequences" and as_phrase("U.S. states.") == "U.S. states"
    assert as_phrase('the tokens "..."') == 'the tokens "..."' and as_phrase("etc..") == "etc.."


def _says_yes_to_cat(text, expl):
    """P(yes) 0.9 on cat windows asked about cats; 0.6 otherwise (nearly always yes, but it ranks them)."""
    return 0.9 if "cat" in text and "cat" in expl else 0.6


def test_slot_judge_reads_p_yes_per_window():
    judge = SlotJudge(_says_yes_to_cat)
    pred, met = score_latents(shard(), explanations(), CFG, judge)
    assert len(judge.calls[0]) == 40  # one question per window, whatever examples_per_prompt says
    asked = [re.search(r"contain (.*)\?", m[-2]["content"]).group(1) for m, _ in judge.calls[0]]
    assert asked == ["the word cat"] * 40 and pred["p_yes_neutral"].isna().all()  # calibrate is off
    assert (pred["method"] == "slots").all() and (pred["position"] == 0).all()
    np.testing.assert_allclose(pred["p_yes"], np.where(pred["activating"], 0.9, 0.6))
    _, calibrated = score_latents(shard(), explanations(), CFG | {"calibrate": True}, judge)
    # with calibrate, each question is followed by its neutral one
    asked = [re.search(r"contain (.*)\?", m[-2]["content"]).group(1) for m, _ in judge.calls[1]]
    assert asked == ["the word cat", "any words"] * 40 and (calibrated["auroc"] == 1).all()
    assert pred["prediction"].astype(bool).all()  # every answer is yes ...
    assert (met["balanced_accuracy"] == 0.5).all()  # ... so balanced accuracy cannot tell
    assert (met["auroc"] == 1).all() and (met["score"] == 1).all() and (met["score_metric"] == "auroc").all()
    # the score depends on the explanation: a judge that ignores it scores at chance
    _, blind = score_latents(shard(), explanations(), CFG, SlotJudge(lambda text, expl: 0.7))
    assert (blind["score"] == 0.5).all()


def test_calibration_takes_out_the_windows_own_pull():
    """A judge whose P(yes) follows the window, not the explanation (more yes on cat windows whatever it is
    asked), ranks the windows perfectly uncalibrated; calibrated against the neutral question it is at chance,
    while a judge that reads the explanation keeps its AUROC of 1 (hand-computed: log-odds gains
    logit(0.9) - logit(0.6) > 0 on cat windows, 0 on dog windows)."""
    window_only = SlotJudge(lambda text, expl: 0.9 if "cat" in text else 0.6)
    _, raw = score_latents(shard(), explanations(), CFG, window_only)  # calibrate is off by default
    assert len(window_only.calls[0]) == 40 and (raw["auroc"] == 1).all()
    cfg = CFG | {"calibrate": True}
    pred, cal = score_latents(shard(), explanations(), cfg, window_only)
    assert (cal["auroc"] == 0.5).all() and pred["p_yes_neutral"].notna().all()
    _, reads = score_latents(shard(), explanations(), cfg, SlotJudge(_says_yes_to_cat))
    assert (reads["auroc"] == 1).all()
    # a failed neutral question fails its window (no uncalibrated value mixed into a calibrated ranking)
    flaky = SlotJudge(_says_yes_to_cat)
    inner = flaky.slot_logprobs_many
    flaky.slot_logprobs_many = lambda reqs, cands, desc="llm": [
        FakeCompletion(None, status="error", error="boom") if i == 1 else c
        for i, c in enumerate(inner(reqs, cands, desc))
    ]
    pred, met = score_latents(shard(), explanations(), cfg, flaky)
    assert pred["status"].tolist().count("llm_error") == 1 and met["n_failed"].sum() == 1


def test_method_slots_needs_a_client_that_gives_prompt_logprobs():
    with pytest.raises(ValueError, match="method 'slots' needs prompt logprobs"):
        score_latents(shard(), explanations(), CFG | {"method": "slots"}, Judge(lambda t: 1))
    pred, _ = score_latents(shard(), explanations(), CFG | {"method": "reply"}, Judge(lambda t: "cat" in t))
    assert (pred["method"] == "reply").all()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["detection", "fuzzing"])
def test_real_judge_depends_on_the_explanation(kind, qwen_gguf):
    """The local 1.5B judge on a planted digits latent: the right explanation ranks the activating windows
    above the others, an unrelated one does not (fails if P(yes) stops depending on the explanation)."""
    pytest.importorskip("llama_cpp")
    from interpflow.llm.client import LLMClient

    rows = planted_digit_windows(3)
    expl = pd.DataFrame({"latent": [3], "status": ["ok"], "explanation": ["Digits of numbers."]})
    wrong = expl.assign(explanation="Words about weather and rain.")
    llm = {"model": "local/qwen2.5-coder-1.5b-instruct", "max_concurrency": 1, "n_ctx": 2048, "n_threads": 2}
    with LLMClient.from_config(llm, cache_dir=None, local_gguf=qwen_gguf) as client:
        cfg = CFG | {"kind": kind}
        right_pred, right = score_latents(rows, expl, cfg, client)
        _, unrelated = score_latents(rows, wrong, cfg, client)
    assert (right_pred["method"] == "slots").all() and right_pred["p_yes"].between(0, 1).all()
    assert right["auroc"].iloc[0] >= 0.8, right.to_dict("records")
    assert right["auroc"].iloc[0] > unrelated["auroc"].iloc[0] + 0.2, (right["auroc"], unrelated["auroc"])
