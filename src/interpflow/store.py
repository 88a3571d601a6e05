"""Atomic writes and small readers for the HDF5 and Parquet files that stages exchange."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def open_h5(path: str | os.PathLike, mode: str = "r"):
    """Open an HDF5 file (h5py.File), naming the file if it is missing, truncated or not HDF5 at all."""
    import h5py

    path = Path(path)
    if mode == "r" and not path.is_file():
        raise FileNotFoundError(f"missing HDF5 file: {path}")
    try:
        return h5py.File(path, mode)
    except OSError as exc:  # h5py's message does not name the file
        raise ValueError(f"cannot read HDF5 file {path} (truncated or corrupted?): {exc}") from exc


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a table to Parquet atomically (a crash never leaves a half-written file at `path`)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_arrow(table, path: str | os.PathLike, **options) -> None:
    """Write a pyarrow Table to Parquet atomically; `options` go to pyarrow.parquet.write_table."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **options)


def read_parquet(path: str | os.PathLike) -> pd.DataFrame:
    """Read a Parquet table, naming the file if it is missing or unreadable."""
    return _read_table(path, pd.read_parquet)


def read_arrow(path: str | os.PathLike):
    """Read a Parquet table as a pyarrow Table (no pandas conversion), naming the file if it is missing or
    unreadable."""
    import pyarrow.parquet as pq

    def read(p: Path):  # one file: ParquetFile skips read_table's dataset layer (and its import, ~20 ms)
        with pq.ParquetFile(p) as f:
            return f.read()

    return _read_table(path, read)


def _read_table(path: str | os.PathLike, reader):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"missing table: {path}")
    try:
        return reader(path)
    except Exception as exc:  # pyarrow raises several types for truncated files
        raise ValueError(f"cannot read Parquet file {path}: {exc}") from exc
