from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from interpflow.activations import hidden_states
from interpflow.dictionaries import from_topk_sae
from interpflow.intervention import (
    METRIC_COLUMNS,
    PREDICTION_COLUMNS,
    calibrate,
    check_cfg,
    explanation_logprobs,
    mean_kl,
    run_intervention,
    score_latents,
    setup,
    steer,
)
from interpflow.models import load_model
from interpflow.sae import TopKSAE
from interpflow.store import read_parquet, write_parquet

LAYER = 10  # of SmolLM2-135M's 30
HP, NEXT = f"resid_post.{LAYER}", f"resid_post.{LAYER + 1}"
DIGITS = [
    "The numbers are 12, 45, 78, 90, 33, 61, 27 and 84.",
    "In 1998 there were 3,456 cases; in 2004, 7,891.",
    "Call 555-0192 or 555-8734 before 10:30.",
]
PROSE = [
    "The old house stood at the end of a quiet lane.",
    "She walked slowly through the garden, thinking of home.",
    "Rain fell softly on the roof while the children slept.",
]


@pytest.fixture(scope="module")
def smollm2(smollm2_spec):
    # many tiny forward passes: one thread avoids thread hand-offs that dominate on a busy 2-core machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model(smollm2_spec, {"device": "cpu"})
    torch.set_num_threads(threads)


def ids_of(tok, text: str) -> list[int]:
    return [tok.bos_token_id, *tok(text, add_special_tokens=False).input_ids]


def test_calibrate_on_known_curves():
    alpha, kl, ok = calibrate(lambda a: 3 * a**2, 1.0, 8.0, tol=0.01)
    assert ok and abs(kl - 1) <= 0.01 and alpha == pytest.approx(math.sqrt(1 / 3), rel=0.01)
    alpha, kl, ok = calibrate(lambda a: 500 * a**2, 2.0, 8.0, tol=0.05)  # target below the first probe
    assert ok and abs(kl - 2) <= 0.1 and alpha < 0.125
    # saturating curve: the target is out of reach, the strongest probe is reported
    alpha, kl, ok = calibrate(lambda a: a / (1 + a) / 2, 1.0, 8.0)
    assert not ok and alpha == 8.0 and kl == pytest.approx(4 / 9)


def test_check_cfg_names_bad_options():
    c = check_cfg({"n_prompts": 2, "kind": "intervention", "prompts": None})
    assert c["prompts"] == ["The", "I think that"] and c["target_kl"] == 1.0
    assert check_cfg({"n_prompts": 5, "prompts": ["A", "B"]})["prompts"] == ["A", "B"]
    for bad, key in [
        ({"n_prompts": 0}, "n_prompts"),
        ({"prompt_template": "about:"}, "prompt_template"),
        ({"target_kl": 0}, "target_kl"),
        ({"prompts": []}, "prompts"),
    ]:
        with pytest.raises(ValueError, match=key):
            check_cfg(bad)


def test_steer_adds_the_vector_at_the_hookpoint(smollm2):
    model, tok = smollm2
    ids = torch.tensor([ids_of(tok, "The cat sat on the mat and looked outside.")])
    v = 20 * torch.randn(576, generator=torch.Generator().manual_seed(0))
    clean = hidden_states(model, ids, [HP, NEXT])
    with torch.no_grad(), steer(model, HP, v):
        steered = hidden_states(model, ids, [HP, NEXT])
        steered_logits = model(ids).logits
    torch.testing.assert_close(steered[HP], clean[HP] + v)
    # the next layer sees the steered stream: its update differs, not just its input
    assert (steered[NEXT] - clean[NEXT] - v).abs().max() > 1e-2
    with torch.no_grad():
        logits = model(ids).logits  # the hook is gone
        assert (steered_logits - logits).abs().max() > 1e-2
        with steer(model, HP, torch.zeros(576)):
            assert torch.equal(model(ids).logits, logits)


def test_kl_grows_with_alpha_and_matches_a_direct_computation(smollm2):
    model, tok = smollm2
    s = setup(model, tok, HP, {"n_prompts": 2, "max_new_tokens": 6})
    u = torch.randn(576, generator=torch.Generator().manual_seed(1))
    u = s.resid_norm * u / u.norm()
    kls = [mean_kl(s, a * u) for a in (0.05, 0.15, 0.45)]
    assert 0 < kls[0] < kls[1] < kls[2]
    assert mean_kl(s, 0 * u) == pytest.approx(0, abs=1e-6)
    # one sequence at a time, KL(clean || steered) = sum p (log p - log q) by hand
    per_pos = []
    for seq, (a, b) in zip(s.seqs, s.spans, strict=True):
        x = torch.tensor([seq])
        with torch.no_grad():
            lp = model(x).logits[0, a:b].log_softmax(-1)
            with steer(model, HP, 0.15 * u):
                lq = model(x).logits[0, a:b].log_softmax(-1)
        per_pos.append((lp.exp() * (lp - lq)).sum(-1))
    assert kls[1] == pytest.approx(float(torch.cat(per_pos).mean()), rel=1e-3)
    # the scorer's batched, padded log-likelihood equals a one-by-one computation
    texts, expl = ["Short.", "A much longer text about the weather today."], "the weather"
    got = explanation_logprobs(model, tok, texts, expl, "Text: {text}\nAbout:")
    e = tok(" " + expl, add_special_tokens=False).input_ids
    for t, g in zip(texts, got, strict=True):
        ctx = ids_of(tok, f"Text: {t}\nAbout:")
        with torch.no_grad():
            lp = model(torch.tensor([ctx + e])).logits[0].log_softmax(-1)
        want = np.mean([float(lp[len(ctx) - 1 + j, tok_id]) for j, tok_id in enumerate(e)])
        assert g == pytest.approx(want, abs=1e-4)


