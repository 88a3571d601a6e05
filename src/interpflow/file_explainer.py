"""Explanations read from a table on disk (explainer kind `file`): oracles, or ones made elsewhere.

The table (Parquet, or JSON records) needs the columns `latent` and `explanation`; other columns are
ignored. It writes the explanations table of interpflow.explain, so every scorer runs on it unchanged.
The validity benchmark (issue 13) gives its planted latents their known description this way.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from interpflow.explanations import EXPLANATION_COLUMNS, explanation_row
from interpflow.store import read_parquet, write_parquet

log = logging.getLogger(__name__)


def read_explanation_table(path: str | os.PathLike) -> pd.DataFrame:
    """latent (int64), explanation (str) from a .parquet or .json file; a clear error for a bad table."""
    path = Path(path)
    if path.suffix == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"missing explanations table: {path}")
        try:
            table = pd.read_json(path, orient="records")
        except ValueError as exc:
            raise ValueError(f"explanations table {path} is not a JSON list of records: {exc}") from exc
    else:
        table = read_parquet(path)
    missing = {"latent", "explanation"} - set(table.columns)
    if missing:
        raise ValueError(f"explanations table {path} lacks columns {sorted(missing)}")
    dup = table["latent"][table["latent"].duplicated()].unique()
    if len(dup):
        raise ValueError(f"explanations table {path} lists latents {sorted(dup.tolist())[:5]} more than once")
    return table[["latent", "explanation"]].astype({"latent": "int64"})


def explain_from_table(latents: pd.DataFrame, table: pd.DataFrame, source: str = "file") -> pd.DataFrame:
    """One explanations row per row of `latents`: the table's explanation where the latent is selected
    (status ok) and listed with a non-empty explanation; otherwise skipped with the reason in `error`."""
    by_latent = dict(zip(table["latent"].tolist(), table["explanation"].tolist(), strict=True))
    rows = []
    for lat, status, reason in latents[["latent", "status", "reason"]].itertuples(index=False):
        row = explanation_row(lat, "file", completion=f"from {source}")
        text = by_latent.get(int(lat))
        if status != "ok":
            row["error"] = reason or f"latent status {status}"
        elif not isinstance(text, str) or not text.strip():
            row["error"] = f"no explanation for latent {lat} in {source}"
        else:
            row |= dict(explanation=text.strip(), status="ok")
        rows.append(row)
    return pd.DataFrame(rows, columns=list(EXPLANATION_COLUMNS)).astype(EXPLANATION_COLUMNS)


def run_file(
    latents_path: str | os.PathLike, table_path: str | os.PathLike, out_path: str | os.PathLike
) -> None:
    """Workflow step: a shard's explanations from the table at table_path; write explanations-{shard}."""
    out = explain_from_table(read_parquet(latents_path), read_explanation_table(table_path), str(table_path))
    write_parquet(out, out_path)
    log.info("file: %d latents %s from %s -> %s", len(out), out["status"].value_counts().to_dict(),
             table_path, out_path)  # fmt: skip
