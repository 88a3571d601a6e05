from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from interpflow.scoring.embedding import PREDICTION_COLUMNS, run_embedding, score_latents, select_windows
from interpflow.store import read_parquet, write_parquet

DIGITS = [
    "In 1984 there were 23 ships, 417 sailors and 9 cannons in the harbour.",
    "Please call 555 0142 or 555 0199 before 8 pm on 12 March 2021.",
    "The total came to 3,482.50 dollars, up from 2,917.25 in 2019.",
    "Room 204, floor 3, building 17: open from 09:30 to 16:45 daily.",
    "Scores: 21 to 14 in 1998, 35 to 7 in 1999 and 10 to 3 in 2000.",
    "Population grew from 12,400 in 1950 to 86,250 in 2010, a 596 percent rise.",
    "Flight 8831 departs at 06:15 from gate 42 and lands at 11:05.",
    "Order 77120 ships 48 units at 19.99 each, total 959.52, on 4 June 2023.",
]
PROSE = [
    "The old man walked slowly along the quiet river as the evening light faded.",
    "She opened the window and listened to the birds singing in the garden.",
    "Our teacher explained why the story ends with the hero returning home.",
    "The children laughed while the dog chased its tail around the kitchen.",
    "He wondered whether the village would ever feel like home again.",
    "A gentle wind moved through the tall grass on the side of the hill.",
    "They shared bread and soup and talked late into the cold night.",
    "The painter mixed blue and white until the sky looked just right.",
]
METRIC_BASE = ["latent", "scorer", "kind", "status", "n", "n_failed", "score", "auroc"]
USAGE = ["prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd"]


def window(latent: int, example_id: int, text: str, activating: bool, split: str = "test") -> dict:
    """An examples row whose token strings are the text's words, joined back faithfully."""
    words = text.split(" ")
    strs = words[:1] + [" " + w for w in words[1:]] if text else []
    return dict(
        latent=latent,
        example_id=example_id,
        split=split,
        activating=activating,
        seq=example_id,
        start=0,
        tokens=np.arange(len(strs), dtype=np.int32),
        token_strs=strs,
        acts=np.full(len(strs), 1.0 if activating else 0.0, dtype=np.float32),
        max_act=1.0 if activating else 0.0,
        quantile=0 if activating else -1,
    )


