"""A run's explanations and scores as one flat table to publish: Parquet and JSON Lines.

One row per (unit, latent, explainer), from the long `results/summary/latents.parquet` (one row per
metrics row: unit, explainer, scorer, latent): the explanation once, and per scorer `score_{scorer}` (the
headline score, NaN unless that scorer's status is ok) and `status_{scorer}` (null where the scorer did not
run on that explainer).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from interpflow.store import atomic_path, read_parquet, write_parquet

UNIT = ["corpus", "model", "hookpoint", "dictionary", "sampler"]
ROW = [*UNIT, "latent", "explainer"]
EXPLANATION = ["explainer_kind", "subject", "explanation", "explanation_status"]


def flat_table(latents: pd.DataFrame) -> pd.DataFrame:
    """The wide table of a long summary table (see the module docstring); rows sorted by unit, latent,
    explainer, score columns by scorer name."""
    missing = sorted(set(ROW + EXPLANATION + ["scorer", "score", "status"]) - set(latents.columns))
    if missing:
        raise ValueError(f"the summary's latents table lacks columns {missing}")
    twice = latents.duplicated(ROW + ["scorer"], keep=False)
    if twice.any():
        first = latents[twice].iloc[0]
        raise ValueError(
            f"the summary repeats (unit, latent, explainer, scorer) on {int(twice.sum())} rows, "
            f"e.g. {dict(first[ROW + ['scorer']])}"
        )
    # Every scorer row of a latent and explainer carries the same explanation: take the first.
    rows = latents.groupby(ROW, sort=True, dropna=False)[EXPLANATION].first().reset_index()
    scores = latents.set_index(ROW + ["scorer"])[["score", "status"]].unstack("scorer")
    for scorer in sorted(latents["scorer"].unique()):
        column = scores[("score", scorer)].astype("float64")
        column = column.where(scores[("status", scorer)] == "ok")  # a failed score is no score
        rows[f"score_{scorer}"] = column.reindex(pd.MultiIndex.from_frame(rows[ROW])).to_numpy()
        status = scores[("status", scorer)].astype("string")
        rows[f"status_{scorer}"] = pd.array(
            status.reindex(pd.MultiIndex.from_frame(rows[ROW])).to_numpy(), dtype="string"
        )
    rows["latent"] = rows["latent"].astype("int64")
    return rows


def _json_value(value):
    """NaN, None and pandas' NA as null; numpy scalars as Python numbers."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def write_jsonl(table: pd.DataFrame, path: str | Path) -> None:
    """One JSON object per row, columns in table order, NaN as null (json.dumps would write NaN, which is
    not JSON: _json_value has made every NaN None first)."""
    columns = list(table.columns)
    lines = (
        json.dumps(dict(zip(columns, map(_json_value, row), strict=True)), ensure_ascii=False)
        for row in table.itertuples(index=False, name=None)
    )
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def export_table(summary_latents_path: str | Path, out_parquet: str | Path, out_jsonl: str | Path) -> int:
    """Write the flat explanations-and-scores table of a run as Parquet and JSONL; returns its row count."""
    table = flat_table(read_parquet(summary_latents_path))
    write_parquet(table, out_parquet)
    write_jsonl(table, out_jsonl)
    return len(table)
