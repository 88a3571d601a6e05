"""Statistics over latents that stay right for a handful of them: order-statistic intervals of the median,
paired (Wilcoxon signed-rank) and unpaired (Mann-Whitney U) comparisons, Spearman correlations, and the
tables of the summary built from them (aggregates, comparisons, correlations)."""

from __future__ import annotations

from itertools import combinations
from typing import NamedTuple

import numpy as np
import pandas as pd

from interpflow.statuses import NO_TEST_EXAMPLES, NOT_SAMPLED, no_explanation

SUBJECT = ["corpus", "model", "hookpoint", "dictionary", "sampler", "explainer"]
PAIR = ["corpus", "model", "hookpoint", "dictionary", "sampler", "scorer", "kind", "metric"]
"""What a paired comparison holds fixed: everything but the explainer (the same latents, the same windows)."""
NOT_METRICS = {"latent", "n", "n_failed", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd"}
BASELINES = ("random", "top-tokens")
"""Explainer kinds that are baselines; every other explainer (llm, or explanations from a file such as an
oracle's) is compared with each of them."""
SKIPPED = (no_explanation("skipped"), NO_TEST_EXAMPLES, "constant_truth", NOT_SAMPLED)
"""Statuses of latents a scorer was never meant to score (the sampler skipped them, no test windows, or
activations constant over the test windows); every other status but "ok" is a failure."""


class MedianCI(NamedTuple):
    median: float
    """Sample median (NaN without values)."""
    low: float
    """Lower bound: the k-th smallest value (NaN where no order statistics reach the level)."""
    high: float
    """Upper bound: the k-th largest value."""
    coverage: float
    """The interval's exact coverage, 1 - 2 P(Binom(n, 1/2) <= k - 1), at least the level (NaN if none)."""


def median_ci(values: np.ndarray, level: float = 0.95) -> MedianCI:
    """Distribution-free interval of the median: [x_(k), x_(n+1-k)] with the largest k whose coverage is at
    least `level`. It holds for any continuous distribution and any n, unlike a bootstrap of a median,
    which is too narrow for small n; with n < 6 no such interval reaches 95% and the bounds are NaN."""
    from scipy.stats import binom

    x = np.sort(np.asarray(values, dtype=np.float64))
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return MedianCI(np.nan, np.nan, np.nan, np.nan)
    median = float(np.median(x))
    ks = np.arange(1, (n + 1) // 2 + 1)  # k <= n + 1 - k
    coverage = 1 - 2 * binom.cdf(ks - 1, n, 0.5)
    good = ks[coverage >= level - 1e-12]
    if len(good) == 0:
        return MedianCI(median, np.nan, np.nan, np.nan)
    k = int(good.max())
    return MedianCI(median, float(x[k - 1]), float(x[n - k]), float(coverage[k - 1]))


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (zeros dropped, scipy's default);
    NaN with fewer than 2 differences or when all are zero."""
    from scipy.stats import wilcoxon

    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) < 2 or not d.any():
        return np.nan
    return float(wilcoxon(d).pvalue)


def mannwhitney_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value of two independent samples; NaN if either is empty."""
    from scipy.stats import mannwhitneyu

    a, b = (np.asarray(v, dtype=np.float64) for v in (a, b))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return np.nan
    return float(mannwhitneyu(a, b).pvalue)


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """Spearman rho, its two-sided p-value and n over the pairs where both are finite (NaN if n < 3 or
    either side is constant)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    both = np.isfinite(x) & np.isfinite(y)
    x, y, n = x[both], y[both], int(both.sum())
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.nan, np.nan, n
    res = spearmanr(x, y)
    return float(res.statistic), float(res.pvalue), n


def status_counts(status: pd.Series) -> dict[str, int]:
    """Latents selected, scored ok, skipped (SKIPPED) and failed (every other status)."""
    ok = status == "ok"
    skipped = status.isin(SKIPPED)
    failed = ~ok & ~skipped
    return dict(latents=len(status), ok=int(ok.sum()), skipped=int(skipped.sum()), failed=int(failed.sum()))


def metric_names(frame: pd.DataFrame) -> list[str]:
    """The metric columns holding any value in `frame`: the headline `score` first, then the rest."""
    names = [
        c
        for c in frame.columns
        if c not in NOT_METRICS and pd.api.types.is_float_dtype(frame[c]) and frame[c].notna().any()
    ]
    return sorted(names, key=lambda c: (c != "score", c))


def aggregate(table: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Per subject (or `by`), scorer and metric: the latents' status counts and the median of the metric over
    the latents scored ok, with its order-statistic 95% interval; by subject, the random floor beside it."""
    keys = (SUBJECT if by is None else by) + ["scorer", "kind"]
    metrics = {s: metric_names(g) or ["score"] for s, g in table.groupby("scorer")}
    rows = []
    for key, g in table.groupby(keys, sort=True):
        counts = status_counts(g["status"])
        ok = g[g["status"] == "ok"]
        for metric in metrics[g["scorer"].iloc[0]]:
            v = ok[metric].to_numpy(dtype=np.float64) if metric in ok else np.empty(0)
            v = v[np.isfinite(v)]
            ci = median_ci(v)
            rows.append(
                dict(zip(keys, key, strict=True))
                | dict(metric=metric, **counts, scored=len(v), median=ci.median, ci_low=ci.low)
                | dict(ci_high=ci.high, ci_coverage=ci.coverage, mean=float(v.mean()) if len(v) else np.nan)
                | dict(q25=quantile(v, 0.25), q75=quantile(v, 0.75))
            )
    agg = pd.DataFrame(rows, columns=[*keys, "metric", *AGGREGATE_COLUMNS])
    agg = agg.astype(AGGREGATE_COLUMNS)
    return with_floor(agg, table) if by is None else agg


def quantile(v: np.ndarray, q: float) -> float:
    return float(np.quantile(v, q)) if len(v) else np.nan


AGGREGATE_COLUMNS = {
    "latents": "int64",
    "ok": "int64",
    "skipped": "int64",
    "failed": "int64",
    "scored": "int64",
    "median": "float64",
    "ci_low": "float64",
    "ci_high": "float64",
    "ci_coverage": "float64",
    "mean": "float64",
    "q25": "float64",
    "q75": "float64",
}


def explainer_kinds(table: pd.DataFrame) -> dict[str, str]:
    """{explainer: its kind} (llm, random, top-tokens) from the table's `explainer_kind` column."""
    return dict(table[["explainer", "explainer_kind"]].drop_duplicates().itertuples(index=False))


def with_floor(agg: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Add floor_median and floor_explainer: the median of the random-explanation baseline of the same
    subject, scorer and metric (the first by name if several; NaN and "" where none, and on its own rows)."""
    match = [k for k in PAIR if k in agg.columns]
    kind = agg["explainer"].map(explainer_kinds(table))
    floor = agg.loc[kind == "random", [*match, "explainer", "median"]].sort_values("explainer")
    floor = floor.drop_duplicates(match)
    floor = floor.rename(columns={"explainer": "floor_explainer", "median": "floor_median"})
    out = agg.merge(floor, on=match, how="left")
    own = (kind == "random").to_numpy()
    out.loc[own, "floor_median"] = np.nan
    out.loc[own, "floor_explainer"] = None
    return out.astype({"floor_median": "float64"}).fillna({"floor_explainer": ""})


COMPARISON_COLUMNS = {
    "comparison": "object",
    **dict.fromkeys(["corpus", "model", "hookpoint", "sampler", "scorer", "kind", "metric"], "object"),
    **dict.fromkeys(["dictionary_a", "explainer_a", "explainer_kind_a", "subject_a"], "object"),
    **dict.fromkeys(["dictionary_b", "explainer_b", "explainer_kind_b", "subject_b"], "object"),
    **dict.fromkeys(["n_a", "n_b", "n_pairs"], "int64"),
    **dict.fromkeys(["median_a", "median_b", "median_difference"], "float64"),
    **dict.fromkeys(["ci_low", "ci_high", "ci_coverage"], "float64"),
    "test": "object",
    "p_value": "float64",
}


def _side(g: pd.DataFrame, suffix: str) -> dict:
    """The names describing one side of a comparison (every row of `g` is one dictionary and explainer)."""
    first = g.iloc[0]
    return {f"{k}_{suffix}": first[k] for k in ["dictionary", "explainer", "explainer_kind", "subject"]}


def paired_row(a: pd.Series, b: pd.Series) -> dict:
    """Paired comparison of two metric series indexed by latent: medians over the latents both scored,
    the median of the differences a - b, its order-statistic interval and the Wilcoxon signed-rank p."""
    both = a.index.intersection(b.index)
    x, y = a[both].to_numpy(dtype=np.float64), b[both].to_numpy(dtype=np.float64)
    d = x - y
    ci = median_ci(d)
    medians = (float(np.median(x)), float(np.median(y))) if len(d) else (np.nan, np.nan)
    return (
        dict(n_a=len(a), n_b=len(b), n_pairs=len(d), median_a=medians[0], median_b=medians[1])
        | dict(median_difference=ci.median, ci_low=ci.low, ci_high=ci.high, ci_coverage=ci.coverage)
        | dict(test="wilcoxon", p_value=wilcoxon_p(d))
    )


def unpaired_row(a: pd.Series, b: pd.Series) -> dict:
    """Unpaired comparison (different latents): the two medians, their difference, Mann-Whitney U p."""
    ma, mb = (float(np.median(v)) if len(v) else np.nan for v in (a, b))
    out = dict(n_a=len(a), n_b=len(b), n_pairs=0, median_a=ma, median_b=mb, median_difference=ma - mb)
    return (
        out
        | dict(ci_low=np.nan, ci_high=np.nan, ci_coverage=np.nan)
        | dict(test="mannwhitney", p_value=mannwhitney_p(a, b))
    )


def _ok_values(g: pd.DataFrame, metric: str) -> pd.Series:
    """The finite values of `metric` over the latents of `g` scored ok, indexed by latent."""
    ok = g[g["status"] == "ok"]
    v = ok.set_index("latent")[metric].astype("float64") if metric in ok else pd.Series(dtype="float64")
    return v[np.isfinite(v.to_numpy())]


def comparisons(table: pd.DataFrame) -> pd.DataFrame:
    """Paired: every LLM (or file) explainer against every baseline of the same subject, scorer and metric,
    matched on latent. Unpaired: every two dictionaries at the same hookpoint, per explainer and scorer."""
    rows = []
    for key, g in table.groupby(PAIR[:-1], sort=True):
        by_expl = dict(tuple(g.groupby("explainer", sort=True)))
        base = [e for e, ge in by_expl.items() if ge["explainer_kind"].iloc[0] in BASELINES]
        for a, b in [(a, b) for a in by_expl if a not in base for b in base]:
            for metric in metric_names(g):
                pa, pb = _ok_values(by_expl[a], metric), _ok_values(by_expl[b], metric)
                names = dict(zip(PAIR[:-1], key, strict=True), comparison="paired", metric=metric)
                rows.append(names | _side(by_expl[a], "a") | _side(by_expl[b], "b") | paired_row(pa, pb))
    other = ["corpus", "model", "hookpoint", "sampler", "explainer", "scorer", "kind"]
    for key, g in table.groupby(other, sort=True):
        by_dict = dict(tuple(g.groupby("dictionary", sort=True)))
        for a, b in combinations(by_dict, 2):
            for metric in metric_names(g):
                pa, pb = _ok_values(by_dict[a], metric), _ok_values(by_dict[b], metric)
                names = dict(zip(other, key, strict=True), comparison="unpaired", metric=metric)
                rows.append(names | _side(by_dict[a], "a") | _side(by_dict[b], "b") | unpaired_row(pa, pb))
    out = pd.DataFrame(rows).reindex(columns=list(COMPARISON_COLUMNS))
    return out.astype(COMPARISON_COLUMNS)


def correlations(table: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation of the headline score of every two scorers over the latents both scored ok,
    per subject and explainer: pooling explainers would mix the explanation's effect into the agreement."""
    ok = table[table["status"] == "ok"]
    rows = []
    for key, g in ok.groupby(SUBJECT, sort=True):
        wide = g.pivot_table(index="latent", columns="scorer", values="score", aggfunc="first", dropna=False)
        for a, b in combinations(sorted(wide.columns), 2):
            rho, p, n = spearman(wide[a].to_numpy(), wide[b].to_numpy())
            extra = dict(subject=g["subject"].iloc[0], scorer_a=a, scorer_b=b, n=n, spearman=rho, p_value=p)
            rows.append(dict(zip(SUBJECT, key, strict=True)) | extra)
    columns = [*SUBJECT, "subject", "scorer_a", "scorer_b", "n", "spearman", "p_value"]
    out = pd.DataFrame(rows, columns=columns)
    return out.astype({"n": "int64", "spearman": "float64", "p_value": "float64"})
