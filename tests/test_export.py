"""The exports: Neuronpedia import records of one unit, and the flat explanations-and-scores table."""

import gzip
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from interpflow.export.neuronpedia import export_neuronpedia
from interpflow.export.neuronpedia_records import validate_records
from interpflow.export.publish import export_table, flat_table

UNIT = dict(
    corpus="wiki", model="Gemma3-270M", hookpoint="resid_post.9", dictionary="topk-4k", sampler="default"
)
SOURCE = "9-interpflow-resid_post-topk-4k"


def window(latent, example_id, acts, activating=True, tokens=None):
    tokens = tokens or [f"t{i}" for i in range(len(acts))]
    return dict(
        latent=latent,
        example_id=example_id,
        split="train",
        activating=activating,
        seq=7 + example_id,
        start=32,
        tokens=np.arange(len(acts), dtype=np.int32),
        token_strs=tokens,
        acts=np.array(acts, dtype=np.float32),
        max_act=np.float32(max(acts)),
        quantile=0 if activating else -1,
        negative="" if activating else "random",
    )


def write_shard(tmp_path, shard, latents, windows, explanations, metrics):
    """One shard's files and its entry of export_neuronpedia's `shards`."""
    d = tmp_path / f"shard{shard}"
    d.mkdir()
    stats = pd.DataFrame(dict(latent=latents, count=[10 * (i + 1) for i in range(len(latents))],
                              frequency=[0.125 * (i + 1) for i in range(len(latents))],
                              max=[1.5 + i for i in range(len(latents))]))  # fmt: skip
    stats.to_parquet(d / "stats.parquet")
    selected = sorted({w["latent"] for w in windows})
    pd.DataFrame(dict(latent=selected, status="ok")).to_parquet(d / "selected.parquet")
    pd.DataFrame(windows).to_parquet(d / "examples.parquet")
    explainers, scores = [], []
    for name, (kind, rows) in explanations.items():
        pd.DataFrame(rows).to_parquet(d / f"{name}.parquet")
        explainers.append(dict(name=name, kind=kind, explanations=str(d / f"{name}.parquet")))
    for (name, scorer), rows in metrics.items():
        pd.DataFrame(rows).to_parquet(d / f"{name}-{scorer}.parquet")
        scores.append(
            dict(explainer=name, scorer=scorer, kind=scorer, metrics=str(d / f"{name}-{scorer}.parquet"))
        )
    return dict(unit=dict(UNIT, shard=shard), examples=str(d / "examples.parquet"),
                selected=str(d / "selected.parquet"), stats=str(d / "stats.parquet"),
                explainers=explainers, scores=scores)  # fmt: skip


def expl(latent, text, status="ok", model="openai/gpt-x", **extra):
    return dict(latent=latent, explanation=text, status=status, model=model, **extra)


@pytest.fixture
def shards(tmp_path):
    s0 = write_shard(
        tmp_path, 0, [0, 1, 2, 3],
        [window(1, 0, [0.0, 0.5, 2.0, 1.0], tokens=["a", " b", "c", "d"]), window(1, 1, [0.25, 0.0, 0.0]),
         window(1, 2, [0.0, 0.0, 0.0], activating=False), window(3, 0, [3.0, 3.0, 1.0])],
        {"llm1": ("llm", [expl(1, "commas"), expl(3, None, status="parse_error")]),
         "random": ("random", [expl(1, "numbers", model="random", donor_latent=3),
                               expl(3, "commas", model="random", donor_latent=1)])},
        {("llm1", "detection"): [dict(latent=1, status="ok", score=0.75, auroc=0.75, score_metric="auroc"),
                                 dict(latent=3, status="no_explanation: parse_error", score=math.nan,
                                      auroc=math.nan, score_metric="")]},
    )  # fmt: skip
    s1 = write_shard(tmp_path, 1, [4, 5], [window(5, 0, [0.0, 4.0])], {"llm1": ("llm", [expl(5, "dates")]),
                     "random": ("random", [expl(5, "commas", model="random", donor_latent=1)])},
                     {("llm1", "detection"): [dict(latent=5, status="ok", score=0.5, auroc=0.5,
                                                   score_metric="auroc")]})  # fmt: skip
    return [s0, s1]


def read_gz(path):
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]


