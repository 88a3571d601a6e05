"""Prompt text for the explainer and the detection/fuzzing judges (Paulo et al. 2024, sections 3-4).

Each prompt is a chat: a fixed system message (identical for every latent, so providers and llama.cpp can
cache it as a prefix) followed by one user message holding the latent's examples.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

MARK_OPEN, MARK_CLOSE = "<<", ">>"
SCORER_KINDS = ("detection", "fuzzing")

_EXPLAIN_HEAD = """\
You are analysing one latent (an internal feature) of a sparse autoencoder trained on a language model.
You will see short text excerpts in which the latent is active. In each excerpt, the tokens where the \
latent is active are wrapped in << and >>; neighbouring active tokens share one pair of marks."""

_EXPLAIN_ACTS = """\
Under each excerpt, every marked token is listed with its activation strength on a scale from 1 to 10, \
where 10 is the strongest activation among all the excerpts shown."""

_EXPLAIN_CONTRAST = """\
After them you will see counterexamples: excerpts in which the latent is not active on any token, so \
nothing is marked in them. Your explanation must tell the two sets apart: it should fit the marked tokens \
of the excerpts and fit nothing in the counterexamples."""

_EXPLAIN_TASK = """\
Your task: say in one short sentence what the latent detects, meaning what the marked tokens have in \
common, together with the context around them when it matters. Be specific, but general enough to cover \
most excerpts. Do not copy the << >> marks, mention the activation numbers or list the excerpts."""

_EXPLAIN_DIRECT = """\
Reply with exactly one line of this form:
Explanation: <your sentence>"""

_EXPLAIN_COT = """\
First reason briefly, in a few lines, about what the marked tokens share. Then end your reply with one \
line of this form:
Explanation: <your sentence>"""

_JUDGE_HEAD = """\
You check explanations of latents of a language model. A latent is an internal feature that becomes \
active on certain tokens of a text. You get one explanation of what a latent detects, followed by \
numbered text excerpts."""

_JUDGE_TASK = {
    "detection": """\
In some excerpts the latent is active on at least one token; in the others it is not active at all. \
For each excerpt, decide whether it contains what the explanation describes, so that the latent would be \
active somewhere in it: label 1 if it does, 0 if it does not.""",
    "fuzzing": """\
In each excerpt some tokens are marked like <<this>>. In some excerpts the marks sit on the tokens where \
the latent is active; in the others they sit on tokens chosen at random. For each excerpt, decide whether \
the marked tokens are what the explanation describes: label 1 if they fit it, 0 if they do not.""",
}

# No example list here: a small judge copies an example's label pattern whatever the excerpts say.
_JUDGE_REPLY = """\
Reply with the labels only: one list in square brackets holding one label, 0 or 1, per excerpt, in the \
excerpts' order and separated by commas. Write nothing else."""


def _escape(tok: str) -> str:
    """Show line breaks as \\n so each excerpt stays on one line of the prompt."""
    return tok.replace("\r", "\\r").replace("\n", "\\n")


def mark_text(token_strs: Sequence[str], marked: np.ndarray) -> str:
    """Join tokens into one line, wrapping each run of consecutive marked tokens in one <<...>> pair."""
    toks = [_escape(str(t)) for t in token_strs]
    marked = np.asarray(marked, dtype=bool)
    if len(marked) != len(toks):
        raise ValueError(f"mark mask has {len(marked)} entries for {len(toks)} tokens")
    parts, i = [], 0
    while i < len(toks):
        if not marked[i]:
            parts.append(toks[i])
            i += 1
            continue
        j = i
        while j < len(toks) and marked[j]:
            j += 1
        run, i = "".join(toks[i:j]), j
        core = run.strip()
        if not core:  # a whitespace-only token is still shown marked, else the reader cannot see it
            parts.append(f"{MARK_OPEN}{run}{MARK_CLOSE}")
            continue
        # keep the run's outer whitespace outside the marks: " <<cat>>" reads better than "<< cat>>"
        lead, trail = run[: len(run) - len(run.lstrip())], run[len(run.rstrip()) :]
        parts.append(f"{lead}{MARK_OPEN}{core}{MARK_CLOSE}{trail}")
    return "".join(parts)


