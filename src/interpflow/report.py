"""Summaries across subjects and scorers: the per-latent table, aggregates, paired and unpaired comparisons
and the correlations between scorers (interpflow.stats), the cost table, figures and an HTML page."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from .stats import SUBJECT, aggregate, comparisons, correlations
from .store import atomic_path, read_parquet, write_parquet

log = logging.getLogger(__name__)

KEYS = ["corpus", "model", "hookpoint", "dictionary", "sampler", "explainer", "scorer"]
USAGE = ["prompt_tokens", "completion_tokens", "cost_usd"]


def collect(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every metrics row joined with its explanation, and one row per explanation (with its own usage).

    Each record names its wildcard values, `shard`, `subject`, `explainer_kind` (llm, random, top-tokens)
    and its `metrics` and `explanations` files (rules/common.smk, scored_shards)."""
    frames, explained = [], {}
    for r in records:
        if "explainer_kind" not in r:
            raise ValueError(f"summary record for {r.get('metrics')} has no explainer_kind (scored_shards)")
        explanations = read_parquet(r["explanations"])
        subject = tuple(r[k] for k in SUBJECT) + (r["shard"],)
        explained[subject] = explanations.assign(**{k: r[k] for k in SUBJECT})
        joined = explanations[["latent", "explanation", "status"]].rename(
            columns={"status": "explanation_status"}
        )
        metrics = read_parquet(r["metrics"]).drop(columns=["scorer"], errors="ignore")
        frame = metrics.merge(joined, on="latent", how="left")
        frames.append(
            frame.assign(
                **{k: r[k] for k in KEYS},
                explainer_kind=r["explainer_kind"],
                subject=r.get("subject", r["dictionary"]),
            )
        )
    table = pd.concat(frames, ignore_index=True)
    table = table[KEYS + [c for c in table.columns if c not in KEYS]]
    return table, pd.concat(explained.values(), ignore_index=True)


def subject_label(frame: pd.DataFrame) -> pd.Series:
    """A short label per row naming its subject: model/hookpoint/dictionary/explainer."""
    return frame[["model", "hookpoint", "dictionary", "explainer"]].astype(str).agg("/".join, axis=1)


def costs(table: pd.DataFrame, explanations: pd.DataFrame) -> pd.DataFrame:
    """Tokens and dollars per subject and stage (the explainer, then each scorer), in total and per latent."""
    stages = [explanations.assign(stage="explain", name=explanations["explainer"])]
    stages.append(table.assign(stage="score", name=table["scorer"]))
    frame = pd.concat(stages, ignore_index=True)
    frame["cost_usd"] = frame["cost_usd"].astype("float64")
    frame["cached_tokens"] = frame.get("cached_tokens", pd.Series(0, index=frame.index)).fillna(0)
    rows = []
    for key, g in frame.groupby(SUBJECT + ["stage", "name"], sort=True):
        spent = g[g["prompt_tokens"] > 0]
        n = max(len(spent), 1)
        rows.append(
            dict(zip(SUBJECT + ["stage", "name"], key, strict=True))
            | dict(
                latents=len(spent),
                prompt_tokens=int(g["prompt_tokens"].sum()),
                cached_tokens=int(g["cached_tokens"].sum()),
                completion_tokens=int(g["completion_tokens"].sum()),
                prompt_tokens_per_latent=g["prompt_tokens"].sum() / n,
                completion_tokens_per_latent=g["completion_tokens"].sum() / n,
                cost_usd=float(g["cost_usd"].sum()) if g["cost_usd"].notna().all() else np.nan,
            )
        )
    return pd.DataFrame(rows)


def plot_scores(table: pd.DataFrame, out_path: str | os.PathLike, by: str | None = None) -> None:
    """Box plots with points: each scorer's headline score per subject (or per `by`), one panel per scorer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scorers = sorted(table["scorer"].unique())
    cols = min(3, len(scorers))
    rows = -(-len(scorers) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.8 * rows), squeeze=False)
    labels = subject_label(table) if by is None else table[by].astype(str)
    subjects = sorted(labels.unique())
    rng = np.random.default_rng(0)  # jitter only
    for ax, scorer in zip(axes.flat, scorers, strict=False):
        mine = table["scorer"] == scorer
        data = [
            table.loc[mine & (labels == s) & (table["status"] == "ok"), "score"].dropna().to_numpy()
            for s in subjects
        ]
        ax.boxplot([d if len(d) else [np.nan] for d in data], showfliers=False)
        for i, d in enumerate(data):
            ax.scatter(i + 1 + rng.uniform(-0.15, 0.15, len(d)), d, s=10, alpha=0.6)
        kind = table.loc[mine, "kind"].iloc[0]
        if kind in ("detection", "fuzzing", "embedding", "surprisal"):
            ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)  # chance
        ax.set_title(f"{scorer} ({kind}), n={sum(len(d) for d in data)}", fontsize=9)
        ax.set_xticks(range(1, len(subjects) + 1), subjects, rotation=20, ha="right", fontsize=7)
    for ax in list(axes.flat)[len(scorers) :]:
        ax.axis("off")
    save_figure(fig, out_path)


def plot_correlations(corr: pd.DataFrame, out_path: str | os.PathLike) -> None:
    """Heatmaps of the Spearman correlations between scorers, one panel per subject and explainer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(corr.groupby(SUBJECT, sort=True))
    scorers = sorted(set(corr["scorer_a"]) | set(corr["scorer_b"]))
    cols = max(min(3, len(groups)), 1)
    rows = max(-(-len(groups) // cols), 1)
    size = 0.9 * len(scorers) + 3
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax, (_, g) in zip(axes.flat, groups, strict=False):
        heatmap(ax, g, scorers)
        ax.set_title(f"{subject_label(g.head(1)).iloc[0]}, n<={int(g['n'].max())}", fontsize=8)
    if not groups:  # one scorer per subject: nothing to correlate, say so rather than draw nothing
        axes[0, 0].text(0.5, 0.5, "fewer than two scorers per subject", ha="center", va="center")
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    save_figure(fig, out_path)


def heatmap(ax, corr: pd.DataFrame, scorers: list[str]) -> None:
    """One subject's symmetric Spearman matrix (diagonal 1, unlabelled) with its colour bar."""
    matrix = pd.DataFrame(np.eye(len(scorers)), index=scorers, columns=scorers)
    for r in corr.itertuples():
        matrix.loc[r.scorer_a, r.scorer_b] = matrix.loc[r.scorer_b, r.scorer_a] = r.spearman
    values = matrix.to_numpy(dtype=float)
    image = ax.imshow(values, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(scorers)), scorers, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(scorers)), scorers, fontsize=7)
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, "" if np.isnan(v) or i == j else f"{v:.2f}", ha="center", va="center", fontsize=7)
    ax.figure.colorbar(image, ax=ax, label="Spearman", shrink=0.8)


