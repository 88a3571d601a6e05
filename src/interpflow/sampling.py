"""Example sampler: per latent, train and test windows stratified by activation quantile, never shared."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from interpflow.latents import LatentShard, read_shard
from interpflow.store import atomic_path, read_parquet, write_parquet

log = logging.getLogger(__name__)

EXAMPLE_COLUMNS = [
    "latent", "example_id", "split", "activating", "seq", "start",
    "tokens", "token_strs", "acts", "max_act", "quantile",
]  # fmt: skip
LATENT_COLUMNS = ["latent", "n_activating_windows", "status", "reason"]


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
        ]
    )


def select_latents(latent_start: int, latent_end: int, cfg: dict) -> list[int]:
    """Seeded random sample of cfg['latents']['n'] latents in [latent_start, latent_end), sorted."""
    sel = cfg.get("latents") or {}
    n, seed = sel.get("n"), sel.get("seed", cfg.get("seed", 0))
    size = latent_end - latent_start
    if n is not None and (not isinstance(n, int) or n < 0):
        raise ValueError(f"latents.n must be a non-negative integer or null, got {n!r}")
    if n is None or n >= size:
        return list(range(latent_start, latent_end))
    # the shard start is mixed in so each shard draws its own offsets
    rng = np.random.default_rng([int(seed), latent_start])
    return sorted(int(i) for i in latent_start + rng.choice(size, size=n, replace=False))


def _settings(cfg: dict, ctx_len: int) -> dict[str, int]:
    """Read and check the sampler settings, with the paper's defaults."""
    s = {
        "example_ctx_len": cfg.get("example_ctx_len", 32),
        "n_train": cfg.get("n_train", 40),
        "n_test": cfg.get("n_test", 100),
        "n_nonactivating": cfg.get("n_nonactivating", 100),
        "n_quantiles": cfg.get("n_quantiles", 10),
        "seed": cfg.get("seed", 0),
    }
    min_activating = cfg.get("min_activating")  # null in the config means the default
    s["min_activating"] = s["n_train"] + s["n_test"] if min_activating is None else min_activating
    for key, value in s.items():
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"sampler setting {key} must be a non-negative integer, got {value!r}")
    if s["example_ctx_len"] < 1 or ctx_len % s["example_ctx_len"]:
        raise ValueError(f"example_ctx_len ({s['example_ctx_len']}) must divide the context length {ctx_len}")
    if s["n_quantiles"] < 1:
        raise ValueError("n_quantiles must be at least 1")
    return s