def test_records_carry_the_runs_values(shards, tmp_path):
    out = tmp_path / "np"
    counts = export_neuronpedia(shards, out, model_id="gemma-3-270m", features_per_batch=2)
    # the random baseline's explanations are another latent's text: never published as this one's
    assert counts == dict(features=3, activations=4, explanations=2, explanation_scores=2)
    src = out / "gemma-3-270m" / SOURCE
    f0 = read_gz(src / "features/batch-0.jsonl.gz")
    # latents 1 and 3 are the selected ones of shard 0: stats rows 1 and 3 (max 2.5 / 4.5, freq 0.25 / 0.5)
    assert [(f["index"], f["maxActApprox"], f["frac_nonzero"]) for f in f0] == [
        ("1", 2.5, 0.25),
        ("3", 4.5, 0.5),
    ]
    assert [f["index"] for f in read_gz(src / "features/batch-1.jsonl.gz")] == ["5"]
    a0 = read_gz(src / "activations/batch-0.jsonl.gz")
    # strongest window first; the non-activating window is not an Activation
    assert [(a["index"], a["maxValue"], a["maxValueTokenIndex"], a["minValue"]) for a in a0] == [
        ("1", 2.0, 2, 0.0), ("1", 0.25, 0, 0.0), ("3", 3.0, 0, 1.0)]  # fmt: skip
    assert a0[0]["tokens"] == ["a", " b", "c", "d"] and a0[0]["values"] == [0.0, 0.5, 2.0, 1.0]
    assert a0[0]["layer"] == SOURCE and a0[0]["modelId"] == "gemma-3-270m" and a0[0]["dataIndex"] == "7:32"
    e0 = read_gz(src / "explanations/batch-0.jsonl.gz")
    assert [(e["index"], e["description"], e["typeName"], e["explanationModelName"]) for e in e0] == [
        ("1", "commas", "interpflow_llm1", "openai/gpt-x"),
    ]
    (score,) = read_gz(src / "explanation_scores/batch-0.jsonl.gz")
    assert score["value"] == 0.75 and score["explanationId"] == e0[0]["id"]
    assert json.loads(score["jsonDetails"])["score_metric"] == "auroc"
    assert json.loads((src / "source.jsonl").read_text())["setName"] == "interpflow-resid_post-topk-4k"
    types = [
        json.loads(line)["name"] for line in (out / "config/explanation_type.jsonl").read_text().splitlines()
    ]
    assert types == ["interpflow_llm1"]


def test_batches_split_and_round_trip_byte_for_byte(shards, tmp_path):
    export_neuronpedia(shards, tmp_path / "a", features_per_batch=1)
    src = tmp_path / "a" / "gemma3-270m" / SOURCE  # model id defaults to ours, lower-cased
    assert sorted(p.name for p in (src / "features").iterdir()) == [f"batch-{i}.jsonl.gz" for i in range(3)]
    assert [len(read_gz(src / f"activations/batch-{i}.jsonl.gz")) for i in range(3)] == [2, 1, 1]
    # latent 3 has no explanation scores: that batch is absent rather than empty
    assert sorted(p.name for p in (src / "explanation_scores").iterdir()) == [
        "batch-0.jsonl.gz",
        "batch-2.jsonl.gz",
    ]
    export_neuronpedia(shards, tmp_path / "b", features_per_batch=1)
    for path in sorted((tmp_path / "a").rglob("*.*")):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()
    # a smaller export into the same folder leaves no batch of the previous one behind
    export_neuronpedia(shards, tmp_path / "a", features_per_batch=5)
    assert [p.name for p in (src / "features").iterdir()] == ["batch-0.jsonl.gz"]


def edit_first(path, change):
    records = read_gz(path)
    change(records[0])
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))


BATCH = r"batch-0.jsonl.gz, line 1, field "


@pytest.mark.parametrize(
    "kind, change, message",
    [
        ("activations", lambda r: r.pop("maxValue"), "activations/" + BATCH + "'maxValue': missing"),
        (
            "activations",
            lambda r: r.update(maxValueTokenIndex="2"),
            BATCH + "'maxValueTokenIndex': '2' is not",
        ),
        (
            "activations",
            lambda r: r.update(index="2"),
            BATCH + "'index': '2' does not match an exported feature",
        ),
        (
            "activations",
            lambda r: r.update(maxValue=1.0),
            BATCH + "'maxValue': maxValue / maxValueTokenIndex",
        ),
        ("features", lambda r: r.update(layer="9-other"), "features/" + BATCH + "'layer'"),
        ("features", lambda r: r.update(colour="red"), BATCH + "'colour': not a column of Neuron"),
        ("explanations", lambda r: r.update(description=None), BATCH + "'description': null, but"),
        (
            "explanations",
            lambda r: r.update(typeName="x"),
            BATCH + "'typeName': 'x' does not match a name in config",
        ),
    ],
)
def test_validator_names_file_line_and_field(shards, tmp_path, kind, change, message):
    out = tmp_path / "np"
    export_neuronpedia(shards, out, features_per_batch=2)
    edit_first(out / "gemma3-270m" / SOURCE / kind / "batch-0.jsonl.gz", change)
    with pytest.raises(ValueError, match=message):
        validate_records(out)


