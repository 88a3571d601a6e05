"""Tests for cross-layer alignment: planted permutations, sparse correlations against numpy, hand-computed
explanation similarities, the random-pair baseline and the figure."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TableEncoder

from interpflow.crosslayer.align import cross_layer, match_latents, sae_decoder
from interpflow.crosslayer.compare import explanation_similarity
from interpflow.crosslayer.correlation import activation_correlation, paired_correlation
from interpflow.crosslayer.summary import plot_similarity_by_distance
from interpflow.latents import encode_to_shards
from interpflow.store import read_parquet, write_parquet

N_SEQ, CTX = 6, 9


def planted_pair(n: int, d: int, seed: int, noise: float = 0.02):
    """dec_b[j] = dec_a[perm[j]] + noise: latent perm[j] of A is latent j of B."""
    rng = np.random.default_rng(seed)
    dec_a = rng.standard_normal((n, d)).astype(np.float32)
    perm = rng.permutation(n)
    dec_b = 3.0 * dec_a[perm] + noise * rng.standard_normal((n, d)).astype(
        np.float32
    )  # scale: normalised away
    return dec_a, dec_b, perm


def test_hungarian_recovers_a_planted_permutation():
    dec_a, dec_b, perm = planted_pair(200, 48, seed=0)
    m = match_latents(dec_a, dec_b)
    assert list(m.columns) == ["latent_a", "latent_b", "cosine"]
    inverse = np.argsort(perm)  # B's partner of each A latent
    np.testing.assert_array_equal(m["latent_a"], np.arange(200))
    np.testing.assert_array_equal(m["latent_b"], inverse)
    assert m["cosine"].min() > 0.99
    # labels follow the ids given for the rows
    ids_a, ids_b = np.arange(200) + 1000, np.arange(200) * 2
    labelled = match_latents(dec_a, dec_b, latents_a=ids_a, latents_b=ids_b)
    np.testing.assert_array_equal(labelled["latent_b"], inverse * 2)
    np.testing.assert_array_equal(labelled["latent_a"], ids_a)


def test_rectangular_matching_both_ways():
    rng = np.random.default_rng(1)
    small = rng.standard_normal((10, 32))
    big = rng.standard_normal((25, 32))
    slots = rng.choice(25, 10, replace=False)
    big[slots] = small + 0.01 * rng.standard_normal((10, 32))  # small[i] planted at big[slots[i]]
    m = match_latents(small, big)
    assert len(m) == 10
    np.testing.assert_array_equal(m["latent_b"], slots)
    m = match_latents(big, small)
    assert len(m) == 10
    np.testing.assert_array_equal(m["latent_a"], np.sort(slots))
    assert dict(zip(m["latent_a"], m["latent_b"], strict=True)) == {int(s): i for i, s in enumerate(slots)}


def test_correlation_mix_and_hungarian_beats_greedy():
    dec = np.eye(2)  # cosine: identity
    corr = np.array([[0.9, 0.8], [0.8, 0.1]])  # greedy takes (0,0)+(1,1)=1.0, the optimum (0,1)+(1,0)=1.6
    m = match_latents(dec, dec, corr=corr, corr_weight=1.0)
    assert list(m["latent_b"]) == [1, 0]
    np.testing.assert_allclose(m["score"], [0.8, 0.8], rtol=1e-6)
    np.testing.assert_allclose(m["cosine"], [0.0, 0.0], atol=1e-7)
    # half and half: identity scores 0.5 + 0.5 * (0.9 + 0.1) = 1.0 against 0.5 * 1.6 = 0.8
    m = match_latents(dec, dec, corr=corr, corr_weight=0.5)
    assert list(m["latent_b"]) == [0, 1]
    np.testing.assert_allclose(m["score"], [0.95, 0.55], rtol=1e-6)
    np.testing.assert_allclose(m["correlation"], [0.9, 0.1], rtol=1e-6)
    with pytest.raises(ValueError, match="needs the activation correlations"):
        match_latents(dec, dec, corr_weight=0.5)


def test_size_limit_and_bad_input_are_clear_errors():
    a = np.ones((100, 4))
    with pytest.raises(ValueError, match="subset of latents"):
        match_latents(a, a, max_pairs=99 * 100)
    with pytest.raises(ValueError, match="dimension"):
        match_latents(a, np.ones((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        match_latents(np.full((2, 2), np.nan), a[:2, :2])


def write_dictionary(tmp_path, tag: str, width: int, seed: int, dead: int | None = None):
    """Encode random k=3 activations into shards of 4 latents; return (shard paths, dense [rows, width])."""
    n_rows = N_SEQ * CTX
    acts = np.zeros((n_rows, 2), np.float32)
    acts[:, 0] = np.arange(n_rows)
    with h5py.File(tmp_path / "acts.h5", "w") as f:
        f.create_dataset("activations", data=acts).attrs.update(n_seq=N_SEQ, ctx_len=CTX)
    rng = np.random.default_rng(seed)
    alive = [j for j in range(width) if j != dead]
    idx = np.stack([rng.choice(alive, 3, replace=False) for _ in range(n_rows)])
    vals = rng.uniform(0.1, 4.0, idx.shape).astype(np.float16).astype(np.float32)  # exact in float16
    vals[rng.random(idx.shape) < 0.2] = 0  # some empty slots
    n = -(-width // 4)
    shards = [str(tmp_path / tag / f"shard-{i}.h5") for i in range(n)]
    stats = [str(tmp_path / tag / f"stats-{i}.parquet") for i in range(n)]
    encode_to_shards(tmp_path / "acts.h5", TableEncoder(idx, vals, width), width, 4, shards, stats)
    dense = np.zeros((n_rows, width))
    np.put_along_axis(dense, idx, vals, axis=1)
    return shards, dense[np.arange(n_rows) % CTX != 0]  # BOS rows are not tokens of the store


def test_correlation_from_sparse_shards_equals_numpy(tmp_path):
    shards_a, dense_a = write_dictionary(tmp_path, "a", width=10, seed=0, dead=7)
    shards_b, dense_b = write_dictionary(tmp_path, "b", width=9, seed=1)
    la, lb = np.array([5, 0, 9, 7, 3]), np.array([8, 1, 4, 0])
    got = activation_correlation(shards_a, shards_b, la, lb)
    assert got.shape == (5, 4) and got.dtype == np.float32
    alive = la != 7
    full = np.corrcoef(dense_a[:, la[alive]].T, dense_b[:, lb].T)[:4, 4:]  # [alive latents_a, latents_b]
    np.testing.assert_allclose(got[alive], full, atol=1e-6)
    assert np.isnan(got[~alive]).all()  # latent 7 never fires
    assert np.abs(full).max() > 0.1  # the comparison is not all zeros
    # the paired form is the diagonal
    pairs = paired_correlation(shards_a, shards_b, la[:4], lb)
    np.testing.assert_allclose(pairs, np.diag(got[:4]), atol=1e-6, equal_nan=True)
    with pytest.raises(ValueError, match="none of the"):
        activation_correlation(shards_a, shards_b, [10], [0])
    with pytest.raises(ValueError, match="subset"):
        activation_correlation(shards_a, shards_b, la, lb, max_pairs=19)


def test_correlation_blocks(tmp_path, monkeypatch):
    import interpflow.crosslayer.correlation as cl

    shards_a, _ = write_dictionary(tmp_path, "a", width=10, seed=2)
    shards_b, _ = write_dictionary(tmp_path, "b", width=10, seed=3)
    whole = activation_correlation(shards_a, shards_b, np.arange(10), np.arange(10))
    monkeypatch.setattr(cl, "_CHUNK_CELLS", 25)  # blocks of 2 rows
    np.testing.assert_allclose(
        activation_correlation(shards_a, shards_b, np.arange(10), np.arange(10)), whole
    )


VECTORS = {"cats": [1, 0, 0], "kittens": [1, 1, 0], "python code": [0, 0, 2], "dogs": [3, 0, 4]}


def fake_embed(texts: list[str]) -> np.ndarray:
    """Deterministic embedder: a fixed (unnormalised) vector per known text."""
    return np.array([VECTORS[t] for t in texts], dtype=float)


def explanations(rows: dict[int, tuple[str | None, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"latent": k, "explanation": e, "status": s} for k, (e, s) in rows.items()],
    )


EXPL_A = explanations(
    {0: ("cats", "ok"), 1: ("python code", "ok"), 2: ("dogs", "ok"), 3: (None, "parse_error")}
)
EXPL_B = explanations(
    {10: ("kittens", "ok"), 11: ("dogs", "ok"), 12: ("cats", "llm_error"), 13: ("cats", "ok")}
)
PAIRS = pd.DataFrame({"latent_a": [0, 1, 2, 3], "latent_b": [10, 11, 12, 13]})
# cosines of the unit vectors, e.g. cats.kittens = 1/sqrt2, cats.dogs = 3/5, code.dogs = 4/5
HAND = {
    ("cats", "kittens"): 2**-0.5,
    ("python code", "dogs"): 0.8,
    ("cats", "dogs"): 0.6,
    ("cats", "cats"): 1.0,
    ("python code", "kittens"): 0.0,
    ("python code", "cats"): 0.0,
    ("dogs", "kittens"): 3 / (5 * 2**0.5),
    ("dogs", "dogs"): 1.0,
    ("dogs", "cats"): 0.6,
}


def test_explanation_similarity_hand_computed():
    out = explanation_similarity(PAIRS, EXPL_A, EXPL_B, fake_embed, n_random=0, rng=np.random.default_rng(0))
    # pair 2-12: B's explanation failed; pair 3-13: A's did
    assert list(out["pair"]) == ["matched", "matched"]
    assert list(zip(out["latent_a"], out["latent_b"], strict=True)) == [(0, 10), (1, 11)]
    np.testing.assert_allclose(out["similarity"], [2**-0.5, 0.8])
    assert list(out["explanation_a"]) == ["cats", "python code"]


def test_random_baseline_is_reproducible_and_excludes_matched_pairs():
    def run(seed):
        return explanation_similarity(
            PAIRS, EXPL_A, EXPL_B, fake_embed, n_random=50, rng=np.random.default_rng(seed)
        )

    out = run(7)
    rand = out[out["pair"] == "random"]
    assert len(rand) == 50
    assert set(rand["latent_a"]) <= {0, 1, 2} and set(rand["latent_b"]) <= {10, 11, 13}
    assert not {(0, 10), (1, 11)} & set(zip(rand["latent_a"], rand["latent_b"], strict=True))
    for r in rand.itertuples():
        assert r.similarity == pytest.approx(HAND[(r.explanation_a, r.explanation_b)])
    pd.testing.assert_frame_equal(run(7), out)
    assert not run(8)["latent_a"].equals(out["latent_a"])  # 3**50 orderings: another seed differs


def test_cross_layer_writes_matches_and_summary(tmp_path):
    shards_a, dense_a = write_dictionary(tmp_path, "a", width=10, seed=0)
    shards_b, dense_b = write_dictionary(tmp_path, "b", width=10, seed=1)
    dec_a, dec_b, perm = planted_pair(10, 16, seed=4)
    inverse = np.argsort(perm)
    # explain A's 0, 1, 2 and their B partners; A's 3 has a partner with no explanation
    expl_a = explanations({0: ("cats", "ok"), 1: ("python code", "ok"), 2: ("dogs", "ok"), 3: ("cats", "ok")})
    texts_b = {int(inverse[0]): "kittens", int(inverse[1]): "dogs", int(inverse[2]): "dogs"}
    expl_b = explanations({k: (v, "ok") for k, v in texts_b.items()})
    write_parquet(expl_a, tmp_path / "ea.parquet")
    write_parquet(expl_b, tmp_path / "eb.parquet")
    summary = cross_layer(
        dec_a,
        lambda: torch.from_numpy(dec_b),  # a callable returning a tensor, like decoder_directions()
        tmp_path / "out/matches.parquet",
        layer_a="resid_post.3",
        layer_b=5,
        explanations_a=[tmp_path / "ea.parquet"],
        explanations_b=[tmp_path / "eb.parquet"],
        shards_a=shards_a,
        shards_b=shards_b,
        embed=fake_embed,
        n_random=40,
        seed=0,
        similarity_out=tmp_path / "out/similarity.parquet",
    )
    m = read_parquet(tmp_path / "out/matches.parquet")
    assert list(m.columns) == ["latent_a", "latent_b", "cosine", "correlation", "score", "similarity"] + [
        "layer_a", "layer_b", "distance"
    ]  # fmt: skip
    np.testing.assert_array_equal(m["latent_b"], inverse)
    assert (m["layer_a"] == 3).all() and (m["layer_b"] == 5).all() and (m["distance"] == 2).all()
    np.testing.assert_allclose(m["score"], m["cosine"])
    want = [
        np.corrcoef(dense_a[:, a], dense_b[:, b])[0, 1]
        for a, b in zip(m["latent_a"], m["latent_b"], strict=True)
    ]
    np.testing.assert_allclose(m["correlation"], want, atol=1e-6)
    np.testing.assert_allclose(m["similarity"][:3], [2**-0.5, 0.8, 1.0])
    assert m["similarity"][3:].isna().all()
    sims = read_parquet(tmp_path / "out/similarity.parquet")
    rand = sims.loc[sims["pair"] == "random", "similarity"]
    assert summary["distance"] == 2 and summary["n_matched"] == 10 and summary["n_explained_pairs"] == 3
    assert summary["mean_similarity_matched"] == pytest.approx((2**-0.5 + 0.8 + 1.0) / 3)
    assert summary["n_random_pairs"] == 40 and summary["mean_similarity_random"] == pytest.approx(rand.mean())
    assert summary["mean_cosine"] == pytest.approx(m["cosine"].mean()) and summary["mean_cosine"] > 0.99
    assert abs(summary["mean_cosine_random"]) < 0.5
    assert summary["mean_correlation"] == pytest.approx(np.mean(want))


def test_cross_layer_subset_and_correlation_matching(tmp_path):
    shards_a, dense_a = write_dictionary(tmp_path, "a", width=8, seed=5)
    # B's shards are copies of A's: correlation 1 between latent j of A and of B
    shards_b = []
    for path in shards_a:
        dest = tmp_path / "b" / path.rsplit("/", 1)[1]
        dest.parent.mkdir(exist_ok=True)
        dest.write_bytes(open(path, "rb").read())
        shards_b.append(str(dest))
    rng = np.random.default_rng(0)
    dec = rng.standard_normal((8, 6))
    # decoders unrelated, so only the correlation can find the identity partners on a subset
    out = tmp_path / "m.parquet"
    summary = cross_layer(
        dec, rng.standard_normal((8, 6)), out, layer_a=1, layer_b=2, shards_a=shards_a, shards_b=shards_b,
        latents_a=[6, 1, 4], latents_b=[1, 4, 6, 0], corr_weight=1.0, n_random=0,
    )  # fmt: skip
    m = read_parquet(out)
    assert dict(zip(m["latent_a"], m["latent_b"], strict=True)) == {1: 1, 4: 4, 6: 6}
    np.testing.assert_allclose(m["correlation"], 1.0, atol=1e-6)
    assert m["similarity"].isna().all() and summary["n_explained_pairs"] == 0
    assert np.isnan(summary["mean_cosine_random"]) and np.isnan(summary["mean_similarity_random"])
    with pytest.raises(ValueError, match="shards"):
        cross_layer(dec, dec, out, layer_a=1, layer_b=2, corr_weight=0.5)


def test_plot_writes_a_png(tmp_path):
    df = pd.DataFrame(
        {
            "distance": [1, 1, 2, 3],
            "mean_cosine": [0.8, 0.7, 0.5, 0.3],
            "mean_cosine_random": [0.0, 0.01, -0.01, 0.0],
            "mean_similarity_matched": [0.6, 0.5, np.nan, 0.3],
            "mean_similarity_random": [0.2, 0.2, np.nan, 0.2],
        }
    )
    plot_similarity_by_distance(df, tmp_path / "fig/similarity.png")
    data = (tmp_path / "fig/similarity.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [p.name for p in (tmp_path / "fig").iterdir()] == ["similarity.png"]  # no temp file left
    with pytest.raises(ValueError, match="mean_cosine_random"):
        plot_similarity_by_distance(df.drop(columns="mean_cosine_random"), tmp_path / "x.png")


@pytest.mark.slow
def test_minilm_scores_matched_paraphrases_above_random_pairs(tmp_path):
    topics_a = ["the word cat", "Python source code", "years such as 1990", "text written in French"]
    topics_b = ["cats and kittens", "programming code in Python", "calendar dates and years", "French words"]
    write_parquet(explanations({i: (t, "ok") for i, t in enumerate(topics_a)}), tmp_path / "ea.parquet")
    write_parquet(explanations({i: (t, "ok") for i, t in enumerate(topics_b)}), tmp_path / "eb.parquet")
    dec = np.eye(4)
    summary = cross_layer(
        dec, dec, tmp_path / "m.parquet", layer_a=0, layer_b=1, explanations_a=[tmp_path / "ea.parquet"],
        explanations_b=[tmp_path / "eb.parquet"], n_random=30,
    )  # fmt: skip
    assert summary["n_explained_pairs"] == 4 and summary["n_random_pairs"] == 30
    assert summary["mean_similarity_matched"] > summary["mean_similarity_random"] + 0.2


def test_sae_decoder_reads_w_dec(tmp_path):
    from interpflow.sae.model import TopKSAE

    sae = TopKSAE(8, 16, 2)
    sae.save(tmp_path / "sae")
    np.testing.assert_array_equal(sae_decoder(tmp_path / "sae"), sae.W_dec.detach().numpy())
    with pytest.raises(FileNotFoundError, match="sae.safetensors"):
        sae_decoder(tmp_path / "nothing")
