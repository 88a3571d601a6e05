from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from test_embedding import USAGE, hand_auroc, planted, window

from interpflow.scoring.surprisal import PREDICTION_COLUMNS, pair_losses, run_surprisal, score_latents
from interpflow.store import read_parquet, write_parquet

TEMPLATE = "{description}|"  # the fakes below find the window after the "|"


class CharTokenizer:
    """One token per character (its code point), BOS = 1 as the only special token, pad = 0."""

    pad_token_id = 0

    def __call__(self, texts, add_special_tokens):
        return {"input_ids": [[1] * add_special_tokens + [ord(c) for c in t] for t in texts]}


class TableLM:
    """A fake LM that gives each text token of "<description>|<text>" probability q[(description, text)].

    It cheats by reading the next token, so every text token's loss is exactly -ln q; prompt tokens get
    probability 0.5, so a loss that leaked over the prompt would come out wrong.
    """

    V = 128

    def __init__(self, q: dict[tuple[str, str], float]):
        self.q, self.calls = q, []

    def __call__(self, input_ids, attention_mask, logits_to_keep):
        self.calls.append(tuple(input_ids.shape))
        B, L = input_ids.shape
        probs = torch.full((B, L, self.V), 1e-9)
        for b in range(B):
            ids = input_ids[b, : int(attention_mask[b].sum())].tolist()
            desc, text = "".join(map(chr, ids[1:])).split("|")
            cut = len(desc) + 1  # position of "|": from there on each position predicts a text token
            for j in range(len(ids) - 1):
                p = self.q[(desc, text)] if j >= cut else 0.5
                probs[b, j] = (1 - p) / (self.V - 1)
                probs[b, j, ids[j + 1]] = p
        return SimpleNamespace(logits=probs.log()[:, logits_to_keep])


def fake_case():
    """Latent 3 with 3 activating and 3 other windows of known losses; latent 4 explained by llm_error."""
    texts = ["aa", "bbbb", "c", "dd d", "eeeee", "ff"]
    explained = [1.0, 2.5, 1.5, 2.0, 3.0, 1.5]  # loss after "dig"
    neutral = [2.0, 2.0, 2.0, 2.0, 2.0, 3.5]  # loss after "nil"
    q = {("dig", t): math.exp(-x) for t, x in zip(texts, explained, strict=True)}
    q |= {("nil", t): math.exp(-x) for t, x in zip(texts, neutral, strict=True)}
    ex = pd.DataFrame([window(3, i, t, i < 3) for i, t in enumerate(texts)])
    expl = pd.DataFrame({"latent": [3, 4], "explanation": ["dig", None], "status": ["ok", "llm_error"]})
    drops = [n - e for n, e in zip(neutral, explained, strict=True)]
    return ex, expl, TableLM(q), explained, neutral, drops


def test_hand_computed_losses_and_auroc():
    ex, expl, lm, explained, neutral, drops = fake_case()
    cfg = {"kind": "surprisal", "prompt_template": TEMPLATE, "neutral": "nil", "batch_size": 4}
    pred, met = score_latents(ex, expl, cfg, lm, CharTokenizer())
    assert list(pred.columns) == list(PREDICTION_COLUMNS)
    p = pred.set_index("example_id").sort_index()
    assert np.allclose(p["loss_explained"], explained, atol=1e-5)
    assert np.allclose(p["loss_neutral"], neutral, atol=1e-5)
    assert np.allclose(p["drop"], drops, atol=1e-5)
    assert (p["status"] == "ok").all() and (p["error"] == "").all()
    assert [b for b, _ in lm.calls] == [4, 4, 4]  # 12 (prompt, window) pairs in batches of 4
    expected = hand_auroc(drops[:3], drops[3:])  # drops [1, -0.5, 0.5] vs [0, -1, 2]: 5 / 9
    assert expected == pytest.approx(5 / 9)
    m = met.set_index("latent")
    assert list(met.columns) == [
        "latent",
        "scorer",
        "kind",
        "status",
        "n",
        "n_failed",
        "score",
        "auroc",
        "mean_drop_activating",
        "mean_drop_nonactivating",
        *USAGE,
    ]
    assert m.loc[3, ["scorer", "kind", "status"]].tolist() == ["surprisal", "surprisal", "ok"]
    assert m.loc[3, ["n", "n_failed"]].tolist() == [6, 0]
    assert m.loc[3, "score"] == pytest.approx(expected) and m.loc[3, "auroc"] == pytest.approx(expected)
    assert m.loc[3, "mean_drop_activating"] == pytest.approx(1.0 / 3, abs=1e-5)
    assert m.loc[3, "mean_drop_nonactivating"] == pytest.approx(1.0 / 3, abs=1e-5)
    assert m.loc[4, ["status", "n", "n_failed"]].tolist() == ["no_explanation: llm_error", 0, 0]
    assert np.isnan(m.loc[4, "score"])
    assert (met[USAGE] == 0).all().all()


