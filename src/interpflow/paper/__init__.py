"""The paper in one command: every table of Paulo et al. 2024 ("Automatically Interpreting Millions of
Features in Large Language Models", arXiv 2410.13928) that a run can regenerate, beside the published
numbers (published.yaml), as comparison.parquet, a Parquet and a figure per table, an HTML page and the
main table in Markdown."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from .catalog import CATALOG, ORDER
from .cells import COLUMNS, Table, load_published, with_published
from .figures import plot_table
from .page import display_frame, main_table_markdown, render, section
from .select import ROLES, load_context

__all__ = [
    "build_paper",
    "build_tables",
    "main_table_markdown",
    "display_frame",
    "load_published",
    "COLUMNS",
    "ORDER",
    "ROLES",
]

log = logging.getLogger(__name__)


@contextmanager
def staged_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty sibling folder; on success it replaces `out_dir` whole (a crash leaves the old one)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; outputs are meant to be shared
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_tables(summary_dir: str | os.PathLike, spec: dict) -> tuple[dict, dict[str, pd.DataFrame], dict]:
    """Every table of the catalog: {id: Table or reason absent}, {id: cells joined with the paper}, roles."""
    ctx = load_context(summary_dir, spec)
    published = load_published()
    built = {e.id: e.build(ctx) for e in CATALOG}
    cells = {i: with_published(i, b.cells, published) for i, b in built.items() if isinstance(b, Table)}
    for i, c in cells.items():
        stray = sorted(
            set(c["paper_row"]) - set(published.loc[published["table"] == i, "row"]) - set(c["row"])
        )
        built[i].notes.extend(f"paper_row {r!r} is not a row of the paper's table {i}" for r in stray)
    return built, cells, ctx.roles


def build_paper(summary_dir: str | os.PathLike, spec: dict, out_dir: str | os.PathLike) -> pd.DataFrame:
    """Write comparison.parquet, <table>.parquet and <table>.png per table built, index.html and
    comparison.md into `out_dir` (replaced whole, atomically); return the comparison table.

    summary_dir: the run's results/summary (latents.parquet; crosslayer.parquet and
    agreement-scorers.parquet where the run made them). spec: the config's `paper` section."""
    built, cells, roles = build_tables(summary_dir, spec)
    frames = [c[list(COLUMNS)] for c in cells.values()]
    comparison = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
    comparison = comparison.astype(COLUMNS)
    sections = [section(e, built[e.id], cells.get(e.id)) for e in CATALOG]
    with staged_dir(out_dir) as tmp:
        comparison.to_parquet(tmp / "comparison.parquet", index=False)
        for e in CATALOG:
            if e.id in cells:
                cells[e.id][list(COLUMNS)].to_parquet(tmp / f"{e.id}.parquet", index=False)
                plot_table(cells[e.id], e.title, tmp / f"{e.id}.png")
        (tmp / "index.html").write_text(render(spec, roles, sections), encoding="utf-8")
        (tmp / "comparison.md").write_text(main_table_markdown(comparison), encoding="utf-8")
    log.info("paper: %d cells in %d tables written to %s", len(comparison), len(cells), out_dir)
    return comparison
