"""Build the static browser: a shard's latent pages and entries table, then the run's index over all shards.

Layout under results/browser/ (browser design, "Units and paths"): units/{unit}/shard-{shard}/ with
latent-{latent}.html, entries.parquet and embeddings.npy; index.html with its rows in data/index-*.js
(script tags, because browsers refuse fetch() of file:// URLs); static/; search.html and rate.html.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from interpflow.browser.collect import UNIT_FIELDS, ShardData, load_shard
from interpflow.browser.pages import environment, render_latent
from interpflow.store import atomic_path, read_parquet, write_parquet

log = logging.getLogger(__name__)

DATA_PAGE_ROWS = 2000
ENTRY_COLUMNS = [*UNIT_FIELDS, "shard", "latent", "explainer", "explainer_kind", "subject", "status",
                 "explanation", "count", "frequency", "max_act", "url"]  # fmt: skip
INDEX_DROP = ("corpus", "model", "sampler", "shard")  # implied by unit and url: kept out of the index's JS
INDEX_DISPLAY = (
    "latent",
    "hookpoint",
    "dictionary",
    "explainer",
    "status",
    "explanation",
    "frequency",
    "max_act",
)
FACETS = ("dictionary", "hookpoint", "subject", "explainer", "status")


def _score(metrics: dict | None) -> float:
    """A metrics row's headline score, NaN unless the latent was scored ok."""
    if not metrics or metrics.get("status") != "ok" or metrics.get("score") is None:
        return math.nan
    return float(metrics["score"])


def scorer_names(shard: ShardData) -> list[str]:
    """Every scorer name of the shard, in the order of the inputs."""
    return list(dict.fromkeys(s.name for s in shard.scorers))


def shard_entries(shard: ShardData) -> pd.DataFrame:
    """entries.parquet: one row per selected latent x explainer with scores, statuses and random floors."""
    names = scorer_names(shard)
    random = next((e for e in shard.explainers if e.kind == "random"), None)
    floors = {s.name: s for s in shard.scorers if random is not None and s.explainer == random.name}
    unit, shard_id = shard.unit, int(shard.unit["shard"])
    rows = []
    for latent in shard.latents:
        stats = shard.stats.get(latent) or {}
        for e in shard.explainers:
            raw = e.rows.get(latent) or {}
            explanation = raw.get("explanation")
            row = {k: unit[k] for k in UNIT_FIELDS} | {
                "unit": shard.unit_id, "shard": shard_id, "latent": latent, "explainer": e.name,
                "explainer_kind": e.kind, "subject": e.subject, "status": raw.get("status") or "missing",
                "explanation": explanation if isinstance(explanation, str) else None,
                "count": int(stats.get("count") or 0), "frequency": float(stats.get("frequency", math.nan)),
                "max_act": float(stats.get("max", math.nan)),
                "url": f"units/{shard.unit_id}/shard-{shard_id}/latent-{latent}.html",
            }  # fmt: skip
            for s in shard.scorers:
                if s.explainer == e.name:
                    metrics = s.metrics.get(latent)
                    row[f"score.{s.name}"] = _score(metrics)
                    row[f"status.{s.name}"] = metrics["status"] if metrics else "missing"
            for name in names:  # NaN on the random rows (as in the summary) and where e ran no such scorer
                compared = e is not random and name in floors and f"status.{name}" in row
                row[f"floor.{name}"] = _score(floors[name].metrics.get(latent)) if compared else math.nan
            rows.append(row)
    columns = ["unit", *ENTRY_COLUMNS]
    columns += [f"{p}.{n}" for n in names for p in ("score", "status", "floor")]
    df = pd.DataFrame(rows).reindex(columns=columns)
    for c in columns:
        if c.startswith(("score.", "floor.")) or c in ("frequency", "max_act"):
            df[c] = df[c].astype("float64")
        elif c in ("shard", "latent", "count"):
            df[c] = df[c].astype("int64")
        else:
            df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df


