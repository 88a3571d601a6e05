"""The summary's statistics (interpflow.stats) on hand-computed cases, and the summary files end to end."""

from math import comb

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu, wilcoxon

from interpflow.report import summarize
from interpflow.stats import (
    aggregate,
    comparisons,
    correlations,
    median_ci,
    spearman,
    status_counts,
    wilcoxon_p,
)
from interpflow.store import write_parquet

KIND = {"qwen": "llm", "oracle": "file", "random": "random", "top-tokens": "top-tokens"}


def rows(explainer, scores, scorer="detection", dictionary="topk", latents=None, statuses=None, **metrics):
    """Latents-table rows (the schema of results/summary/latents.parquet) of one explainer and scorer."""
    latents = range(len(scores)) if latents is None else latents
    statuses = ["ok"] * len(scores) if statuses is None else statuses
    return pd.DataFrame(
        dict(corpus="wiki", model="m", hookpoint="resid_post.1", dictionary=dictionary, sampler="s",
             explainer=explainer, scorer=scorer, latent=list(latents), kind=scorer, status=statuses, n=16,
             n_failed=0, score=np.asarray(scores, dtype=np.float64), explainer_kind=KIND[explainer],
             subject=f"{dictionary} SAE" + ("" if explainer == "qwen" else f", {explainer}"),
             **{k: np.asarray(v, dtype=np.float64) for k, v in metrics.items()})
    )  # fmt: skip


def test_median_interval_n10_is_the_2nd_and_9th_order_statistics():
    # P(Binom(10, 1/2) <= 1) = 11/1024 <= 0.025 < P(<= 2) = 56/1024: k = 2, coverage 1 - 22/1024
    ci = median_ci(np.array([7, 1, 9, 3, 10, 2, 8, 4, 6, 5], dtype=float))
    assert (ci.median, ci.low, ci.high) == (5.5, 2.0, 9.0)
    assert ci.coverage == pytest.approx(1 - 22 / 1024)


