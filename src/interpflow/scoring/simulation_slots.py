"""The simulator's "all at once" method (Bills et al. 2023; Paulo et al. 2024, App. D): one evaluation.

The prompt holds the explanation and the test windows, one token per line, each line ending in a slot where
the activation would be written. The slot's text is a placeholder ("unknown"), never a value, so what the
simulator expects at one slot depends on the explanation and the tokens before it, not on its own earlier
guesses. The expected activation at each slot is read from the distribution over the digit tokens 0-9 there
(prompt logprobs from a single evaluation of the prompt), renormalised over the digits: what matters is how
the model ranks the values, not how likely it is to write a digit at all. Digits are single tokens in every
tokenizer we use (Qwen and Llama split "10" into "1", "0"), hence the 0-9 scale; predictions are rescaled to
the truth's 0-10 so both sides share a scale (Pearson does not depend on it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

CANDIDATES = [str(v) for v in range(10)]
SLOT_MAX = 9
PLACEHOLDER = "unknown"

SLOT_TASK = """\
You predict where a latent of a language model is active. A latent is an internal feature that becomes \
active on certain tokens of a text. You get an explanation of what the latent detects. Then you list text \
excerpts one token per line: the token in quotes, a tab, and the latent's activation on that token as one \
digit from 0 to 9. 0 means not active, 9 means as active as the latent ever gets. Tokens that fit the \
explanation get high digits; all other tokens get 0."""


def _quote(text: str) -> str:
    """JSON-quote a token so spaces, tabs and line breaks stay visible on its line."""
    return json.dumps(text, ensure_ascii=False)


def slot_messages(explanation: str, windows: Sequence[Sequence[str]]) -> tuple[list[dict], list[int]]:
    """(chat messages whose last one is the prefilled reply, character offsets of its slots in that reply).

    There is one slot per token, in window order; each slot is followed by the placeholder.
    """
    if not windows:
        raise ValueError("a simulation prompt needs at least one window")
    parts, offsets, at = [], [], 0
    for k, toks in enumerate(windows, start=1):
        head = f"Excerpt {k}:\n" if k == 1 else f"\nExcerpt {k}:\n"
        parts.append(head)
        at += len(head)
        for tok in toks:
            line = f"{_quote(str(tok))}\t"
            offsets.append(at + len(line))
            line += f"{PLACEHOLDER}\n"
            parts.append(line)
            at += len(line)
    user = f"Explanation: {_quote(explanation)}\n\nList each excerpt's tokens with their activations."
    messages = [
        {"role": "system", "content": SLOT_TASK},
        {"role": "user", "content": user},
        {"role": "assistant", "content": "".join(parts)},
    ]
    return messages, offsets


def expected_activations(slot_logprobs: Sequence[dict], counts: Sequence[int]) -> list[np.ndarray]:
    """Per window, the expected activation [T] at its slots on the truth's 0-10 scale.

    `slot_logprobs` holds, per slot in order, digit -> log P(that digit is written there).
    """
    if len(slot_logprobs) != sum(counts):
        raise ValueError(
            f"got logprobs for {len(slot_logprobs)} slots, the windows have {sum(counts)} tokens"
        )
    lp = np.array([[d[c] for c in CANDIDATES] for d in slot_logprobs], dtype=np.float64).reshape(-1, 10)
    p = np.exp(lp - lp.max(axis=1, keepdims=True))  # [n_slots, 10]
    ev = (p @ np.arange(10.0)) / p.sum(axis=1) * (10.0 / SLOT_MAX)  # [n_slots]
    return [a.astype(np.float32) for a in np.split(ev, np.cumsum(counts)[:-1])]
