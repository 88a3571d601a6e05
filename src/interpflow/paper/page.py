"""The paper's page (one self-contained index.html: inline CSS, PNGs beside it) and the main table as
Markdown for the README."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from .cells import Table
from .select import describe

DISPLAY = ["row", "metric", "n", "ours", "95% interval", "IQR", "paper", "difference", "source"]


def number(x: float) -> str:
    """Thousands as integers with separators, small values to three significant digits, NaN as a dash."""
    if x is None or not np.isfinite(x):
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3f}" if abs(x) >= 0.01 or x == 0 else f"{x:.3g}"


def _interval(low: float, high: float) -> str:
    return "–" if not (np.isfinite(low) and np.isfinite(high)) else f"[{number(low)}, {number(high)}]"


def display_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """A table's cells as the page shows them: ours, its interval, IQR, the paper's value and the
    difference ours - paper (NaN where the paper has none), as text."""
    diff = cells["ours"] - cells["paper"]
    return pd.DataFrame(
        {
            "row": cells["row"],
            "metric": cells["metric"],
            "n": cells["n"].astype(int).astype(str),
            "ours": cells["ours"].map(number),
            "95% interval": [_interval(a, b) for a, b in zip(cells["low"], cells["high"], strict=True)],
            "IQR": [_interval(a, b) for a, b in zip(cells["q25"], cells["q75"], strict=True)],
            "paper": cells["paper"].map(number),
            "difference": [("+" if d > 0 else "") + number(d) for d in diff],
            "source": cells["source"],
        },
        columns=DISPLAY,
    )


CSS = """
body { font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, "Liberation Sans", "DejaVu Sans",
       sans-serif; color: #222; margin: 0;
       background: #fafafa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { font-size: 26px; margin: 8px 0 4px; } h2 { font-size: 20px; margin: 40px 0 6px; border-top: 1px solid
#ddd; padding-top: 20px; } .note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 10px 14px; }
.caption { color: #444; max-width: 70em; } .meta { color: #555; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; margin: 10px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e5e5e5; text-align: left; vertical-align: top; }
th { background: #f3f5f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.empty td { color: #999; } tr.group td { border-top: 2px solid #c8ccd2; }
.absent { color: #8a5a00; } .notes { color: #8a5a00; font-size: 13px; }
img { max-width: 100%; border: 1px solid #eee; margin-top: 6px; } nav a { margin-right: 10px; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>interpflow: the paper's tables</title>
<style>{{ css | safe }}</style></head><body><main>
<h1>The paper's tables, regenerated</h1>
<p class="meta">Paulo et al., "Automatically Interpreting Millions of Features in Large Language Models"
(arXiv 2410.13928, ICML 2025), beside this run.</p>
{% if note %}<p class="note">{{ note }}</p>{% endif %}
<p class="meta">Reference setting (every row overrides it): {{ reference }}<br>Roles (scorer entry playing
each): {{ roles }}</p>
<nav>{% for s in sections %}<a href="#t-{{ s.id }}">{{ s.id }}</a>{% endfor %}</nav>
{% for s in sections %}
<section id="t-{{ s.id }}"><h2>{{ s.title }}</h2>
<p class="caption">{{ s.caption }}</p>
{% if s.absent %}<p class="absent">Not built: {{ s.absent }}.</p>{% else %}
{% if s.uniform %}<p class="meta">Every row: <code>{{ s.uniform }}</code></p>{% else %}
<table class="settings"><tr><th>row</th><th>config</th></tr>
{% for row, text in s.settings.items() %}
<tr><td>{{ row }}</td><td><code>{{ text }}</code></td></tr>{% endfor %}
</table>{% endif %}
<table><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in s.rows %}<tr class="{{ 'group' if r.first else '' }} {{ 'empty' if r.n == '0' else '' }}">
{% for c in columns %}<td{% if c not in ("row", "metric", "source") %} class="num"{% endif %}>
{%- if c != "row" or r.first %}{{ r[c] }}{% endif %}</td>{% endfor %}</tr>
{% endfor %}</table>
{% for n in s.notes %}<p class="notes">{{ n }}</p>{% endfor %}
<img src="{{ s.figure }}" alt="figure of table {{ s.id }}">
{% endif %}</section>
{% endfor %}
</main></body></html>
"""


def section(entry, built: Table | str, cells: pd.DataFrame | None) -> dict:
    """What the template needs of one table: built, or the reason it is absent."""
    base = dict(id=entry.id, title=entry.title, caption=entry.caption)
    if isinstance(built, str):
        return base | dict(absent=built)
    rows = display_frame(cells).to_dict("records")
    for i, r in enumerate(rows):  # a row's label once, on the first of its metrics
        r["first"] = i == 0 or r["row"] != rows[i - 1]["row"]
    same = set(built.settings.values())
    uniform = same.pop() if len(built.settings) > 1 and len(same) == 1 else None
    return base | dict(absent=None, uniform=uniform, settings=built.settings, notes=built.notes, rows=rows,
                       figure=f"{entry.id}.png")  # fmt: skip


def render(spec: dict, roles: dict[str, str], sections: list[dict]) -> str:
    """index.html's text (jinja2, autoescaped)."""
    import jinja2

    env = jinja2.Environment(autoescape=True)
    return env.from_string(TEMPLATE).render(
        css=CSS, note=spec.get("note") or "", reference=describe(spec["reference"]),
        roles=", ".join(f"{r}: {s}" for r, s in roles.items()), sections=sections, columns=DISPLAY,
    )  # fmt: skip


def main_table_markdown(comparison: pd.DataFrame) -> str:
    """Table A10 (subjects) as Markdown: fuzzing and detection, ours [95% interval] beside the paper."""
    a10 = comparison[comparison["table"] == "A10"]
    head = "| row | fuzzing, ours [low, high] | paper | detection, ours [low, high] | paper | n |\n"
    lines = [head + "|---|---|---|---|---|---|"]
    for row, g in a10.groupby("row", sort=False):
        by = g.set_index("metric")
        parts, ns = [], []
        for metric in ("fuzzing", "detection"):
            c = by.loc[metric] if metric in by.index else None
            ours = "–" if c is None else _with_interval(c)
            parts += [ours, "–" if c is None else number(c["paper"])]
            ns.append("0" if c is None else str(int(c["n"])))
        n = ns[0] if ns[0] == ns[1] else " / ".join(ns)
        lines.append("| " + " | ".join([_md(row), *parts, n]) + " |")
    return "\n".join(lines) + "\n"


def _with_interval(c: pd.Series) -> str:
    interval = _interval(c["low"], c["high"])
    return number(c["ours"]) + ("" if interval == "–" else f" {interval}")


def _md(text: str) -> str:
    return html.escape(str(text)).replace("|", "\\|")
