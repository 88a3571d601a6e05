"""Summaries across subjects and scorers: the per-latent table, aggregates with bootstrap intervals, the
correlation between scorers, the cost table, figures and an HTML page."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from .store import atomic_path, read_parquet, write_parquet

log = logging.getLogger(__name__)

KEYS = ["corpus", "model", "hookpoint", "dictionary", "sampler", "explainer", "scorer"]
SUBJECT = ["corpus", "model", "hookpoint", "dictionary", "sampler", "explainer"]
USAGE = ["prompt_tokens", "completion_tokens", "cost_usd"]


def collect(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every metrics row joined with its explanation, and one row per explanation (with its own usage)."""
    frames, explained = [], {}
    for r in records:
        explanations = read_parquet(r["explanations"])
        subject = tuple(r[k] for k in SUBJECT) + (r["shard"],)
        explained[subject] = explanations.assign(**{k: r[k] for k in SUBJECT})
        joined = explanations[["latent", "explanation", "status"]].rename(
            columns={"status": "explanation_status"}
        )
        metrics = read_parquet(r["metrics"]).drop(columns=["scorer"], errors="ignore")
        frame = metrics.merge(joined, on="latent", how="left")
        frames.append(frame.assign(**{k: r[k] for k in KEYS}, subject=r.get("subject", r["dictionary"])))
    table = pd.concat(frames, ignore_index=True)
    table = table[KEYS + [c for c in table.columns if c not in KEYS]]
    return table, pd.concat(explained.values(), ignore_index=True)


def subject_label(frame: pd.DataFrame) -> pd.Series:
    """A short label per row naming its subject: model/hookpoint/dictionary/explainer."""
    return frame[["model", "hookpoint", "dictionary", "explainer"]].astype(str).agg("/".join, axis=1)


def median_ci(values: np.ndarray, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the median (NaN with fewer than 2 values)."""
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2 or np.ptp(values) == 0:
        m = float(np.median(values)) if len(values) else np.nan
        return (m, m) if len(values) >= 2 else (np.nan, np.nan)
    res = bootstrap(
        (values,),
        np.median,
        confidence_level=level,
        n_resamples=2000,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def aggregate(table: pd.DataFrame, seed: int = 0, by: list[str] | None = None) -> pd.DataFrame:
    """Per subject (or `by`) and scorer: latents scored and failed, median score with a 95% bootstrap CI."""
    keys = (SUBJECT if by is None else by) + ["scorer", "kind"]
    rows = []
    for key, g in table.groupby(keys, sort=True):
        ok = g.loc[g["status"] == "ok", "score"].dropna().to_numpy()
        low, high = median_ci(ok, seed)
        rows.append(
            dict(zip(keys, key, strict=True))
            | dict(
                latents=len(g),
                scored=len(ok),
                failed=int((g["status"] != "ok").sum()),
                median=float(np.median(ok)) if len(ok) else np.nan,
                ci_low=low,
                ci_high=high,
                q25=float(np.quantile(ok, 0.25)) if len(ok) else np.nan,
                q75=float(np.quantile(ok, 0.75)) if len(ok) else np.nan,
                mean=float(ok.mean()) if len(ok) else np.nan,
            )
        )
    return pd.DataFrame(rows)


def correlations(table: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation of every pair of scorers over the (subject, latent) pairs both scored."""
    from scipy.stats import spearmanr

    ok = table[table["status"] == "ok"].dropna(subset=["score"])
    wide = ok.pivot_table(index=SUBJECT + ["latent"], columns="scorer", values="score", aggfunc="first")
    rows = []
    for a in wide.columns:
        for b in wide.columns:
            x, y = wide[a].to_numpy(), wide[b].to_numpy()
            both = np.isfinite(x) & np.isfinite(y)
            rho = spearmanr(x[both], y[both]).statistic if both.sum() >= 3 else np.nan
            rows.append(dict(scorer_a=a, scorer_b=b, spearman=float(rho), n=int(both.sum())))
    return pd.DataFrame(rows, columns=["scorer_a", "scorer_b", "spearman", "n"])


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
    """Heatmap of the Spearman correlations between scorers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = corr.pivot(index="scorer_a", columns="scorer_b", values="spearman")
    fig, ax = plt.subplots(figsize=(1.2 * len(matrix) + 2.5, 1.0 * len(matrix) + 1.5))
    image = ax.imshow(matrix.to_numpy(dtype=float), vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(matrix)), matrix.columns, rotation=30, ha="right")
    ax.set_yticks(range(len(matrix)), matrix.index)
    for (i, j), v in np.ndenumerate(matrix.to_numpy(dtype=float)):
        ax.text(j, i, "" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="Spearman")
    save_figure(fig, out_path)


def save_figure(fig, out_path: str | os.PathLike) -> None:
    """Write a matplotlib figure as PNG atomically and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def html_page(sections: dict[str, pd.DataFrame], out_path: str | os.PathLike) -> None:
    """A self-contained HTML page with one table per section."""
    parts = [
        f"<h2>{title}</h2>" + frame.to_html(index=False, float_format=lambda x: f"{x:.3f}", na_rep="")
        for title, frame in sections.items()
    ]
    head = "<head><meta charset='utf-8'><title>interpflow summary</title></head>"
    with atomic_path(out_path) as tmp:
        tmp.write_text(f"<html>{head}<body>{''.join(parts)}</body></html>", encoding="utf-8")


def summarize(
    records: list[dict], outputs: dict[str, str], estimate: str | os.PathLike | None = None
) -> pd.DataFrame:
    """Write every summary output (keys: table, aggregates, subjects, correlations, costs, spent (with an
    estimate), figure, subjects_figure, heatmap, html)."""
    table, explanations = collect(records)
    agg, corr, cost = aggregate(table), correlations(table), costs(table, explanations)
    by_subject = aggregate(table, by=["subject"])
    frames = [
        ("table", table),
        ("aggregates", agg),
        ("subjects", by_subject),
        ("correlations", corr),
        ("costs", cost),
    ]
    if estimate is not None:  # what the run was expected to cost beside what it spent
        from interpflow.estimate import compare

        frames.append(("spent", compare(read_parquet(estimate), cost)))
    for name, frame in frames:
        write_parquet(frame, outputs[name])
    plot_scores(table, outputs["figure"])
    plot_scores(table, outputs["subjects_figure"], by="subject")
    plot_correlations(corr, outputs["heatmap"])
    shown = [
        "model",
        "hookpoint",
        "dictionary",
        "explainer",
        "scorer",
        "latent",
        "explanation",
        "status",
        "n",
        "n_failed",
        "score",
        "auroc",
    ]
    html_page(
        {
            "Scores by kind of subject (median, 95% bootstrap CI)": by_subject,
            "Scores (median, 95% bootstrap CI)": agg,
            "Cost": cost,
            **(
                {"Estimated before the run, and spent": dict(frames)["spent"]} if estimate is not None else {}
            ),
            "Spearman between scorers": corr,
            "Latents": table[[c for c in shown if c in table.columns]].sort_values(["scorer", "latent"]),
        },
        outputs["html"],
    )
    for row in agg.itertuples():
        log.info(
            "%s %s: %d/%d latents scored, median %.3f [%.3f, %.3f]",
            row.scorer,
            row.explainer,
            row.scored,
            row.latents,
            row.median,
            row.ci_low,
            row.ci_high,
        )
    return table
