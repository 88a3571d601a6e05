from __future__ import annotations

import numpy as np
import pytest

from interpflow import prompts


@pytest.mark.parametrize(
    ("tokens", "marks", "expected"),
    [
        (["The", " cat", " sat", " on", " mat", "."], [0, 1, 0, 0, 1, 0], "The <<cat>> sat on <<mat>>."),
        (["New", " York", " City", " is"], [1, 1, 0, 0], "<<New York>> City is"),
        (["New", " York", " City", " is"], [0, 1, 1, 0], "New <<York City>> is"),
        (["a", "\n", "b"], [0, 1, 0], "a<<\\n>>b"),  # a marked line break stays visible
        ([" ", "x"], [1, 0], "<< >>x"),
        (["a", " b "], [0, 1], "a <<b>> "),
        (["x", "y"], [0, 0], "xy"),
    ],
)
def test_mark_text(tokens, marks, expected):
    assert prompts.mark_text(tokens, np.array(marks, dtype=bool)) == expected


def test_mark_text_rejects_mismatched_mask():
    with pytest.raises(ValueError, match="2 entries for 3 tokens"):
        prompts.mark_text(["a", "b", "c"], np.array([True, False]))


def test_scale_acts():
    # 10 * [0, 1, 2.5, 5, 0.01] / 5 = [0, 2, 5, 10, 0.02]; a positive activation never shows as 0
    got = prompts.scale_acts(np.array([0.0, 1.0, 2.5, 5.0, 0.01]), 5.0)
    assert got.tolist() == [0, 2, 5, 10, 1]


def test_explainer_user_hand_written():
    tokens = [["The", " cat", " sat"], ["A", " big", " dog", "s"]]
    acts = [np.array([0, 4, 0.0]), np.array([0, 1, 8, 4.0])]  # max over both examples is 8
    expected = (
        "Excerpts:\n\n"
        "Example 1: The <<cat>> sat\n"
        'Activations: "cat" 5\n\n'
        "Example 2: A <<big dogs>>\n"
        'Activations: "big" 1, "dog" 10, "s" 5'
    )
    assert prompts.explainer_user(tokens, acts) == expected
    assert prompts.explainer_user(tokens, acts, show_activations=False) == (
        "Excerpts:\n\nExample 1: The <<cat>> sat\n\nExample 2: A <<big dogs>>"
    )


def test_explainer_prefix_is_shared_across_latents():
    a = prompts.explainer_messages([["x", " y"]], [np.array([0, 1.0])])
    b = prompts.explainer_messages([["p", " q", " r"]], [np.array([3, 0, 7.0])])
    assert a[0] == b[0] and a[0]["role"] == "system"
    assert a[1] != b[1] and a[1]["role"] == "user"
    system = a[0]["content"]
    assert system.rstrip().endswith("Explanation: <your sentence>")
    assert "activation strength" in system and "reason briefly" not in system
    assert "reason briefly" in prompts.explainer_system(cot=True)
    assert "activation strength" not in prompts.explainer_system(show_activations=False)


def test_explainer_needs_examples():
    with pytest.raises(ValueError, match="at least one example"):
        prompts.explainer_user([], [])


def test_judge_messages():
    msgs = prompts.judge_messages("detection", 'Words like "cat".', ["The cat sat", "A dog ran"])
    assert msgs[0] == {"role": "system", "content": prompts.judge_system("detection")}
    assert msgs[1]["content"] == (
        'Explanation: "Words like \\"cat\\"."\n\nExcerpts:\n1. The cat sat\n2. A dog ran\n\n'
        "Give 2 labels, one per excerpt, in exactly this form with each x replaced by 0 or 1: [x, x]"
    )
    # the instruction prefix does not depend on the latent, its explanation or the number of excerpts
    other = prompts.judge_messages("detection", "Numbers.", ["1", "2", "3"])
    assert other[0] == msgs[0]
    assert "<<" in prompts.judge_system("fuzzing") and "<<" not in prompts.judge_system("detection")
    with pytest.raises(ValueError, match="unknown scorer kind"):
        prompts.judge_system("simulation")


def test_contrastive_explainer_hand_written():
    tokens, acts = [["The", " cat", " sat"]], [np.array([0, 4, 0.0])]
    negatives = [["A", " dog", "\n"], ["x"]]
    msgs = prompts.explainer_messages(tokens, acts, negative_strs=negatives)
    assert msgs[1]["content"] == (
        "Excerpts:\n\n"
        "Example 1: The <<cat>> sat\n"
        'Activations: "cat" 10\n\n'
        "Counterexamples (the latent is not active anywhere in these):\n\n"
        "Counterexample 1: A dog\\n\n\n"
        "Counterexample 2: x"
    )
    system = msgs[0]["content"]
    assert "it should fit the marked tokens of the excerpts and fit nothing in the counterexamples." in system
    assert system.index("activation strength") < system.index("counterexamples") < system.index("Your task")
    assert system == prompts.explainer_system(contrastive=True)
    # the default prompt is unchanged by the contrastive option
    default = prompts.explainer_messages(tokens, acts)
    assert "counterexample" not in default[0]["content"].lower() and "Counter" not in default[1]["content"]
    cot = prompts.explainer_system(contrastive=True, cot=True)
    assert "counterexamples" in cot and cot.rstrip().endswith("Explanation: <your sentence>")
    assert "reason briefly" in cot
    with pytest.raises(ValueError, match="non-activating"):
        prompts.explainer_user(tokens, acts, negative_strs=[])


def test_active_token_counts_hand_computed():
    from interpflow.prompts import active_token_counts

    toks = [["In", " 19", "84", " he"], ["Room", " 84", " is", "\n"]]
    acts = [np.array([0, 1.0, 2.0, 0]), np.array([0, 3.0, 0, 1.0])]
    # "84" twice (" 84" and "84" are one key), then "19", then the line break shown escaped
    assert (
        active_token_counts(toks, acts, 5) == 'Most frequent active tokens: "84" (2), "19" (1), "\\\\n" (1)'
    )
    assert active_token_counts(toks, acts, 1) == 'Most frequent active tokens: "84" (2)'
    user = prompts.explainer_user(toks, acts, top_tokens=2)
    assert user.endswith('Most frequent active tokens: "84" (2), "19" (1)')
    assert "Most frequent" not in prompts.explainer_user(toks, acts)
