"""The intervention table (the paper's App. G): intervention scores of the reference's latents against
their floors (another latent's explanation, a random direction of the same norm), paired over the same
latents; the KL the steering reached; a random SAE's scores; and the correlation with fuzzing, which the
paper finds slightly negative (intervention finds output features that context-based scorers miss)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .cells import Table, correlation, correlation_cell, frame, median_cell
from .select import Context, describe, overrides

FLOORS = {"score_shuffled": "shuffled explanation", "score_random_direction": "random direction"}
REFERENCE_ROW = "reference"


def paired_floor(rows: pd.DataFrame, floor: str) -> list[dict]:
    """The floor's median over the latents where score and floor are both finite, and the median of the
    paired difference score - floor with its interval."""
    both = rows[np.isfinite(rows["score"]) & np.isfinite(rows[floor])]
    diff = both["score"].to_numpy() - both[floor].to_numpy()
    return [
        median_cell(REFERENCE_ROW, floor, both[floor].to_numpy()),
        median_cell(REFERENCE_ROW, f"score - {floor}", diff),
    ]


def intervention(ctx: Context) -> Table | str:
    scorer = ctx.roles.get("intervention")
    if scorer is None:
        return "add `paper.roles.intervention` (the intervention scorer's entry) to the config"
    rows = ctx.scores.rows(ctx.reference, scorer)
    rows = rows[np.isfinite(rows["score"].to_numpy(dtype=np.float64))]
    cells = [median_cell(REFERENCE_ROW, "score", rows["score"].to_numpy())]
    for floor in FLOORS:
        cells += paired_floor(rows, floor)
    cells.append(median_cell(REFERENCE_ROW, "kl", rows["kl"].to_numpy()))
    scores = pd.Series(rows["score"].to_numpy(), index=rows["latent"].to_numpy())
    r, n = correlation(scores, ctx.role_values(ctx.reference, "fuzzing"), "spearman")
    cells.append(correlation_cell(REFERENCE_ROW, "spearman_fuzzing", r, n))
    settings = {REFERENCE_ROW: f"reference, scorer {scorer}"}
    notes = [] if len(rows) else [f"no latents scored ok by {scorer!r} on the reference: n = 0"]
    random_row = ctx.spec.get("intervention_random")
    if random_row:
        label = str(random_row.get("label", "random SAE"))
        values = ctx.scores.values(ctx.setting(random_row), scorer)
        cells.append(median_cell(label, "score", values.to_numpy(), paper_row=random_row.get("paper_row")))
        settings[label] = describe(overrides(random_row))
    else:
        notes.append("add `paper.intervention_random` (e.g. a random SAE) to compare with an untrained one")
    return Table(frame(cells), settings, notes)
