"""Tests for the example sampler on synthetic shards whose activations are known exactly."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from interpflow.latents import LatentShard, encode_to_shards, read_shard
from interpflow.sampling import run_sampling, sample_examples, select_latents

N_SEQ, CTX, L, VOCAB = 100, 64, 8, 50
N_WINDOWS = N_SEQ * CTX // L
CFG = {"example_ctx_len": L, "n_train": 10, "n_test": 20, "n_nonactivating": 15, "n_quantiles": 5, "seed": 3}
START, END = 10, 15


def dense_latent(rng: np.random.Generator, windows: np.ndarray) -> np.ndarray:
    """Activations [n_tokens] nonzero on 1+ random tokens of each given window, never on BOS."""
    act = np.zeros((N_WINDOWS, L), np.float16)
    hit = (rng.random((N_WINDOWS, L)) < 0.3) & np.isin(np.arange(N_WINDOWS), windows)[:, None]
    hit[windows, rng.integers(1, L, windows.size)] = True  # column >= 1 so BOS never carries the only hit
    act[hit] = rng.uniform(0.1, 10, hit.sum()).astype(np.float16)
    act = act.ravel()
    act[::CTX] = 0  # BOS
    return act


@pytest.fixture(scope="module")
def world():
    """Tokens, vocabulary, dense truth per latent, and the shard built from it."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, VOCAB, (N_SEQ, CTX)).astype(np.int32)
    tokens[:, 0] = 0
    vocab = np.array([f"tok{i}" for i in range(VOCAB)], dtype=object)
    dense = {
        10: dense_latent(rng, np.flatnonzero(rng.random(N_WINDOWS) < 0.3)),
        11: dense_latent(rng, rng.choice(N_WINDOWS, 7, replace=False)),
        12: np.zeros(N_SEQ * CTX, np.float16),
        13: dense_latent(rng, np.flatnonzero(rng.random(N_WINDOWS) < 0.6)),
        14: dense_latent(rng, np.setdiff1d(np.arange(N_WINDOWS), [3, 100, 101, 500, 799])),
    }
    pos = [np.flatnonzero(dense[j]).astype(np.uint32) for j in range(START, END)]
    offsets = np.concatenate([[0], np.cumsum([p.size for p in pos])]).astype(np.int64)
    positions = np.concatenate(pos)
    shard = LatentShard(START, END, N_SEQ, CTX, offsets, positions, np.concatenate(
        [dense[j][p] for j, p in zip(range(START, END), pos, strict=True)]))  # fmt: skip
    return tokens, vocab, dense, shard


@pytest.fixture(scope="module")
def sampled(world):
    tokens, vocab, _, shard = world
    return sample_examples(tokens, vocab, shard, CFG)


def window_truth(dense: np.ndarray, seq: int, start: int) -> np.ndarray:
    t = seq * CTX + start
    return dense[t : t + L].astype(np.float32)