def scale_acts(acts: np.ndarray, max_act: float) -> np.ndarray:
    """Map activations to integers 0-10 relative to `max_act`; any positive activation shows as >= 1."""
    acts = np.asarray(acts, dtype=np.float64)
    scaled = np.rint(10.0 * acts / max_act) if max_act > 0 else np.zeros_like(acts)
    # a marked token with strength 0 would contradict its mark, so positive values floor at 1
    return np.where(acts > 0, np.clip(scaled, 1, 10), 0).astype(np.int64)


def explainer_system(*, show_activations: bool = True, cot: bool = False, contrastive: bool = False) -> str:
    """The explainer's fixed instructions (the same text for every latent)."""
    parts = [_EXPLAIN_HEAD, _EXPLAIN_ACTS if show_activations else None]
    parts += [_EXPLAIN_CONTRAST if contrastive else None, _EXPLAIN_TASK]
    parts.append(_EXPLAIN_COT if cot else _EXPLAIN_DIRECT)
    return "\n\n".join(p for p in parts if p)


def explainer_user(
    token_strs: Sequence[Sequence[str]],
    acts: Sequence[np.ndarray],
    *,
    show_activations: bool = True,
    negative_strs: Sequence[Sequence[str]] | None = None,
    top_tokens: int = 0,
) -> str:
    """The explainer's per-latent message: numbered excerpts with active tokens marked and 0-10 strengths.

    With `negative_strs` (contrastive prompt) the excerpts where the latent is not active follow, unmarked.
    With `top_tokens` > 0 a line after the excerpts lists the most frequent active tokens with their counts:
    a small explainer sees a token-level property at once instead of guessing a theme from the contexts.
    """
    if not token_strs:
        raise ValueError("the explainer needs at least one example")
    if negative_strs is not None and not negative_strs:
        raise ValueError("the contrastive explainer prompt needs at least one non-activating example")
    acts = [np.asarray(a, dtype=np.float64) for a in acts]
    max_act = max(float(a.max(initial=0.0)) for a in acts)  # 10 = the max over the examples shown
    blocks = []
    for k, (toks, a) in enumerate(zip(token_strs, acts, strict=True), start=1):
        on = a > 0
        block = f"Example {k}: {mark_text(toks, on)}"
        if show_activations:
            strengths = scale_acts(a, max_act)
            listed = ", ".join(
                f"{json.dumps(_escape(str(t)).strip() or _escape(str(t)), ensure_ascii=False)} {s}"
                for t, s, o in zip(toks, strengths, on, strict=True)
                if o
            )
            block += f"\nActivations: {listed}"
        blocks.append(block)
    text = "Excerpts:\n\n" + "\n\n".join(blocks)
    if top_tokens > 0:
        text += "\n\n" + active_token_counts(token_strs, acts, top_tokens)
    if negative_strs is None:
        return text
    counter = [
        f"Counterexample {k}: {mark_text(toks, np.zeros(len(toks), dtype=bool))}"
        for k, toks in enumerate(negative_strs, start=1)
    ]
    return (
        text + "\n\nCounterexamples (the latent is not active anywhere in these):\n\n" + "\n\n".join(counter)
    )


def active_token_counts(token_strs: Sequence[Sequence[str]], acts: Sequence[np.ndarray], n: int) -> str:
    """'Most frequent active tokens: "3" (12), "the" (4)': the n commonest active tokens (stripped of
    surrounding whitespace), ties by first appearance."""
    counts: dict[str, int] = {}
    for toks, a in zip(token_strs, acts, strict=True):
        for t, on in zip(toks, np.asarray(a) > 0, strict=True):
            if on:
                key = _escape(str(t)).strip() or _escape(str(t))
                counts[key] = counts.get(key, 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:n]  # sorted() is stable: ties keep their order
    listed = ", ".join(f"{json.dumps(k, ensure_ascii=False)} ({c})" for k, c in top)
    return f"Most frequent active tokens: {listed}"


def explainer_messages(
    token_strs: Sequence[Sequence[str]],
    acts: Sequence[np.ndarray],
    *,
    show_activations: bool = True,
    cot: bool = False,
    negative_strs: Sequence[Sequence[str]] | None = None,
    top_tokens: int = 0,
) -> list[dict]:
    """Chat messages asking for a one-sentence explanation of one latent (contrastive if negative_strs)."""
    contrastive = negative_strs is not None
    system = explainer_system(show_activations=show_activations, cot=cot, contrastive=contrastive)
    user = explainer_user(token_strs, acts, show_activations=show_activations, negative_strs=negative_strs,
                          top_tokens=top_tokens)  # fmt: skip
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def judge_system(kind: str) -> str:
    """The judge's fixed instructions for a scorer kind ("detection" or "fuzzing")."""
    if kind not in _JUDGE_TASK:
        raise ValueError(f"unknown scorer kind {kind!r}; expected one of {SCORER_KINDS}")
    return "\n\n".join([_JUDGE_HEAD, _JUDGE_TASK[kind], _JUDGE_REPLY])


