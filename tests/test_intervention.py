from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from interpflow.activations import add_at, decoder_layers, hidden_states, site_module
from interpflow.dictionaries.dictionary import from_topk_sae
from interpflow.models import load_model
from interpflow.sae.model import TopKSAE
from interpflow.scoring.intervention import (
    METRIC_COLUMNS,
    PREDICTION_COLUMNS,
    calibrate,
    check_cfg,
    clean_run,
    mean_kl,
    run_intervention,
    score_latents,
)
from interpflow.scoring.intervention_inputs import (
    Prompt,
    cut_at_first_activation,
    latent_prompts,
    quintiles,
    shuffled_donors,
)
from interpflow.scoring.intervention_model import cache_name, continuations, explanation_logprobs
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
    "He opened the letter and read it twice before he spoke.",
    "The market was busy with people buying bread and fruit.",
    "A cold wind blew across the hills as night came on.",
    "They talked for hours about books they had loved as children.",
    "The teacher smiled and asked the class to open their books.",
    "Our neighbours planted roses along the fence last spring.",
    "The ship left the harbour early on a grey morning.",
]


class ToyTokenizer:
    def decode(self, ids, skip_special_tokens=True):
        return " ".join(f"t{i}" for i in ids)


@pytest.fixture(scope="module")
def smollm2(smollm2_spec):
    # many tiny forward passes: one thread avoids thread hand-offs that dominate on a busy 2-core machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model(smollm2_spec, {"device": "cpu"})
    torch.set_num_threads(threads)


def ids_of(tok, text: str) -> list[int]:
    return [tok.bos_token_id, *tok(text, add_special_tokens=False).input_ids]


def example_table(tok, latent: int, texts: list[str], split: str = "test") -> pd.DataFrame:
    """Activating windows of `latent`: window i fires first at token 2 + i % 4 (peak 1 + i), again later."""
    rows = []
    for i, text in enumerate(texts):
        toks = tok(text, add_special_tokens=False).input_ids
        acts = np.zeros(len(toks), np.float32)
        acts[2 + i % 4], acts[-1] = 1.0 + i, 0.5
        rows.append(dict(latent=latent, example_id=i, split=split, activating=True, tokens=toks,
                         token_strs=tok.convert_ids_to_tokens(toks), acts=acts, max_act=float(acts.max()),
                         quantile=0))  # fmt: skip
    return pd.DataFrame(rows)


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
    assert (c["n_prompts"], c["n_samples"], c["max_new_tokens"], c["temperature"]) == (2, 2, 8, 1.0)
    for bad, key in [
        ({"n_prompts": 0}, "n_prompts"),
        ({"n_samples": 0}, "n_samples"),
        ({"prompt_template": "about:"}, "prompt_template"),
        ({"target_kl": 0}, "target_kl"),
        ({"prompt_split": "val"}, "prompt_split"),
        ({"n_shots": 9}, "n_shots"),
        ({"prompts": ["The"]}, "prompts"),
    ]:
        with pytest.raises(ValueError, match=key):
            check_cfg(bad)


def test_prompts_are_cut_at_the_first_activation():
    assert cut_at_first_activation([5, 6, 7, 8, 9], [0, 0, 0.5, 0, 2], bos=1) == [1, 5, 6, 7]
    assert cut_at_first_activation([1, 5, 6], [0, 3, 0], bos=1) == [1, 5]  # a sequence start: no second BOS
    with pytest.raises(ValueError, match="act > 0"):
        cut_at_first_activation([5, 6], [0, 0], bos=1)
    table = pd.DataFrame(
        {
            "example_id": [0, 1, 2, 3],
            "split": ["test", "test", "train", "test"],
            "activating": [True, True, True, False],
            "tokens": [[5, 6, 7, 8], [9, 10, 11], [12, 13], [14, 15]],
            "acts": [[0, 0, 2, 3], [4, 0, 1], [1, 0], [0, 0]],
            "max_act": [3.0, 4.0, 1.0, 0.0],
        }
    )
    got = latent_prompts(table, 10, "test", 1, ToyTokenizer(), np.random.default_rng(0))
    assert sorted((p.example_id, tuple(p.ids), p.text) for p in got) == [
        (0, (1, 5, 6, 7), "t5 t6 t7"),
        (1, (1, 9), "t9"),
    ]  # the train window and the non-activating one never become prompts
    every = latent_prompts(table, 10, "all", 1, ToyTokenizer(), np.random.default_rng(0))
    assert sorted(p.example_id for p in every) == [0, 1, 2]


