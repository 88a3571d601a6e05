"""sample_table / sample_examples: one shard's examples table (the chosen windows with their tokens, text and
activations) and latents table (each latent sampled, or skipped with the reason)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interpflow.latents import LatentShard
from interpflow.sampling.hard import _hard_scores, _hard_settings
from interpflow.sampling.selection import select_latents
from interpflow.sampling.vocab import Vocab, window_string_ids
from interpflow.sampling.windows import GROUPS, _run_starts, _sample_windows, _settings
from interpflow.store import write_arrow

if TYPE_CHECKING:
    import pyarrow as pa
    from scipy import sparse

log = logging.getLogger(__name__)

EXAMPLE_COLUMNS = [
    "latent", "example_id", "split", "activating", "seq", "start",
    "tokens", "token_strs", "acts", "max_act", "quantile", "negative",
]  # fmt: skip
LATENT_COLUMNS = ["latent", "n_activations", "n_activating_windows", "status", "reason"]


def _examples_schema(encoded: bool = False) -> Any:
    """Arrow schema of the examples table (fixed, so empty shards keep their list types); `encoded`: with
    token_strs' strings dictionary-encoded, as sample_table builds it (the file reads back as plain)."""
    import pyarrow as pa

    strs = pa.dictionary(pa.int32(), pa.string()) if encoded else pa.string()
    return pa.schema(
        [
            ("latent", pa.int64()),
            ("example_id", pa.int64()),
            ("split", pa.string()),
            ("activating", pa.bool_()),
            ("seq", pa.int64()),
            ("start", pa.int64()),
            ("tokens", pa.list_(pa.int32())),
            ("token_strs", pa.list_(strs)),
            ("acts", pa.list_(pa.float32())),
            ("max_act", pa.float32()),
            ("quantile", pa.int64()),
            ("negative", pa.string()),
        ]
    )


def _window_acts(windows: np.ndarray, pos: np.ndarray, vals: np.ndarray, L: int) -> np.ndarray:
    """A latent's activations [m, L] in the distinct windows [m], from its nonzeros pos, vals [nnz]."""
    wid = pos.astype(np.int64) // L  # [nnz], ascending: positions ascend within a latent
    lo = np.searchsorted(wid, windows, "left")  # [m]: window i holds nonzeros lo[i] : lo[i] + count[i]
    count = np.searchsorted(wid, windows, "right") - lo
    row = np.repeat(np.arange(windows.size), count)  # [hits]
    src = np.arange(row.size) + np.repeat(lo - (np.cumsum(count) - count), count)  # [hits] into pos
    acts = np.zeros((windows.size, L), np.float32)
    acts[row, pos[src] % L] = vals[src]
    return acts


def _token_strs(ids: np.ndarray, extra: pa.StringArray, vocab: Vocab, offsets: pa.Array) -> pa.ListArray:
    """The token_strs column from window_string_ids' ids [n, L] and extras, its strings dictionary-encoded
    over the distinct strings used: Parquet writes a given dictionary as it is instead of hashing every
    string (it needs one without repeats), and the rest of the vocabulary is never converted to Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    flat = ids.ravel()  # [n * L]
    used = np.flatnonzero(np.bincount(flat, minlength=vocab.text.size)[: vocab.text.size])  # [u] vocab ids
    # the strings used, distinct: texts repeat across token ids, and most extras are whole tokens' texts
    enc = pc.dictionary_encode(pa.concat_arrays([pa.array(vocab.text[used], pa.string()), extra]))
    code = np.zeros(vocab.text.size + len(extra), np.int32)  # [n_vocab + n_extra] dictionary index per id
    index = enc.indices.to_numpy()  # [u + n_extra]
    code[used], code[vocab.text.size :] = index[: used.size], index[used.size :]
    strings = pa.DictionaryArray.from_arrays(pa.array(code[flat]), enc.dictionary)
    return pa.ListArray.from_arrays(offsets, strings)


def _examples_table(parts: list[dict[str, Any]], tokens: np.ndarray, vocab: Vocab, L: int) -> pa.Table:
    """One Arrow table of every latent's example rows (parts: each latent's windows, acts and
    _sample_windows columns), built from flat arrays at once: per-latent conversions cost more than the
    sampling itself."""
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = _examples_schema(encoded=True)
    if not parts:
        return schema.empty_table()
    size = np.array([p["windows"].size for p in parts])  # [parts] rows per latent
    windows = np.concatenate([p["windows"] for p in parts])  # [n] flat window ids
    toks = tokens.reshape(-1, L)[windows]  # [n, L]; window = flat token index // L
    acts = np.concatenate([p["acts"] for p in parts])  # [n, L]
    group = np.concatenate([p["group"] for p in parts])  # [n] index into GROUPS
    per_seq = tokens.shape[1] // L
    offsets = pa.array(np.arange(0, (windows.size + 1) * L, L, dtype=np.int32))  # every row holds L tokens
    ids, extra = window_string_ids(toks, vocab)  # [n, L]; one span_strings call for all split windows
    columns = {
        "latent": np.repeat(np.array([p["latent"] for p in parts], np.int64), size),
        "example_id": np.arange(windows.size, dtype=np.int64) - np.repeat(np.cumsum(size) - size, size),
        "split": pc.take(pa.array([g[0] for g in GROUPS]), group),
        "activating": group < 2,
        "seq": windows // per_seq,
        "start": windows % per_seq * L,
        "tokens": pa.ListArray.from_arrays(offsets, toks.astype(np.int32, copy=False).ravel()),
        "token_strs": _token_strs(ids, extra, vocab, offsets),
        "acts": pa.ListArray.from_arrays(offsets, acts.ravel()),
        "max_act": acts.max(axis=1),
        "quantile": np.concatenate([p["quantile"] for p in parts]),
        "negative": pc.take(pa.array([g[1] for g in GROUPS]), group),
    }
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
    return examples.cast(_examples_schema()).to_pandas(), table


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

    Returns the examples (an Arrow table with _examples_schema(encoded=True): write it with write_examples)
    and the latents table.
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
        acts = _window_acts(windows, pos, vals, L)  # [m, L]
        parts.append({"latent": int(latent), "windows": windows, "acts": acts} | cols)
        status.append((int(latent), n_act, n_win, "ok", ""))
    examples = _examples_table(parts, tokens, vocab, L)  # one table at the end, not one per latent
    table = pd.DataFrame(status, columns=LATENT_COLUMNS)
    table = table.astype({"latent": np.int64, "n_activations": np.int64, "n_activating_windows": np.int64})
    _warn_if_short(table, s)
    n_hard_rows = sum(int((p["group"] == GROUPS.index(("test", "hard"))).sum()) for p in parts)
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


def write_examples(examples: pa.Table, path: str | os.PathLike) -> None:
    """Write sample_table's examples to Parquet atomically; token_strs reads back as list<string>.

    No Arrow schema is stored, so the dictionary-encoded token_strs reads back as the plain strings the
    Parquet file holds (every other column reads back as the same type either way). Statistics are kept
    for the flat columns only: those of the list columns (min/max over every element) cost a fifth of the
    write and no reader filters on them. Snappy, pyarrow's default, stays: writing is dominated by
    encoding the list columns, and lz4 / zstd-1 / none wrote no faster on the benchmark's table.
    """
    import pyarrow as pa

    flat = [f.name for f in examples.schema if not pa.types.is_list(f.type)]
    write_arrow(examples, path, store_schema=False, write_statistics=flat)
