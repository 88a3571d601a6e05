"""The paper's tables (interpflow.paper) on a hand-built summary whose medians, intervals, correlations and
costs are computed here by hand."""

import math
import re

import numpy as np
import pandas as pd
import pytest

from interpflow.paper import (
    COLUMNS,
    ORDER,
    build_paper,
    build_tables,
    display_frame,
    load_published,
    main_table_markdown,
)

UNIT = dict(corpus="wiki", model="m", hookpoint="resid_post.9", sampler="default")
REFERENCE = dict(UNIT, dictionary="topk-4k", explainer="qwen")
ROLES = dict(fuzzing="fuzz", detection="det", simulation="sim", intervention="interv")
FUZZ = [0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9]  # reference, latents 0-6
DET = [0.4, 0.45, 0.55, 0.5, 0.6, 0.7, 0.8]  # one swap (latents 2, 3) against FUZZ: rho = 1 - 6*2/(7*48)
SIM = [0.1, 0.3, 0.2, 0.5, 0.4]  # latents 0-4: Pearson with FUZZ[:5] = 0.04 / sqrt(0.025 * 0.1) = 0.8
INTERV = [0.6, 0.5, 0.4, 0.3, 0.2, 0.0, 0.1]
Z = 1.959963984540054


def rows(scorer: str, scores, setting=REFERENCE, **columns) -> list[dict]:
    out = []
    for i, s in enumerate(scores):
        extra = {k: (v[i] if isinstance(v, list) else v) for k, v in columns.items()}
        out.append(dict(setting, scorer=scorer, latent=i, status="ok", score=s, n=10) | extra)
    return out


def latents_table(fuzz=FUZZ) -> pd.DataFrame:
    random_expl = dict(REFERENCE, explainer="random")
    random_sae = dict(REFERENCE, dictionary="random-4k")
    tokens = dict(n=[10] * 6 + [20], prompt_tokens=[1000 + 100 * i for i in range(6)] + [2600],
                  cached_tokens=500, completion_tokens=[25] * 6 + [30])  # fmt: skip
    table = (
        rows("fuzz", fuzz, **tokens)
        + rows("det", DET)
        + [dict(REFERENCE, scorer="det", latent=7, status="no_explanation: parse_error", score=np.nan, n=0)]
        + rows("sim", SIM)
        + [dict(REFERENCE, scorer="sim", latent=i, status="not_sampled", score=np.nan, n=0) for i in (5, 6)]
        + rows(
            "interv",
            INTERV,
            kl=[1.0] * 6 + [2.0],
            score_random_direction=0.05,
            score_shuffled=[0.1] * 6 + [np.nan],
        )  # fmt: skip
        + rows("fuzz", [0.5, 0.52, 0.48, 0.5, 0.51, 0.49, 0.5], random_expl)
        + rows("det", [0.5, 0.5, 0.5], random_expl)
        + rows("fuzz", [0.55, 0.6, 0.5], random_sae)
        + rows("interv", [0.0, 0.1, -0.1], random_sae)
        + rows("fuzz", [0.6, 0.7, 0.8], dict(REFERENCE, explainer="qwen-10"))
    )
    frame = pd.DataFrame(table)
    for c in ["prompt_tokens", "cached_tokens", "completion_tokens"]:
        frame[c] = frame[c].fillna(0).astype("int64")
    return frame


SPEC = dict(
    note="tiny hand-built run",
    reference=REFERENCE,
    roles=ROLES,
    subjects=[
        dict(label="trained", paper_row="Gemma-2-9B SAE, 131k latents"),
        dict(label="random explanation", paper_row="random explanation", explainer="random"),
        dict(label="random SAE", paper_row="randomly initialised TopK SAE", dictionary="random-4k"),
        dict(label="nothing", explainer="never-ran"),
    ],
    ablations=dict(examples_shown=[dict(label="10", explainer="qwen-10"), dict(label="40")]),
    layers=["resid_post.9", "resid_post.3"],
    intervention_random=dict(label="random SAE", dictionary="random-4k"),
    priced_models=["gpt-4o-mini", "no-such-model-xyz"],
)


def write_summary(path, latents: pd.DataFrame, extra: dict | None = None):
    path.mkdir(parents=True, exist_ok=True)
    latents.to_parquet(path / "latents.parquet", index=False)
    for name, frame in (extra or {}).items():
        frame.to_parquet(path / name, index=False)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("paper")
    summary = write_summary(base / "summary", latents_table())
    comparison = build_paper(summary, SPEC, base / "paper")
    return comparison, base / "paper"


