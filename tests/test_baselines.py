"""Tests for the LLM-free explainers: planted top tokens and the random (deranged) explanation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import example_row

from interpflow.baselines import (
    RANDOM_COLUMNS,
    assign_donors,
    derangement,
    explain_random,
    explain_top_tokens,
    normalise_text,
    run_random,
    run_top_tokens,
    top_tokens,
)
from interpflow.explanations import EXPLANATION_COLUMNS
from interpflow.store import read_parquet, write_parquet


def _window(latent, example_id, split, activating, tokens, acts):
    return example_row(latent, example_id, split, activating, tokens, acts, seq=latent * 100 + example_id)


def _digit_shard() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Latent 5 fires on digits (3.0) and weakly on "the" (1.0); latent 6's windows are full of "the"."""
    rows = []
    for i, two in enumerate([" 2", " 2", "2", "2"]):  # " 2" and "2" are one token once stripped
        toks = ["the", " cat", " the", " 1", " the", two, " the", "19"]
        rows.append(_window(5, i, "train", True, toks, [1, 0, 1, 3, 1, 3, 1, 3]))
    rows.append(_window(5, 9, "test", True, [" 7"] * 8, [9.0] * 8))  # test windows are never read
    for i in range(6):
        toks = ["the", " dog", " the", " the", " cat", " the", " the", " sat"]
        rows.append(_window(6, i, "train", True, toks, [0, 2, 0, 0, 2, 0, 0, 0]))
    latents = pd.DataFrame(
        {
            "latent": [5, 6, 7, 8],
            "n_activating_windows": [5, 6, 0, 40],
            "status": ["ok", "ok", "skipped", "ok"],
            "reason": ["", "", "never fires", ""],
        }
    )
    return pd.DataFrame(rows), latents


def test_top_tokens_prefers_planted_digits_over_frequent_the():
    examples, _ = _digit_shard()
    top = top_tokens(examples, 5)
    five = top[top.latent == 5]
    # score ties (same mass, same background count) go to the key: "1" < "19" < "2"; "the" scores < 0
    assert five.key.tolist() == ["1", "19", "2"]
    assert five.mass.tolist() == [12.0, 12.0, 12.0]
    # background: 80 distinct train tokens, 4 of them "1"; latent 5's mass is 16 ("the") + 3 * 12 = 52
    assert five.score.iloc[0] == pytest.approx(12 * np.log((12 / 52) / (4 / 80)))
    # equal mass, but " cat" is also in latent 5's windows (10 in the background against 6 for " dog")
    assert top[top.latent == 6].key.tolist() == ["dog", "cat"]


def test_top_tokens_keeps_the_best_token_when_none_is_enriched():
    examples = pd.DataFrame([_window(1, 0, "train", True, ["a", " a"], [1, 1])])
    assert top_tokens(examples, 5).key.tolist() == ["a"]  # score log(1 / 1) = 0


def test_explain_top_tokens_rows():
    examples, latents = _digit_shard()
    out = explain_top_tokens(examples, latents, {})
    assert list(out.columns) == list(EXPLANATION_COLUMNS)
    assert out.explanation.tolist()[:2] == ['the tokens "1", "19", "2"', 'the tokens "dog", "cat"']
    assert out.status.tolist() == ["ok", "ok", "skipped", "skipped"]
    assert out.error.tolist() == ["", "", "never fires", "no activating train examples"]
    assert out.explanation.isna().tolist() == [False, False, True, True]
    assert (out.model == "top-tokens").all() and (out.completion == "").all() and (~out.cached).all()
    assert (out.prompt_tokens == 0).all() and (out.completion_tokens == 0).all() and (out.cost_usd == 0).all()
    one = explain_top_tokens(examples, latents, {"n_tokens": 1})
    assert one.explanation.iloc[0] == 'the token "1"'
    with pytest.raises(ValueError, match="n_tokens"):
        explain_top_tokens(examples, latents, {"n_tokens": 0})


def test_run_top_tokens_round_trip(tmp_path):
    examples, latents = _digit_shard()
    write_parquet(examples, tmp_path / "ex.parquet")
    write_parquet(latents, tmp_path / "lat.parquet")
    run_top_tokens(
        tmp_path / "ex.parquet", tmp_path / "lat.parquet", {"n_tokens": 2}, tmp_path / "out.parquet"
    )
    back = read_parquet(tmp_path / "out.parquet")
    assert back.explanation.iloc[0] == 'the tokens "1", "19"' and back.status.tolist()[2] == "skipped"


def _source(statuses: list[str], first: int = 10, texts: list[str] | None = None) -> pd.DataFrame:
    """One shard of source explanations: latents first, first + 1, ...; text "expl N" unless given."""
    n = len(statuses)
    texts = texts or [f"expl {first + i}" for i in range(n)]
    return pd.DataFrame(
        {
            "latent": np.arange(first, first + n),
            "status": statuses,
            "explanation": [t if s == "ok" else None for t, s in zip(texts, statuses, strict=True)],
            "error": ["" if s == "ok" else "no marker" for s in statuses],
        }
    )


def _shards() -> list[pd.DataFrame]:
    """Three shards of three latents; "Digits" and " digits " are one text after normalisation."""
    return [
        _source(["ok", "ok", "parse_error"], 0, ["Digits", "commas", None]),
        _source(["ok", "ok", "ok"], 3, ["  digits ", "the word the", "brackets"]),
        _source(["ok", "ok", "ok"], 6, ["COMMAS", "capital  letters", "years"]),
    ]


def _donors(out: pd.DataFrame) -> dict[int, int]:
    ok = out[out.status == "ok"]
    return dict(zip(ok.latent.tolist(), ok.donor_latent.tolist(), strict=True))


