"""Summaries across subjects and scorers: one long table, a figure of score distributions, an HTML table."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from .store import atomic_path, read_parquet, write_parquet

log = logging.getLogger(__name__)

KEYS = ["corpus", "model", "hookpoint", "dictionary", "sampler", "explainer", "scorer"]
SUBJECT = ["model", "hookpoint", "dictionary", "explainer"]
METRICS = ["balanced_accuracy", "auroc"]


def collect(records: list[dict]) -> pd.DataFrame:
    """One row per (subject, scorer, latent): its metrics joined with its explanation."""
    frames = []
    for r in records:
        metrics = read_parquet(r["metrics"])
        explanations = read_parquet(r["explanations"])[["latent", "explanation", "status"]]
        explanations = explanations.rename(columns={"status": "explanation_status"})
        frame = metrics.drop(columns=["scorer"], errors="ignore").merge(explanations, on="latent", how="left")
        for key in KEYS:
            frame.insert(0, key, r[key])
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    return table[KEYS + [c for c in table.columns if c not in KEYS]]


def subject_label(table: pd.DataFrame) -> pd.Series:
    """A short label per row naming its subject: model/hookpoint/dictionary/explainer."""
    return table[SUBJECT].astype(str).agg("/".join, axis=1)


def plot_scores(table: pd.DataFrame, out_path: str | os.PathLike) -> None:
    """Box plots with the points over them: each scorer's metrics per subject, one panel per scorer x metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scorers = sorted(table["scorer"].unique())
    fig, axes = plt.subplots(len(METRICS), len(scorers), figsize=(4 + 3 * len(scorers), 7), squeeze=False)
    labels = subject_label(table)
    subjects = sorted(labels.unique())
    rng = np.random.default_rng(0)  # jitter only
    for col, scorer in enumerate(scorers):
        for row, metric in enumerate(METRICS):
            ax = axes[row][col]
            data = [
                table.loc[(labels == s) & (table["scorer"] == scorer), metric].dropna().to_numpy()
                for s in subjects
            ]
            ax.boxplot([d if len(d) else [np.nan] for d in data], showfliers=False)
            for i, d in enumerate(data):
                ax.scatter(i + 1 + rng.uniform(-0.15, 0.15, len(d)), d, s=10, alpha=0.6)
            ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{scorer}: {metric}  (n={sum(len(d) for d in data)})", fontsize=9)
            ax.set_xticks(range(1, len(subjects) + 1), subjects, rotation=20, ha="right", fontsize=7)
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def html_table(table: pd.DataFrame, out_path: str | os.PathLike) -> None:
    """A self-contained HTML page listing every latent's explanation and scores."""
    cols = [
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
        "balanced_accuracy",
        "f1",
        "auroc",
    ]
    shown = table[[c for c in cols if c in table.columns]].sort_values(["scorer", "latent"])
    body = shown.to_html(index=False, float_format=lambda x: f"{x:.3f}", na_rep="", escape=True)
    page = f"<html><head><meta charset='utf-8'><title>interpflow latents</title></head><body>{body}</body></html>"
    with atomic_path(out_path) as tmp:
        tmp.write_text(page, encoding="utf-8")


def summarize(records: list[dict], table_out, figure_out, html_out) -> pd.DataFrame:
    """Write the summary table, the score figure and the HTML table for all scored shards."""
    table = collect(records)
    write_parquet(table, table_out)
    plot_scores(table, figure_out)
    html_table(table, html_out)
    for (scorer, label), group in table.groupby(["scorer", subject_label(table)]):
        log.info(
            "%s %s: %d latents, median balanced accuracy %.3f, median AUROC %.3f",
            scorer,
            label,
            len(group),
            group["balanced_accuracy"].median(),
            group["auroc"].median(),
        )
    return table
