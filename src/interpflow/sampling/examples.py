"""sample_table / sample_examples: one shard's examples table (the chosen windows with their tokens, text and
activations) and latents table (each latent sampled, or skipped with the reason)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interpflow.latents import LatentShard
from interpflow.sampling.hard import _hard_scores, _hard_settings
from interpflow.sampling.selection import select_latents
from interpflow.sampling.vocab import Vocab, window_string_ids
from interpflow.sampling.windows import _run_starts, _sample_windows, _settings

if TYPE_CHECKING:
    import pyarrow as pa
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
    """Columns of the example rows for the given window ids (tokens, their text, the latent's acts).

    `tokens`, `acts` and `string_ids` are [m, L] arrays, `extra_strings` the strings that string_ids points
    at past the vocabulary (window_string_ids); _examples_table makes them list columns.
    """
    per_seq = tokens.shape[1] // L
    seq, start = windows // per_seq, (windows % per_seq) * L
    toks = tokens[seq[:, None], start[:, None] + np.arange(L)]  # [m, L]
    acts = np.zeros((windows.size, L), np.float32)  # [m, L]
    wid = pos.astype(np.int64) // L
    order = np.argsort(windows)
    hit = np.isin(wid, windows)
    acts[order[np.searchsorted(windows[order], wid[hit])], pos[hit] % L] = vals[hit]
    string_ids, extra = window_string_ids(toks, vocab)
    return {
        "latent": np.full(windows.size, latent, np.int64),
        "example_id": np.arange(windows.size, dtype=np.int64),
        "seq": seq.astype(np.int64),
        "start": start.astype(np.int64),
        "tokens": toks.astype(np.int32),
        "string_ids": string_ids,
        "extra_strings": extra,
        "acts": acts,
        "max_act": acts.max(axis=1),
    }


def _examples_table(parts: list[dict[str, Any]], vocab: Vocab, L: int) -> pa.Table:
    """One Arrow table of every latent's example rows, its list columns built from flat arrays at once
    (converting per-row arrays cost more than the sampling itself)."""
    import pyarrow as pa

    schema = _examples_schema()
    if not parts:
        return schema.empty_table()
    n = sum(p["latent"].size for p in parts)
    offsets = pa.array(np.arange(0, (n + 1) * L, L, dtype=np.int32))  # every row holds L tokens
    # each part's extra strings follow the vocabulary and the extras of the parts before it
    n_vocab, shift, ids = vocab.text.size, 0, []
    for p in parts:
        ids.append(np.where(p["string_ids"] >= n_vocab, p["string_ids"] + shift, p["string_ids"]).ravel())
        shift += len(p["extra_strings"])
    extras = np.array([s for p in parts for s in p["extra_strings"]], dtype=object)
    strings = pa.array(np.concatenate([vocab.text, extras]), pa.string())
    flat = {c: np.concatenate([p[c] for p in parts]) for c in ("tokens", "acts")}  # [n, L] each
    columns = {
        "tokens": pa.ListArray.from_arrays(offsets, flat["tokens"].ravel()),
        "token_strs": pa.ListArray.from_arrays(offsets, strings.take(np.concatenate(ids))),
        "acts": pa.ListArray.from_arrays(offsets, flat["acts"].ravel()),
    }
    for f in schema:
        if f.name not in columns:
            columns[f.name] = pa.array(np.concatenate([p[f.name] for p in parts]), f.type)
    return pa.table([columns[f.name] for f in schema], schema=schema)


def sample_examples(
    tokens: np.ndarray,
    vocab: Vocab | np.ndarray,
    shard: LatentShard,
    cfg: dict,
    latents: Sequence[int] | None = None,
    *,
    incidence: sparse.csc_matrix | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """sample_table's examples as a DataFrame (list columns as arrays), and its latents table."""
    examples, table = sample_table(tokens, vocab, shard, cfg, latents, incidence=incidence)
    return examples.to_pandas(), table


def sample_table(
    tokens: np.ndarray,
    vocab: Vocab | np.ndarray,
    shard: LatentShard,
    cfg: dict,
    latents: Sequence[int] | None = None,
    *,
    incidence: sparse.csc_matrix | None = None,
) -> tuple[pa.Table, pd.DataFrame]:
    """Sample train/test example windows per latent (None = the latents cfg['latents'] selects).

    Returns the examples (an Arrow table with _examples_schema) and the latents table.
    `vocab`: read_vocab's Vocab, or an array of token strings (every token whole characters).
    `incidence` (window_incidence over all shards) is needed by hard_negatives.method cooccurrence.
    Latents with fewer than cfg['min_activations'] activations are `skipped`, with the reason.
    """
    from tqdm.auto import tqdm

    s = _settings(cfg, tokens.shape[1])
    method, n_hard, top_k = _hard_settings(cfg, s["n_nonactivating"])
    L = s["example_ctx_len"]
    n_windows = _check_inputs(tokens, shard, L, method, incidence)
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
        parts.append(_example_rows(int(latent), windows, pos, vals, tokens, vocab, L) | cols)
        status.append((int(latent), n_act, n_win, "ok", ""))
    examples = _examples_table(parts, vocab, L)  # one table at the end, not one per latent
    table = pd.DataFrame(status, columns=LATENT_COLUMNS)
    table = table.astype({"latent": np.int64, "n_activations": np.int64, "n_activating_windows": np.int64})
    _warn_if_short(table, s)
    n_hard_rows = sum(int((p["negative"] == "hard").sum()) for p in parts)
    n_skipped = int((table.status != "ok").sum())
    log.info("sampled %d latents (%d skipped), %d examples (%d hard negatives, method %s)",
             len(table), n_skipped, examples.num_rows, n_hard_rows, method)  # fmt: skip
    return examples, table


def _check_inputs(
    tokens: np.ndarray, shard: LatentShard, L: int, method: str, incidence: sparse.csc_matrix | None
) -> int:
    """Raise if the tokens do not match the shard, or cooccurrence lacks its incidence; the window count."""
    n_seq, ctx_len = tokens.shape
    if (n_seq, ctx_len) != (shard.n_seq, shard.ctx_len):
        raise ValueError(
            f"tokens {tokens.shape} do not match the shard's (n_seq, ctx_len) {shard.n_seq, shard.ctx_len}"
        )
    n_windows = n_seq * (ctx_len // L)
    if method == "cooccurrence" and (
        incidence is None or incidence.shape[0] != n_windows or incidence.shape[1] < shard.latent_end
    ):
        raise ValueError(
            f"hard_negatives.method cooccurrence needs the window x latent incidence of all latents "
            f"({n_windows} windows, >= {shard.latent_end} latents); got "
            f"{None if incidence is None else incidence.shape}"
        )
    return n_windows


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
