"""The simulator's reply method (scoring.simulation_reply): prompt text, reply parser, expected values."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pytest
from conftest import completion

from interpflow.scoring.simulation_reply import expected_values, parse_reply, reply_budget
from interpflow.scoring.simulation_reply import reply_messages as simulation_messages


@dataclass(frozen=True)
class Tok:
    """Same fields as interpflow.llm.types.TokenLogprob."""

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
    assert "0 to 10" in system
    # no worked example: no "i=v" item whose positions a small model could copy into its answers
    assert not re.search(r"\d=\d", system) and "For example" not in system
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
