"""Render a latent's page: shaded token windows, the activation histogram, judge answers, steering samples.

Token windows are turned into HTML here rather than in a template loop: a shard of thousands of latents
has millions of token spans, and string joins are an order of magnitude faster than Jinja macros.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pandas as pd
from markupsafe import Markup, escape

from interpflow.browser.collect import ShardData, activation_histogram, top_tokens

JUDGE_KINDS = ("detection", "fuzzing")
WINDOW_VALUE_COLUMNS = {"embedding": ("similarity", "cosine similarity"), "surprisal": ("drop", "loss drop")}
SIMULATION_SCALE = 10.0  # simulation predictions and truth are on a 0-10 scale per latent
HIST_W, HIST_H, HIST_PAD = 420, 150, 28


@cache
def environment():
    """The Jinja environment over the package's templates (autoescaped; built once per process)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("interpflow.browser", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def fmt(x, digits: int = 3) -> str:
    """A number for a table cell; an em dash for missing or NaN."""
    if _nan(x):
        return "—"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    return f"{float(x):.{digits}g}" if abs(float(x)) < 1e-3 and x != 0 else f"{float(x):.{digits}f}"


def token_text(s: str) -> str:
    """A token as shown: line breaks and tabs made visible, so windows keep their shape on one line."""
    return str(s).replace("\n", "⏎").replace("\t", "⇥").replace("\r", "")


def token_spans(strs, values, scale: float, compact: bool = False) -> Markup:
    """One `span.tok` per token, shaded by value / scale, with the exact value in data-act and on hover.

    `compact` writes zero-valued tokens as bare text: the scorers' tables repeat every test window, and
    without it a latent's page is several times larger for no information.
    """
    parts = []
    for s, v in zip(strs, values, strict=False):
        v = float(v)
        if compact and v == 0:
            parts.append(str(escape(token_text(s))))
            continue
        alpha = min(max(v / scale, 0.0), 1.0) if scale > 0 and math.isfinite(v) else 0.0
        style = f' style="--a:{alpha:.3f}"' if alpha > 0 else ""
        parts.append(
            f'<span class="tok" data-act="{v!r}" title="{escape(repr(str(s)))}: {v:.4g}"{style}>'
            f"{escape(token_text(s))}</span>"
        )
    return Markup("".join(parts))


def histogram_svg(values: np.ndarray, n_bins: int = 20) -> Markup:
    """An inline SVG bar chart of a latent's nonzero activations (each bar's count in data-count)."""
    edges, counts = activation_histogram(values, n_bins)
    if len(counts) == 0:
        return Markup('<p class="muted">No activations of this latent in the store.</p>')
    top = int(counts.max())
    plot_w, plot_h = HIST_W - 2 * HIST_PAD, HIST_H - 2 * HIST_PAD
    bar_w = plot_w / len(counts)
    bars = []
    for i, c in enumerate(counts):
        h = plot_h * c / top if top else 0
        x, y = HIST_PAD + i * bar_w, HIST_PAD + plot_h - h
        bars.append(
            f'<rect class="bar" data-count="{int(c)}" data-lo="{edges[i]!r}" data-hi="{edges[i + 1]!r}" '
            f'x="{x:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 1):.1f}" height="{h:.1f}">'
            f"<title>{edges[i]:.3g} – {edges[i + 1]:.3g}: {int(c):,}</title></rect>"
        )
    base = HIST_PAD + plot_h
    labels = (
        f'<text x="{HIST_PAD}" y="{base + 16}" class="axis">{edges[0]:.3g}</text>'
        f'<text x="{HIST_W - HIST_PAD}" y="{base + 16}" class="axis" text-anchor="end">{edges[-1]:.3g}</text>'
        f'<text x="{HIST_W / 2}" y="{base + 16}" class="axis" text-anchor="middle">activation</text>'
        f'<text x="{HIST_PAD - 4}" y="{HIST_PAD + 4}" class="axis" text-anchor="end">{top:,}</text>'
        f'<text x="{HIST_PAD - 4}" y="{base}" class="axis" text-anchor="end">0</text>'
        f'<line x1="{HIST_PAD}" y1="{base}" x2="{HIST_W - HIST_PAD}" y2="{base}" class="axis-line"/>'
    )
    return Markup(
        f'<svg class="histogram" viewBox="0 0 {HIST_W} {HIST_H}" width="{HIST_W}" height="{HIST_H}" '
        f'role="img" aria-label="activation histogram">{"".join(bars)}{labels}</svg>'
    )