def _stratified(bins: np.ndarray, n: int, n_bins: int, rng: np.random.Generator) -> np.ndarray:
    """Pick min(n, len(bins)) indices, about n / n_bins per bin; short bins are filled from the others."""
    n = min(n, bins.size)
    quota = np.full(n_bins, n // n_bins)
    quota[rng.permutation(n_bins)[: n % n_bins]] += 1  # spread the remainder over random bins
    prio = rng.permutation(bins.size)  # random rank of every candidate
    order = np.lexsort((prio, bins))  # by bin, then by random rank
    rank_in_bin = np.arange(bins.size) - np.searchsorted(bins[order], bins[order])
    take = rank_in_bin < quota[bins[order]]
    chosen, rest = order[take], order[~take]
    fill = rest[np.argsort(prio[rest])[: n - chosen.size]]
    return np.concatenate([chosen, fill])


def _inactive_windows(active: np.ndarray, n_windows: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw n distinct window ids uniformly among those not in the sorted array `active`."""
    n_inactive = n_windows - active.size
    r = np.sort(rng.choice(n_inactive, size=min(n, n_inactive), replace=False))
    # the r-th inactive window skips every active id a[i] with a[i] - i <= r inactive windows before it
    return r + np.searchsorted(active - np.arange(active.size), r, side="right")


def _sample_windows(
    pos: np.ndarray, vals: np.ndarray, n_windows: int, s: dict[str, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Choose one latent's windows: returns (window ids, split is train, activating, quantile bin)."""
    # flat window id; ctx_len % L == 0 keeps every window inside one sequence
    wid = pos.astype(np.int64) // s["example_ctx_len"]
    active, first = np.unique(wid, return_index=True)  # [n_act], sorted
    max_act = np.maximum.reduceat(vals.astype(np.float32), first)
    rank = np.empty(active.size, np.int64)
    rank[np.argsort(max_act, kind="stable")] = np.arange(active.size)
    bins = rank * s["n_quantiles"] // active.size  # equal-count bins, 0 = weakest
    train = _stratified(bins, s["n_train"], s["n_quantiles"], rng)
    left = np.setdiff1d(np.arange(active.size), train)  # test never reuses a train window
    test = left[_stratified(bins[left], s["n_test"], s["n_quantiles"], rng)]
    train, test = np.sort(train), np.sort(test)
    inactive = _inactive_windows(active, n_windows, s["n_nonactivating"], rng)
    windows = np.concatenate([active[train], active[test], inactive])
    is_train = np.arange(windows.size) < train.size
    activating = np.arange(windows.size) < train.size + test.size
    quantile = np.concatenate([bins[train], bins[test], np.full(inactive.size, -1)])
    return windows, is_train, activating, quantile


def _example_rows(
    latent: int,
    windows: np.ndarray,
    pos: np.ndarray,
    vals: np.ndarray,
    tokens: np.ndarray,
    token_strs: np.ndarray,
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
    strs = token_strs[toks]
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


def sample_examples(
    tokens: np.ndarray,
    token_strs: np.ndarray,
    shard: LatentShard,
    cfg: dict,
    latents: Sequence[int] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sample train/test example windows per latent (None = the latents cfg['latents'] selects)."""
    from tqdm.auto import tqdm

    n_seq, ctx_len = tokens.shape
    if (n_seq, ctx_len) != (shard.n_seq, shard.ctx_len):
        raise ValueError(
            f"tokens {tokens.shape} do not match the shard's (n_seq, ctx_len) {shard.n_seq, shard.ctx_len}"
        )
    s = _settings(cfg, ctx_len)
    L = s["example_ctx_len"]
    if latents is None:
        latents = select_latents(shard.latent_start, shard.latent_end, cfg)
    frames, status = [], []
    for latent in tqdm(latents, desc="sample", unit="latent"):
        pos, vals = shard.latent(int(latent))
        n_act = np.unique(pos // L).size
        if n_act == 0 or n_act < s["min_activating"]:
            status.append((int(latent), n_act, "skipped", _skip_reason(n_act, s["min_activating"], cfg)))
            continue
        # a generator per (seed, latent): a latent's examples do not depend on which others are sampled
        rng = np.random.default_rng([s["seed"], int(latent)])
        windows, is_train, activating, quantile = _sample_windows(pos, vals, n_seq * (ctx_len // L), s, rng)
        cols = _example_rows(int(latent), windows, pos, vals, tokens, token_strs, L)
        cols |= {"split": np.where(is_train, "train", "test"), "activating": activating, "quantile": quantile}
        frames.append(pd.DataFrame(cols)[EXAMPLE_COLUMNS])
        status.append((int(latent), n_act, "ok", ""))
    examples = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=EXAMPLE_COLUMNS)
    table = pd.DataFrame(status, columns=LATENT_COLUMNS)
    table = table.astype({"latent": np.int64, "n_activating_windows": np.int64})
    n_skipped = int((table.status != "ok").sum())
    log.info("sampled %d latents (%d skipped), %d examples", len(table), n_skipped, len(examples))
    return examples.astype({"quantile": np.int64, "max_act": np.float32}), table


def _skip_reason(n_act: int, need: int, cfg: dict) -> str:
    """Why a latent with n_act activating windows is set aside."""
    if n_act == 0:
        return "never fires"
    rule = "min_activating" if "min_activating" in cfg else "n_train + n_test"
    return f"only {n_act} activating windows; need {need} ({rule})"


def read_vocab(path: str | os.PathLike) -> np.ndarray:
    """Token id -> decoded text, as an object array indexed by id (ids absent from the table map to '')."""
    vocab = read_parquet(path)
    if not {"token_id", "text"} <= set(vocab.columns):
        raise ValueError(f"vocabulary table {path} needs columns token_id, text")
    out = np.full(int(vocab.token_id.max()) + 1 if len(vocab) else 0, "", dtype=object)
    out[vocab.token_id.to_numpy()] = vocab.text.to_numpy()
    return out


def run_sampling(
    tokens_path: str | os.PathLike,
    shard_path: str | os.PathLike,
    vocab_path: str | os.PathLike,
    cfg: dict,
    examples_out: str | os.PathLike,
    latents_out: str | os.PathLike,
) -> None:
    """Step: sample one shard's examples and write the examples and latents tables."""
    import h5py

    if not os.path.exists(tokens_path):
        raise FileNotFoundError(f"missing tokens file: {tokens_path}")
    with h5py.File(tokens_path, "r") as f:
        if "tokens" not in f:
            raise ValueError(f"{tokens_path} lacks dataset `tokens`")
        tokens = f["tokens"][:]
    token_strs = read_vocab(vocab_path)
    if tokens.size and tokens.max() >= token_strs.size:
        raise ValueError(f"token id {tokens.max()} in {tokens_path} is missing from vocabulary {vocab_path}")
    shard = read_shard(shard_path)
    examples, latents = sample_examples(tokens, token_strs, shard, cfg)
    with atomic_path(examples_out) as tmp:
        examples.to_parquet(tmp, index=False, schema=_examples_schema())
    write_parquet(latents, latents_out)
