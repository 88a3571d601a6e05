"""Agreement of human ratings with the automatic scorers and between raters.

The paper (§4.1) correlates human ratings of explanations with each scorer: Spearman fuzzing 0.69, simulation
0.60, detection 0.59, surprisal 0.34, embedding 0.32. Here an item is one explanation, (unit, latent,
explainer); its human side is the mean 1-5 rating over raters (and the mean human detection accuracy), its
automatic side the scorer's headline `score` from results/summary/latents.parquet (status ok only).

Tables (see `agreement`): `latents` per rated item, `scorers` per scorer, `alpha`: Krippendorff's alpha
between raters, ordinal on the 1-5 ratings (units: items) and nominal on the yes/no window answers (units:
windows of an item, each window id being specific to its item).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from interpflow.browser.ratings import read_ratings
from interpflow.store import read_parquet, write_parquet

log = logging.getLogger(__name__)

ITEM = ["unit", "latent", "explainer"]
UNIT_PARTS = ["corpus", "model", "hookpoint", "dictionary", "sampler"]
PAPER_SPEARMAN = {"fuzzing": 0.69, "simulation": 0.60, "detection": 0.59, "surprisal": 0.34,
                  "embedding": 0.32}  # fmt: skip
"""Spearman of human ratings with each scorer kind reported in the paper's §4.1."""
MIN_ALPHA_UNITS = 2
SCORER_COLUMNS = ["scorer", "kind", "n", "spearman", "p_value", "n_accuracy", "spearman_accuracy",
                  "p_value_accuracy", "paper_spearman"]  # fmt: skip
ALPHA_COLUMNS = ["metric", "level", "alpha", "n_raters", "n_units", "note"]


