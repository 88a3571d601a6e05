"""Tests for the example sampler on synthetic shards whose activations are known exactly."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import REPO

from interpflow.config import SCHEMA
from interpflow.latents import LatentShard, encode_to_shards, read_shard
from interpflow.sampling.examples import _token_strs, _window_acts, sample_examples
from interpflow.sampling.hard import window_incidence
from interpflow.sampling.scored import NEGATIVES, select_test_examples
from interpflow.sampling.selection import partner_latents, select_latents, shard_files
from interpflow.sampling.step import run_sampling
from interpflow.sampling.vocab import Vocab, read_vocab, span_strings, window_strings
from interpflow.sampling.windows import _stratified

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


def test_train_sampling_top_random_and_quantiles(world, sampled):
    """Table A5's ablation: the explainer's windows are the strongest (top), any (random) or across
    quantiles; the test windows stay across quantiles and never reuse a train window."""
    tokens, vocab, dense, shard = world
    strongest = sorted(true_bins(dense[13], 10), key=lambda w: -dense[13].reshape(N_WINDOWS, L)[w].max())
    by_mode = {"quantiles": sampled[0]}
    for mode in ("top", "random"):
        by_mode[mode] = sample_examples(tokens, vocab, shard, dict(CFG, train_sampling=mode))[0]
    windows = {}
    for mode, examples in by_mode.items():
        ex = examples[examples.latent == 13]
        train, test = ex[ex.split == "train"], ex[(ex.split == "test") & ex.activating]
        windows[mode] = {s * CTX // L + st // L for s, st in zip(train.seq, train.start, strict=True)}
        tested = {s * CTX // L + st // L for s, st in zip(test.seq, test.start, strict=True)}
        assert len(windows[mode]) == 10 and not windows[mode] & tested
        assert (test["quantile"].value_counts() == 4).all()  # test still 4 per quantile bin
    assert windows["top"] == set(strongest[:10])
    assert windows["random"] != windows["quantiles"] and windows["random"] != windows["top"]
    with pytest.raises(ValueError, match="train_sampling: 'best'"):
        sample_examples(tokens, vocab, shard, dict(CFG, train_sampling="best"))


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
        "tokens", "token_strs", "acts", "max_act", "quantile", "negative",
    ]  # fmt: skip
    assert (examples.negative == np.where(examples.activating, "", "random")).all()
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


def test_rare_and_dead_latents_are_skipped(world, sampled):
    _, _, dense, _ = world
    examples, latents = sampled
    n_act = [np.count_nonzero(dense[j]) for j in range(START, END)]
    n_win = [np.count_nonzero(dense[j].reshape(N_WINDOWS, L).any(axis=1)) for j in range(START, END)]
    assert latents.latent.tolist() == [10, 11, 12, 13, 14]
    assert latents.n_activations.tolist() == n_act and latents.n_activating_windows.tolist() == n_win
    assert n_win[1] == 7 and 7 <= n_act[1] < 200 and min(n_act[0], n_act[3], n_act[4]) >= 200
    assert latents.status.tolist() == ["ok", "skipped", "skipped", "ok", "ok"]  # default: 200 activations
    assert latents.reason[1] == f"only {n_act[1]} activations; need 200 (min_activations)"
    assert latents.reason[2] == "never fires"
    assert (latents.reason[latents.status == "ok"] == "").all()
    assert sorted(set(examples.latent)) == [10, 13, 14]


def test_short_latent_with_low_threshold_keeps_splits_disjoint(world, caplog):
    tokens, vocab, _, shard = world
    cfg = CFG | {"min_activations": 5, "n_train": 5}
    with caplog.at_level("WARNING", "interpflow.sampling.examples"):
        examples, latents = sample_examples(tokens, vocab, shard, cfg, [11])
    assert (
        "n_train + n_test = 25 activating windows, but the most any of these 1 latents has is 7"
        in caplog.text
    )
    act = examples[examples.activating]
    assert latents.status.tolist() == ["ok"]
    assert (act.split == "train").sum() == 5 and (act.split == "test").sum() == 2
    assert len(set(zip(act.seq, act.start, strict=True))) == 7


def test_min_activations_counts_activations_not_windows(world):
    tokens, vocab, _, _ = world
    dense = np.zeros((2, N_SEQ * CTX), np.float16)
    dense[0, 40:64] = 1.0  # every token of windows 5-7: 24 activations in 3 windows
    dense[1, np.arange(10, 20) * L + 3] = 2.0  # one token in each of windows 10-19: 10 activations
    pos = [np.flatnonzero(d).astype(np.uint32) for d in dense]
    shard = LatentShard(0, 2, N_SEQ, CTX, np.array([0, 24, 34]), np.concatenate(pos),
                        np.concatenate([d[p] for d, p in zip(dense, pos, strict=True)]))  # fmt: skip
    examples, latents = sample_examples(tokens, vocab, shard, CFG | {"min_activations": 20})
    assert latents.n_activations.tolist() == [24, 10] and latents.n_activating_windows.tolist() == [3, 10]
    assert latents.status.tolist() == ["ok", "skipped"]
    assert latents.reason.tolist() == ["", "only 10 activations; need 20 (min_activations)"]
    assert set(examples.latent) == {0} and examples.activating.sum() == 3  # all 3 windows, none shared
    _, latents = sample_examples(tokens, vocab, shard, CFG | {"min_activations": 25})
    assert latents.status.tolist() == ["skipped", "skipped"]


def test_old_min_activating_key_is_named(world):
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    tokens, vocab, _, shard = world
    with pytest.raises(ValueError, match="min_activating .*replaced by min_activations"):
        sample_examples(tokens, vocab, shard, CFG | {"min_activating": 5})
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["samplers"]["default"]["min_activating"] = 28
    with pytest.raises(WorkflowError, match="min_activating"):
        validate(config, str(SCHEMA))
    del config["samplers"]["default"]["min_activating"]
    validate(config, str(SCHEMA))
    assert config["samplers"]["default"]["min_activations"] == 40  # the default run states its own value


def test_span_strings_hand_computed():
    pieces = [b"caf", b"\xc3", b"\xa9", b" \xf0\x9f", b"\x99", b"\x82!"]  # "café 🙂!", é and 🙂 split
    assert span_strings(pieces) == ["caf", "", "é", " ", "", "\U0001f642!"]
    assert span_strings([b"\xa9x", b"y\xc3"]) == ["\ufffdx", "y\ufffd"]  # characters cut by the window edge
    assert span_strings([b"\x80", b"\x94", b"1"]) == ["\ufffd", "\ufffd", "1"]  # each stray byte its own
    assert span_strings([b"", b"ab", b""]) == ["", "ab", ""] and span_strings([b""]) == [""]


def test_span_strings_join_to_the_decoded_span():
    rng = np.random.default_rng(0)
    text = "naïve café, 日本語 and 🙂🎉 — done".encode()
    for _ in range(300):
        cuts = np.sort(rng.choice(np.arange(1, len(text)), rng.integers(1, 12), replace=False))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        got = span_strings(pieces)
        assert "".join(got) == text.decode() and not any("\ufffd" in g for g in got)
        # each character goes to the token holding its last byte
        ends = np.cumsum([len(p) for p in pieces])
        last_byte = np.cumsum([len(c.encode()) for c in text.decode()]) - 1
        owner = np.searchsorted(ends, last_byte, side="right")
        assert got == ["".join(c for c, o in zip(text.decode(), owner, strict=True) if o == k)
                       for k in range(len(pieces))]  # fmt: skip
    for _ in range(300):  # arbitrary bytes: still exactly the span decoded with replacement characters
        pieces = [rng.bytes(int(n)) for n in rng.integers(0, 5, rng.integers(1, 9))]
        assert "".join(span_strings(pieces)) == b"".join(pieces).decode("utf-8", "replace")


def test_valid_and_invalid_spans_in_one_call():
    """Spans that are valid UTF-8 keep their bytes as texts; only the others decode with U+FFFD."""
    got = span_strings([b"a\xc3", b"\xa9", b"\xa9x", b"y", b"\xe2\x82", b"\xac", b"\xe2", b"\x82"], 2)
    # spans "aé" and "€" are whole; the second opens on a stray byte, the last holds 2 of €'s 3 bytes
    assert got == ["a", "\u00e9", "\ufffdx", "y", "", "\u20ac", "", "\ufffd"]


def test_spans_decoded_in_one_call_equal_each_span_decoded_alone():
    """span_strings over many equal-length spans (the sampler's one call per latent) never lets a span's
    characters reach into its neighbour: a span opening with continuation bytes, or ending in empty pieces
    before one that does, decodes as it does alone."""
    rng = np.random.default_rng(1)
    alphabet = [b"", b"a", b"\xc3", b"\xa9", b"\xf0\x9f", b"\x99\x82", b"\x80", b" \xe2", b"\x82\xac"]
    for _ in range(200):
        length = int(rng.integers(1, 6))
        picks = rng.integers(0, len(alphabet), (int(rng.integers(1, 6)), length))
        spans = [[alphabet[i] for i in row] for row in picks]
        alone = [text for span in spans for text in span_strings(span)]
        assert span_strings([p for span in spans for p in span], length) == alone


def _byte_level_tokenizer():
    """A byte-level BPE (SmolLM2's kind) trained on ASCII only, so accented letters and emoji stay bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(["the cafe is naive and done"] * 20,
                            trainers.BpeTrainer(vocab_size=300, initial_alphabet=alphabet))  # fmt: skip
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def _byte_fallback_tokenizer():
    """A SentencePiece-style BPE with byte fallback (Gemma's kind): letters, ▁, the rest as <0xNN> bytes."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    pieces = ["<unk>", *(f"<0x{b:02X}>" for b in range(256)), *"abcdefghijklmnopqrstuvwxyz,▁"]
    vocab = {p: i for i, p in enumerate(pieces)}
    tok = Tokenizer(models.BPE(vocab, [], unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    return PreTrainedTokenizerFast(tokenizer_object=tok)


@pytest.mark.parametrize("make", [_byte_level_tokenizer, _byte_fallback_tokenizer])
def test_windows_decode_as_spans_without_replacement_characters(tmp_path, make):
    from interpflow.models import vocab_table

    tokenizer = make()
    text = "the café is naïve 🙂 and done"
    ids = tokenizer(text)["input_ids"]
    table = vocab_table(tokenizer)
    alone = table.text.to_numpy()[ids]
    assert any("\ufffd" in t for t in alone)  # per-token decoding splits é, ï and 🙂
    table.to_parquet(tmp_path / "vocab.parquet")
    vocab = read_vocab(tmp_path / "vocab.parquet")
    plain = [tokenizer.convert_tokens_to_ids("a")] * len(ids)  # a window of whole tokens: the lookup path
    strs = window_strings(np.array([ids, plain]), vocab)
    assert "".join(strs[0]) == tokenizer.decode(ids) == text and not any("\ufffd" in t for t in strs[0])
    assert strs[0][0] == alone[0] == tokenizer.decode(ids[:1])  # a whole-character token keeps its text
    assert strs[1].tolist() == ["a"] * len(ids)


def test_window_strings_lookup_for_whole_tokens_and_old_vocab(tmp_path):
    vocab = Vocab.from_texts(np.array(["a", "\ufffd", "b"], dtype=object))
    # a token that is itself U+FFFD is whole: it keeps its text
    assert window_strings(np.array([[0, 1, 2]]), vocab).tolist() == [["a", "\ufffd", "b"]]
    pd.DataFrame({"token_id": [0, 1], "text": ["x", "y"]}).to_parquet(tmp_path / "old.parquet")
    old = read_vocab(tmp_path / "old.parquet")  # no `bytes` column: the texts as they are
    assert old.text.tolist() == ["x", "y"] and old.whole.all()


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


def test_train_nonactivating_windows_are_disjoint(world, sampled):
    tokens, vocab, dense, shard = world
    examples, _ = sample_examples(tokens, vocab, shard, CFG | {"n_train_nonactivating": 12})
    for latent in (10, 13, 14):
        ex = examples[examples.latent == latent]
        neg = ex[(ex.split == "train") & ~ex.activating]
        # latent 14 is silent in only 5 windows, all taken by the test set
        assert len(neg) == (0 if latent == 14 else 12)
        assert (neg.negative == "random").all() and (neg["quantile"] == -1).all()
        assert all(
            not window_truth(dense[latent], s, st).any() for s, st in zip(neg.seq, neg.start, strict=True)
        )
        windows = list(zip(ex.seq, ex.start, strict=True))
        assert len(set(windows)) == len(windows)  # disjoint from test negatives and all activating windows
        # the other windows are the ones drawn without the option
        before = sampled[0][sampled[0].latent == latent]
        rest = ex[~((ex.split == "train") & ~ex.activating)]
        assert (
            rest[["seq", "start", "split"]].values.tolist()
            == before[["seq", "start", "split"]].values.tolist()
        )


# planted world for hard negatives: 20 sequences of 32 tokens, 8-token windows (80), latents 0-5 in 2 shards
H_SEQ, H_CTX, H_L = 20, 32, 8
H_WIN = H_SEQ * H_CTX // H_L
A_WINDOWS = np.arange(0, 60, 2)  # latent 1 ("A") fires in 30 windows
B_ONLY = np.array([1, 3, 5, 7, 9, 11, 13, 15, 17, 19])  # latent 4 ("B") fires in A's windows and these
LEX_ONLY = np.array([61, 63, 65, 67, 69, 71, 73, 75, 77, 79])  # token 7 occurs here, latent 1 silent
H_CFG = {"example_ctx_len": H_L, "n_train": 5, "n_test": 5, "n_nonactivating": 0, "n_quantiles": 2, "seed": 0,
         "min_activations": 10}  # fmt: skip


def _on(windows: np.ndarray, column: int = 3) -> np.ndarray:
    """Dense activations [n_tokens] of 1.0 at one column of each given window."""
    act = np.zeros((H_WIN, H_L), np.float16)
    act[windows, column] = 1.0
    return act.ravel()


def _write_shard(path, dense: list[np.ndarray], start: int) -> None:
    pos = [np.flatnonzero(d).astype(np.uint32) for d in dense]
    with h5py.File(path, "w") as f:
        f["offsets"] = np.concatenate([[0], np.cumsum([p.size for p in pos])]).astype(np.int64)
        f["positions"] = np.concatenate(pos)
        f["values"] = np.concatenate([d[p] for d, p in zip(dense, pos, strict=True)]).astype(np.float16)
        f.attrs.update(
            latent_start=start, latent_end=start + len(dense), n_seq=H_SEQ, ctx_len=H_CTX, n_tokens=0
        )


@pytest.fixture(scope="module")
def hard_world(tmp_path_factory):
    """Token 7 at column 3 of A's windows and of LEX_ONLY, token 8 at columns 5-6; latent 0 fires widely."""
    rng = np.random.default_rng(1)
    tokens = rng.integers(8, 20, (H_WIN, H_L)).astype(np.int32)
    tokens[np.concatenate([A_WINDOWS, LEX_ONLY]), 3] = 7
    tokens[A_WINDOWS, 5:7] = 8  # A's most frequent active token, but with little activation
    tokens = tokens.reshape(H_SEQ, H_CTX)
    dense_a = _on(A_WINDOWS) * np.float16(5) + (_on(A_WINDOWS, 5) + _on(A_WINDOWS, 6)) * np.float16(0.5)
    dense = [
        _on(np.setdiff1d(np.arange(H_WIN), [1, 3, 61])),  # 0: dense, in all 30 of A's windows like B
        dense_a,
        _on(rng.choice(H_WIN, 8, replace=False)),
        _on(np.array([0, 2, 4])),
        _on(np.concatenate([A_WINDOWS, B_ONLY])),  # 4: "B", Jaccard 30 / 40 with A
        np.zeros(H_WIN * H_L, np.float16),
    ]
    folder = tmp_path_factory.mktemp("latents")
    _write_shard(folder / "shard-0.h5", dense[:3], 0)
    _write_shard(folder / "shard-1.h5", dense[3:], 3)
    return tokens, np.array([f"t{i}" for i in range(20)], dtype=object), dense, folder


def _hard(examples: pd.DataFrame, latent: int = 1) -> np.ndarray:
    ex = examples[(examples.latent == latent) & (examples.negative == "hard")]
    assert (ex.split == "test").all() and (~ex.activating).all() and (ex["quantile"] == -1).all()
    assert all(not np.any(a) for a in ex.acts)  # the latent is zero everywhere in them
    return np.sort(ex.seq.to_numpy() * (H_CTX // H_L) + ex.start.to_numpy() // H_L)


def test_window_incidence_matches_dense(hard_world):
    _, _, dense, folder = hard_world
    inc = window_incidence(shard_files(folder), H_L)
    truth = np.stack([d.reshape(H_WIN, H_L).any(axis=1) for d in dense], axis=1)
    assert inc.shape == (H_WIN, 6) and inc.dtype == bool
    np.testing.assert_array_equal(inc.toarray(), truth)
    with pytest.raises(ValueError, match="expected 0"):
        window_incidence([folder / "shard-1.h5"], H_L)


def test_cooccurrence_hard_negatives_planted(hard_world):
    tokens, vocab, _, folder = hard_world
    shard, inc = read_shard(folder / "shard-0.h5"), window_incidence(shard_files(folder), H_L)
    # top_k=1: B (Jaccard 30 / 40) beats the dense latent 0 (30 / 77); raw counts tie and would pick 0
    cfg = H_CFG | {"hard_negatives": {"method": "cooccurrence", "n": 10, "top_k": 1}}
    examples, _ = sample_examples(tokens, vocab, shard, cfg, [1], incidence=inc)
    assert _hard(examples).tolist() == B_ONLY.tolist()
    # top_k=2 adds latent 0: windows where only it fires rank below B's, so they fill the rest
    cfg = H_CFG | {"hard_negatives": {"method": "cooccurrence", "n": 14, "top_k": 2}}
    hard = _hard(sample_examples(tokens, vocab, shard, cfg, [1], incidence=inc)[0])
    assert set(B_ONLY) < set(hard) and len(hard) == 14 and not set(hard) & set(A_WINDOWS) and 61 not in hard
    with pytest.raises(ValueError, match="incidence"):
        sample_examples(tokens, vocab, shard, cfg, [1])


def test_lexical_hard_negatives_planted(hard_world):
    tokens, vocab, _, folder = hard_world
    cfg = H_CFG | {"n_nonactivating": 10, "hard_negatives": {"method": "lexical", "top_k": 1}}
    examples, _ = sample_examples(tokens, vocab, read_shard(folder / "shard-0.h5"), cfg, [1])
    ex = examples[examples.latent == 1]
    assert _hard(examples).tolist() == [
        w for w in LEX_ONLY if w not in set(_windows(ex[ex.negative == "random"]))
    ]
    assert len(ex[ex.negative == "random"]) == 10  # hard.n defaults to n_nonactivating: up to 10 hard ones
    assert (ex.negative[ex.activating] == "").all() and set(ex.negative) == {"", "random", "hard"}
    windows = _windows(ex)
    assert len(set(windows)) == len(windows)


def _windows(ex: pd.DataFrame) -> list[int]:
    return (ex.seq * (H_CTX // H_L) + ex.start // H_L).tolist()


def test_hard_negatives_settings(world):
    tokens, vocab, _, shard = world
    with pytest.raises(ValueError, match="hard_negatives.method"):
        sample_examples(tokens, vocab, shard, CFG | {"hard_negatives": {"method": "semantic"}})
    with pytest.raises(ValueError, match="hard_negatives.top_k"):
        sample_examples(tokens, vocab, shard, CFG | {"hard_negatives": {"method": "lexical", "top_k": 0}})


def test_run_sampling_cooccurrence(tmp_path, hard_world):
    tokens, vocab, _, folder = hard_world
    with h5py.File(tmp_path / "tokens.h5", "w") as f:
        f.create_dataset("tokens", data=tokens)
    pd.DataFrame({"token_id": np.arange(20), "text": vocab}).to_parquet(tmp_path / "vocab.parquet")
    cfg = H_CFG | {"hard_negatives": {"method": "cooccurrence", "n": 10, "top_k": 1}, "latents": {"n": None}}
    args = [
        tmp_path / "tokens.h5",
        folder / "shard-0.h5",
        tmp_path / "vocab.parquet",
        cfg,
        tmp_path / "ex.parquet",
        tmp_path / "lat.parquet",
    ]
    with pytest.raises(ValueError, match="latents_dir"):
        run_sampling(*args)
    run_sampling(*args, latents_dir=folder)
    assert pq.read_schema(tmp_path / "ex.parquet").field("negative").type == pa.string()
    got = pd.read_parquet(tmp_path / "ex.parquet")
    assert _hard(got).tolist() == B_ONLY.tolist()


def _test_frame() -> pd.DataFrame:
    """Latent 3: test ids 0-5 activating, 6-9 random and 10-12 hard negatives, 13 a train row; latent 4."""
    negative = [""] * 6 + ["random"] * 4 + ["hard"] * 3 + ["random", ""]
    return pd.DataFrame(
        {
            "latent": [3] * 14 + [4],
            "example_id": [*range(14), 0],
            "split": ["test"] * 13 + ["train", "test"],
            "activating": [n == "" for n in negative],
            "negative": negative,
        }
    )


def test_select_test_examples():
    ex = _test_frame().sample(frac=1, random_state=0)  # row order must not matter
    ids = {w: select_test_examples(ex, 3, {"negatives": w}).example_id.tolist() for w in NEGATIVES}
    assert ids == {"random": list(range(10)), "hard": [*range(6), 10, 11, 12], "both": list(range(13))}
    assert select_test_examples(ex, 3, {}).example_id.tolist() == list(range(10))
    cfg = {"negatives": "both", "max_activating": 2, "max_nonactivating": 3, "seed": 5}
    got = select_test_examples(ex, 3, cfg)
    rng = np.random.default_rng([5, 3])  # the documented seeding: per (seed, latent)
    want = [*np.sort(rng.choice(6, 2, replace=False)), *(6 + np.sort(rng.choice(7, 3, replace=False)))]
    assert got.example_id.tolist() == want
    pd.testing.assert_frame_equal(got, select_test_examples(ex, 3, cfg))
    with pytest.raises(ValueError, match="negatives"):
        select_test_examples(ex, 3, {"negatives": "easy"})


def test_select_test_examples_on_old_files():
    ex = _test_frame()
    old = ex.drop(columns="negative")  # examples written before the column existed: all negatives random
    assert select_test_examples(old[old.example_id != 10], 3, {}).example_id.tolist() == [*range(10), 11, 12]
    with pytest.raises(ValueError, match="`negative` column"):
        select_test_examples(old, 3, {"negatives": "hard"})


def test_partner_latents_follow_the_matches_of_the_sampled_latents_below():
    cfg = {"latents": {"n": 2, "seed": 4}}
    width, size = 8, 4
    below = select_latents(0, 4, cfg) + select_latents(4, 8, cfg)
    matches = pd.DataFrame({"latent_a": np.arange(8), "latent_b": (np.arange(8) * 3) % 8})
    got = partner_latents(matches, width, size, cfg)
    assert got.tolist() == sorted({(a * 3) % 8 for a in below})
    # a latent below without a match (a narrower layer above) contributes nothing
    assert partner_latents(matches[matches.latent_a != below[0]], width, size, cfg).tolist() == sorted(
        {(a * 3) % 8 for a in below[1:]}
    )


def test_split_characters_decode_per_window_across_latents(world):
    """Windows holding part of a character are decoded as spans; the table maps every latent's decoded strings
    back to its own rows (the strings of all windows are joined into one column at the end)."""
    tokens, texts, _, shard = world
    raw = np.array([t.encode() for t in texts], dtype=object)
    raw[7], raw[8] = "é".encode()[:1], "é".encode()[1:]  # tokens 7 and 8: the two bytes of é
    whole = np.ones(texts.size, bool)
    whole[[7, 8]] = False
    vocab = Vocab(texts.copy(), raw, whole)
    tokens = tokens.copy()
    tokens[:, 5], tokens[:, 6] = 7, 8  # every window starting at 0 mod CTX holds é at positions 5-6
    examples, _ = sample_examples(tokens, vocab, shard, CFG)
    assert examples.latent.nunique() >= 3
    split = examples[examples.start == 0]
    assert split.latent.nunique() >= 2  # several latents' parts carry decoded strings
    for row in examples.itertuples():
        window = tokens[row.seq, row.start : row.start + L]
        assert row.token_strs.tolist() == window_strings(window[None], vocab)[0].tolist()
    # the token that completes the character carries it
    assert all(r.token_strs[5] == "" and r.token_strs[6] == "é" for r in split.itertuples())


def test_window_acts_hand_computed():
    # L = 4: nonzeros at tokens 1, 2 (window 0), 9 (window 2), 13, 14 (window 3)
    pos = np.array([1, 2, 9, 13, 14], np.uint32)
    vals = np.array([1, 2, 3, 4, 5], np.float16)
    acts = _window_acts(np.array([3, 1, 0]), pos, vals, 4)
    assert acts.dtype == np.float32
    assert acts.tolist() == [[0, 4, 5, 0], [0, 0, 0, 0], [0, 1, 2, 0]]
    assert _window_acts(np.array([], np.int64), pos, vals, 4).shape == (0, 4)


def test_stratified_matches_lexsort_and_fills_quotas():
    """_stratified orders candidates by (bin, random rank) with one argsort; the picks equal those of the
    lexsort formulation it replaced, drawing from the same generator."""

    def by_lexsort(bins, n, n_bins, rng):
        n = min(n, bins.size)
        quota = np.full(n_bins, n // n_bins)
        quota[rng.permutation(n_bins)[: n % n_bins]] += 1
        prio = rng.permutation(bins.size)
        order = np.lexsort((prio, bins))
        rank_in_bin = np.arange(bins.size) - np.searchsorted(bins[order], bins[order])
        take = rank_in_bin < quota[bins[order]]
        chosen, rest = order[take], order[~take]
        return np.concatenate([chosen, rest[np.argsort(prio[rest])[: n - chosen.size]]])

    rng = np.random.default_rng(0)
    for size, n_bins, n in [(0, 3, 5), (7, 3, 5), (50, 5, 12), (50, 5, 60), (300, 10, 40)]:
        bins = rng.integers(0, n_bins, size) if size != 50 else np.repeat([0, 4], 25)  # two bins empty
        got = _stratified(bins, n, n_bins, np.random.default_rng(size + n))
        assert np.array_equal(got, by_lexsort(bins, n, n_bins, np.random.default_rng(size + n)))
        assert got.size == min(n, size) and np.unique(got).size == got.size
    bins = np.repeat(np.arange(4), 10)  # 40 windows, 10 per bin: 8 picks are 2 per bin
    assert np.bincount(bins[_stratified(bins, 8, 4, rng)], minlength=4).tolist() == [2, 2, 2, 2]


def test_token_strs_dictionary_holds_each_used_string_once():
    """The token_strs column's dictionary: the used vocabulary texts, then the extras not among them."""
    vocab = Vocab.from_texts(np.array(["a", "b", "c"], dtype=object))
    ids = np.array([[0, 2], [3, 4], [3, 0]])  # 3 and 4: extras "a" (a vocabulary text again) and "zz"
    col = _token_strs(ids, pa.array(["a", "zz"]), vocab, pa.array(np.array([0, 2, 4, 6], np.int32)))
    assert col.values.dictionary.to_pylist() == ["a", "c", "zz"]
    assert col.values.indices.to_pylist() == [0, 1, 0, 2, 0, 0]
    assert col.cast(pa.list_(pa.string())).to_pylist() == [["a", "c"], ["a", "zz"], ["a", "a"]]
