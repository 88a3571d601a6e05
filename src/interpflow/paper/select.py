"""Which latents a row of the paper's tables stands for: the reference setting updated with the row's
overrides, and the scorer playing a role. The summary's latents scored ok are grouped once by setting and
scorer, so a row's lookup is a dictionary access even with a million latents."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from interpflow.stats import SUBJECT

ROLES = ("fuzzing", "detection", "simulation", "embedding", "surprisal", "intervention")
"""The canonical role order: it names correlation pairs ("fuzzing-detection") as the paper's tables do."""
ROW_KEYS = {"label", "paper_row"}
"""Keys of a config row that are not overrides of the reference."""
NUMERIC = ["score", "n", "prompt_tokens", "cached_tokens", "completion_tokens", "kl", "score_shuffled"]
NUMERIC += ["score_random_direction"]
LATENTS, CROSSLAYER, AGREEMENT = "latents.parquet", "crosslayer.parquet", "agreement-scorers.parquet"


def read_latents(path: str | os.PathLike) -> pd.DataFrame:
    """The columns of latents.parquet the paper needs (absent numeric ones as NaN), rows scored ok only."""
    import pyarrow.parquet as pq

    present = set(pq.read_schema(path).names)
    missing = {*SUBJECT, "scorer", "latent", "status"} - present
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}")
    columns = [*SUBJECT, "scorer", "latent", "status", *(c for c in NUMERIC if c in present)]
    frame = pd.read_parquet(path, columns=columns)
    frame = frame[frame["status"] == "ok"].drop(columns="status").reset_index(drop=True)
    for c in NUMERIC:
        frame[c] = frame[c].astype("float64") if c in frame else np.nan
    return frame


class Scores:
    """The latents scored ok, indexed by their setting (stats.SUBJECT) and scorer."""

    def __init__(self, ok: pd.DataFrame):
        self.frame = ok.reset_index(drop=True)
        keys = self.frame[[*SUBJECT, "scorer"]].astype(str)
        self._index = keys.groupby([*SUBJECT, "scorer"], sort=False).indices if len(keys) else {}

    def rows(self, setting: dict, scorer: str | None) -> pd.DataFrame:
        """The rows of one setting and scorer (none when the scorer is None or never ran there)."""
        idx = self._index.get((*(str(setting[k]) for k in SUBJECT), str(scorer))) if scorer else None
        return self.frame.iloc[idx] if idx is not None else self.frame.iloc[:0]

    def values(self, setting: dict, scorer: str | None, column: str = "score") -> pd.Series:
        """The finite values of `column` of one setting and scorer, indexed by latent."""
        rows = self.rows(setting, scorer)
        v = pd.Series(rows[column].to_numpy(dtype=np.float64), index=rows["latent"].to_numpy())
        return v[np.isfinite(v.to_numpy())]


def overrides(row: dict, extra: set[str] = frozenset()) -> dict:
    """The reference keys a config row overrides; a ValueError names any key that is neither."""
    unknown = set(row) - ROW_KEYS - set(SUBJECT) - set(extra)
    if unknown:
        raise ValueError(f"paper row {row.get('label')!r}: unknown keys {sorted(unknown)} "
                         f"(allowed: label, paper_row, {', '.join(SUBJECT)})")  # fmt: skip
    return {k: row[k] for k in SUBJECT if k in row}


def describe(changes: dict) -> str:
    """`key=value, ...` of a row's overrides, or "reference" without any."""
    return ", ".join(f"{k}={v}" for k, v in changes.items()) or "reference"


@dataclass(frozen=True)
class Context:
    """What every table is built from."""

    scores: Scores
    """The summary's latents scored ok."""
    spec: dict
    """The config's `paper` section."""
    roles: dict[str, str]
    """{role: scorer entry playing it}, in the canonical role order."""
    crosslayer: pd.DataFrame | None
    """crosslayer.parquet, or None where the run made none."""
    agreement: pd.DataFrame | None
    """agreement-scorers.parquet, or None where the run made none."""

    @property
    def reference(self) -> dict:
        return self.spec["reference"]

    def setting(self, row: dict, extra: set[str] = frozenset()) -> dict:
        """The reference updated with a config row's overrides."""
        return self.reference | overrides(row, extra)

    def role_values(self, setting: dict, role: str) -> pd.Series:
        """The scores of the scorer playing `role` in `setting`, by latent (empty if the role is absent)."""
        return self.scores.values(setting, self.roles.get(role))


def role_map(spec: dict) -> dict[str, str]:
    """`paper.roles` in the canonical order; without it, each role is played by the scorer of its name."""
    roles = spec.get("roles") or {r: r for r in ROLES}
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"paper.roles: unknown roles {sorted(unknown)} (allowed: {', '.join(ROLES)})")
    return {r: roles[r] for r in ROLES if roles.get(r)}


def load_context(summary_dir: str | os.PathLike, spec: dict) -> Context:
    """Read the summary tables a paper needs; crosslayer and agreement may be absent."""
    summary_dir = Path(summary_dir)
    missing = set(SUBJECT) - set(spec.get("reference") or {})
    if missing:
        raise ValueError(f"paper.reference lacks {sorted(missing)}: it must name all of {', '.join(SUBJECT)}")
    optional = {name: summary_dir / name for name in (CROSSLAYER, AGREEMENT)}
    tables = {name: pd.read_parquet(p) if p.exists() else None for name, p in optional.items()}
    scores = Scores(read_latents(summary_dir / LATENTS))
    return Context(scores, spec, role_map(spec), tables[CROSSLAYER], tables[AGREEMENT])