def cell(comparison: pd.DataFrame, table: str, row: str, metric: str) -> pd.Series:
    hit = comparison[
        (comparison["table"] == table) & (comparison["row"] == row) & (comparison["metric"] == metric)
    ]
    assert len(hit) == 1, (table, row, metric)
    return hit.iloc[0]


def test_medians_iqr_and_intervals(built):
    comparison, _ = built
    fuzz = cell(comparison, "A10", "trained", "fuzzing")
    # n = 7: the largest k with 1 - 2 P(Binom(7, 1/2) <= k - 1) >= 0.95 is 1 (k = 2 gives 0.875): [min, max]
    assert (fuzz["ours"], fuzz["low"], fuzz["high"], fuzz["n"]) == (0.65, 0.5, 0.9, 7)
    assert fuzz["q25"] == pytest.approx(0.575) and fuzz["q75"] == pytest.approx(
        0.75
    )  # linear, positions 1.5, 4.5
    det = cell(comparison, "A10", "trained", "detection")  # the parse error's latent is left out
    assert (det["ours"], det["low"], det["high"], det["n"]) == (0.55, 0.4, 0.8, 7)
    assert det["q25"] == pytest.approx(0.475) and det["q75"] == pytest.approx(0.65)
    small = cell(comparison, "A10", "random SAE", "fuzzing")  # n = 3: no 95% order-statistic interval
    assert small["ours"] == 0.55 and small["n"] == 3 and np.isnan(small["low"]) and np.isnan(small["high"])
    assert cell(comparison, "layers", "resid_post.9", "fuzzing")["ours"] == 0.65


def test_correlations_exact(built):
    comparison, _ = built
    a1 = comparison[comparison["table"] == "A1"]
    pairs = ["fuzzing-detection", "fuzzing-simulation", "fuzzing-intervention", "detection-simulation",
             "detection-intervention", "simulation-intervention"]  # fmt: skip
    assert a1["row"].tolist() == pairs  # every pair of the roles present, canonical order
    fd = cell(comparison, "A1", "fuzzing-detection", "spearman")
    rho = 1 - 6 * 2 / (7 * (49 - 1))
    half = Z * math.sqrt(1.06 / (7 - 3))  # Fieller's variance for Spearman
    assert fd["ours"] == pytest.approx(rho) and fd["n"] == 7
    assert fd["low"] == pytest.approx(math.tanh(math.atanh(rho) - half))
    assert fd["high"] == pytest.approx(math.tanh(math.atanh(rho) + half))
    assert fd["paper"] == 0.73 and fd["source"] == "Table A1"
    fs = cell(comparison, "A1", "fuzzing-simulation", "spearman")  # ranks 1..5 vs 1,3,2,5,4: d^2 = 4
    assert fs["ours"] == pytest.approx(1 - 6 * 4 / (5 * 24)) and fs["n"] == 5
    pearson = cell(comparison, "A2", "fuzzing-simulation", "pearson")
    assert pearson["ours"] == pytest.approx(0.04 / math.sqrt(0.025 * 0.1)) and pearson["n"] == 5
    half = Z * math.sqrt(1 / (5 - 3))
    assert pearson["low"] == pytest.approx(math.tanh(math.atanh(0.8) - half))
    assert pearson["high"] == pytest.approx(math.tanh(math.atanh(0.8) + half))
    assert pearson["paper"] == 0.74 and np.isnan(
        cell(comparison, "A2", "fuzzing-detection", "pearson")["q25"]
    )


def test_cost_row(built):
    comparison, _ = built
    # per 100 windows: latents 0-5 have n = 10, latent 6 has n = 20
    inputs = [(1000 + 100 * i) * 10 for i in range(6)] + [2600 * 5]
    outputs = [25 * 10] * 6 + [30 * 5]
    assert cell(comparison, "1", "fuzzing", "input_tokens")["ours"] == pytest.approx(sum(inputs) / 7)
    assert cell(comparison, "1", "fuzzing", "cached_tokens")["ours"] == pytest.approx((6 * 5000 + 2500) / 7)
    out = cell(comparison, "1", "fuzzing", "output_tokens")
    assert out["ours"] == pytest.approx(sum(outputs) / 7) and out["paper"] == 249 and out["n"] == 7
    usd = cell(comparison, "1", "fuzzing", "usd_gpt-4o-mini")  # $0.15 / M input, $0.60 / M output
    assert usd["ours"] == pytest.approx(round(sum(inputs) / 7) * 0.15e-6 + round(sum(outputs) / 7) * 0.6e-6)
    assert not comparison["metric"].str.contains("no-such-model").any()  # an unknown model is skipped
    assert "embedding" not in set(comparison.loc[comparison["table"] == "1", "row"])  # role not mapped


