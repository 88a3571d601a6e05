"""Reading and checking dictionary files (ours and the foreign formats), each error naming its file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["read_json", "read_safetensors", "read_npz", "take", "check_width", "check_cfg_sizes"]


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, naming the file if it is missing or unreadable."""
    if not path.is_file():
        raise FileNotFoundError(f"missing dictionary file: {path}")
    try:
        cfg = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot parse {path}: {exc}") from exc
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(cfg).__name__}")
    return cfg


def read_safetensors(path: Path) -> dict[str, Tensor]:
    """Read every tensor of a safetensors file, naming the file if it is missing or corrupt."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"missing dictionary file: {path}")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several types for truncated or foreign files
        raise ValueError(f"cannot read weights {path}: {exc}") from exc


def read_npz(path: Path) -> dict[str, Tensor]:
    """Read every array of an .npz file as a tensor, naming the file if it is missing or corrupt."""
    import numpy as np

    if not path.is_file():
        raise FileNotFoundError(f"missing dictionary file: {path}")
    try:
        with np.load(path) as data:
            return {key: torch.from_numpy(np.array(data[key])) for key in data.files}
    except Exception as exc:  # zipfile and numpy raise several types for corrupt archives
        raise ValueError(f"cannot read weights {path}: {exc}") from exc


def take(t: dict[str, Tensor], required: tuple[str, ...], optional: tuple[str, ...], where: str) -> dict:
    """Check a file's tensor names: all required present, nothing unknown (its meaning would be ignored)."""
    missing = [n for n in required if n not in t]
    unknown = sorted(set(t) - set(required) - set(optional))
    if missing:
        raise ValueError(f"{where}: missing tensors {missing} (found {sorted(t)})")
    if unknown:
        raise ValueError(
            f"{where}: unrecognised tensors {unknown}; refusing to load what this loader cannot honour"
        )
    return t


def check_width(t: dict[str, Tensor], names: tuple[str, ...], width: int, where: str) -> None:
    """Per-latent vectors (and W_dec rows) must match the encoder width before they are combined."""
    for name in ("W_enc", "w_enc", "encoder.weight", "W_dec", "w_dec"):
        if name in t and t[name].ndim != 2:
            raise ValueError(f"{where}: tensor {name} must be a matrix, got shape {tuple(t[name].shape)}")
    for name in names:
        if name in t and t[name].shape[0] != width:
            raise ValueError(
                f"{where}: tensor {name} has shape {tuple(t[name].shape)}, but the width is {width}"
            )


def check_cfg_sizes(cfg_sizes: dict[str, Any], actual: dict[str, int], where: str) -> None:
    """Sizes the config declares must equal the tensors' (None: not declared)."""
    for key, want in cfg_sizes.items():
        if want is not None and int(want) != actual[key]:
            raise ValueError(
                f"{where}: config says {key} = {want}, but the weights have {key} = {actual[key]}"
            )