def judge_user(explanation: str, texts: Sequence[str]) -> str:
    """The judge's per-prompt message: the explanation and the numbered excerpts."""
    listed = "\n".join(f"{k}. {t}" for k, t in enumerate(texts, start=1))
    n = len(texts)
    return (
        f"Explanation: {json.dumps(explanation, ensure_ascii=False)}\n\nExcerpts:\n{listed}\n\n"
        f"Give {n} label{'s' if n != 1 else ''}, one per excerpt, in exactly this form with each x replaced "
        f"by 0 or 1: [{', '.join('x' * n)}]"
    )


# One excerpt, one question, answered by the next token (Yes or No), read from the prompt's logprobs: the
# text first, then the question with the description inside it ("Does the text contain the comma ","?"),
# after two worked questions on another description (one Yes, one No). Measured on the planted latents
# (8 token properties, 8 + 8 test windows each, as `make validity` samples them), the local 1.5B judge's
# median detection AUROC under the property's own description was 0.625 with the description as a separate
# quoted line, 0.445 with the description before the text, and 0.773 with it inside the question; under
# another property's description it was 0.48, 0.36 and 0.34. The text comes first so that the same window
# asked under the neutral description (calibration, judge.py) reuses the window's evaluated prefix. The
# worked questions are the same for every prompt, so llama.cpp and API providers cache them with the system
# message.
_QUESTION = {
    "detection": "Does the text contain {description}? Answer Yes or No.",
    "fuzzing": "Are the tokens marked <<like this>> {description}? Answer Yes or No.",
}
_QUESTION_SYSTEM = "You answer questions about short texts with Yes or No."
_WORKED = {
    "detection": (("The red car passed a blue house.", "Yes"), ("We walked home after dinner.", "No")),
    "fuzzing": (
        ("The <<red>> car passed a <<blue>> house.", "Yes"),
        ("The red <<car>> passed a blue <<house>>.", "No"),
    ),
}
_WORKED_DESCRIPTION = "names of colours"
NEUTRAL_DESCRIPTION = "any words"
"""What a window is also asked under, so that its own pull towards Yes can be taken out (judge.py)."""
ANSWERS = ("Yes", "No")


def as_phrase(explanation: str) -> str:
    """An explanation as a phrase inside the judge's question: surrounding space and one final full stop
    dropped, the first letter lower-cased unless the first word looks like an acronym ("DNA", "U.S.")."""
    text = " ".join(str(explanation).split())
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    first = text.split(" ", 1)[0]
    if first[:1].isupper() and not any(c.isupper() or c == "." for c in first[1:]):
        text = text[0].lower() + text[1:]
    return text


def _question(kind: str, explanation: str, text: str) -> dict:
    question = _QUESTION[kind].format(description=as_phrase(explanation))
    return {"role": "user", "content": f"Text: {text}\n\n{question}"}


def judge_question_messages(kind: str, explanation: str, text: str) -> list[dict]:
    """A yes/no question about one excerpt after two worked ones; the last message is the (empty) reply
    whose first token answers."""
    if kind not in _QUESTION:
        raise ValueError(f"unknown scorer kind {kind!r}; expected one of {SCORER_KINDS}")
    worked = []
    for example, answer in _WORKED[kind]:
        worked += [_question(kind, _WORKED_DESCRIPTION, example), {"role": "assistant", "content": answer}]
    return [
        {"role": "system", "content": _QUESTION_SYSTEM},
        *worked,
        _question(kind, explanation, text),
        {"role": "assistant", "content": ""},
    ]


def judge_messages(kind: str, explanation: str, texts: Sequence[str]) -> list[dict]:
    """Chat messages asking a judge for one 0/1 label per excerpt."""
    return [
        {"role": "system", "content": judge_system(kind)},
        {"role": "user", "content": judge_user(explanation, texts)},
    ]