def true_bins(dense: np.ndarray, n_quantiles: int) -> dict[int, int]:
    """Window id -> equal-count quantile bin by max activation (ties by window id)."""
    wmax = dense.reshape(N_WINDOWS, L).astype(np.float32).max(axis=1)
    active = np.flatnonzero(wmax > 0)
    ranked = active[np.argsort(wmax[active], kind="stable")]
    return {int(w): r * n_quantiles // active.size for r, w in enumerate(ranked)}


def test_sizes_and_disjoint_splits(sampled):
    examples, _ = sampled
    for latent in (10, 13):
        ex = examples[examples.latent == latent]
        groups = {
            "train": ex[ex.split == "train"],
            "test_act": ex[(ex.split == "test") & ex.activating],
            "test_non": ex[(ex.split == "test") & ~ex.activating],
        }
        assert [len(g) for g in groups.values()] == [10, 20, 15]
        assert groups["train"].activating.all()
        keys = [set(zip(g.seq, g.start, strict=True)) for g in groups.values()]
        assert sum(len(k) for k in keys) == 45 and len(set.union(*keys)) == 45  # no window shared
        assert sorted(ex.example_id) == list(range(45))


def test_quantile_bins_are_correct_and_covered(world, sampled):
    _, _, dense, _ = world
    examples, _ = sampled
    for latent in (10, 13, 14):
        ex = examples[(examples.latent == latent) & examples.activating]
        bins = true_bins(dense[latent], CFG["n_quantiles"])
        assert ex["quantile"].tolist() == [
            bins[s * CTX // L + st // L] for s, st in zip(ex.seq, ex.start, strict=True)
        ]
        for split, per_bin in (("train", 2), ("test", 4)):
            counts = ex[ex.split == split]["quantile"].value_counts().sort_index()
            assert counts.index.tolist() == [0, 1, 2, 3, 4] and (counts == per_bin).all()


def test_rows_carry_true_tokens_and_activations(world, sampled):
    tokens, vocab, dense, _ = world
    examples, _ = sampled
    assert list(examples.columns) == [
        "latent", "example_id", "split", "activating", "seq", "start",
        "tokens", "token_strs", "acts", "max_act", "quantile",
    ]  # fmt: skip
    for row in examples.itertuples():
        truth = window_truth(dense[row.latent], row.seq, row.start)
        np.testing.assert_array_equal(row.acts, truth)
        assert row.acts.dtype == np.float32 and row.tokens.dtype == np.int32
        np.testing.assert_array_equal(row.tokens, tokens[row.seq, row.start : row.start + L])
        assert list(row.token_strs) == [f"tok{t}" for t in row.tokens]
        assert row.max_act == truth.max() and row.activating == (truth.max() > 0)
        assert row.start % L == 0 and 0 <= row.start < CTX
        if not row.activating:
            assert row.quantile == -1 and row.split == "test" and not truth.any()


def test_nonactivating_pool_smaller_than_requested(sampled):
    examples, _ = sampled
    non = examples[(examples.latent == 14) & ~examples.activating]
    assert sorted(non.seq * (CTX // L) + non.start // L) == [3, 100, 101, 500, 799]


def test_rare_and_dead_latents_are_skipped(sampled):
    examples, latents = sampled
    assert latents.latent.tolist() == [10, 11, 12, 13, 14]
    assert latents.status.tolist() == ["ok", "skipped", "skipped", "ok", "ok"]
    assert latents.n_activating_windows[1:3].tolist() == [7, 0]
    assert latents.reason[1] == "only 7 activating windows; need 30 (n_train + n_test)"
    assert latents.reason[2] == "never fires"
    assert (latents.reason[latents.status == "ok"] == "").all()
    assert sorted(set(examples.latent)) == [10, 13, 14]


def test_short_latent_with_low_threshold_keeps_splits_disjoint(world):
    tokens, vocab, _, shard = world
    examples, latents = sample_examples(tokens, vocab, shard, CFG | {"min_activating": 5, "n_train": 5}, [11])
    act = examples[examples.activating]
    assert latents.status.tolist() == ["ok"]
    assert (act.split == "train").sum() == 5 and (act.split == "test").sum() == 2
    assert len(set(zip(act.seq, act.start, strict=True))) == 7


def test_remainder_spread_over_bins(world):
    tokens, vocab, _, shard = world
    examples, _ = sample_examples(tokens, vocab, shard, CFG | {"n_quantiles": 3}, [13])
    for split, n in (("train", 10), ("test", 20)):
        counts = examples[(examples.split == split) & examples.activating]["quantile"].value_counts()
        assert sorted(counts.index) == [0, 1, 2] and counts.sum() == n
        assert set(counts) <= {n // 3, n // 3 + 1}


def test_deterministic_and_independent_of_other_latents(world, sampled):
    tokens, vocab, _, shard = world
    examples, _ = sampled
    again, _ = sample_examples(tokens, vocab, shard, CFG)
    pd.testing.assert_frame_equal(again, examples)
    alone, _ = sample_examples(tokens, vocab, shard, CFG, [13])
    pd.testing.assert_frame_equal(alone, examples[examples.latent == 13].reset_index(drop=True))
    other, _ = sample_examples(tokens, vocab, shard, CFG | {"seed": 4}, [13])
    assert not other[["seq", "start"]].equals(alone[["seq", "start"]])


def test_example_ctx_len_must_divide_ctx_len(world):
    tokens, vocab, _, shard = world
    with pytest.raises(ValueError, match="example_ctx_len"):
        sample_examples(tokens, vocab, shard, CFG | {"example_ctx_len": 10})


def test_select_latents():
    assert select_latents(5, 9, {}) == [5, 6, 7, 8]
    assert select_latents(5, 9, {"latents": {"n": None, "seed": 0}}) == [5, 6, 7, 8]
    assert select_latents(5, 9, {"latents": {"n": 40, "seed": 0}}) == [5, 6, 7, 8]
    picked = select_latents(100, 200, {"latents": {"n": 7, "seed": 1}})
    assert picked == sorted(set(picked)) and len(picked) == 7 and all(100 <= i < 200 for i in picked)
    assert picked == select_latents(100, 200, {"latents": {"n": 7, "seed": 1}})
    assert picked != select_latents(100, 200, {"latents": {"n": 7, "seed": 2}})
    with pytest.raises(ValueError, match="latents.n"):
        select_latents(0, 10, {"latents": {"n": -1}})


class DenseEncoder:
    """Stub encoder returning the planted dense activations of latents 10..14 (column 0 of x = row)."""

    def __init__(self, dense: dict[int, np.ndarray]):
        self.width = END
        self.table = torch.from_numpy(
            np.stack([dense[j] for j in range(START, END)], axis=1).astype(np.float32)
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vals = self.table[x[:, 0].long()]  # [B, 5]
        return vals, torch.arange(START, END).expand_as(vals)


def test_run_sampling_end_to_end(tmp_path, world, sampled):
    tokens, vocab, dense, _ = world
    with h5py.File(tmp_path / "tokens.h5", "w") as f:
        f.create_dataset("tokens", data=tokens)
    with h5py.File(tmp_path / "acts.h5", "w") as f:
        acts = np.zeros((N_SEQ * CTX, 2), np.float32)
        acts[:, 0] = np.arange(N_SEQ * CTX)
        f.create_dataset("activations", data=acts).attrs.update(n_seq=N_SEQ, ctx_len=CTX)
    pd.DataFrame({"token_id": np.arange(VOCAB), "text": vocab}).to_parquet(tmp_path / "vocab.parquet")
    shard_path, stats_path = tmp_path / "shard-1.h5", tmp_path / "stats-1.parquet"
    encode_to_shards(
        tmp_path / "acts.h5", DenseEncoder(dense), END, 10, [str(tmp_path / "shard-0.h5"), str(shard_path)],
        [str(tmp_path / "stats-0.parquet"), str(stats_path)], batch_size=1000,
    )  # fmt: skip
    assert read_shard(shard_path).latent_start == START
    cfg = CFG | {"latents": {"n": None, "seed": 0}}
    run_sampling(tmp_path / "tokens.h5", shard_path, tmp_path / "vocab.parquet", cfg, tmp_path / "ex.parquet",
                 tmp_path / "lat.parquet")  # fmt: skip
    schema = pq.read_schema(tmp_path / "ex.parquet")
    assert schema.field("tokens").type == pa.list_(pa.int32())
    assert schema.field("acts").type == pa.list_(pa.float32())
    assert schema.field("token_strs").type == pa.list_(pa.string())
    assert schema.field("activating").type == pa.bool_() and schema.field("quantile").type == pa.int64()
    got = pd.read_parquet(tmp_path / "ex.parquet")
    want, want_latents = sampled
    assert len(got) == len(want)
    pd.testing.assert_frame_equal(got.drop(columns=["tokens", "token_strs", "acts"]),
                                  want.drop(columns=["tokens", "token_strs", "acts"]))  # fmt: skip
    for col in ("tokens", "token_strs", "acts"):
        assert all(np.array_equal(a, b) for a, b in zip(got[col], want[col], strict=True))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "lat.parquet"), want_latents)
