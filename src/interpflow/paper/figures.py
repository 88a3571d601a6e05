"""One figure per table: a panel per metric, a line per row, ours as a point with its 95% interval and
IQR, the paper's value as a diamond."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd


def _panel(ax, cells: pd.DataFrame, rows: list[str], metric: str) -> None:
    """One metric's rows, top to bottom in table order."""
    sub = cells[cells["metric"] == metric].drop_duplicates("row").set_index("row").reindex(rows)
    y = np.arange(len(rows))
    ours = sub["ours"].to_numpy(dtype=np.float64)
    ax.hlines(y, sub["q25"], sub["q75"], color="#c9d6e8", linewidth=7, zorder=1, label="IQR")
    err = np.nan_to_num(np.abs(np.vstack([ours - sub["low"], sub["high"] - ours])), nan=0.0)
    ax.errorbar(ours, y, xerr=err, fmt="o", color="#1f4e8c", capsize=3, zorder=3, label="ours, 95% CI")
    ax.scatter(sub["paper"], y, marker="D", color="#c0392b", s=36, zorder=4, label="paper")
    for yi, n in zip(y, sub["n"], strict=True):
        if n == 0:  # a row selecting no latents (NaN n: the row has no such metric)
            ax.text(0.02, yi, "n = 0", transform=ax.get_yaxis_transform(), va="center", fontsize=8,
                    color="grey")  # fmt: skip
    ax.set_yticks(y, rows, fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_title(metric, fontsize=10)
    if metric.startswith(("spearman", "pearson")):
        ax.set_xlim(-1.05, 1.05)
    ax.grid(axis="x", color="#eeeeee")
    ax.tick_params(axis="x", labelsize=8)


def plot_table(cells: pd.DataFrame, title: str, out_path: str | os.PathLike) -> None:
    """The table's figure as PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(cells["metric"]))
    rows = list(dict.fromkeys(cells["row"]))
    cols = max(min(3, len(metrics)), 1)
    lines = max(-(-len(metrics) // cols), 1)
    height = 0.38 * max(len(rows), 2) + 1.3
    width = max(max((len(r) for r in rows), default=8) * 0.06, 1.0) + 3.2
    fig, axes = plt.subplots(lines, cols, figsize=(width * cols, height * lines), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        _panel(ax, cells, rows, metric)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    if not metrics:
        axes[0, 0].text(0.5, 0.5, "no cells", ha="center", va="center")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:  # below the panels; bbox_inches="tight" keeps it in the image
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=8, ncol=3,
                   frameon=False)  # fmt: skip
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(out_path, format="png", dpi=110, bbox_inches="tight")  # inside build_paper's staged folder
    plt.close(fig)