def window_record(ex: dict, scale: float) -> dict:
    """A window of examples/shard-{shard}.parquet, ready for the template."""
    return {
        "example_id": int(ex["example_id"]),
        "split": ex["split"],
        "activating": bool(ex["activating"]),
        "negative": ex.get("negative") or "",
        "quantile": int(ex["quantile"]),
        "max_act": float(ex["max_act"]),
        "where": f"seq {int(ex['seq'])}, from {int(ex['start'])}",
        "html": token_spans(ex["token_strs"], ex["acts"], scale),
    }


def window_groups(examples: pd.DataFrame | None, scale: float) -> tuple[list[dict], list[dict]]:
    """Activating windows (test and train) by activation quantile, strongest first; non-activating ones."""
    if examples is None or examples.empty:
        return [], []
    records = [window_record(ex, scale) for ex in examples.to_dict("records")]
    activating = [r for r in records if r["activating"]]
    groups = []
    for q in sorted({r["quantile"] for r in activating}, reverse=True):
        members = sorted((r for r in activating if r["quantile"] == q), key=lambda r: -r["max_act"])
        groups.append({"quantile": q, "windows": members})
    negatives = sorted((r for r in records if not r["activating"]), key=lambda r: (r["negative"], r["split"]))
    return groups, negatives


def judge_rows(pred: pd.DataFrame, windows: dict[int, dict], scale: float) -> list[dict]:
    """Detection/fuzzing: the judge's answer per test window, right or wrong against the truth."""
    rows = []
    for p in pred.to_dict("records"):
        answer = p.get("prediction")
        answered = (
            answer is not None
            and answer is not pd.NA
            and not (isinstance(answer, float) and math.isnan(answer))
        )
        ex = windows.get(int(p["example_id"]))
        rows.append({
            "example_id": int(p["example_id"]),
            "activating": bool(p["activating"]),
            "answer": ("yes" if bool(answer) else "no") if answered else "—",
            "mark": ("right" if bool(answer) == bool(p["activating"]) else "wrong") if answered else "failed",
            "p_yes": fmt(p.get("p_yes")),
            "status": p.get("status") or "",
            "error": p.get("error") or "",
            "html": token_spans(ex["token_strs"], ex["acts"], scale, compact=True) if ex else Markup(""),
        })  # fmt: skip
    return rows


def simulation_rows(pred: pd.DataFrame, windows: dict[int, dict]) -> list[dict]:
    """Simulation: per window, the simulator's per-token predictions above the true (scaled) activations."""
    rows = []
    for p in pred.to_dict("records"):
        ex = windows.get(int(p["example_id"]))
        strs = ex["token_strs"] if ex else [""] * len(p["true"] if p["true"] is not None else [])
        predicted = p["predicted"] if p["predicted"] is not None else []
        true = p["true"] if p["true"] is not None else []
        rows.append({
            "example_id": int(p["example_id"]),
            "activating": bool(p["activating"]),
            "status": p.get("status") or "",
            "predicted": token_spans(strs, predicted, SIMULATION_SCALE),
            "true": token_spans(strs, true, SIMULATION_SCALE),
        })  # fmt: skip
    return rows


def value_rows(pred: pd.DataFrame, column: str, windows: dict[int, dict], scale: float) -> list[dict]:
    """Embedding/surprisal: one number per test window."""
    rows = []
    for p in pred.sort_values(column, ascending=False).to_dict("records"):
        ex = windows.get(int(p["example_id"]))
        rows.append({
            "example_id": int(p["example_id"]),
            "activating": bool(p["activating"]),
            "value": fmt(p.get(column)),
            "status": p.get("status") or "",
            "html": token_spans(ex["token_strs"], ex["acts"], scale, compact=True) if ex else Markup(""),
        })  # fmt: skip
    return rows


def intervention_rows(pred: pd.DataFrame) -> list[dict]:
    """Intervention: each prompt's clean, steered and random-direction continuations."""
    keep = ("prompt_index", "prompt", "clean", "steered", "random_steered", "status", "error")
    nums = ("logp_clean", "logp_steered", "logp_random", "alpha", "kl", "alpha_random", "kl_random")
    return [
        {k: p.get(k) or "" for k in keep} | {k: fmt(p.get(k)) for k in nums}
        for p in pred.sort_values("prompt_index").to_dict("records")
    ]


METRIC_SKIP = {"latent", "scorer", "kind", "status", "prompt_tokens", "completion_tokens", "cached_tokens",
               "cost_usd"}  # fmt: skip