def test_prompts_are_stratified_by_quintile():
    assert quintiles(np.arange(10.0)[::-1]).tolist() == [4, 4, 3, 3, 2, 2, 1, 1, 0, 0]
    rng = np.random.default_rng(3)
    peaks = rng.permutation(25) + 1.0
    table = pd.DataFrame({"example_id": np.arange(25), "split": "test", "activating": True,
                          "tokens": [[7, 8]] * 25, "acts": [[p, 0] for p in peaks],
                          "max_act": peaks})  # fmt: skip
    q_of = dict(zip(range(25), quintiles(peaks), strict=True))
    picks = []
    for seed in range(4):
        for n, per_bin in [(5, {1}), (10, {2}), (7, {1, 2})]:
            got = latent_prompts(table, n, "test", 1, ToyTokenizer(), np.random.default_rng(seed))
            counts = np.bincount([q_of[p.example_id] for p in got], minlength=5)
            assert len(got) == n and set(counts) <= per_bin, (seed, n, counts)
            assert all(p.quintile == q_of[p.example_id] for p in got)
        picks.append(tuple(p.example_id for p in got))
    assert len(set(picks)) > 1  # the seed picks which windows of each quintile
    assert len(latent_prompts(table, 40, "test", 1, ToyTokenizer(), np.random.default_rng(0))) == 25
    for n in range(2, 7):
        donors = shuffled_donors(np.arange(10, 10 + n), seed=n)
        assert sorted(donors) == sorted(donors.values()) == list(range(10, 10 + n))
        assert all(a != b for a, b in donors.items())  # never its own explanation
    assert shuffled_donors(np.array([4]), 0) == {}