def test_random_is_a_derangement_across_shards_never_an_identical_text():
    shards = _shards()
    pool = pd.concat(shards, ignore_index=True)
    text = dict(zip(pool.latent, pool.explanation, strict=True))
    from_other_shard = 0
    for seed in range(40):
        outs = [explain_random(shard, {"seed": seed}, pool) for shard in shards]
        for shard, out in zip(shards, outs, strict=True):
            assert out.latent.tolist() == shard.latent.tolist()  # a shard's output lists only its own
            assert list(out.columns) == list(RANDOM_COLUMNS) and (out.model == "random").all()
        out = pd.concat(outs, ignore_index=True)
        donors = _donors(out)
        assert sorted(donors) == [0, 1, 3, 4, 5, 6, 7, 8]
        assert sorted(donors.values()) == sorted(donors)  # a permutation: each ok explanation given once
        for lat, d in donors.items():
            assert d != lat and normalise_text(text[d]) != normalise_text(text[lat])
        ok = out[out.status == "ok"]
        assert (ok.explanation == ok.donor_latent.map(text)).all()
        assert (ok.completion == "from latent " + ok.donor_latent.astype(str)).all()
        from_other_shard += sum(d // 3 != lat // 3 for lat, d in donors.items())
    assert from_other_shard > 40 * 8 / 2  # most of a latent's valid donors lie in other shards
    skipped = outs[0].iloc[2]
    assert skipped.status == "skipped" and skipped.error == "source explanation parse_error: no marker"
    assert skipped.donor_latent == -1 and pd.isna(skipped.explanation)


def test_random_assignment_is_the_same_in_every_shard_job():
    shards = _shards()
    pool = pd.concat(shards, ignore_index=True)
    whole = explain_random(pool, {"seed": 7}, pool)  # one job computing every latent at once
    shuffled = pool.sample(frac=1, random_state=1)  # the shard files read in another order
    per_shard = pd.concat([explain_random(s, {"seed": 7}, shuffled) for s in shards], ignore_index=True)
    pd.testing.assert_frame_equal(per_shard, whole)
    assert _donors(explain_random(pool, {"seed": 8}, pool)) != _donors(whole)


def test_random_gives_a_one_latent_shard_a_donor_from_another_shard():
    lone, other = _source(["ok"], 0), _source(["ok", "parse_error"], 1)
    pool = pd.concat([lone, other], ignore_index=True)
    out = explain_random(lone, {"seed": 0}, pool)
    # the only other ok latent is 1 (latent 2 has no explanation): with its own shard only, it had none
    assert out.status.tolist() == ["ok"] and out.donor_latent.tolist() == [1]
    assert out.explanation.tolist() == ["expl 1"]
    assert explain_random(other, {"seed": 0}, pool).donor_latent.tolist() == [0, -1]


def test_random_skips_when_only_one_latent_is_explained_overall():
    no_donor = "no other explained latent of the dictionary at this hookpoint has a different explanation"
    pool = pd.concat([_source(["parse_error"], 0), _source(["ok"], 1)], ignore_index=True)
    out = explain_random(pool, {}, pool)
    assert out.status.tolist() == ["skipped", "skipped"] and out.error.iloc[1] == no_donor
    assert out.donor_latent.tolist() == [-1, -1] and out.explanation.isna().all()
    same = _source(["ok", "ok"], 0, ["Commas", "commas "])  # two latents, one text: no valid donor
    assert explain_random(same, {}).error.tolist() == [no_donor, no_donor]
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1, np.random.default_rng(0))


def test_assign_donors_swaps_away_identical_texts():
    # two texts, two latents each: the only valid assignments send {0, 1} onto {2, 3} and back
    for seed in range(30):
        donor = assign_donors(["x", " X", "y", "y\n"], np.random.default_rng(seed))
        assert sorted(donor[:2]) == [2, 3] and sorted(donor[2:]) == [0, 1]
    # one text held by 3 of 4: no permutation avoids it, so all three take "b" and "b" takes one of them
    for seed in range(30):
        donor = assign_donors(["a", "A", "a ", "b"], np.random.default_rng(seed))
        assert donor[:3].tolist() == [3, 3, 3] and donor[3] in (0, 1, 2)
    assert assign_donors(["a"], np.random.default_rng(0)).tolist() == [-1]


def test_random_rejects_an_inconsistent_pool():
    shard = _source(["ok", "ok"], 0)
    with pytest.raises(ValueError, match="latent 1 has two ok"):
        explain_random(shard, {}, pd.concat([shard, _source(["ok"], 1)], ignore_index=True))
    with pytest.raises(ValueError, match="latent 0 of the shard is missing"):
        explain_random(shard, {}, _source(["ok", "ok"], 1))
    with pytest.raises(ValueError, match="seed"):
        explain_random(shard, {"seed": "1"})


def test_run_random_round_trip(tmp_path):
    write_parquet(_source(["ok"], 10), tmp_path / "src-0.parquet")
    write_parquet(_source(["ok"], 11), tmp_path / "src-1.parquet")
    pool = [tmp_path / "src-0.parquet", tmp_path / "src-1.parquet"]
    for shard, other in [(0, 11), (1, 10)]:  # the only derangement of two, found by each shard's job
        run_random(pool[shard], pool, {"seed": 0}, tmp_path / f"out-{shard}.parquet")
        back = read_parquet(tmp_path / f"out-{shard}.parquet")
        assert back.explanation.tolist() == [f"expl {other}"] and back.donor_latent.tolist() == [other]
        assert back.completion.tolist() == [f"from latent {other}"]
