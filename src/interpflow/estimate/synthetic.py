"""One synthetic latent and what the workflow's own builders would send for it, counted in tokens.

The latent's examples have the configured sizes (synthetic_examples); explain_requests and score_requests run
the explainer's and the LLM scorers' prompt builders on it with a recording client, and report each request's
input, expected output and max output tokens. Tokens are counted without a tokenizer download
(estimate_tokens), or by a counter passed in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

# Word pieces of at most 8 characters, digits one by one, punctuation runs: on the default run's real prompts
# 2-10% above Qwen2.5's and Gemma 3's counts (explainer +2/+4%, detection +9/+10%, fuzzing +7/+8%,
# simulation +4/+4%; a simulator's reply exactly); chars / 4 is 35% low on simulation prompts, which are
# mostly digits and quotes. Tokenizers that group digits (GPT-4o, Llama 3) count fewer on number-heavy text.
_PIECE = re.compile(r" ?[^\W\d_]+|\d| ?(?:[^\w\s]|_)+|\s+")
PIECE_CHARS = 8
MESSAGE_TOKENS, REPLY_TOKENS = 4, 3  # chat-template tokens per message and before the reply
ACTIVE_TOKENS = 2  # active tokens per activating window (the default run: 1.3)
EXPLANATION_CHARS = 160  # the default run's explanations: 145-232 characters, mean 168
_FILLER = re.findall(
    r"\s?\w+|[^\w\s]",
    "The village lies on the north bank of the river, about forty kilometres from the coast. Its "
    "population was recorded at the census of 2011, and it is known for its stone bridge, an old mill "
    "and a music festival held every summer since the war.",
)  # English text of about 4.6 characters per token, as the default corpus's windows


def estimate_tokens(text: str) -> int:
    """Tokens of `text` by a tokenizer-free rule (see _PIECE); English-like text only."""
    return sum(math.ceil(len(m.group()) / PIECE_CHARS) for m in _PIECE.finditer(text))


def message_tokens(messages: Sequence[dict], count: Callable[[str], int] = estimate_tokens) -> int:
    """Prompt tokens of a chat request: its messages' contents plus the chat template's tokens."""
    return sum(count(m["content"]) + MESSAGE_TOKENS for m in messages) + REPLY_TOKENS


def synthetic_explanation(n_chars: int = EXPLANATION_CHARS) -> str:
    """An explanation-like sentence of about n_chars characters."""
    words, text = iter(_FILLER[1:] * (n_chars // 50 + 2)), "The latent detects"
    while len(text) < n_chars:
        text += next(words)
    return text + "."


def _window(i: int, length: int, n_active: int) -> tuple[list[str], np.ndarray]:
    """Window i: `length` filler tokens ([length] strings) and activations ([length], n_active > 0)."""
    toks = [_FILLER[(7 * i + j) % len(_FILLER)] for j in range(length)]
    acts = np.zeros(length, np.float32)
    where = (np.arange(1, n_active + 1) * length) // (n_active + 1)  # spread out: one mark pair each
    acts[where] = np.linspace(10.0, 2.0, n_active) * (1 + i % 5) / 5  # strengths vary across windows
    return toks, acts


def synthetic_examples(sampler: dict, active_tokens: int = ACTIVE_TOKENS) -> pd.DataFrame:
    """Examples table of one latent (latent 0) that fires often enough for every window the sampler asks."""
    from interpflow.sampling.hard import _hard_settings

    n_neg = int(sampler.get("n_nonactivating", 100))
    groups = [  # (split, activating, negative, count)
        ("train", True, "", int(sampler.get("n_train", 40))),
        ("test", True, "", int(sampler.get("n_test", 100))),
        ("test", False, "random", n_neg),
        ("train", False, "random", int(sampler.get("n_train_nonactivating") or 0)),
        ("test", False, "hard", _hard_settings(sampler, n_neg)[1]),
    ]
    length, rows = int(sampler.get("example_ctx_len", 32)), []
    for split, on, negative, n in groups:
        for _ in range(n):
            toks, acts = _window(len(rows), length, active_tokens if on else 0)
            rows.append(dict(latent=0, example_id=len(rows), split=split, activating=on, negative=negative,
                             token_strs=toks, acts=acts, max_act=float(acts.max()),
                             quantile=len(rows) % 10 if on else -1))  # fmt: skip
    return pd.DataFrame(rows)


class _Recorder:
    """A stand-in LLM client that keeps the requests and answers each with `reply`."""

    def __init__(self, reply: str):
        self.model, self.reply, self.requests = "estimate", reply, []

    def complete_many(self, requests: list[list[dict]], desc: str = "llm") -> list:
        """Record the requests; every answer is `reply`."""
        from interpflow.llm.types import Completion

        self.requests += requests
        c = Completion(self.reply, "ok", "", 0, 0, 0.0, 0.0, False, None)
        return [c] * len(requests)


def explain_requests(
    examples: pd.DataFrame, cfg: dict, count: Callable[[str], int]
) -> list[tuple[int, int, int]]:
    """(input, expected output, max output) tokens of each request the explainer sends for one latent."""
    from interpflow.explain import explain_latents

    reply = f"Explanation: {synthetic_explanation()}"
    client = _Recorder(reply)
    latents = pd.DataFrame({"latent": [0], "status": ["ok"], "reason": [""]})
    explain_latents(examples, latents, cfg, client)
    cap = int(cfg["llm"].get("max_tokens") or 256)
    out = cap if cfg.get("cot") else min(count(reply), cap)  # a reasoning reply's length is unknown
    requests = [(message_tokens(r, count), out, cap) for r in client.requests]
    if cfg.get("select") is not None:  # best-of: the model judges each candidate on the held-out windows
        from interpflow.best_of import check_select, heldout_windows
        from interpflow.explain import shown_windows

        select = check_select(cfg["select"])
        heldout = heldout_windows(examples, shown_windows(examples, cfg))
        judge = {"kind": select["by"], "llm": cfg["llm"]}
        requests += len(select["candidates"]) * score_requests(heldout, judge, count)
    return requests


def _labels_reply(n: int) -> str:
    """A judge's answer to n excerpts: [1, 0, 1, ...]."""
    return "[" + ", ".join("10"[k % 2] for k in range(n)) + "]"


