"""The planted dictionary (interpflow.planted): probes of token properties, fitted on a real model's
activations, must load through the workflow's SAELens loader and fire on their property's tokens; the
random-direction controls must fire as often without meaning it. Also the `file` explainer that gives
the planted latents their oracle explanations."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from interpflow.activations import cache_activations
from interpflow.corpus import build_tokens
from interpflow.dictionaries.pretrained import load_pretrained
from interpflow.file_explainer import explain_from_table, read_explanation_table
from interpflow.planted import PROPERTIES, FitOptions, build_planted, names_property, vocab_texts

N_SEQ, CTX, HOOKPOINT = 40, 64, "resid_post.3"
PROPS = ["comma", "digit"]


@pytest.fixture(scope="module")
def planted(smollm2_spec, tmp_path_factory):
    """40 x 64 tokens of the offline Wikipedia corpus through SmolLM2's layer 3, and the dictionary."""
    root = tmp_path_factory.mktemp("planted")
    build_tokens({"source": "wiki-offline", "n_sequences": N_SEQ, "ctx_len": CTX, "seed": 0}, smollm2_spec,
                 root / "tokens.h5")  # fmt: skip
    cache_activations(root / "tokens.h5", smollm2_spec, {"batch_size": 8, "device": "cpu"}, [HOOKPOINT],
                      [root / "activations.h5"])  # fmt: skip
    table = build_planted(root / "activations.h5", root / "tokens.h5", smollm2_spec.parent / "vocab.parquet",
                          root / "dict", properties=PROPS, hookpoint=HOOKPOINT,
                          opts=FitOptions(n_sequences=N_SEQ, steps=200))  # fmt: skip
    return root, table


def sequences(root, vocab, first: int):
    """Sequences first.. of the sample, BOS dropped: activations [n, d] and the labels the properties
    mean, computed here from the token text directly."""
    with h5py.File(root / "tokens.h5") as f:
        tokens = f["tokens"][first:, 1:].reshape(-1)
    with h5py.File(root / "activations.h5") as f:
        acts = f["activations"][first * CTX :].reshape(N_SEQ - first, CTX, -1)  # [seq, pos, d]
    acts = acts[:, 1:].reshape(len(tokens), -1)
    text = [vocab[t].strip() for t in tokens]
    comma = np.array([s == "," for s in text])
    digit = np.array([any(c in "0123456789" for c in s) for s in text])
    return torch.from_numpy(acts), np.stack([comma, digit], 1)


def test_planted_latents_fire_on_their_property_and_controls_at_its_rate(planted, smollm2_spec):
    root, table = planted
    d = load_pretrained("saelens", root / "dict")
    assert (d.activation, d.width, d.d_in) == ("jumprelu", 4, 576)
    vocab = vocab_texts(smollm2_spec.parent / "vocab.parquet")
    for first in (N_SEQ // 2, 0):  # the held-out half (the probes never saw it), then the whole sample
        x, truth = sequences(root, vocab, first)
        values, indices = d.encode(x)
        fires = torch.zeros(len(x), 4, dtype=torch.bool).scatter_(1, indices, values > 0).numpy()
        hits = (fires & np.concatenate([truth, truth], 1)).sum(0)
        if first:
            assert truth.sum(0).min() >= 50  # enough held-out positives for the bars to mean something
            # a comma or a digit is linearly plain in the residual stream: a probe finds nearly all of them
            precision, recall = hits[:2] / fires[:, :2].sum(0), hits[:2] / truth.sum(0)
            assert (precision >= 0.85).all() and (recall >= 0.85).all(), (precision, recall)
            assert (hits[2:] / fires[:, 2:].sum(0).clip(1) < 0.5).all()  # a random direction: no property
        else:  # a control's cut is set on the whole sample: through the loader, it fires at the same rate
            np.testing.assert_allclose(fires[:, 2:].mean(0), truth.mean(0), rtol=0.1)
    # the written table measures the same held-out half the same way
    row = table.set_index("latent")
    assert row.loc[0, "property"] == "comma" and row.loc[2, "property"] == "comma"
    assert list(row["is_planted"]) == [True, True, False, False]
    assert (row.loc[[0, 1], "probe_accuracy"] > 0.9).all()


def test_oracle_table_holds_each_property_description(planted):
    root, _ = planted
    oracle = read_explanation_table(root / "dict" / "oracle.parquet")
    expected = [PROPERTIES[p].description for p in PROPS * 2]
    assert oracle["explanation"].tolist() == expected and oracle["latent"].tolist() == [0, 1, 2, 3]
    report = json.loads((root / "dict" / "planted.json").read_text())
    assert [r["property"] for r in report["latents"]] == PROPS * 2


def test_file_explainer_reads_selected_latents_and_names_what_is_missing(tmp_path):
    table = pd.DataFrame({"latent": [5, 6, 8], "explanation": ["commas", "  digits ", ""]})
    status, reason = ["ok", "ok", "ok", "ok", "skipped"], ["", "", "", "", "few"]
    latents = pd.DataFrame({"latent": [5, 6, 7, 8, 9], "status": status, "reason": reason})
    out = explain_from_table(latents, table, "oracle.parquet").set_index("latent")
    assert out.loc[5, "explanation"] == "commas" and out.loc[6, "explanation"] == "digits"
    assert list(out["status"]) == ["ok", "ok", "skipped", "skipped", "skipped"]
    assert "no explanation for latent 7 in oracle.parquet" in out.loc[7, "error"]
    assert out.loc[8, "error"].startswith("no explanation") and out.loc[9, "error"] == "few"
    table.to_json(tmp_path / "t.json", orient="records")
    assert read_explanation_table(tmp_path / "t.json")["latent"].tolist() == [5, 6, 8]
    pd.DataFrame({"latent": [1, 1], "explanation": ["a", "b"]}).to_parquet(tmp_path / "dup.parquet")
    with pytest.raises(ValueError, match="lists latents \\[1\\] more than once"):
        read_explanation_table(tmp_path / "dup.parquet")
    pd.DataFrame({"latent": [1]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="lacks columns \\['explanation'\\]"):
        read_explanation_table(tmp_path / "bad.parquet")


@pytest.mark.parametrize(
    ("text", "prop", "named"),
    [
        ("Commas separating clauses", "comma", True),
        ('the token ","', "comma", True),
        ("years and other numbers", "digit", True),
        ("historical events and figures", "digit", False),
        ('the word "the" before nouns', "the", True),
        ("the beginning of a sentence", "the", False),
        ("words that start with an uppercase letter", "capital", True),
        (None, "and", False),
    ],
)
def test_an_explanation_names_its_property(text, prop, named):
    assert names_property(text, prop) is named