def test_steer_adds_the_vector_only_where_the_mask_says(smollm2):
    model, tok = smollm2
    ids = torch.tensor([ids_of(tok, "The cat sat on the mat and looked outside.")])  # (1, T)
    v = 20 * torch.randn(576, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(ids.shape)
    mask[0, 6:] = 1
    clean = hidden_states(model, ids, [HP, NEXT])
    with torch.no_grad(), add_at(model, HP, v, mask):
        steered = hidden_states(model, ids, [HP, NEXT])
    torch.testing.assert_close(steered[HP], clean[HP] + mask[..., None] * v)
    # causal: everything before the first steered position is untouched, also in the next layer
    torch.testing.assert_close(steered[NEXT][0, :6], clean[NEXT][0, :6])
    assert (steered[NEXT][0, 6:] - clean[NEXT][0, 6:] - v).abs().max() > 1e-2
    with torch.no_grad(), add_at(model, HP, v):  # no mask: every position
        torch.testing.assert_close(hidden_states(model, ids, [HP])[HP], clean[HP] + v)


def test_generation_never_steers_bos_or_the_prompt(smollm2):
    model, tok = smollm2
    prompt, c = ids_of(tok, "The old house stood at"), check_cfg({"n_samples": 3, "max_new_tokens": 4})
    v = 5 * torch.randn(576, generator=torch.Generator().manual_seed(2))
    site, _ = site_module(model, HP)
    seen, after = (
        [],
        [],
    )  # the site's own output (hook registered before steering's) and the next layer's input
    h1 = site.register_forward_hook(
        lambda _m, _a, out: seen.append(out[0] if isinstance(out, tuple) else out)
    )
    h2 = decoder_layers(model)[LAYER + 1].register_forward_pre_hook(
        lambda _m, args, kwargs: after.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True
    )
    try:
        steered = continuations(model, prompt, c, 11, (HP, v))
    finally:
        h1.remove()
        h2.remove()
    calls = [b - a for a, b in zip(seen, after, strict=True)]
    assert [x.shape[:2] for x in calls] == [(3, len(prompt) - 1)] + [(3, 1)] * 4
    assert torch.equal(calls[0], torch.zeros_like(calls[0]))  # BOS and the prompt up to its last token: clean
    for x in calls[1:]:  # the positions whose next token is sampled: steered by exactly v
        torch.testing.assert_close(x, v.expand_as(x))
    clean = continuations(model, prompt, c, 11)
    assert clean == continuations(model, prompt, c, 11) and len(clean) == 3 and clean != steered
    assert len({tuple(g) for g in clean}) > 1  # sampled, not greedy


def test_kl_matches_a_direct_computation(smollm2):
    model, tok = smollm2
    prompts = [Prompt(i, 0, ids_of(tok, t), t) for i, t in enumerate(["She walked slowly", "Rain fell on"])]
    c = check_cfg({"n_samples": 2, "max_new_tokens": 5})
    s = clean_run(model, tok, HP, prompts, c, latent=0)
    assert len(s.seqs) == 4 and all(b - a == 5 for a, b in s.spans)
    u = torch.randn(576, generator=torch.Generator().manual_seed(1))
    u = s.resid_norm * u / u.norm()
    kls = [mean_kl(s, a * u) for a in (0.05, 0.15, 0.45)]
    assert 0 < kls[0] < kls[1] < kls[2]
    assert mean_kl(s, 0 * u) == pytest.approx(0, abs=1e-6)
    # one sequence at a time: the prefix read clean into a cache, the sampled positions read steered
    per_pos = []
    for seq, (a, b) in zip(s.seqs, s.spans, strict=True):
        with torch.no_grad():
            lp = model(torch.tensor([seq])).logits[0, a:b].log_softmax(-1)
            past = model(torch.tensor([seq[:a]]), use_cache=True)[cache_name(model)]
            with add_at(model, HP, 0.15 * u):
                lq = model(torch.tensor([seq[a:b]]), **{cache_name(model): past}).logits[0].log_softmax(-1)
        per_pos.append((lp.exp() * (lp - lq)).sum(-1))
    assert kls[1] == pytest.approx(float(torch.cat(per_pos).mean()), rel=1e-3)
    # the scorer's batched, padded log-likelihood after a few-shot prefix equals a one-by-one computation
    texts, expl, prefix = ["Short.", "A much longer text about the weather today."], "the weather", "Q: x\n\n"
    got = explanation_logprobs(model, tok, texts, expl, "Text: {text}\nAbout:", prefix)
    e = tok(" " + expl, add_special_tokens=False).input_ids
    for t, g in zip(texts, got, strict=True):
        ctx = ids_of(tok, f"{prefix}Text: {t}\nAbout:")
        with torch.no_grad():
            lp = model(torch.tensor([ctx + e])).logits[0].log_softmax(-1)
        want = np.mean([float(lp[len(ctx) - 1 + j, tok_id]) for j, tok_id in enumerate(e)])
        assert g == pytest.approx(want, abs=1e-4)


def digit_direction(model, tok) -> torch.Tensor:
    """Mean residual at LAYER on digit-heavy text minus that on prose (BOS excluded)."""

    def mean(texts):
        hs = [hidden_states(model, torch.tensor([ids_of(tok, t)]), [HP])[HP][0, 1:] for t in texts]
        return torch.cat(hs).mean(0)

    return mean(DIGITS) - mean(PROSE[:3])


def test_planted_digit_direction_scores_its_explanation(tmp_path, smollm2, smollm2_spec):
    model, tok = smollm2
    sae = TopKSAE(576, 5, 1, input_scale=0.5)
    d = digit_direction(model, tok)
    with torch.no_grad():
        sae.W_dec[0] = sae.W_dec[1] = d / d.norm()  # the same latent, two candidate explanations
    from_topk_sae(sae).save(tmp_path / "sae")
    expl = pd.DataFrame(
        {
            "latent": [0, 1, 2, 3, 4],
            "explanation": ["numbers and digits", "names of flowers", None, "  ", "kinds of animals"],
            "status": ["ok", "ok", "parse_error", "ok", "ok"],
        }
    )
    examples = pd.concat([example_table(tok, 0, PROSE), example_table(tok, 1, PROSE)], ignore_index=True)
    write_parquet(expl, tmp_path / "explanations.parquet")
    write_parquet(examples, tmp_path / "examples.parquet")
    cfg = {"kind": "intervention", "name": "steer", "seed": 0}
    pred_out, met_out = tmp_path / "pred.parquet", tmp_path / "met.parquet"
    run_intervention(
        tmp_path / "sae", smollm2_spec, {}, HP, tmp_path / "explanations.parquet",
        tmp_path / "examples.parquet", cfg, pred_out, met_out, scorer_spec=smollm2_spec, model=model,
        tokenizer=tok,
    )  # fmt: skip
    pred, met = read_parquet(pred_out), read_parquet(met_out)
    assert list(met.columns) == list(METRIC_COLUMNS) and list(pred.columns) == list(PREDICTION_COLUMNS)
    assert met["latent"].tolist() == [0, 1, 2, 3, 4] and set(met["scorer"]) == {"steer"}
    want = ["ok", "ok", "no_explanation: parse_error", "no_explanation: empty", "no_test_examples"]
    assert met["status"].tolist() == want and met["n"].tolist() == [5, 5, 0, 0, 0]
    assert sorted(set(pred["latent"])) == [0, 1] and (pred["status"] == "ok").all()
    # one prompt per activation quintile, each its window cut right after the first activating token
    rows = pred[pred["latent"] == 0]
    assert sorted(rows["quintile"]) == [0, 1, 2, 3, 4]
    for eid, prompt in zip(rows["example_id"], rows["prompt"], strict=True):
        toks = examples.loc[examples["example_id"] == eid, "tokens"].iloc[0]
        assert prompt == tok.decode(toks[: 3 + eid % 4])
    assert all(len(t.split("\n")) == 2 for t in rows["clean"])  # n_samples continuations per prompt
    # calibrated: the achieved KL, of the latent and of its random control, is within 10% of the target
    ok = met.iloc[:2]
    assert np.all(np.abs(ok[["kl", "kl_random"]].to_numpy() - 1.0) <= 0.1), ok.to_string()
    # steering toward digits writes digits; the explanation naming them gains more than an unrelated one
    n_digits = [sum(ch.isdigit() for ch in "".join(rows[c])) for c in ("clean", "steered", "random_steered")]
    assert n_digits[1] >= n_digits[0] + 10 and n_digits[1] > n_digits[2], rows.to_string()
    m = met.set_index("latent")
    assert m.loc[0, "score"] > 0 and m.loc[0, "score"] > m.loc[1, "score"] + 0.2, met.to_string()
    # the floors: the same explanation under a random direction, another latent's explanation here
    assert m.loc[0, "score"] > m.loc[0, "score_random_direction"] + 0.2, met.to_string()
    # the shuffled control is another latent's explanation on these same texts. Measured: with 5 prompts x 2
    # samples the gain of one explanation varies by ~0.6 nats between seeds (0.13 vs 0.76 for "names of
    # flowers"), so only its presence is asserted here
    donor = rows["shuffled_from"].iloc[0]
    assert donor in {1, 4} and m.loc[[0, 1], ["score_random_direction", "score_shuffled"]].notna().all().all()


def test_unreachable_target_is_a_calibration_failure(smollm2):
    model, tok = smollm2
    directions = TopKSAE(576, 2, 1).W_dec.detach()
    expl = pd.DataFrame({"latent": [1], "explanation": ["anything"], "status": ["ok"]})
    cfg = {"n_prompts": 1, "n_samples": 1, "max_new_tokens": 3, "max_alpha": 1e-3}
    pred, met = score_latents(model, tok, directions, HP, expl, example_table(tok, 1, PROSE[:2]), cfg)
    assert met["status"].tolist() == ["calibration_failed"] and met["n_failed"].tolist() == [1]
    assert np.isnan(met["score"].iloc[0]) and met["alpha"].iloc[0] == 1e-3 and met["kl"].iloc[0] < 0.01
    assert pred["steered"].isna().all() and pred["logp_clean"].isna().all()
    assert "max_alpha" in pred["error"].iloc[0] and pred["shuffled_from"].tolist() == [-1]


def test_the_scorer_model_is_loaded_with_its_own_models_entry(tmp_path, monkeypatch):
    """Not with the subject's: a scorer on another device or dtype than the subject must get its own."""
    import interpflow.models

    sae = TopKSAE(8, 2, 1)
    from_topk_sae(sae).save(tmp_path / "sae")
    explanations = pd.DataFrame({"latent": [0], "explanation": ["x"], "status": ["ok"]})
    write_parquet(explanations, tmp_path / "e.parquet")
    write_parquet(pd.DataFrame({"latent": [0], "example_id": [0], "split": ["test"], "activating": [True],
                                "tokens": [[1, 2]], "token_strs": [["a", "b"]], "acts": [[0.0, 1.0]],
                                "max_act": [1.0]}),
                  tmp_path / "x.parquet")  # fmt: skip
    loaded = []

    class Stop(Exception):
        pass

    def fake_load(spec, cfg):
        loaded.append((Path(spec).name, cfg))
        raise Stop

    monkeypatch.setattr(interpflow.models, "load_model", fake_load)
    with pytest.raises(Stop):
        run_intervention(tmp_path / "sae", tmp_path / "subject.json", {"dtype": "float32"}, HP,
                         tmp_path / "e.parquet", tmp_path / "x.parquet", {"kind": "intervention"},
                         tmp_path / "p.parquet", tmp_path / "m.parquet", scorer_spec=tmp_path / "judge.json",
                         scorer_cfg={"dtype": "bfloat16"}, model=object(), tokenizer=object())  # fmt: skip
    assert loaded == [("judge.json", {"dtype": "bfloat16"})]