def _simulation_reply(counts: Sequence[int]) -> str:
    """A simulator's answer: one "k: 1=0 2=0 ..." line per window of `counts` tokens."""
    return "\n".join(f"{k}: " + " ".join(f"{i}=0" for i in range(1, n + 1)) for k, n in enumerate(counts, 1))


def score_requests(
    examples: pd.DataFrame, cfg: dict, count: Callable[[str], int]
) -> list[tuple[int, int, int]]:
    """(input, expected output, max output) tokens of each request an LLM scorer sends for one latent."""
    from interpflow.scoring import common, judge, simulation

    explanations = pd.DataFrame({"latent": [0], "explanation": [synthetic_explanation()], "status": ["ok"]})
    cap = int(cfg["llm"].get("max_tokens") or 256)
    method = common.choose_method(cfg, cfg["llm"]["model"].startswith("local/"))
    build = simulation.build_prompts if cfg["kind"] == "simulation" else judge.build_prompts
    requests, meta, _ = build(examples, explanations, cfg, method)
    if method == "slots":  # one evaluation of the prompt, nothing generated
        return [(message_tokens(m, count), 0, 0) for m, _ in requests]
    if cfg["kind"] == "simulation":
        cap = int(simulation.llm_config(cfg, examples)["max_tokens"])  # sized to the reply, config-capped
        replies = [_simulation_reply([len(t) for t in m[3]]) for m in meta]
    else:
        replies = [_labels_reply(len(m[2])) for m in meta]
    return [
        (message_tokens(r, count), min(count(a), cap), cap) for r, a in zip(requests, replies, strict=True)
    ]
