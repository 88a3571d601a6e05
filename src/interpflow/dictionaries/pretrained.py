"""Pretrained dictionaries: the loader for each configured format."""

from __future__ import annotations

import os
from pathlib import Path

from interpflow.dictionaries.dictionary import SparseDictionary
from interpflow.dictionaries.gemma_scope import load_gemma_scope
from interpflow.dictionaries.saelens import load_saelens
from interpflow.dictionaries.sparsify import load_sparsify

__all__ = ["FORMATS", "load_pretrained"]

FORMATS = ("sparsify", "saelens", "gemma-scope")


def load_pretrained(fmt: str, path: str | os.PathLike, *, hookpoint: str | None = None) -> SparseDictionary:
    """Load a pretrained dictionary: fmt sparsify | saelens | gemma-scope; hookpoint: a subfolder of path."""
    if fmt == "sparsify":
        return load_sparsify(path, hookpoint)
    folder = Path(path) / hookpoint if hookpoint else Path(path)
    if fmt == "saelens":
        return load_saelens(folder)
    if fmt == "gemma-scope":
        return load_gemma_scope(folder)
    raise ValueError(f"unknown dictionary format {fmt!r}; expected one of {', '.join(FORMATS)}")