def save_figure(fig, out_path: str | os.PathLike) -> None:
    """Write a matplotlib figure as PNG atomically and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _number(x: float) -> str:
    """Three decimals, or three significant digits for small values (p-values) that would show as 0.000."""
    return f"{x:.2e}" if 0 < abs(x) < 0.001 else f"{x:.3f}"


def html_page(sections: dict[str, pd.DataFrame], out_path: str | os.PathLike) -> None:
    """A self-contained HTML page with one table per section."""
    parts = [
        f"<h2>{title}</h2>" + frame.to_html(index=False, float_format=_number, na_rep="")
        for title, frame in sections.items()
    ]
    head = "<head><meta charset='utf-8'><title>interpflow summary</title></head>"
    with atomic_path(out_path) as tmp:
        tmp.write_text(f"<html>{head}<body>{''.join(parts)}</body></html>", encoding="utf-8")


SHOWN = ["model", "hookpoint", "dictionary", "explainer", "scorer", "latent", "explanation", "status"]
SHOWN += ["n", "n_failed", "score", "auroc"]
VERSUS = ["model", "hookpoint", "dictionary_a", "scorer", "metric", "explainer_a", "explainer_b", "n_pairs"]
VERSUS += ["median_a", "median_b", "median_difference", "ci_low", "ci_high", "p_value"]


def versus_random(comp: pd.DataFrame) -> pd.DataFrame:
    """The paired LLM-vs-random rows of the headline score: the paper's first claim, the floor beaten."""
    mine = comp[(comp["comparison"] == "paired") & (comp["explainer_kind_b"] == "random")]
    return mine[mine["metric"] == "score"].sort_values(["scorer", "dictionary_a", "explainer_a"])


def summarize(
    records: list[dict], outputs: dict[str, str], estimate: str | os.PathLike | None = None
) -> pd.DataFrame:
    """Write every summary output (keys: table, aggregates, subjects, comparisons, correlations, costs, spent
    (with an estimate), figure, subjects_figure, heatmap, html)."""
    table, explanations = collect(records)
    agg, comp, corr = aggregate(table), comparisons(table), correlations(table)
    cost, by_subject = costs(table, explanations), aggregate(table, by=["subject"])
    frames = dict(table=table, aggregates=agg, subjects=by_subject, comparisons=comp)
    frames |= dict(correlations=corr, costs=cost)
    if estimate is not None:  # what the run was expected to cost beside what it spent
        from interpflow.estimate.display import compare

        frames["spent"] = compare(read_parquet(estimate), cost)
    for name, frame in frames.items():
        write_parquet(frame, outputs[name])
    plot_scores(table, outputs["figure"])
    plot_scores(table, outputs["subjects_figure"], by="subject")
    plot_correlations(corr, outputs["heatmap"])
    ci = "median, 95% order-statistic CI (NaN with fewer than 6 latents)"
    sections = {
        "LLM explanation vs random explanation, paired over latents (median difference, 95% order-statistic "
        "CI, Wilcoxon signed-rank p)": versus_random(comp)[VERSUS],
        f"Scores by kind of subject ({ci})": by_subject,
        f"Scores, latents selected / ok / skipped / failed, and the random floor ({ci})": agg,
        "All comparisons (paired: Wilcoxon signed-rank; between dictionaries: Mann-Whitney U)": comp,
        "Cost": cost,
        **({"Estimated before the run, and spent": frames["spent"]} if estimate is not None else {}),
        "Spearman between scorers, per subject and explainer": corr,
        "Latents": table[[c for c in SHOWN if c in table.columns]].sort_values(["scorer", "latent"]),
    }
    html_page(sections, outputs["html"])
    log_comparisons(versus_random(comp))  # the headline in the log too
    return table


def log_comparisons(comp: pd.DataFrame) -> None:
    """One log line per paired headline comparison against the random floor."""
    for r in comp.itertuples():
        log.info(
            "%s %s vs %s: %d pairs, median %.3f vs %.3f, difference %.3f [%.3f, %.3f], Wilcoxon p %.3g",
            r.scorer, r.explainer_a, r.explainer_b, r.n_pairs, r.median_a, r.median_b,
            r.median_difference, r.ci_low, r.ci_high, r.p_value,
        )  # fmt: skip