def test_empty_and_too_long_windows_fail_explicitly():
    ex, expl, lm, *_ = fake_case()
    ex = pd.concat([ex, pd.DataFrame([window(3, 50, "", True), window(3, 51, "x" * 40, False)])])
    lm.config = SimpleNamespace(max_position_embeddings=30)  # "dig|" + BOS + 40 characters do not fit
    cfg = {"kind": "surprisal", "name": "s", "prompt_template": TEMPLATE, "neutral": "nil"}
    pred, met = score_latents(ex, expl, cfg, lm, CharTokenizer())
    p = pred.set_index("example_id")
    assert p.loc[50, "status"] == "empty_text" and p.loc[51, "status"] == "too_long"
    assert p.loc[[50, 51], ["loss_explained", "loss_neutral", "drop"]].isna().all().all()
    assert (p.loc[[50, 51], "error"] != "").all()
    assert met.set_index("latent").loc[3, ["status", "n", "n_failed"]].tolist() == ["ok", 6, 2]


def test_each_distinct_pair_runs_once():
    ex, expl, lm, explained, *_ = fake_case()
    ex = pd.concat([ex, ex.assign(latent=5)], ignore_index=True)  # latent 5 has the same windows
    expl = pd.concat([expl, pd.DataFrame({"latent": [5], "explanation": ["dig"], "status": ["ok"]})])
    cfg = {"kind": "surprisal", "prompt_template": TEMPLATE, "neutral": "nil", "batch_size": 100}
    pred, met = score_latents(ex, expl, cfg, lm, CharTokenizer())
    assert lm.calls == [(12, 10)]  # 6 windows after "dig|" and after "nil|", longest BOS + "dig|" + 5
    five = pred[pred["latent"] == 5].sort_values("example_id")
    assert np.allclose(five["loss_explained"], explained, atol=1e-5)
    assert met["latent"].tolist() == [3, 4, 5]


def test_bad_options():
    ex, expl, lm, *_ = fake_case()
    with pytest.raises(ValueError, match="prompt_template"):
        score_latents(ex, expl, {"prompt_template": "no slot"}, lm, CharTokenizer())
    with pytest.raises(ValueError, match="batch_size"):
        score_latents(ex, expl, {"batch_size": 0}, lm, CharTokenizer())
    with pytest.raises(ValueError, match="neutral"):
        score_latents(ex, expl, {"neutral": "  "}, lm, CharTokenizer())


@pytest.fixture(scope="module")
def one_thread():
    """The real-model tests run on one thread so they do not crowd a machine that runs other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_loss_skips_the_prompt_and_padding(smollm2_spec, one_thread):
    from interpflow.models import load_model

    model, tok = load_model(smollm2_spec, {"device": "cpu"})
    prompts = ["A short prompt:\n", "A much longer prompt about many things, with digits in it:\n", "Hi\n"]
    texts = [" 1984 and 2001", " the quiet river flowed on past the old mill", " ok"]
    loss, status = pair_losses(model, tok, prompts, texts, batch_size=3)  # one batch, padded rows
    assert list(status) == ["ok"] * 3
    for p, t, got in zip(prompts, texts, loss, strict=True):
        p_ids = tok(p, add_special_tokens=True)["input_ids"]
        t_ids = tok(t, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + t_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].float(), -1)  # [L, V]
        m = len(p_ids)
        direct = -np.mean([logp[m + k - 1, t_ids[k]].item() for k in range(len(t_ids))])
        assert got == pytest.approx(direct, abs=1e-4)


@pytest.mark.slow
def test_planted_digits_with_smollm2(smollm2_spec, tmp_path, one_thread):
    ex, expl = planted()
    write_parquet(ex, tmp_path / "examples.parquet")
    write_parquet(expl, tmp_path / "explanations.parquet")
    run_surprisal(
        tmp_path / "examples.parquet",
        tmp_path / "explanations.parquet",
        smollm2_spec,
        {"device": "cpu", "dtype": "float32"},
        {"kind": "surprisal", "name": "surprisal", "batch_size": 16},
        tmp_path / "predictions.parquet",
        tmp_path / "metrics.parquet",
    )
    pred, met = read_parquet(tmp_path / "predictions.parquet"), read_parquet(tmp_path / "metrics.parquet")
    assert len(pred) == 32 and (pred["status"] == "ok").all()
    assert np.allclose(pred["drop"], pred["loss_neutral"] - pred["loss_explained"])
    # each window's neutral loss does not depend on the latent it is scored for
    neutral = pred.pivot(index="example_id", columns="latent", values="loss_neutral")
    assert np.allclose(neutral[0], neutral[1])
    m = met.set_index("latent")
    assert m.loc[0, "score"] > 0.75
    assert m.loc[0, "score"] > m.loc[1, "score"] + 0.3
    assert m.loc[0, "mean_drop_activating"] > m.loc[0, "mean_drop_nonactivating"]
    assert m.loc[2, ["status", "n"]].tolist() == ["no_explanation: parse_error", 0]
    assert np.isnan(m.loc[2, "score"])