def _scores_wide(scores: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """One row per item with a `score.{scorer}` column each (NaN unless status ok); and the scorers' kinds."""
    if scores.empty:
        return pd.DataFrame(columns=ITEM), {}
    scores = scores.assign(unit=scores[UNIT_PARTS].astype(str).agg("/".join, axis=1),
                           score=scores["score"].where(scores["status"] == "ok"))  # fmt: skip
    kinds = scores.groupby("scorer")["kind"].first().to_dict()
    wide = scores.groupby([*ITEM, "scorer"])["score"].first().unstack("scorer")
    wide.columns = [f"score.{s}" for s in wide.columns]
    wide = wide.reset_index()
    if "explainer_kind" in scores:
        wide = wide.merge(scores.groupby(ITEM)["explainer_kind"].first().reset_index(), on=ITEM, how="left")
    return wide, kinds


def _latents(ratings: pd.DataFrame, wide: pd.DataFrame) -> pd.DataFrame:
    if ratings.empty:
        human = pd.DataFrame(columns=[*ITEM, "n_raters", "mean_rating", "human_accuracy"])
    else:
        human = (
            ratings.groupby(ITEM)
            .agg(
                n_raters=("rater", "nunique"),
                mean_rating=("rating", "mean"),
                human_accuracy=("human_accuracy", "mean"),
            )
            .reset_index()
        )
    human["latent"] = human["latent"].astype(int)
    if not wide.empty:
        wide = wide.assign(latent=wide["latent"].astype(int))
    return human.merge(wide, on=ITEM, how="left").sort_values(ITEM, ignore_index=True)


def spearman(x, y) -> tuple[int, float, float]:
    """(n, rho, two-sided p) over pairs where both are finite; NaN below 3 pairs or with a side constant."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    both = np.isfinite(x) & np.isfinite(y)
    x, y = x[both], y[both]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return int(len(x)), float("nan"), float("nan")
    result = spearmanr(x, y)
    return int(len(x)), float(result.statistic), float(result.pvalue)


def _scorers(latents: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    rows = []
    for scorer, kind in sorted(kinds.items()):
        score = latents[f"score.{scorer}"] if f"score.{scorer}" in latents else pd.Series(dtype=float)
        n, rho, p = spearman(latents["mean_rating"], score)
        n_acc, rho_acc, p_acc = spearman(latents["human_accuracy"], score)
        rows.append([scorer, kind, n, rho, p, n_acc, rho_acc, p_acc, PAPER_SPEARMAN.get(kind, float("nan"))])
    return pd.DataFrame(rows, columns=SCORER_COLUMNS)


def krippendorff_alpha(values: pd.DataFrame, level: str) -> tuple[float, int, int, str]:
    """Alpha over a long table (`rater`, `unit`, `value`): (alpha, n_raters, n_units pairable, note).

    Only units with values from two or more raters carry information on agreement (they are the pairable
    units); alpha is NaN with fewer than two raters, fewer than MIN_ALPHA_UNITS pairable units, or a single
    value throughout (no expected disagreement to compare with).
    """
    import krippendorff

    n_raters = values["rater"].nunique() if not values.empty else 0
    counts = values.groupby("unit")["rater"].nunique() if not values.empty else pd.Series(dtype=int)
    pairable = values[values["unit"].isin(counts.index[counts >= 2])]
    n_units = int(pairable["unit"].nunique()) if not pairable.empty else 0
    if n_raters < 2:
        return float("nan"), n_raters, n_units, "fewer than two raters"
    if n_units < MIN_ALPHA_UNITS:
        return float("nan"), n_raters, n_units, f"fewer than {MIN_ALPHA_UNITS} units rated by two raters"
    if pairable["value"].nunique() < 2:
        return float("nan"), n_raters, n_units, "every value is the same: alpha is undefined"
    matrix = pairable.pivot_table(index="rater", columns="unit", values="value", aggfunc="first")
    alpha = krippendorff.alpha(reliability_data=matrix.to_numpy(dtype=float), level_of_measurement=level)
    return float(alpha), n_raters, n_units, ""


def _alpha(ratings: pd.DataFrame) -> pd.DataFrame:
    if ratings.empty:
        items = answers = pd.DataFrame(columns=["rater", "unit", "value"])
    else:
        key = ratings[ITEM].astype(str).agg("|".join, axis=1)
        items = pd.DataFrame({"rater": ratings["rater"], "unit": key, "value": ratings["rating"]}).astype(
            {"value": float}
        )
        answers = pd.DataFrame([{"rater": r.rater, "unit": a["window"], "value": float(a["answer"])}
                                for r in ratings.itertuples(index=False) for a in r.answers],
                               columns=["rater", "unit", "value"])  # fmt: skip
    rows = [
        ["rating", "ordinal", *krippendorff_alpha(items, "ordinal")],
        ["answers", "nominal", *krippendorff_alpha(answers, "nominal")],
    ]
    return pd.DataFrame(rows, columns=ALPHA_COLUMNS)


def agreement(ratings: pd.DataFrame, scores: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Human-vs-scorer and rater-vs-rater agreement.

    `ratings`: `interpflow.browser.ratings.read_ratings`; `scores`: results/summary/latents.parquet.
    Returns `latents` (per rated item: `unit`, `latent`, `explainer`, `n_raters`, `mean_rating`,
    `human_accuracy` (mean over raters), `score.{scorer}` for every scorer, `explainer_kind`), `scorers` (per
    scorer: `n` items with a mean rating and a score, their `spearman` and `p_value`, the same against human
    accuracy, and `paper_spearman`, the paper's value for the scorer's kind) and `alpha` (rows `rating`,
    ordinal, and `answers`, nominal: `alpha`, `n_raters`, `n_units` rated by two or more raters, `note`).
    """
    wide, kinds = _scores_wide(scores)
    latents = _latents(ratings, wide)
    return {"latents": latents, "scorers": _scorers(latents, kinds), "alpha": _alpha(ratings)}


def _load(ratings_dir: str | os.PathLike, summary_latents_path: str | os.PathLike) -> dict[str, pd.DataFrame]:
    if Path(summary_latents_path).exists():
        scores = read_parquet(summary_latents_path)
    else:  # the browser can be served before the summary exists; ratings still count
        log.warning("%s is missing: agreement without scores", summary_latents_path)
        scores = pd.DataFrame()
    return agreement(read_ratings(ratings_dir), scores)


PathLike = str | os.PathLike


def write_agreement(ratings_dir: PathLike, summary_latents_path: PathLike,
                    out: PathLike | Mapping[str, PathLike]) -> dict[str, pd.DataFrame]:  # fmt: skip
    """Write the tables atomically and return them; `out` is a folder (getting `agreement-latents.parquet`,
    `agreement-scorers.parquet`, `agreement-alpha.parquet`) or a mapping from table name to path."""
    tables = _load(ratings_dir, summary_latents_path)
    if not isinstance(out, Mapping):
        out = {name: Path(out) / f"agreement-{name}.parquet" for name in tables}
    missing = sorted(set(tables) - set(out))
    if missing:
        raise ValueError(f"out: no path for tables {missing}")
    for name, table in tables.items():
        write_parquet(table, out[name])
    return tables


def _records(table: pd.DataFrame) -> list[dict]:
    # NaN is not JSON: None instead; astype(object) also turns numpy scalars into Python ones
    return table.astype(object).where(table.notna(), None).to_dict("records")


def agreement_records(ratings_dir: str | os.PathLike, summary_latents_path: str | os.PathLike) -> dict:
    """The tables as JSON for GET /api/agreement: `latents` and `scorers` as lists of rows, `alpha` as
    `{metric: {level, alpha, n_raters, n_units, note}}`, NaN as null."""
    tables = _load(ratings_dir, summary_latents_path)
    alpha = {row.pop("metric"): row for row in _records(tables["alpha"])}
    return {"latents": _records(tables["latents"]), "scorers": _records(tables["scorers"]), "alpha": alpha}
