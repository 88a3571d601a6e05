"""Tables from the summary's other files: agreement of scorers with human ratings (the paper's §4.1, from
agreement-scorers.parquet) and explanation similarity across layers (crosslayer.parquet)."""

from __future__ import annotations

import numpy as np

from .cells import Table, cell, correlation_cell, frame
from .select import AGREEMENT, CROSSLAYER, Context

PAIRS = {"mean_similarity_matched": "n_explained_pairs", "mean_similarity_random": "n_random_pairs"}
"""Cross-layer metrics and the column counting the pairs behind each."""


def human(ctx: Context) -> Table | str:
    """Spearman of human ratings with each scorer; a scorer playing a role is named by its role (so it
    meets §4.1's row), any other by its entry name."""
    table = ctx.agreement
    if table is None:
        return (f"needs {AGREEMENT} in the summary folder: rate latents in the browser (`interpflow serve`) "
                "and run the agreement rule")  # fmt: skip
    role_of = {scorer: role for role, scorer in ctx.roles.items()}
    cells, settings = [], {}
    for r in table.sort_values("scorer").itertuples(index=False):
        row = role_of.get(r.scorer, r.scorer)
        n = int(r.n) if np.isfinite(r.n) else 0
        cells.append(correlation_cell(row, "spearman", float(r.spearman), n))
        settings[row] = f"scorer {r.scorer} (kind {getattr(r, 'kind', '?')})"
    notes = ["intervals: Fisher z with Fieller's variance, from each scorer's n"] if cells else []
    return Table(frame(cells), settings, notes or [f"{AGREEMENT} has no rows (no ratings yet)"])


def crosslayer(ctx: Context) -> Table | str:
    """Mean explanation similarity of matched and random latent pairs, averaged over the layer pairs at
    each distance, per dictionary; restricted to the reference's corpus, model, sampler and explainer."""
    table = ctx.crosslayer
    if table is None:
        return f"needs {CROSSLAYER} in the summary folder: add `cross_layer` to the config"
    mine = table
    for key in ("corpus", "model", "sampler", "explainer"):
        if key in mine.columns:
            mine = mine[mine[key].astype(str) == str(ctx.reference[key])]
    cells, settings = [], {}
    for (dictionary, distance), g in mine.groupby(["dictionary", "distance"], sort=True):
        row = f"{dictionary}, distance {distance}"
        for metric, count in PAIRS.items():
            n = int(g[count].sum()) if count in g else len(g)
            cells.append(cell(row, metric, float(g[metric].mean()), n))
        settings[row] = f"dictionary={dictionary}" + _layer_pairs(g)
    notes = [] if cells else [f"{CROSSLAYER} has no rows for the reference's corpus, model, sampler and "
                              "explainer"]  # fmt: skip
    return Table(frame(cells), settings, notes)


def _layer_pairs(g) -> str:
    """The layer pairs behind a row, where the table names them."""
    if not {"hookpoint_a", "hookpoint_b"} <= set(g.columns):
        return ""
    return "; layer pairs " + ", ".join(
        f"{a}/{b}" for a, b in g[["hookpoint_a", "hookpoint_b"]].itertuples(index=False)
    )
