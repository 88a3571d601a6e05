"""Tests for the LLM-free explainers: planted top tokens and the random (deranged) explanation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import example_row

from interpflow.baselines import (
    derangement,
    explain_random,
    explain_top_tokens,
    run_random,
    run_top_tokens,
    top_tokens,
)
from interpflow.explain import EXPLANATION_COLUMNS
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


def _source(statuses: list[str]) -> pd.DataFrame:
    n = len(statuses)
    return pd.DataFrame(
        {
            "latent": np.arange(10, 10 + n),
            "status": statuses,
            "explanation": [f"expl {10 + i}" if s == "ok" else None for i, s in enumerate(statuses)],
            "error": ["" if s == "ok" else "no marker" for s in statuses],
        }
    )


def test_random_is_a_derangement_of_ok_explanations():
    source = _source(["ok", "ok", "parse_error", "ok", "ok", "ok"])
    for seed in range(30):
        out = explain_random(source, {"seed": seed})
        ok = out[out.status == "ok"]
        assert ok.latent.tolist() == [10, 11, 13, 14, 15]
        donors = ok.completion.str.removeprefix("from latent ").astype(int)
        assert (donors != ok.latent).all()  # never its own
        assert sorted(donors) == [10, 11, 13, 14, 15]  # each ok explanation used once
        assert (ok.explanation == "expl " + donors.astype(str)).all()
    assert (
        out.loc[2, "status"] == "skipped"
        and out.loc[2, "error"] == "source explanation parse_error: no marker"
    )
    assert list(out.columns) == list(EXPLANATION_COLUMNS) and (out.model == "random").all()
    pd.testing.assert_frame_equal(explain_random(source, {"seed": 3}), explain_random(source, {"seed": 3}))
    assert not explain_random(source, {"seed": 3}).completion.equals(
        explain_random(source, {"seed": 4}).completion
    )


def test_random_skips_when_only_one_is_eligible():
    out = explain_random(_source(["parse_error", "ok"]), {})
    assert out.status.tolist() == ["skipped", "skipped"]
    assert out.error.iloc[1] == "no other latent of the shard has an ok source explanation"
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1, np.random.default_rng(0))


def test_run_random_round_trip(tmp_path):
    write_parquet(_source(["ok", "ok"]), tmp_path / "src.parquet")
    run_random(tmp_path / "src.parquet", {"seed": 0}, tmp_path / "out.parquet")
    back = read_parquet(tmp_path / "out.parquet")
    assert back.explanation.tolist() == ["expl 11", "expl 10"]  # the only derangement of two
    assert back.completion.tolist() == ["from latent 11", "from latent 10"]
