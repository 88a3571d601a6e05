"""Best-of explanations (interpflow.best_of): the candidate the judge scores best on held-out *train* windows
is kept, test windows are never shown to the explainer or the selecting judge, and the choice follows the
explanation (a judge that ignores it cannot make one candidate win)."""

from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest
from conftest import completion, example_row, planted_digit_windows

from interpflow.best_of import SELECTED_COLUMNS, check_select
from interpflow.explain import explain_and_select
from interpflow.llm.types import TokenLogprob

GENERIC = "historical events and figures"
CFG = {"max_examples": 3, "select": {"candidates": ["llm", "top-tokens"], "by": "detection", "n_tokens": 3}}


def _fits(explanation: str, excerpt: str) -> bool:
    """The fake judge's reading: a quoted-token explanation fits an excerpt holding one of its tokens; a
    sentence naming digits fits one holding a digit; anything else fits nothing."""
    quoted = re.findall(r'"([^"]+)"', explanation)
    if quoted:
        return any(q in excerpt for q in quoted)
    return "digit" in explanation and any(c.isdigit() for c in excerpt)


class Model:
    """One fake model as explainer and judge: explains with `reply`; judges each excerpt by `judge`."""

    model = "fake/model"

    def __init__(self, reply: str, judge=_fits):
        self.reply, self.judge, self.shown = reply, judge, []

    def complete_many(self, requests, desc="llm"):
        out = []
        for req in requests:
            user = req[1]["content"]
            self.shown.append(user)
            if desc == "explain":
                out.append(completion(f"Explanation: {self.reply}"))
                continue
            explanation = json.loads(user.split("\n", 1)[0].removeprefix("Explanation: "))
            body = user.split("Excerpts:\n", 1)[1].split("\n\nGive ", 1)[0].split("\n")
            toks = [TokenLogprob("[", 0.0, None)]
            for k, line in enumerate(body):
                lab = int(self.judge(explanation, re.sub(r"^\d+\. ", "", line)))
                top = {"1": math.log(0.9 if lab else 0.1), "0": math.log(0.1 if lab else 0.9)}
                toks += [
                    TokenLogprob(str(lab), top[str(lab)], top),
                    TokenLogprob("," if k < len(body) - 1 else "]", 0.0, None),
                ]
            out.append(completion("".join(t.token for t in toks), logprobs=tuple(toks), prompt_tokens=50))
        return out


def _shard():
    """Latent 7 fires on digits: 6 digit sentences (activating train) and 6 word ones (non-activating train),
    plus test windows whose text ("TESTWORD") must reach no prompt."""
    train = planted_digit_windows(7, split="train")
    rows = [example_row(7, 100 + i, "test", i < 2, ["TESTWORD", " 9"], [0, 4.0 * (i < 2)]) for i in range(4)]
    test = pd.DataFrame(rows)
    # latent 8: the first 4 digit sentences only, so its shown example ids (0, 2, 3) differ from latent 7's
    # (0, 2, 5): ids are numbered per latent, and one latent's shown windows must not hide another's
    other = planted_digit_windows(8, split="train").drop(index=[4, 5])
    latents = pd.DataFrame({"latent": [7, 8], "n_activating_windows": [8, 4], "status": ["ok"] * 2,
                            "reason": [""] * 2})  # fmt: skip
    return pd.concat([train, test, other], ignore_index=True), latents


def test_a_generic_llm_explanation_loses_to_the_digits_it_was_shown():
    examples, latents = _shard()
    model = Model(GENERIC)
    out = explain_and_select(examples, latents, CFG, model)
    assert list(out.columns) == list(SELECTED_COLUMNS)
    row = out.iloc[0]
    assert row["candidate"] == "top-tokens" and row["status"] == "ok"
    # shown: windows 0, 2, 5 (3 of 6, evenly spaced): "1" x4, "2" x3, then of the digits seen once those
    # rarest in the shard's shown and non-activating windows, "4", "7", "8" (the tie goes to the key)
    assert row["explanation"] == 'the tokens "1", "2", "4"'
    # held out: activating 1 ("42 ... 3") and 3 ("350 ... 2019") fit, 4 ("7 ... 88") does not; the 6
    # non-activating fit none: P(yes) .9, .9, .1 against six .1, AUROC = (2 * 6 + 6 / 2) / 18
    assert row["selection_auroc"] == pytest.approx(15 / 18)
    # 1 explain call (100 prompt tokens) + 2 candidates x 2 judge prompts (5 + 4 windows) x 50 tokens
    assert row["prompt_tokens"] == 100 + 2 * 2 * 50
    assert not any("TESTWORD" in text for text in model.shown)
    # latent 8 shown "1984 ... 12", "21 ... 17", "350 ... 2019": "1", "2", "0"; held out "42 ... 3" fits
    eight = out.iloc[1]
    assert eight["explanation"] == 'the tokens "1", "2", "0"'
    assert eight["selection_auroc"] == pytest.approx(1.0)


def test_a_good_llm_explanation_is_kept_and_ties_go_to_it():
    examples, latents = _shard()
    out = explain_and_select(examples, latents, CFG, Model("numbers written with digits"))
    assert out.iloc[0]["candidate"] == "llm"
    assert out.iloc[0]["explanation"] == "numbers written with digits"
    assert out.iloc[0]["selection_auroc"] == pytest.approx(1.0)  # top tokens tie at 1.0: the llm wins ties


def test_a_judge_that_ignores_the_explanation_leaves_the_llm_choice():
    """Every excerpt gets the same answer whatever the explanation: AUROC 0.5 for both, a tie, the LLM's."""
    examples, latents = _shard()
    out = explain_and_select(examples, latents, CFG, Model(GENERIC, judge=lambda e, x: True))
    assert (out["candidate"] == "llm").all() and out["selection_auroc"].tolist() == pytest.approx([0.5, 0.5])


def test_without_select_nothing_is_judged():
    examples, latents = _shard()
    model = Model(GENERIC)
    out = explain_and_select(examples, latents, {"max_examples": 3}, model)
    assert "candidate" not in out.columns and len(model.shown) == 2  # two explain calls, no judge


@pytest.mark.parametrize(
    "select, needle",
    [
        ({"candidates": ["llm"]}, "two or more"),
        ({"by": "simulation"}, "select.by"),
        ({"k": 2}, "unknown keys"),
    ],
)
def test_bad_select_options_are_named(select, needle):
    with pytest.raises(ValueError, match=needle):
        check_select(select)


def test_an_empty_select_means_the_defaults():
    examples, latents = _shard()
    out = explain_and_select(examples, latents, {"max_examples": 3, "select": {}}, Model(GENERIC))
    assert out["candidate"].tolist() == ["top-tokens", "top-tokens"]
