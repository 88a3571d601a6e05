"""sample_examples: one shard's examples table (the chosen windows with their tokens, text and activations)
and latents table (each latent sampled, or skipped with the reason)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interpflow.latents import LatentShard
from interpflow.sampling.hard import _hard_scores, _hard_settings
from interpflow.sampling.selection import select_latents
from interpflow.sampling.vocab import Vocab, window_strings
from interpflow.sampling.windows import _run_starts, _sample_windows, _settings

if TYPE_CHECKING:
    from scipy import sparse

log = logging.getLogger(__name__)

EXAMPLE_COLUMNS = [
    "latent", "example_id", "split", "activating", "seq", "start",
    "tokens", "token_strs", "acts", "max_act", "quantile", "negative",
]  # fmt: skip
LATENT_COLUMNS = ["latent", "n_activations", "n_activating_windows", "status", "reason"]


def _examples_schema() -> Any:
    """Arrow schema of the examples table (fixed, so empty shards keep their list types)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("latent", pa.int64()),
            ("example_id", pa.int64()),
            ("split", pa.string()),
            ("activating", pa.bool_()),
            ("seq", pa.int64()),
            ("start", pa.int64()),
            ("tokens", pa.list_(pa.int32())),
            ("token_strs", pa.list_(pa.string())),
            ("acts", pa.list_(pa.float32())),
            ("max_act", pa.float32()),
            ("quantile", pa.int64()),
            ("negative", pa.string()),
        ]
    )


def _example_rows(
    latent: int,
    windows: np.ndarray,
    pos: np.ndarray,
    vals: np.ndarray,
    tokens: np.ndarray,
    vocab: Vocab,
    L: int,
) -> dict[str, Any]:
    """Columns of the example rows for the given window ids (tokens, their text, the latent's acts)."""
    per_seq = tokens.shape[1] // L
    seq, start = windows // per_seq, (windows % per_seq) * L
    toks = tokens[seq[:, None], start[:, None] + np.arange(L)]  # [m, L]
    acts = np.zeros((windows.size, L), np.float32)  # [m, L]
    wid = pos.astype(np.int64) // L
    order = np.argsort(windows)
    hit = np.isin(wid, windows)
    acts[order[np.searchsorted(windows[order], wid[hit])], pos[hit] % L] = vals[hit]
    strs = window_strings(toks, vocab)
    return {
        "latent": np.full(windows.size, latent, np.int64),
        "example_id": np.arange(windows.size, dtype=np.int64),
        "seq": seq.astype(np.int64),
        "start": start.astype(np.int64),
        "tokens": list(toks.astype(np.int32)),
        "token_strs": list(strs),
        "acts": list(acts),
        "max_act": acts.max(axis=1),
    }


def _concat(pieces: list) -> np.ndarray | list:
    """Join one column's per-latent pieces (arrays, or lists of per-row arrays)."""
    if isinstance(pieces[0], list):
        return [row for piece in pieces for row in piece]
    return np.concatenate(pieces)


def sample_examples(
    tokens: np.ndarray,
    vocab: Vocab | np.ndarray,
    shard: LatentShard,
    cfg: dict,
    latents: Sequence[int] | None = None,
    *,
    incidence: sparse.csc_matrix | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sample train/test example windows per latent (None = the latents cfg['latents'] selects).

    `vocab`: read_vocab's Vocab, or an array of token strings (every token whole characters).
    `incidence` (window_incidence over all shards) is needed by hard_negatives.method cooccurrence.
    Latents with fewer than cfg['min_activations'] activations are `skipped`, with the reason.
    """
    from tqdm.auto import tqdm

    n_seq, ctx_len = tokens.shape
    if (n_seq, ctx_len) != (shard.n_seq, shard.ctx_len):
        raise ValueError(
            f"tokens {tokens.shape} do not match the shard's (n_seq, ctx_len) {shard.n_seq, shard.ctx_len}"
        )
    s = _settings(cfg, ctx_len)
    method, n_hard, top_k = _hard_settings(cfg, s["n_nonactivating"])
    L = s["example_ctx_len"]
    n_windows = n_seq * (ctx_len // L)
    if method == "cooccurrence" and (
        incidence is None or incidence.shape[0] != n_windows or incidence.shape[1] < shard.latent_end
    ):
        raise ValueError(
            f"hard_negatives.method cooccurrence needs the window x latent incidence of all latents "
            f"({n_windows} windows, >= {shard.latent_end} latents); got "
            f"{None if incidence is None else incidence.shape}"
        )
    if latents is None:
        latents = select_latents(shard.latent_start, shard.latent_end, cfg)
    tokens_w = tokens.reshape(n_windows, L)  # [n_windows, L]; window = flat token index // L
    if not isinstance(vocab, Vocab):
        vocab = Vocab.from_texts(vocab)
    parts, status = [], []
    for latent in tqdm(latents, desc="sample", unit="latent"):
        pos, vals = shard.latent(int(latent))  # the shard keeps only nonzeros: pos.size activations
        n_act, n_win = int(pos.size), int(_run_starts(pos // L).size)
        if n_act == 0 or n_act < s["min_activations"]:
            status.append((int(latent), n_act, n_win, "skipped", _skip_reason(n_act, s["min_activations"])))
            continue
        # a generator per (seed, latent): a latent's examples do not depend on which others are sampled
        rng = np.random.default_rng([s["seed"], int(latent)])
        hard_score = _hard_scores(method, int(latent), pos, vals, tokens_w, incidence, top_k)
        windows, cols = _sample_windows(pos, vals, n_windows, s, rng, hard_score, n_hard)
        rows = _example_rows(int(latent), windows, pos, vals, tokens, vocab, L)
        parts.append(rows | cols)
        status.append((int(latent), n_act, n_win, "ok", ""))
    # one frame at the end: a DataFrame per latent cost more than sampling the latent
    examples = (
        pd.DataFrame({c: _concat([p[c] for p in parts]) for c in EXAMPLE_COLUMNS})
        if parts
        else pd.DataFrame(columns=EXAMPLE_COLUMNS)
    )
    table = pd.DataFrame(status, columns=LATENT_COLUMNS)
    table = table.astype({"latent": np.int64, "n_activations": np.int64, "n_activating_windows": np.int64})
    _warn_if_short(table, s)
    n_skipped = int((table.status != "ok").sum())
    n_hard_rows = int((examples["negative"] == "hard").sum())
    log.info(
        "sampled %d latents (%d skipped), %d examples (%d hard negatives, method %s)",
        len(table),
        n_skipped,
        len(examples),
        n_hard_rows,
        method,
    )
    return examples.astype({"quantile": np.int64, "max_act": np.float32}), table


def _warn_if_short(table: pd.DataFrame, s: dict[str, int]) -> None:
    """Say so when no sampled latent has the activating windows n_train + n_test ask for (issue 15): every
    latent then gets fewer explanation and test examples than the config says."""
    windows = table.loc[table["status"] == "ok", "n_activating_windows"]
    want = s["n_train"] + s["n_test"]
    if len(windows) and windows.max() < want:
        log.warning(
            "n_train + n_test = %d activating windows, but the most any of these %d latents has is %d: each "
            "gets fewer examples than configured (lower n_train / n_test, or use a larger corpus)",
            want, len(windows), int(windows.max()),
        )  # fmt: skip


def _skip_reason(n_act: int, need: int) -> str:
    """Why a latent with n_act activations is set aside."""
    if n_act == 0:
        return "never fires"
    return f"only {n_act} activations; need {need} (min_activations)"