def planted() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Digit windows activate, prose does not; latent 0 is explained right, latent 1 wrong, latent 2 not."""
    rows = [window(0, i, t, True) for i, t in enumerate(DIGITS)]
    rows += [window(0, 100 + i, t, False) for i, t in enumerate(PROSE)]
    rows.append(window(0, 999, "A train window about 42 apples.", True, split="train"))  # never scored
    ex = pd.DataFrame(rows)
    ex = pd.concat([ex, ex.assign(latent=1), ex.assign(latent=2)], ignore_index=True)
    expl = pd.DataFrame(
        {
            "latent": [0, 1, 2],
            "explanation": ["digits and numbers", "names of flowers", None],
            "status": ["ok", "ok", "parse_error"],
        }
    )
    return ex, expl


def hand_auroc(pos: list[float], neg: list[float]) -> float:
    """Share of (positive, negative) pairs ranked right, ties counting half."""
    return float(np.mean([1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg]))


class FakeEmbedder:
    """Unit vectors at set angles: query "q" is [1, 0], text t is [cos a, sin a], so similarity = cos a."""

    def __init__(self, angles: dict[str, float]):
        self.angles, self.calls = angles, []

    def encode(self, texts, batch_size, convert_to_numpy, show_progress_bar):
        self.calls.append(list(texts))
        return np.array([[math.cos(self.angles[t]), math.sin(self.angles[t])] for t in texts]) * 3.0


def fake_case():
    """Latent 5: 3 activating and 3 other windows with known cosines; latent 6: only an empty window."""
    cos = {"a b": 0.9, "c d": 0.2, "e f": 0.5, "g h": 0.6, "i j": 0.1, "k l": 0.2}
    rows = [window(5, i, t, i < 3) for i, t in enumerate(cos)] + [window(6, 0, "", True)]
    expl = pd.DataFrame(
        {"latent": [5, 6, 7], "explanation": ["q", "q", None], "status": ["ok", "ok", "llm_error"]}
    )
    angles = {t: math.acos(c) for t, c in cos.items()} | {"q": 0.0}
    return pd.DataFrame(rows), expl, cos, angles


def test_hand_computed_auroc_with_a_fake_embedder():
    ex, expl, cos, angles = fake_case()
    model = FakeEmbedder(angles)
    pred, met = score_latents(ex, expl, {"kind": "embedding", "name": "emb"}, model)
    assert list(pred.columns) == list(PREDICTION_COLUMNS)
    assert sorted(len(c) for c in model.calls) == [1, 6]  # one query, each non-empty window once
    five = pred[pred["latent"] == 5].set_index("example_id")
    assert np.allclose(five["similarity"].to_numpy(), list(cos.values()))
    assert (five["status"] == "ok").all() and (five["error"] == "").all()
    expected = hand_auroc([0.9, 0.2, 0.5], [0.6, 0.1, 0.2])  # 6.5 / 9
    assert expected == pytest.approx(6.5 / 9)
    assert list(met.columns) == [
        *METRIC_BASE,
        "mean_similarity_activating",
        "mean_similarity_nonactivating",
        *USAGE,
    ]
    m = met.set_index("latent")
    assert m.loc[5, ["status", "scorer", "kind"]].tolist() == ["ok", "emb", "embedding"]
    assert m.loc[5, ["n", "n_failed"]].tolist() == [6, 0]
    assert m.loc[5, "score"] == pytest.approx(expected) and m.loc[5, "auroc"] == pytest.approx(expected)
    assert m.loc[5, "mean_similarity_activating"] == pytest.approx(1.6 / 3)
    assert m.loc[5, "mean_similarity_nonactivating"] == pytest.approx(0.9 / 3)
    # latent 6's only window is empty: failed, not scored as zero
    assert pred.loc[pred["latent"] == 6, "status"].tolist() == ["empty_text"]
    assert np.isnan(pred.loc[pred["latent"] == 6, "similarity"]).all()
    assert m.loc[6, ["status", "n", "n_failed"]].tolist() == ["empty_text", 0, 1]
    assert m.loc[7, ["status", "n", "n_failed"]].tolist() == ["no_explanation: llm_error", 0, 0]
    assert np.isnan(m.loc[[6, 7], "score"]).all()
    assert (met[USAGE[:3]] == 0).all().all() and (met["cost_usd"] == 0.0).all()


def test_missing_windows_caps_and_one_class():
    ex, expl, _, _ = fake_case()
    expl = pd.concat([expl, pd.DataFrame({"latent": [8], "explanation": ["q"], "status": ["ok"]})])
    cfg = {"kind": "embedding", "max_activating": 1, "seed": 3}
    windows, unscored = select_windows(ex, expl, cfg)
    assert unscored == {7: "no_explanation: llm_error", 8: "no_test_examples"}
    five = windows[windows["latent"] == 5]
    assert five["activating"].sum() == 1 and (~five["activating"]).sum() == 3
    again, _ = select_windows(ex, expl, cfg)
    assert again.equals(windows)  # the seeded subset is reproducible
    _, met = score_latents(ex[ex["activating"]], expl, {"kind": "embedding"}, FakeEmbedder(fake_case()[3]))
    m = met.set_index("latent")
    assert m.loc[5, "status"] == "ok" and np.isnan(m.loc[5, "auroc"])  # one class: AUROC undefined
    assert m.loc[8, ["status", "n"]].tolist() == ["no_test_examples", 0]
    assert met["latent"].tolist() == [5, 6, 7, 8]  # the explanations' order, nothing dropped
    with pytest.raises(ValueError, match="max_activating"):
        score_latents(ex, expl, {"max_activating": -1}, FakeEmbedder({}))


def test_prefixes_reach_the_embedder():
    ex, expl, _, angles = fake_case()
    angles = {("query: " if k == "q" else "passage: ") + k: v for k, v in angles.items()}
    model = FakeEmbedder(angles)
    cfg = {"kind": "embedding", "query_prefix": "query: ", "document_prefix": "passage: "}
    score_latents(ex, expl, cfg, model)
    assert ["query: q"] in model.calls


@pytest.mark.slow
def test_planted_digits_with_minilm(tmp_path):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ex, expl = planted()
        write_parquet(ex, tmp_path / "examples.parquet")
        write_parquet(expl, tmp_path / "explanations.parquet")
        cfg = {"kind": "embedding", "name": "embedding", "batch_size": 8, "device": "cpu"}
        run_embedding(
            tmp_path / "examples.parquet",
            tmp_path / "explanations.parquet",
            cfg,
            tmp_path / "predictions.parquet",
            tmp_path / "metrics.parquet",
        )
    finally:
        torch.set_num_threads(threads)
    pred, met = read_parquet(tmp_path / "predictions.parquet"), read_parquet(tmp_path / "metrics.parquet")
    assert len(pred) == 32 and (pred["status"] == "ok").all()
    assert set(pred["example_id"]) == set(range(8)) | set(range(100, 108))  # test split only
    m = met.set_index("latent")
    assert m.loc[0, "score"] > 0.8
    assert m.loc[0, "score"] > m.loc[1, "score"] + 0.3
    assert m.loc[0, "mean_similarity_activating"] > m.loc[0, "mean_similarity_nonactivating"]
    assert m.loc[2, "status"] == "no_explanation: parse_error" and m.loc[2, "n"] == 0
    assert np.isnan(m.loc[2, "score"])


def test_unknown_embedder_is_a_clear_error(tmp_path):
    from interpflow.scoring.embedding import load_embedder

    with pytest.raises(FileNotFoundError, match="scorer option model"):
        load_embedder(str(tmp_path / "no-such-embedder"), "cpu")
