"""The tables built from score medians and correlations: subjects (A10), the scorers' correlations (A1,
A2), the ablations (A3-A5, activations, chain of thought), explainers (A8), judges (A9) and layers.
A builder returns a Table, or a string saying which config key would add it."""

from __future__ import annotations

from itertools import combinations

from .cells import Table, correlation, correlation_cell, frame, median_cell
from .select import Context, describe, overrides

SCORES = ("fuzzing", "detection")
"""The two scorers of the paper's headline and ablation tables."""


def role_medians(ctx: Context, rows: list[dict], roles: tuple[str, ...], scorer_keys: bool = False) -> Table:
    """Per config row and role: the median of the role's scores in the row's setting. With scorer_keys, a
    row names the scorer playing each role itself (judges, Table A9)."""
    cells, settings, seen = [], {}, set()
    for row in rows:
        label = str(row["label"])
        setting = ctx.setting(row, extra=set(roles) if scorer_keys else set())
        scorers = {r: row.get(r) for r in roles} if scorer_keys else {r: ctx.roles.get(r) for r in roles}
        for role in roles:
            values = ctx.scores.values(setting, scorers[role])
            seen |= {role} if len(values) else set()
            cells.append(median_cell(label, role, values.to_numpy(), paper_row=row.get("paper_row")))
        text = describe(overrides(row, extra=set(roles) if scorer_keys else set()))
        if scorer_keys:
            text += "; " + ", ".join(f"{r}: {s}" for r, s in scorers.items() if s)
        settings[label] = text
    notes = [f"no latents scored ok for {r} ({_scorer_text(ctx, r, scorer_keys)}) in any row: n = 0"
             for r in roles if r not in seen]  # fmt: skip
    return Table(frame(cells), settings, notes)


def _scorer_text(ctx: Context, role: str, scorer_keys: bool) -> str:
    if scorer_keys:
        return "the rows' own scorers"
    scorer = ctx.roles.get(role)
    return f"scorer {scorer!r}" if scorer else f"no `paper.roles.{role}`"


def subjects(ctx: Context) -> Table | str:
    rows = ctx.spec.get("subjects") or []
    return role_medians(ctx, rows, SCORES) if rows else "add `paper.subjects` to the config"


def ablation(key: str):
    """The builder of one ablation table, from `paper.ablations.<key>`."""

    def build(ctx: Context) -> Table | str:
        rows = (ctx.spec.get("ablations") or {}).get(key) or []
        return role_medians(ctx, rows, SCORES) if rows else f"add `paper.ablations.{key}` to the config"

    return build


def explainers(ctx: Context) -> Table | str:
    rows = ctx.spec.get("explainers") or []
    if not rows:
        return "add `paper.explainers` to the config"
    return role_medians(ctx, rows, ("fuzzing", "detection", "embedding", "simulation"))


def judges(ctx: Context) -> Table | str:
    rows = ctx.spec.get("judges") or []
    if not rows:
        return "add `paper.judges` to the config"
    return role_medians(ctx, rows, ("fuzzing", "detection", "simulation"), scorer_keys=True)


def layers(ctx: Context) -> Table | str:
    hookpoints = ctx.spec.get("layers") or []
    if not hookpoints:
        return "add `paper.layers` (hookpoints) to the config"
    return role_medians(ctx, [{"label": h, "hookpoint": h} for h in hookpoints], SCORES)


def correlations(method: str):
    """The builder of Table A1 (spearman) or A2 (pearson): every pair of roles that scored the reference."""

    def build(ctx: Context) -> Table | str:
        values = {r: ctx.role_values(ctx.reference, r) for r in ctx.roles}
        present = [r for r, v in values.items() if len(v)]
        if len(present) < 2:
            return (f"fewer than two roles scored the reference's latents (scored: {present or 'none'}); "
                    "run at least two of the scorers in `paper.roles` on the reference")  # fmt: skip
        cells = []
        for a, b in combinations(present, 2):
            r, n = correlation(values[a], values[b], method)
            cells.append(correlation_cell(f"{a}-{b}", method, r, n))
        absent = [r for r in ctx.roles if r not in present]
        notes = [f"roles without scores on the reference, left out: {', '.join(absent)}"] if absent else []
        return Table(frame(cells), {f"{a}-{b}": "reference" for a, b in combinations(present, 2)}, notes)

    return build