def test_paper_join_and_difference(built):
    comparison, _ = built
    ten = cell(comparison, "A3", "10", "fuzzing")
    assert (ten["ours"], ten["paper"], ten["source"]) == (0.7, 0.73, "Table A3")
    trained = cell(comparison, "A10", "trained", "fuzzing")  # joined through paper_row
    assert trained["paper"] == 0.76
    a3 = comparison[comparison["table"] == "A3"].reset_index(drop=True)
    shown = display_frame(a3)
    assert shown.loc[(a3["row"] == "10") & (a3["metric"] == "fuzzing"), "difference"].item() == "-0.030"
    assert shown.loc[(a3["row"] == "40") & (a3["metric"] == "fuzzing"), "difference"].item() == "-0.110"
    assert (shown.loc[(a3["row"] == "10") & (a3["metric"] == "detection"), "difference"] == "–").all()


def test_row_matching_nothing_is_kept(built):
    comparison, _ = built
    for metric in ("fuzzing", "detection"):
        nothing = cell(comparison, "A10", "nothing", metric)
        assert nothing["n"] == 0 and np.isnan(nothing["ours"]) and np.isnan(nothing["paper"])
    assert cell(comparison, "layers", "resid_post.3", "fuzzing")["n"] == 0
    assert cell(comparison, "A10", "random SAE", "detection")["n"] == 0


def test_intervention(built):
    comparison, _ = built
    assert cell(comparison, "intervention", "reference", "score")["ours"] == 0.3
    shuffled = cell(comparison, "intervention", "reference", "score - score_shuffled")
    # latents 0-5 (latent 6 has no shuffled score): differences 0.5 .. 0.1, -0.1; n = 6 gives k = 1
    assert shuffled["ours"] == pytest.approx(0.25) and shuffled["n"] == 6
    assert shuffled["low"] == pytest.approx(-0.1) and shuffled["high"] == pytest.approx(0.5)
    assert cell(comparison, "intervention", "reference", "score_shuffled")["ours"] == pytest.approx(0.1)
    assert cell(comparison, "intervention", "reference", "score - score_random_direction")["ours"] == 0.25
    assert cell(comparison, "intervention", "reference", "kl")["ours"] == 1.0
    assert cell(comparison, "intervention", "random SAE", "score")["ours"] == 0.0
    rho = cell(comparison, "intervention", "reference", "spearman_fuzzing")
    assert rho["ours"] == pytest.approx(-(1 - 6 * 2 / (7 * 48))) and rho["n"] == 7


