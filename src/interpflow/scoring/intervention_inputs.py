"""The inputs of intervention scoring (Paulo et al. 2024, App. G): its options, prompts from a latent's own
activating contexts, the few-shot prompt in which a scorer LM reads steered or clean continuations, and the
donors of the shuffled-explanation control.

Prompts: the latent's activating windows, stratified by activation quintile, each cut at its first
activation (the text up to and including the first token where the latent fires), so that the steered
model writes from a context in which the latent is naturally active.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

N_QUINTILES = 5
EXAMPLE_COLUMNS = ("latent", "example_id", "split", "activating", "tokens", "acts", "max_act")
# Worked examples for the scorer, so a base LM knows the format. They are the same in the clean and the
# steered prompt, so they shift both log-likelihoods alike; their topics are far from token-level properties.
SHOTS = (
    ("the river valley below the hills\nalong the coast to the bay", "landscape: rivers, hills and coasts"),
    ("the orchestra played a slow waltz\nher violin and the piano", "music and musical instruments"),
    ("a pinch of salt and two eggs\nbake the bread until golden", "cooking and recipes"),
)


DEFAULTS = {
    # 1 nat per token (delphi's default too): continuations visibly change yet mostly stay text.
    "target_kl": 1.0,
    "kl_tolerance": 0.1,  # relative: |kl - target| <= tol * target counts as calibrated (App. G: 10%)
    "n_prompts": 5,  # per latent, spread over the 5 activation quintiles (App. G: 30 for scoring)
    "prompt_split": "test",  # windows the explainer never saw; 'train' or 'all' also work
    "n_samples": 2,  # sampled continuations per prompt, clean and steered alike
    "max_new_tokens": 8,  # App. G: 8 generated tokens
    "max_alpha": 8.0,  # in mean residual norms; far beyond the strengths that keep text readable
    "temperature": 1.0,  # 0: greedy (then all samples of a prompt agree)
    "seed": 0,
    "n_shots": 3,  # worked examples in the scorer's prompt (intervention_prompts.SHOTS)
    "prompt_template": "Snippets:\n{text}\nWhat the snippets have in common:",  # the explanation follows
}
SPLITS = ("test", "train", "all")


class Prompt(NamedTuple):
    """One steering prompt, cut from an activating window of the latent."""

    example_id: int  # the window's id in the examples table
    quintile: int  # activation quintile of the window among the latent's candidates (0 = weakest)
    ids: list[int]  # BOS + window tokens up to and including the first activating one
    text: str  # ids decoded without BOS


def cut_at_first_activation(tokens, acts, bos: int) -> list[int]:
    """BOS + tokens up to and including the first with a positive activation (App. G: 'cut at the first
    activation'). A window that starts a sequence already begins with BOS; it is not doubled."""
    tokens, acts = np.asarray(tokens, np.int64), np.asarray(acts, np.float64)
    hits = np.flatnonzero(acts > 0)
    if len(tokens) != len(acts) or not hits.size:
        raise ValueError("an activating example needs tokens and acts of one length with an act > 0")
    ids = tokens[: hits[0] + 1].tolist()
    return ids if ids[0] == bos else [bos, *ids]


def quintiles(max_act: np.ndarray) -> np.ndarray:
    """Activation quintile (0-4) of each window by the rank of its peak activation: equal-sized bins."""
    ranks = np.argsort(np.argsort(max_act, kind="stable"), kind="stable")  # 0 = weakest
    return (ranks * N_QUINTILES) // max(len(max_act), 1)


def stratified(bins: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of min(n, len(bins)) items spread evenly over the bins: the first (random) item of every bin,
    then the second of every bin, ...; a bin that runs out leaves its share to the others."""
    prio = rng.permutation(len(bins))  # random order inside each bin
    order = np.lexsort((prio, bins))
    rank_in_bin = np.arange(len(bins)) - np.searchsorted(bins[order], bins[order])
    bin_order = rng.permutation(N_QUINTILES)[bins[order]]  # which bin goes first in each round
    return order[np.lexsort((bin_order, rank_in_bin))][:n]


def latent_prompts(
    examples: pd.DataFrame, n: int, split: str, bos: int, tokenizer, rng: np.random.Generator
) -> list[Prompt]:
    """Up to n prompts from one latent's activating windows of `split` ('all': every split), n / 5 per
    activation quintile, in the order picked (round-robin over quintiles)."""
    rows = examples[examples["activating"].astype(bool)]
    if split != "all":
        rows = rows[rows["split"] == split]
    rows = rows.sort_values("example_id")  # the pick depends on the seed only, not the table's row order
    q = quintiles(rows["max_act"].to_numpy(np.float64))
    out = []
    for i in stratified(q, n, rng):
        r = rows.iloc[i]
        ids = cut_at_first_activation(r["tokens"], r["acts"], bos)
        text = tokenizer.decode(ids[1:], skip_special_tokens=True)
        out.append(Prompt(int(r["example_id"]), int(q[i]), ids, text))
    return out


def check_examples(examples: pd.DataFrame, path) -> None:
    missing = set(EXAMPLE_COLUMNS) - set(examples.columns)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}")


def few_shot_prefix(template: str, n_shots: int) -> str:
    """The first n_shots worked examples, each as the query is written, separated by blank lines."""
    return "".join(f"{template.format(text=t)} {e}\n\n" for t, e in SHOTS[:n_shots])


def shuffled_donors(latents: np.ndarray, seed: int) -> dict[int, int]:
    """A seeded derangement of the latents (one cycle): each gets another latent's explanation as the
    shuffled-explanation control. Empty for fewer than two latents."""
    lats = np.sort(np.asarray(latents, np.int64))
    if len(lats) < 2:
        return {}
    perm = np.random.default_rng(np.random.SeedSequence([seed, 7])).permutation(lats)
    return {int(a): int(b) for a, b in zip(perm, np.roll(perm, -1), strict=True)}


def check_cfg(cfg: dict) -> dict:
    """Scorer options with defaults filled in; a ValueError names a bad key."""
    if cfg.get("prompts") is not None:
        raise ValueError(
            "intervention option prompts is gone: prompts now come from each latent's activating examples "
            "(set n_prompts and prompt_split instead)"
        )
    c = DEFAULTS | {k: v for k, v in cfg.items() if v is not None and k != "prompts"}
    for key in ("n_prompts", "n_samples", "max_new_tokens"):
        if not (isinstance(c[key], int) and c[key] >= 1):
            raise ValueError(f"intervention option {key} must be an integer >= 1, got {c[key]!r}")
    for key in ("target_kl", "max_alpha"):
        if not c[key] > 0:
            raise ValueError(f"intervention option {key} must be > 0, got {c[key]!r}")
    if not 0 < c["kl_tolerance"] < 1:
        raise ValueError(f"intervention option kl_tolerance must be in (0, 1), got {c['kl_tolerance']!r}")
    if c["temperature"] < 0:
        raise ValueError(f"intervention option temperature must be >= 0, got {c['temperature']!r}")
    if c["prompt_split"] not in SPLITS:
        raise ValueError(
            f"intervention option prompt_split must be one of {SPLITS}, got {c['prompt_split']!r}"
        )
    if not 0 <= c["n_shots"] <= len(SHOTS):
        raise ValueError(f"intervention option n_shots must be in 0..{len(SHOTS)}, got {c['n_shots']!r}")
    if "{text}" not in c["prompt_template"]:
        raise ValueError(
            f"intervention option prompt_template must contain '{{text}}': {c['prompt_template']!r}"
        )
    return c


def estimated_forward_tokens(cfg: dict, window_len: int, expl_tokens: int, steps: int) -> int:
    """Tokens the subject/scorer read per latent, for the cost estimate: prompts average half a window;
    `steps` calibration steps for the latent's direction and as many for the random control."""
    c = check_cfg(cfg)
    seqs = c["n_prompts"] * c["n_samples"] * (1 + window_len // 2 + c["max_new_tokens"])
    prompt = sum(len(t) + len(e) for t, e in SHOTS[: c["n_shots"]]) // 4 + len(c["prompt_template"]) // 4
    scored = c["n_prompts"] * 5 * (prompt + c["n_samples"] * c["max_new_tokens"] + expl_tokens)
    # clean, steered and random generations with a KV cache read each sequence once
    return 2 * (steps + 1) * seqs + seqs + scored