@pytest.mark.parametrize("n", [6, 7, 13, 20, 41])
def test_median_interval_matches_binomial_sums(n):
    x = np.arange(n, dtype=float) * 3
    ci = median_ci(x)
    tail = [sum(comb(n, i) for i in range(j + 1)) / 2**n for j in range(n)]  # P(B <= j)
    k = max(k for k in range(1, (n + 1) // 2 + 1) if 1 - 2 * tail[k - 1] >= 0.95)
    assert (ci.low, ci.high) == (x[k - 1], x[n - k])
    assert ci.coverage == pytest.approx(1 - 2 * tail[k - 1]) and ci.coverage >= 0.95


def test_median_interval_is_nan_below_six_values():
    ci = median_ci(np.array([0.4, 0.6, 0.5, 0.55, 0.45]))
    assert ci.median == 0.5 and np.isnan(ci.low) and np.isnan(ci.high) and np.isnan(ci.coverage)
    assert all(np.isnan(v) for v in median_ci(np.array([])))


def test_median_interval_covers_a_skewed_median():
    # n = 8: k = 1, stated coverage 1 - 2/256; checked on exponential samples (true median ln 2)
    rng = np.random.default_rng(0)
    hits = [(c.low <= np.log(2) <= c.high) for c in (median_ci(rng.exponential(size=8)) for _ in range(4000))]
    assert np.mean(hits) == pytest.approx(1 - 2 / 256, abs=0.006)


def test_wilcoxon_hand_case_and_scipy():
    d = np.array([0.1, 0.2, -0.05, 0.3, 0.15])
    # ranks of |d|: the one negative difference has rank 1, so W- = 1; exact two-sided
    # p = 2 * #{subsets of ranks 1..5 summing to <= 1} / 2^5 = 2 * 2 / 32
    assert wilcoxon_p(d) == pytest.approx(0.125)
    assert wilcoxon_p(d) == pytest.approx(wilcoxon(d).pvalue)
    assert np.isnan(wilcoxon_p(np.array([0.3]))) and np.isnan(wilcoxon_p(np.zeros(5)))


def test_spearman_needs_three_varying_pairs():
    rho, p, n = spearman(np.array([1, 2, 3, np.nan]), np.array([2, 4, 9, 1]))
    assert (rho, n) == (1.0, 3) and p == pytest.approx(0.0)
    assert np.isnan(spearman(np.array([1, 1, 1]), np.array([1, 2, 3]))[0])


def test_status_counts():
    status = pd.Series(["ok", "ok", "no_explanation: skipped", "no_test_examples", "llm_error",
                        "no_explanation: parse_error", "constant_prediction", "constant_truth"])  # fmt: skip
    assert status_counts(status) == dict(latents=8, ok=2, skipped=3, failed=3)


def test_paired_comparison_matches_on_latent():
    # the LLM explains latents 0-6; the random baseline failed on latent 6 and never saw latent 2
    llm = rows("qwen", [0.9, 0.8, 0.7, 0.6, 0.75, 0.85, 0.95])
    rnd = rows("random", [0.5, 0.6, 0.4, 0.55, 0.5, 0.2], latents=[0, 1, 3, 4, 5, 6],
               statuses=["ok"] * 5 + ["llm_error"])  # fmt: skip
    comp = comparisons(pd.concat([llm, rnd], ignore_index=True))
    assert len(comp) == 1
    r = comp.iloc[0]
    assert (r.comparison, r.explainer_a, r.explainer_b, r.explainer_kind_b, r.metric) == (
        "paired", "qwen", "random", "random", "score")  # fmt: skip
    # pairs on latents 0, 1, 3, 4, 5: differences 0.4, 0.2, 0.2, 0.2, 0.35
    assert (r.n_a, r.n_b, r.n_pairs) == (7, 5, 5)
    assert r.median_difference == pytest.approx(0.2)
    assert (r.median_a, r.median_b) == (pytest.approx(0.8), pytest.approx(0.5))
    assert np.isnan(r.ci_low) and np.isnan(r.ci_high)  # 5 pairs: no 95% order-statistic interval
    assert r.p_value == pytest.approx(wilcoxon([0.4, 0.2, 0.2, 0.2, 0.35]).pvalue)
    assert comp.dtypes["n_pairs"] == "int64" and comp.dtypes["p_value"] == "float64"


def test_every_metric_column_is_compared_and_baselines_are_not_paired_together():
    cases = [
        ("qwen", [0.7, 0.8], [0.9, 1]),
        ("random", [0.5, 0.5], [0.4, 0.6]),
        ("top-tokens", [0.6] * 2, [0.7] * 2),
        ("oracle", [0.9, 0.9], [1.0, 1.0]),  # explanations from a file: compared like the LLM's
    ]
    comp = comparisons(pd.concat([rows(e, s, auroc=a) for e, s, a in cases], ignore_index=True))
    assert set(zip(comp["explainer_a"], comp["explainer_b"], comp["metric"], strict=True)) == {
        (a, b, m) for a in ("qwen", "oracle") for b in ("random", "top-tokens") for m in ("score", "auroc")
    }
    mine = (comp["explainer_a"] == "qwen") & (comp["explainer_b"] == "random")
    auroc = comp[(comp["metric"] == "auroc") & mine].iloc[0]
    assert auroc.median_difference == pytest.approx(0.45)  # differences 0.5 and 0.4


def test_unpaired_comparison_between_dictionaries():
    a, b = [0.9, 0.8, 0.7, 0.85], [0.5, 0.55, 0.6]
    table = pd.concat([rows("qwen", a, dictionary="random"), rows("qwen", b, dictionary="topk")])
    r = comparisons(table).iloc[0]
    assert (r.comparison, r.dictionary_a, r.dictionary_b, r.n_pairs, r.test) == (
        "unpaired", "random", "topk", 0, "mannwhitney")  # fmt: skip
    assert (r.subject_a, r.subject_b) == ("random SAE", "topk SAE")
    assert r.median_difference == pytest.approx(np.median(a) - np.median(b))
    assert r.p_value == pytest.approx(mannwhitneyu(a, b).pvalue)


def test_aggregate_counts_statuses_and_puts_the_floor_beside():
    statuses = ["ok"] * 6 + ["no_explanation: skipped", "parse_error"]
    llm = rows("qwen", [0.6, 0.7, 0.8, 0.9, 1.0, 0.65, np.nan, np.nan], statuses=statuses)
    rnd = rows("random", [0.4, 0.5, 0.45, 0.5, 0.55, 0.6, np.nan, np.nan], statuses=statuses)
    agg = aggregate(pd.concat([llm, rnd], ignore_index=True)).set_index("explainer")
    q = agg.loc["qwen"]
    assert (q.metric, q.latents, q.ok, q.skipped, q.failed, q.scored) == ("score", 8, 6, 1, 1, 6)
    assert (q["median"], q.ci_low, q.ci_high) == (pytest.approx(0.75), 0.6, 1.0)  # n = 6: min and max
    assert (q.floor_explainer, q.floor_median) == ("random", pytest.approx(0.5))
    assert agg.loc["random", "floor_explainer"] == "" and np.isnan(agg.loc["random", "floor_median"])


def test_correlations_are_per_explainer_never_pooled():
    # within each explainer the two scorers disagree perfectly; pooled, the explainer's offset would make
    # them agree (rho > 0)
    table = pd.concat(
        [rows("qwen", [1, 2, 3, 4]), rows("qwen", [4, 3, 2, 1], scorer="embedding"),
         rows("random", [11, 12, 13, 14]), rows("random", [24, 23, 22, 21], scorer="embedding")],
        ignore_index=True,
    )  # fmt: skip
    corr = correlations(table).set_index("explainer")
    assert len(corr) == 2 and (corr["spearman"] == -1.0).all() and (corr["n"] == 4).all()
    assert (corr["scorer_a"] == "detection").all() and (corr["scorer_b"] == "embedding").all()
    pooled = spearman(np.r_[1:5, 11:15], np.r_[4:0:-1, 24:20:-1])[0]
    assert pooled > 0


def record(tmp_path, explainer, scorer, scores) -> dict:
    """A scored_shards record with its metrics and explanations files written under tmp_path."""
    base = tmp_path / explainer / scorer
    base.mkdir(parents=True)
    usage = dict(prompt_tokens=10, completion_tokens=1, cost_usd=0.0)
    metrics = pd.DataFrame(dict(latent=range(len(scores)), scorer=scorer, kind=scorer, status="ok", n=16,
                                n_failed=0, score=scores, cached_tokens=0, **usage))  # fmt: skip
    explanations = pd.DataFrame(dict(latent=range(len(scores)), explanation="x", status="ok", **usage))
    write_parquet(metrics, base / "metrics.parquet")
    write_parquet(explanations, base / "explanations.parquet")
    names = rows(explainer, [0], scorer=scorer).iloc[0]
    keys = ["corpus", "model", "hookpoint", "dictionary", "sampler", "explainer", "scorer", "subject"]
    files = dict(metrics=base / "metrics.parquet", explanations=base / "explanations.parquet")
    return {k: names[k] for k in [*keys, "explainer_kind"]} | dict(shard=0) | files


def test_summarize_writes_comparisons_and_opens_with_llm_vs_random(tmp_path):
    llm = np.linspace(0.6, 0.9, 8)
    records = [
        record(tmp_path, "qwen", "detection", llm),
        record(tmp_path, "random", "detection", np.full(8, 0.5)),
        record(tmp_path, "qwen", "embedding", llm[::-1]),
        record(tmp_path, "random", "embedding", np.arange(8.0)),
    ]
    names = ["table", "aggregates", "subjects", "comparisons", "correlations", "costs"]
    outputs = {k: tmp_path / f"{k}.parquet" for k in names}
    outputs |= {k: tmp_path / f"{k}.png" for k in ["figure", "subjects_figure", "heatmap"]}
    summarize(records, outputs | {"html": tmp_path / "summary.html"})
    comp = pd.read_parquet(outputs["comparisons"]).set_index("scorer")
    r = comp.loc["detection"]
    assert (r.n_pairs, r.explainer_a, r.explainer_b) == (8, "qwen", "random")
    differences = llm - 0.5
    assert (r.ci_low, r.ci_high) == (differences[0], differences[-1])  # n = 8: k = 1, min and max
    assert r.p_value == pytest.approx(wilcoxon(differences).pvalue)
    corr = pd.read_parquet(outputs["correlations"]).set_index("explainer")["spearman"]
    assert corr["qwen"] == -1.0 and np.isnan(corr["random"])  # the random detection scores are constant
    assert (tmp_path / "heatmap.png").stat().st_size > 1000
    html = (tmp_path / "summary.html").read_text()
    assert html.index("LLM explanation vs random explanation") < html.index("Scores by kind of subject")
    with pytest.raises(ValueError, match="explainer_kind"):
        summarize([{k: v for k, v in records[0].items() if k != "explainer_kind"}], outputs)