def test_validator_checks_the_metadata_and_layout(shards, tmp_path):
    out = tmp_path / "np"
    export_neuronpedia(shards, out)
    src = out / "gemma3-270m" / SOURCE
    bad = out / "gemma3-270m" / "9-elsewhere"
    shutil.copytree(src, bad)  # a source folder whose records name another source
    with pytest.raises(ValueError, match=r"9-elsewhere/source.jsonl, line 1, field 'id'"):
        validate_records(out)
    shutil.rmtree(bad)
    (src / "model.jsonl").write_text(json.dumps({"id": "gemma3-270m", "creatorId": "u"}) + "\n")
    with pytest.raises(ValueError, match=r"model.jsonl, line 1, field 'layers': missing"):
        validate_records(out)


def test_export_refuses_two_units_and_empty_batches(shards, tmp_path):
    other = dict(shards[1], unit=dict(shards[1]["unit"], dictionary="relu-4k"))
    with pytest.raises(ValueError, match="one unit at a time"):
        export_neuronpedia([shards[0], other], tmp_path / "np")
    with pytest.raises(ValueError, match="features_per_batch"):
        export_neuronpedia(shards, tmp_path / "np", features_per_batch=0)


def long_rows():
    """Two latents x two explainers; `random` has no fuzzing; one failed detection."""
    rows = []
    for latent, text in [(4, "commas"), (9, None)]:
        for explainer, kind in [("llm1", "llm"), ("random", "random")]:
            for scorer in ["detection", "fuzzing"] if explainer == "llm1" else ["detection"]:
                ok = not (latent == 9 and explainer == "llm1" and scorer == "detection")
                rows.append(
                    dict(
                        UNIT,
                        explainer=explainer,
                        explainer_kind=kind,
                        subject="trained SAE",
                        scorer=scorer,
                        latent=latent,
                        status="ok" if ok else "llm_error",
                        score=0.5 + latent / 100 + (scorer == "fuzzing") / 10 if ok else 0.9,
                        explanation=text,
                        explanation_status="ok" if text else "skipped",
                    )
                )
    return pd.DataFrame(rows)


def test_flat_table_pivots_the_long_table(tmp_path):
    long = long_rows().sample(frac=1, random_state=0)  # the pivot may not rely on row order
    long.to_parquet(tmp_path / "latents.parquet")
    assert export_table(tmp_path / "latents.parquet", tmp_path / "t.parquet", tmp_path / "t.jsonl") == 4
    table = pd.read_parquet(tmp_path / "t.parquet")
    assert list(table.columns[-4:]) == [
        "score_detection",
        "status_detection",
        "score_fuzzing",
        "status_fuzzing",
    ]
    assert list(zip(table["latent"], table["explainer"], strict=True)) == [
        (4, "llm1"), (4, "random"), (9, "llm1"), (9, "random")]  # fmt: skip
    assert table["score_detection"].tolist()[:2] == [0.54, 0.54] and math.isnan(table["score_detection"][2])
    assert table["status_detection"].tolist() == ["ok", "ok", "llm_error", "ok"]
    assert table["score_fuzzing"].tolist()[0] == pytest.approx(0.64) and math.isnan(table["score_fuzzing"][1])
    rows = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert rows[1]["score_fuzzing"] is None and rows[1]["status_fuzzing"] is None
    assert rows[2]["score_detection"] is None and rows[2]["explanation"] is None
    assert rows[0] == dict(
        UNIT,
        latent=4,
        explainer="llm1",
        explainer_kind="llm",
        subject="trained SAE",
        explanation="commas",
        explanation_status="ok",
        score_detection=0.54,
        status_detection="ok",
        score_fuzzing=rows[0]["score_fuzzing"],
        status_fuzzing="ok",
    )


def test_flat_table_refuses_a_repeated_score():
    long = long_rows()
    with pytest.raises(ValueError, match="repeats"):
        flat_table(pd.concat([long, long.iloc[:1]]))