def build_shard(files: dict, out_dir: str | os.PathLike) -> None:
    """Write a shard's latent pages, entries.parquet and embeddings.npy into `out_dir`, all or nothing."""
    from interpflow.browser.search import embed_entries  # the lead's module; loads an embedding model

    out_dir = Path(out_dir)
    shard = load_shard(files)
    entries = shard_entries(shard)
    names = scorer_names(shard)
    per_latent = {int(k): g for k, g in entries.groupby("latent", sort=False)}
    empty = entries.iloc[0:0]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        for selection in shard.selected.to_dict("records"):
            latent = int(selection["latent"])
            html = render_latent(shard, selection, per_latent.get(latent, empty), names)
            (tmp / f"latent-{latent}.html").write_text(html, encoding="utf-8")
        write_parquet(entries, tmp / "entries.parquet")
        embed_entries(entries, tmp / "embeddings.npy")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the site is meant to be shared
        _swap_in(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("browser shard %s/shard-%s: %d pages", shard.unit_id, shard.unit["shard"], len(shard.latents))


def _swap_in(new: Path, target: Path) -> None:
    """Replace directory `target` by `new` with renames, so readers see the old set or the new one."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def _json_rows(df: pd.DataFrame) -> list[list]:
    """Rows as JSON-ready lists: NaN and missing become null (JSON has no NaN)."""
    out = df.astype(object).where(df.notna(), None).to_numpy().tolist()
    return [[None if isinstance(v, float) and not math.isfinite(v) else _plain(v) for v in r] for r in out]


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def write_data_pages(rows: pd.DataFrame, data_dir: Path, page_size: int) -> int:
    """data/index-{page:05d}.js, each calling window.interpflowIndexPage; returns the number of pages."""
    columns = list(rows.columns)
    n_pages = max(1, math.ceil(len(rows) / page_size))
    for page in range(n_pages):
        payload = {"page": page, "n_pages": n_pages, "n_rows": len(rows), "columns": columns,
                   "rows": _json_rows(rows.iloc[page * page_size : (page + 1) * page_size])}  # fmt: skip
        text = "window.interpflowIndexPage(" + json.dumps(payload, allow_nan=False) + ");\n"
        (data_dir / f"index-{page:05d}.js").write_text(text, encoding="utf-8")
    return n_pages


def _index_config(rows: pd.DataFrame, n_pages: int, page_size: int) -> dict:
    """What index.html needs before any data page loads: sizes, column types, select-box values."""
    numeric = [c for c in rows.columns if pd.api.types.is_numeric_dtype(rows[c])]
    shown = [c for c in INDEX_DISPLAY if c in rows.columns] + [
        c for c in rows.columns if c.startswith("score.")
    ]
    labels = {"max_act": "max"}
    return {
        "display": [
            {"col": c, "label": labels.get(c, c.removeprefix("score.")), "numeric": c in numeric}
            for c in shown
        ],  # fmt: skip
        "n_rows": len(rows),
        "n_pages": n_pages,
        "data_page_rows": page_size,
        "columns": list(rows.columns),
        "numeric": numeric,
        "scores": [c for c in rows.columns if c.startswith("score.")],
        "facets": {f: sorted(str(v) for v in rows[f].dropna().unique()) for f in FACETS if f in rows},
    }


def _replace_dir(target: Path, fill) -> None:
    """Fill a fresh temporary sibling of `target` with `fill(path)`, then swap it in."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        fill(tmp)
        os.chmod(tmp, 0o755)
        _swap_in(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_static(dest: Path) -> None:
    static = resources.files("interpflow.browser") / "static"
    for item in static.iterdir():
        if item.is_file() and not item.name.startswith("."):
            (dest / item.name).write_bytes(item.read_bytes())


def _write_html(path: Path, template: str, **context) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(environment().get_template(template).render(**context), encoding="utf-8")


def _summary_links(summary_dir, paper_dir) -> dict:
    """Links from results/browser/ to the run's summary figures and page, and to the paper if built."""
    files = []
    if summary_dir is not None and Path(summary_dir).is_dir():
        found = sorted(p.name for p in Path(summary_dir).glob("*.png"))
        if (Path(summary_dir) / "summary.html").is_file():
            found.insert(0, "summary.html")
        files = [{"name": n, "href": f"../summary/{n}"} for n in found]
    paper = paper_dir is not None and Path(paper_dir).is_dir()
    return {"summary": files, "paper": "../paper/index.html" if paper else None}


def build_index(
    shard_dirs: list,
    out_dir: str | os.PathLike,
    summary_dir: str | os.PathLike | None = None,
    paper_dir: str | os.PathLike | None = None,
    page_size: int = DATA_PAGE_ROWS,
) -> None:
    """index.html over every shard's entries, its data pages, static/, search.html and rate.html."""
    out_dir = Path(out_dir)
    tables = [read_parquet(Path(d) / "entries.parquet") for d in shard_dirs]
    entries = (
        pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["unit", *ENTRY_COLUMNS])
    )
    rows = entries.drop(columns=[c for c in INDEX_DROP if c in entries.columns])
    n_pages = math.ceil(max(len(rows), 1) / page_size)
    _replace_dir(out_dir / "data", lambda d: write_data_pages(rows, d, page_size))
    _replace_dir(out_dir / "static", _copy_static)
    links = _summary_links(summary_dir, paper_dir)
    config = _index_config(rows, n_pages, page_size)
    _write_html(out_dir / "index.html", "index.html", root="", config=config,
                display=config["display"], page="index", **links)  # fmt: skip
    _write_html(out_dir / "search.html", "search.html", root="", page="search", **links)
    _write_html(out_dir / "rate.html", "rate.html", root="", page="rate", **links)
    log.info("browser index: %d rows in %d data pages", len(rows), n_pages)