def scorer_section(scorer, latent: int, windows: dict[int, dict], scale: float) -> dict:
    """One scorer's verdict on one explainer's explanation of the latent, with its per-window evidence."""
    metrics = scorer.metrics.get(latent) or {}
    pred = scorer.predictions.get(latent)
    section = {
        "explainer": scorer.explainer,
        "name": scorer.name,
        "kind": scorer.kind,
        "status": metrics.get("status") or "no metrics row",
        "metrics": [
            (k, fmt(v) if not isinstance(v, str) else v) for k, v in metrics.items() if k not in METRIC_SKIP
        ],
        "rows": [],
        "layout": "none",
    }
    if pred is None or pred.empty:
        return section
    if scorer.kind in JUDGE_KINDS:
        section |= {"layout": "judge", "rows": judge_rows(pred, windows, scale)}
    elif scorer.kind == "simulation":
        section |= {"layout": "simulation", "rows": simulation_rows(pred, windows)}
    elif scorer.kind in WINDOW_VALUE_COLUMNS:
        column, label = WINDOW_VALUE_COLUMNS[scorer.kind]
        section |= {"layout": "value", "value_label": label, "rows": value_rows(pred, column, windows, scale)}
    elif scorer.kind == "intervention":
        section |= {"layout": "intervention", "rows": intervention_rows(pred)}
    return section


def explanation_rows(shard: ShardData, latent: int, entries: pd.DataFrame, scorer_names: list[str]) -> list:
    """One row per explainer: its explanation (or why none) and each scorer's score beside the floor."""
    rows = []
    for entry in entries.to_dict("records"):
        explainer = next(e for e in shard.explainers if e.name == entry["explainer"])
        raw = explainer.rows.get(latent) or {}
        cells = []
        for s in scorer_names:
            status = entry.get(f"status.{s}")
            has = isinstance(status, str)
            cells.append({
                "score": fmt(entry.get(f"score.{s}")) if has else "",
                "status": status if has else "",
                "floor": fmt(entry.get(f"floor.{s}")) if not _nan(entry.get(f"floor.{s}")) else "",
            })  # fmt: skip
        donor = raw.get("donor_latent")
        rows.append({
            "explainer": entry["explainer"], "kind": entry["explainer_kind"], "subject": entry["subject"],
            "status": entry["status"], "explanation": entry["explanation"], "error": raw.get("error") or "",
            "donor": int(donor) if donor is not None and not _nan(donor) and donor >= 0 else None,
            "cells": cells,
        })  # fmt: skip
    return rows


def _nan(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, (float, np.floating)) and math.isnan(x))


def partner_links(shard: ShardData, latent: int, root: str) -> list[dict]:
    """Cross-layer partners; their shard follows from the shared shard size (the page may not exist)."""
    return [
        {
            "hookpoint": p.other_hookpoint,
            "latent": p.other_latent,
            "cosine": fmt(p.cosine),
            "href": f"{root}units/{p.other_unit}/shard-{p.other_latent // shard.shard_size}/"
            f"latent-{p.other_latent}.html",
        }
        for p in shard.partners.get(latent, [])
    ]


def latent_scale(stats: dict, examples: pd.DataFrame | None) -> float:
    """The latent's max activation (stats), else the windows' max: the denominator of token shading."""
    top = stats.get("max")
    if not _nan(top) and top > 0:
        return float(top)
    if examples is not None and not examples.empty:
        return float(examples["max_act"].max())
    return 0.0


def render_latent(shard: ShardData, selection: dict, entries: pd.DataFrame, scorer_names: list[str]) -> str:
    """The HTML of a latent's page: `selection` is its latents-{shard}.parquet row, `entries` its entries."""
    latent = int(selection["latent"])
    root = "../" * (len(shard.unit_id.split("/")) + 2)  # units/ + the unit's parts + shard-{s}/
    stats = shard.stats.get(latent) or {}
    examples = shard.examples.get(latent)
    scale = latent_scale(stats, examples)
    windows = {int(r["example_id"]): r for r in examples.to_dict("records")} if examples is not None else {}
    groups, negatives = window_groups(examples, scale)
    token_ids, values = shard.activations.get(latent, (np.zeros(0, np.int32), np.zeros(0, np.float32)))
    return (
        environment()
        .get_template("latent.html")
        .render(
            root=root,
            title=f"latent {latent} · {shard.unit['hookpoint']} · {shard.unit['dictionary']}",
            unit=shard.unit,
            unit_id=shard.unit_id,
            latent=latent,
            selection=selection,
            stats={k: fmt(stats.get(k)) for k in ("count", "frequency", "max", "mean", "q50", "q90", "q99")},
            scorer_names=scorer_names,
            explanations=explanation_rows(shard, latent, entries, scorer_names),
            histogram=histogram_svg(values),
            top_tokens=[t | {"mean": fmt(t["mean"])} for t in top_tokens(token_ids, values, shard.vocab)],
            partners=partner_links(shard, latent, root),
            groups=groups,
            negatives=negatives,
            sections=[scorer_section(s, latent, windows, scale) for s in shard.scorers],
        )
    )