def test_outputs_columns_and_page(built):
    comparison, out = built
    assert list(comparison.columns) == list(COLUMNS)
    on_disk = pd.read_parquet(out / "comparison.parquet")
    assert list(on_disk.columns) == list(COLUMNS) and len(on_disk) == len(comparison)
    tables = list(dict.fromkeys(comparison["table"]))
    assert tables == [t for t in ORDER if t in tables]  # paper's order
    for table in tables:
        assert list(pd.read_parquet(out / f"{table}.parquet").columns) == list(COLUMNS)
        assert (out / f"{table}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "index.html").read_text()
    assert re.findall(r'<section id="t-([^"]+)"', page) == ORDER
    assert page.index("tiny hand-built run") < page.index('<section id="t-1"')
    assert all(f'src="{t}.png"' in page for t in tables)
    assert "http://" not in page and "https://" not in page  # self-contained
    assert "no-such-model-xyz" in page  # the unknown price is noted
    assert (out / "comparison.md").read_text() == main_table_markdown(comparison)


def test_missing_optional_inputs_say_what_adds_them(built):
    comparison, out = built
    assert not {"human", "crosslayer", "A4", "A8", "A9"} & set(comparison["table"])
    page = (out / "index.html").read_text()
    for hint in ("agreement-scorers.parquet", "crosslayer.parquet", "`paper.ablations.window_length`",
                 "`paper.explainers`", "`paper.judges`"):  # fmt: skip
        assert hint in page


def test_optional_files_build_their_tables(tmp_path):
    agreement = pd.DataFrame(dict(scorer=["fuzz", "other"], kind=["fuzzing", "embedding"], n=[20, 3],
                                  spearman=[0.5, 0.1]))  # fmt: skip
    pairs = dict(
        hookpoint_a=["resid_post.3", "resid_post.6", "resid_post.3"],
        hookpoint_b=["resid_post.6", "resid_post.9", "resid_post.9"],
        distance=[1, 1, 2],
    )
    similarity = dict(mean_similarity_matched=[0.6, 0.8, 0.5], n_explained_pairs=[10, 20, 5],
                      mean_similarity_random=[0.1, 0.3, 0.2], n_random_pairs=[30, 30, 30])  # fmt: skip
    cross = pd.DataFrame(dict(UNIT, explainer="qwen", dictionary="topk-4k") | pairs | similarity)
    cross = cross.drop(columns="hookpoint")
    extra = {"agreement-scorers.parquet": agreement, "crosslayer.parquet": cross}
    summary = write_summary(tmp_path / "summary", latents_table(), extra)
    comparison = build_paper(summary, SPEC, tmp_path / "paper")
    fuzz = cell(comparison, "human", "fuzzing", "spearman")  # a role's scorer is named by its role
    half = Z * math.sqrt(1.06 / 17)
    assert (
        fuzz["ours"] == 0.5
        and fuzz["paper"] == 0.69
        and fuzz["low"] == pytest.approx(math.tanh(0.5493061443 - half))
    )
    other = cell(comparison, "human", "other", "spearman")
    assert other["n"] == 3 and np.isnan(other["low"])  # Fisher z needs 4 pairs
    near = cell(comparison, "crosslayer", "topk-4k, distance 1", "mean_similarity_matched")
    assert near["ours"] == pytest.approx(0.7) and near["n"] == 30
    assert cell(comparison, "crosslayer", "topk-4k, distance 1", "mean_similarity_random")[
        "ours"
    ] == pytest.approx(0.2)


def test_tables_depend_on_the_data(tmp_path):
    changed = list(FUZZ)
    changed[3] = 0.95  # the median latent moves above the others
    summary = write_summary(tmp_path / "summary", latents_table(changed))
    _, cells, _ = build_tables(summary, SPEC)  # the tables without their figures and page
    assert cell(cells["A10"], "A10", "trained", "fuzzing")["ours"] == 0.7
    assert cell(cells["A1"], "A1", "fuzzing-detection", "spearman")["ours"] < 1 - 6 * 2 / (7 * 48)


def test_rebuild_replaces_the_folder(tmp_path, built):
    _, out = built
    summary = out.parent / "summary"
    target = tmp_path / "paper"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    spec = dict(SPEC, subjects=[], ablations={}, layers=[], priced_models=[])
    comparison = build_paper(summary, spec, target)
    assert not (target / "stale.txt").exists() and (target / "index.html").exists()
    assert (
        "A10" not in set(comparison["table"])
        and "add `paper.subjects`" in (target / "index.html").read_text()
    )
    assert "| row |" in (target / "comparison.md").read_text()  # the header even without subjects
    assert [p.name for p in tmp_path.iterdir()] == ["paper"]  # no staging folder left behind


def test_published_values():
    published = load_published()
    assert set(published["table"]) <= set(ORDER)
    ten = published[
        (published["table"] == "A3") & (published["row"] == "10") & (published["metric"] == "fuzzing")
    ]
    assert ten["value"].item() == 0.73 and ten["source"].item() == "Table A3"
    assert not published.duplicated(["table", "row", "metric"]).any()
    a1 = published[published["table"] == "A1"].set_index("row")["value"]
    assert a1["fuzzing-detection"] == 0.73 and a1["embedding-surprisal"] == 0.79


def test_main_table_markdown(built):
    comparison, _ = built
    lines = main_table_markdown(comparison).splitlines()
    assert lines[0] == "| row | fuzzing, ours [low, high] | paper | detection, ours [low, high] | paper | n |"
    assert lines[2] == "| trained | 0.650 [0.500, 0.900] | 0.760 | 0.550 [0.400, 0.800] | 0.740 | 7 |"
    assert lines[4] == "| random SAE | 0.550 | 0.550 | – | 0.540 | 3 / 0 |"


def test_bad_spec_is_named(tmp_path, built):
    _, out = built
    with pytest.raises(ValueError, match="reference lacks"):
        build_paper(out.parent / "summary", dict(reference=dict(corpus="wiki")), tmp_path / "p")
    with pytest.raises(ValueError, match="unknown keys"):
        build_paper(
            out.parent / "summary", dict(SPEC, subjects=[dict(label="x", dictionry="y")]), tmp_path / "p"
        )
    assert not (tmp_path / "p").exists()
