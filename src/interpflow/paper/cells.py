"""One cell of the paper's comparison: a statistic of ours with its interval, beside the published value.
Medians carry the order-statistic interval (interpflow.stats.median_ci) and the IQR; correlations a
Fisher-z interval."""

from __future__ import annotations

from importlib import resources
from typing import NamedTuple

import numpy as np
import pandas as pd

from interpflow.stats import median_ci, quantile

COLUMNS = {
    "table": "str",
    "row": "str",
    "metric": "str",
    "ours": "float64",
    "low": "float64",
    "high": "float64",
    "paper": "float64",
    "n": "int64",
    "source": "str",
    "q25": "float64",
    "q75": "float64",
}
"""comparison.parquet's columns (paper-design.md): one row per table cell."""
Z95 = 1.959963984540054


class Table(NamedTuple):
    """A built table: its cells and what the page says about where they came from."""

    cells: pd.DataFrame
    """COLUMNS plus `paper_row` (the published row a cell is compared with)."""
    settings: dict[str, str]
    """{row: the config overrides it came from}."""
    notes: list[str]
    """Why a cell is empty (a role never run, a price unknown), shown under the table."""


def cell(row: str, metric: str, ours: float, n: int, **extra) -> dict:
    """A cell without an interval or quartiles unless given."""
    base = dict(row=str(row), metric=metric, ours=float(ours), low=np.nan, high=np.nan, n=int(n))
    return base | dict(q25=np.nan, q75=np.nan, paper_row=str(row)) | extra


def median_cell(row: str, metric: str, values, paper_row: str | None = None) -> dict:
    """Median with its 95% order-statistic interval (NaN below 6 values) and quartiles."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    ci = median_ci(v)
    extra = dict(low=ci.low, high=ci.high, q25=quantile(v, 0.25), q75=quantile(v, 0.75))
    return cell(row, metric, ci.median, len(v), **extra, paper_row=str(paper_row or row))


def mean_cell(row: str, metric: str, values) -> dict:
    """Mean (no interval) with the values' quartiles."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    mean = float(v.mean()) if len(v) else np.nan
    return cell(row, metric, mean, len(v), q25=quantile(v, 0.25), q75=quantile(v, 0.75))


def fisher_interval(r: float, n: int, variance: float = 1.0) -> tuple[float, float]:
    """95% interval of a correlation by Fisher's z: tanh(atanh r -+ 1.96 sqrt(variance / (n - 3))); NaN
    below 4 pairs. Spearman's rho takes variance 1.06 (Fieller, Hartley and Pearson 1957)."""
    if n < 4 or not np.isfinite(r):
        return np.nan, np.nan
    z = np.arctanh(np.clip(r, -1 + 1e-15, 1 - 1e-15))
    half = Z95 * np.sqrt(variance / (n - 3))
    return float(np.tanh(z - half)), float(np.tanh(z + half))


SPEARMAN_VARIANCE = 1.06


def correlation(x: pd.Series, y: pd.Series, method: str) -> tuple[float, int]:
    """Spearman or Pearson of two series over the index values both hold (NaN below 3 or if constant)."""
    from scipy.stats import pearsonr, spearmanr

    both = pd.concat([x.rename("x"), y.rename("y")], axis=1, join="inner").dropna()
    a, b, n = both["x"].to_numpy(), both["y"].to_numpy(), len(both)
    if n < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return np.nan, n
    stat = spearmanr(a, b).statistic if method == "spearman" else pearsonr(a, b).statistic
    return float(stat), n


def correlation_cell(row: str, metric: str, r: float, n: int) -> dict:
    """A correlation with its Fisher-z interval (Fieller's variance for Spearman)."""
    low, high = fisher_interval(r, n, SPEARMAN_VARIANCE if metric.startswith("spearman") else 1.0)
    return cell(row, metric, r, n, low=low, high=high)


def frame(cells: list[dict]) -> pd.DataFrame:
    """Cells as a table with COLUMNS (table, paper and source filled later) and paper_row."""
    out = pd.DataFrame(
        cells, columns=[c for c in COLUMNS if c not in ("table", "paper", "source")] + ["paper_row"]
    )
    return out.astype({c: t for c, t in COLUMNS.items() if c in out.columns})


def load_published() -> pd.DataFrame:
    """published.yaml: the paper's numbers as table, row, metric, value, source."""
    import yaml

    text = resources.files("interpflow.paper").joinpath("published.yaml").read_text(encoding="utf-8")
    out = pd.DataFrame(yaml.safe_load(text), columns=["table", "row", "metric", "value", "source"])
    return out.astype({"table": "str", "row": "str", "metric": "str", "value": "float64", "source": "str"})


def with_published(table_id: str, cells: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Cells with `table`, the published `paper` value (matched on paper_row and metric) and its `source`."""
    mine = published[published["table"] == table_id][["row", "metric", "value", "source"]]
    mine = mine.rename(columns={"row": "paper_row", "value": "paper"})
    out = cells.merge(mine, on=["paper_row", "metric"], how="left").assign(table=table_id)
    out["source"] = out["source"].fillna("")
    return out[[*COLUMNS, "paper_row"]].astype(COLUMNS)