def digit_direction(model, tok) -> torch.Tensor:
    """Mean residual at LAYER on digit-heavy text minus that on prose (BOS excluded)."""

    def mean(texts):
        hs = [hidden_states(model, torch.tensor([ids_of(tok, t)]), [HP])[HP][0, 1:] for t in texts]
        return torch.cat(hs).mean(0)

    return mean(DIGITS) - mean(PROSE)


def test_planted_digit_direction_scores_its_explanation(tmp_path, smollm2, smollm2_spec):
    model, tok = smollm2
    sae = TopKSAE(576, 4, 1, input_scale=0.5)
    d = digit_direction(model, tok)
    with torch.no_grad():
        sae.W_dec[0] = sae.W_dec[1] = d / d.norm()  # the same latent, two candidate explanations
    from_topk_sae(sae).save(tmp_path / "sae")
    expl = pd.DataFrame(
        {
            "latent": [0, 1, 2, 3],
            "explanation": ["numbers and digits", "names of flowers", None, "  "],
            "status": ["ok", "ok", "parse_error", "ok"],
        }
    )
    write_parquet(expl, tmp_path / "explanations.parquet")
    cfg = {"kind": "intervention", "name": "steer", "n_prompts": 3, "max_new_tokens": 10, "seed": 0}
    pred_out, met_out = tmp_path / "pred.parquet", tmp_path / "met.parquet"
    run_intervention(
        tmp_path / "sae", smollm2_spec, {}, f"resid_post.{LAYER}", tmp_path / "explanations.parquet", cfg,
        pred_out, met_out, scorer_spec=smollm2_spec, model=model, tokenizer=tok,
    )  # fmt: skip
    pred, met = read_parquet(pred_out), read_parquet(met_out)
    assert list(met.columns) == list(METRIC_COLUMNS) and list(pred.columns) == list(PREDICTION_COLUMNS)
    assert met["latent"].tolist() == [0, 1, 2, 3] and set(met["scorer"]) == {"steer"}
    assert met["status"].tolist() == ["ok", "ok", "no_explanation: parse_error", "no_explanation: empty"]
    assert met["n"].tolist() == [3, 3, 0, 0] and met["score"].iloc[2:].isna().all()
    assert sorted(set(pred["latent"])) == [0, 1] and (pred["status"] == "ok").all()
    # calibrated: the achieved KL is within 10% of the 1-nat target, and recomputes to the same value
    assert np.all(np.abs(met["kl"].iloc[:2] - 1.0) <= 0.1)
    s = setup(model, tok, HP, cfg)
    alpha = float(met["alpha"].iloc[0])
    assert mean_kl(s, alpha * s.resid_norm * d / d.norm()) == pytest.approx(met["kl"].iloc[0], rel=1e-4)
    # steering toward digits writes digits; the explanation naming them gains more than an unrelated one
    rows = pred[pred["latent"] == 0]
    n_digits = [sum(ch.isdigit() for ch in "".join(rows[c])) for c in ("clean", "steered")]
    assert n_digits[1] >= n_digits[0] + 10, rows[["clean", "steered"]].to_string()
    score = met.set_index("latent")["score"]
    assert score[0] > 0 and score[0] > score[1] + 0.2, met.to_string()
    assert pred.groupby("latent")["steered"].apply(tuple).nunique() == 1  # same direction, same text


def test_unreachable_target_is_a_calibration_failure(smollm2):
    model, tok = smollm2
    directions = TopKSAE(576, 2, 1).W_dec.detach()
    expl = pd.DataFrame({"latent": [1], "explanation": ["anything"], "status": ["ok"]})
    cfg = {"n_prompts": 1, "max_new_tokens": 3, "max_alpha": 1e-3}
    pred, met = score_latents(model, tok, directions, HP, expl, cfg)
    assert met["status"].tolist() == ["calibration_failed"] and met["n_failed"].tolist() == [1]
    assert np.isnan(met["score"].iloc[0]) and met["alpha"].iloc[0] == 1e-3 and met["kl"].iloc[0] < 0.01
    assert pred["steered"].isna().all() and pred["logp_clean"].isna().all()
    assert "max_alpha" in pred["error"].iloc[0] and pred["clean"].iloc[0].startswith("The")
