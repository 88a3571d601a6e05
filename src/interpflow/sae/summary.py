"""training_table: how each trained SAE of a run trained, per epoch (fvu, L0 and dead fraction, as the
trainer measured them), from the metrics its cfg.json keeps, into results/summary/sae_training.parquet."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from interpflow.store import write_parquet

KEYS = ["corpus", "model", "hookpoint", "dictionary"]
COLUMNS = [*KEYS, "epoch", "tokens", "fvu", "l0", "dead_fraction", "final_dead_fraction", "tokens_trained",
           "seconds", "tokens_per_s", "optimizer", "lr"]  # fmt: skip


def training_rows(record: dict) -> list[dict]:
    """One row per epoch of the SAE whose cfg.json is record['cfg'] (KEYS from the record)."""
    path = Path(record["cfg"])
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read SAE config {path}: {exc}") from exc
    if "tokens_trained" not in cfg:
        raise ValueError(f"{path} holds no training metrics (not written by the trainer)")
    train = cfg.get("train", {})
    run = {k: record[k] for k in KEYS} | {
        "final_dead_fraction": cfg["dead_fraction"],
        "tokens_trained": cfg["tokens_trained"],
        "seconds": cfg["seconds"],
        "tokens_per_s": cfg["tokens_trained"] / cfg["seconds"] if cfg["seconds"] else float("nan"),
        "optimizer": train.get("optimizer", "adam"),  # trained before the key existed: Adam
        "lr": train.get("lr"),
    }
    epochs = cfg.get("epochs") or [{"epoch": None, "tokens": cfg["tokens_trained"], "fvu": cfg["fvu"]}]
    return [run | {k: e.get(k) for k in ("epoch", "tokens", "fvu", "l0", "dead_fraction")} for e in epochs]


def training_table(records: list[dict], out: str | os.PathLike) -> pd.DataFrame:
    """Write (and return) the per-epoch table of every trained SAE in `records`."""
    rows = [row for r in records for row in training_rows(r)]
    table = pd.DataFrame(rows, columns=COLUMNS).astype({"epoch": "Int64", "tokens": "int64"})
    write_parquet(table, out)
    return table
