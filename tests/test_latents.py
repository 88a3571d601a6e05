"""Tests for the sparse latent store: planted patterns round-trip exactly, stats match numpy."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import TableEncoder

from interpflow.latents import LatentShard, encode_to_shards, read_latent, read_shard
from interpflow.store import read_parquet

N_SEQ, CTX, D_IN = 5, 8, 3


def planted_tables(n_rows: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Latent j fires on rows r % 7 == j % 7 with value (j + 1) / 2 + (r % 3) / 4; unused slots are 0."""
    k = -(-width // 7)
    idx, vals = np.zeros((n_rows, k), np.int64), np.zeros((n_rows, k), np.float32)
    for r in range(n_rows):
        for slot, j in enumerate(range(r % 7, width, 7)):
            idx[r, slot], vals[r, slot] = j, (j + 1) / 2 + (r % 3) / 4
    return idx, vals


def write_activations(path, n_seq: int = N_SEQ, ctx_len: int = CTX) -> int:
    n_rows = n_seq * ctx_len
    acts = np.zeros((n_rows, D_IN), np.float32)
    acts[:, 0] = np.arange(n_rows)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("activations", data=acts)
        ds.attrs.update(n_seq=n_seq, ctx_len=ctx_len)
    return n_rows


def encode(tmp_path, encoder, width, shard_size, batch_size=4096, tag="a"):
    n = -(-width // shard_size)
    shards = [str(tmp_path / tag / f"shard-{i}.h5") for i in range(n)]
    stats = [str(tmp_path / tag / f"stats-{i}.parquet") for i in range(n)]
    summary = encode_to_shards(
        tmp_path / "acts.h5", encoder, width, shard_size, shards, stats, batch_size=batch_size
    )
    return shards, stats, summary


@pytest.fixture
def planted(tmp_path):
    n_rows = write_activations(tmp_path / "acts.h5")
    width = 10
    idx, vals = planted_tables(n_rows, width)
    return tmp_path, TableEncoder(idx, vals, width), width, n_rows


def test_planted_pattern_round_trips_across_two_shards(planted):
    tmp_path, enc, width, n_rows = planted
    shards, stats, summary = encode(tmp_path, enc, width, shard_size=6, batch_size=3)
    first, second = read_shard(shards[0]), read_shard(shards[1])
    assert (first.latent_start, first.latent_end, second.latent_start, second.latent_end) == (0, 6, 6, 10)
    assert (first.n_seq, first.ctx_len) == (N_SEQ, CTX)
    for j in range(width):
        rows = np.array([r for r in range(n_rows) if r % 7 == j % 7 and r % CTX != 0])
        pos, val = (first if j < 6 else second).latent(j)
        assert pos.dtype == np.uint32 and val.dtype == np.float16
        np.testing.assert_array_equal(pos, rows)
        np.testing.assert_array_equal(val, ((j + 1) / 2 + (rows % 3) / 4).astype(np.float16))
        pos_disk, val_disk = read_latent(shards[j // 6], j)
        np.testing.assert_array_equal(pos_disk, pos)
        np.testing.assert_array_equal(val_disk, val)
    n_tokens = N_SEQ * (CTX - 1)
    assert summary["tokens"] == n_tokens
    assert summary["nonzeros"] == sum(len(read_latent(shards[j // 6], j)[0]) for j in range(width))
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # scratch file removed


def test_bos_never_stored_and_offsets_contiguous(planted):
    tmp_path, enc, width, _ = planted
    shards, _, _ = encode(tmp_path, enc, width, shard_size=6, batch_size=7)
    for path in shards:
        s = read_shard(path)
        assert s.offsets.dtype == np.int64 and s.offsets.shape == (s.latent_end - s.latent_start + 1,)
        assert s.offsets[0] == 0 and s.offsets[-1] == s.positions.size == s.values.size
        assert np.all(np.diff(s.offsets) >= 0)
        assert np.all(s.positions % CTX != 0)
        assert np.all(s.values > 0)
        with h5py.File(path) as f:
            assert f.attrs["n_tokens"] == N_SEQ * (CTX - 1)


def test_many_batches_match_single_batch(planted):
    tmp_path, enc, width, _ = planted
    many, _, _ = encode(tmp_path, enc, width, shard_size=4, batch_size=3, tag="many")
    one, _, _ = encode(tmp_path, enc, width, shard_size=4, batch_size=10_000, tag="one")
    for a, b in zip(many, one, strict=True):
        sa, sb = read_shard(a), read_shard(b)
        for name in ("offsets", "positions", "values"):
            np.testing.assert_array_equal(getattr(sa, name), getattr(sb, name))


def test_stats_hand_checked(tmp_path):
    # latent 0 fires 1, 2, 3, 4 on rows 1-4; latent 1 on row 5 only; latent 2 never; BOS row 0 would fire 100
    n_rows = write_activations(tmp_path / "acts.h5", n_seq=1, ctx_len=8)
    idx, vals = np.zeros((n_rows, 1), np.int64), np.zeros((n_rows, 1), np.float32)
    vals[:5, 0] = [100, 1, 2, 3, 4]
    idx[5, 0], vals[5, 0] = 1, 0.5
    _, stats, _ = encode(tmp_path, TableEncoder(idx, vals, 3), 3, shard_size=3)
    df = read_parquet(stats[0])
    assert list(df.columns) == ["latent", "count", "frequency", "max", "mean", "q50", "q90", "q99"]
    assert df.latent.tolist() == [0, 1, 2] and df["count"].tolist() == [4, 1, 0]
    np.testing.assert_allclose(df.frequency, [4 / 7, 1 / 7, 0])
    np.testing.assert_allclose(df.loc[:1, ["max", "mean", "q50", "q90", "q99"]].to_numpy(),
                               [[4, 2.5, 2.5, 3.7, 3.97], [0.5, 0.5, 0.5, 0.5, 0.5]])  # fmt: skip
    assert df.loc[2, ["max", "mean", "q50", "q90", "q99"]].isna().all()


def test_stats_match_numpy_oracle(tmp_path):
    rng = np.random.default_rng(0)
    n_rows, width, k = write_activations(tmp_path / "acts.h5", n_seq=20, ctx_len=16), 12, 4
    idx = np.stack([rng.choice(width, size=k, replace=False) for _ in range(n_rows)])
    vals = rng.exponential(size=(n_rows, k)).astype(np.float32) * (rng.random((n_rows, k)) < 0.7)
    shards, stats, _ = encode(tmp_path, TableEncoder(idx, vals, width), width, shard_size=5, batch_size=17)
    df = pd.concat([read_parquet(p) for p in stats], ignore_index=True)
    for j, row in zip(range(width), df.itertuples(), strict=True):
        _, v = read_latent(shards[j // 5], j)
        v64 = v.astype(np.float64)
        keep = (idx == j) & (vals > 0) & (np.arange(n_rows)[:, None] % 16 != 0)
        assert row.latent == j and row.count == v.size == keep.sum()
        np.testing.assert_array_equal(np.sort(v), np.sort(vals[keep].astype(np.float16)))
        np.testing.assert_allclose([row.max, row.mean], [v64.max(), v64.mean()])
        np.testing.assert_allclose([row.q50, row.q90, row.q99], np.quantile(v64, [0.5, 0.9, 0.99]))


def test_values_clipped_to_float16_max(tmp_path):
    n_rows = write_activations(tmp_path / "acts.h5", n_seq=1, ctx_len=4)
    idx, vals = np.zeros((n_rows, 1), np.int64), np.full((n_rows, 1), 1e6, np.float32)
    shards, _, _ = encode(tmp_path, TableEncoder(idx, vals, 1), 1, shard_size=1)
    _, v = read_latent(shards[0], 0)
    np.testing.assert_array_equal(v, np.full(3, np.finfo(np.float16).max, np.float16))


def test_mismatched_shard_count_raises(planted):
    tmp_path, enc, width, _ = planted
    with pytest.raises(ValueError, match="makes 2 shards"):
        encode_to_shards(tmp_path / "acts.h5", enc, width, 6, ["a.h5"], ["a.parquet"])
    with pytest.raises(ValueError, match="stats paths"):
        encode_to_shards(tmp_path / "acts.h5", enc, width, 6, ["a.h5", "b.h5"], ["a.parquet"])


def test_scratch_file_removed_on_error(planted):
    tmp_path, enc, width, _ = planted

    class Failing(TableEncoder):
        calls = 0

        def encode(self, x):
            Failing.calls += 1
            if Failing.calls == 3:
                raise RuntimeError("boom")
            return super().encode(x)

    with pytest.raises(RuntimeError, match="boom"):
        encode(tmp_path, Failing(enc.idx.numpy(), enc.vals.numpy(), width), width, 6, batch_size=4)
    assert list((tmp_path / "a").iterdir()) == []


def test_out_of_range_indices_raise(planted):
    tmp_path, enc, width, _ = planted
    with pytest.raises(ValueError, match="outside"):
        encode(tmp_path, TableEncoder(enc.idx.numpy() + 5, enc.vals.numpy(), width), width, 6)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        read_shard(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="junk.h5"):
        read_shard(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "partial.h5", "w") as f:
        f.create_dataset("offsets", data=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="partial.h5 lacks positions"):
        read_latent(tmp_path / "partial.h5", 0)


def test_latent_outside_shard_raises():
    shard = LatentShard(4, 6, 1, 4, np.array([0, 1, 1]), np.array([1], np.uint32), np.ones(1, np.float16))
    assert shard.latent(4)[0].tolist() == [1] and shard.latent(5)[0].size == 0
    with pytest.raises(ValueError, match=r"latent 6 is not in this shard's range \[4, 6\)"):
        shard.latent(6)


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_phase_two_in_chunks_equals_one_sort(tmp_path, monkeypatch, chunk):
    """Shards and stats sorted a few triples at a time (latents.py's _SORT_CHUNK) equal those of one sort,
    and positions still ascend within every latent."""
    import interpflow.latents as latents

    rng = np.random.default_rng(1)
    n_rows, width, k = write_activations(tmp_path / "acts.h5", n_seq=20, ctx_len=16), 12, 4
    idx = np.stack([rng.choice(width, size=k, replace=False) for _ in range(n_rows)])
    vals = rng.exponential(size=(n_rows, k)).astype(np.float32) * (rng.random((n_rows, k)) < 0.7)
    enc = TableEncoder(idx, vals, width)
    whole, whole_stats, _ = encode(tmp_path, enc, width, shard_size=5, batch_size=17, tag="whole")
    monkeypatch.setattr(latents, "_SORT_CHUNK", chunk)
    parts, part_stats, _ = encode(tmp_path, enc, width, shard_size=5, batch_size=17, tag="parts")
    for a, b, sa, sb in zip(whole, parts, whole_stats, part_stats, strict=True):
        s = read_shard(b)
        for name in ("offsets", "positions", "values"):
            np.testing.assert_array_equal(getattr(read_shard(a), name), getattr(s, name))
        for j in range(s.latent_start, s.latent_end):
            assert np.all(np.diff(s.latent(j)[0].astype(np.int64)) > 0)
        pd.testing.assert_frame_equal(read_parquet(sa), read_parquet(sb))
