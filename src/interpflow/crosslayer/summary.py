"""The cross-layer summary: one row per aligned pair of layers (and explainer), and the figure of matched
vs random similarity by layer distance."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from interpflow.store import read_parquet, write_parquet

__all__ = ["plot_similarity_by_distance"]


def plot_similarity_by_distance(df: pd.DataFrame, out_path: str | os.PathLike) -> None:
    """Two panels by layer distance: decoder cosine and explanation similarity, matched vs random pairs.

    df: one row per pair of dictionaries, as returned by cross_layer (distance, mean_cosine,
    mean_cosine_random, mean_similarity_matched, mean_similarity_random); points per pair, lines through
    the per-distance means.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from interpflow.report import save_figure

    panels = {
        "decoder cosine": ("mean_cosine", "mean_cosine_random"),
        "explanation similarity": ("mean_similarity_matched", "mean_similarity_random"),
    }
    missing = {"distance", *sum(panels.values(), ())} - set(df.columns)
    if missing:
        raise ValueError(f"plot_similarity_by_distance: the table lacks columns {sorted(missing)}")
    if df.empty:
        raise ValueError("plot_similarity_by_distance: the table is empty")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (title, cols) in zip(axes, panels.items(), strict=True):
        for col, label, color in zip(cols, ("matched", "random"), ("C0", "grey"), strict=True):
            means = df.groupby("distance")[col].mean()
            ax.scatter(df["distance"], df[col], s=14, alpha=0.6, color=color)
            ax.plot(means.index, means.to_numpy(), marker="o", color=color, label=label)
        ax.set_xlabel("layer distance")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(sorted(df["distance"].unique()))
        ax.legend(fontsize=8)
    axes[0].set_ylabel("mean cosine")
    save_figure(fig, out_path)


def summarize_layers(
    records: list[dict], table_out: str | os.PathLike, figure_out: str | os.PathLike
) -> pd.DataFrame:
    """One row per aligned pair of layers (and explainer): matched cosine and explanation similarity."""
    keys = ["corpus", "model", "dictionary", "hookpoint_a", "hookpoint_b", "sampler", "explainer", "distance"]
    rows = []
    for r in records:
        matches, sims = read_parquet(r["matches"]), read_parquet(r["similarity"])
        matched, rand = sims[sims["pair"] == "matched"], sims[sims["pair"] == "random"]
        rows.append(
            {k: r[k] for k in keys}
            | dict(
                n_matched=len(matches),
                mean_cosine=float(matches["cosine"].mean()),
                mean_cosine_random=np.nan,  # Hungarian on unrelated dictionaries: see the random-sae rows
                n_explained_pairs=len(matched),
                mean_similarity_matched=float(matched["similarity"].mean()),
                n_random_pairs=len(rand),
                mean_similarity_random=float(rand["similarity"].mean()),
            )
        )
    table = pd.DataFrame(rows)
    write_parquet(table, table_out)
    plot_similarity_by_distance(table, figure_out)
    return table
