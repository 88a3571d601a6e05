"""Loader for Gemma Scope JumpReLU SAEs and transcoders: Gemma Scope 1 (params.npz) and 2 (safetensors)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from interpflow.dictionaries.dictionary import SparseDictionary
from interpflow.dictionaries.readers import (
    check_cfg_sizes,
    check_width,
    read_json,
    read_npz,
    read_safetensors,
    take,
)

__all__ = ["load_gemma_scope"]

log = logging.getLogger(__name__)


def load_gemma_scope(path: str | os.PathLike) -> SparseDictionary:
    """Load a Gemma Scope JumpReLU SAE/transcoder: params.npz (Gemma 2), params.safetensors + config.json."""
    p = Path(path)
    if p.is_file():
        folder, file = p.parent, p
    else:
        folder = p
        file = next((p / n for n in ("params.safetensors", "params.npz") if (p / n).is_file()), p)
        if not file.is_file() and any(p.glob("params_layer_*.safetensors")):
            raise ValueError(f"{p} holds a Gemma Scope 2 cross-layer transcoder, which is not supported")
        if not file.is_file():
            raise FileNotFoundError(f"missing Gemma Scope weights: no params.safetensors/params.npz in {p}")
    if file.suffix == ".npz":
        return _gemma_scope_1(file)
    return _gemma_scope_2(file, folder / "config.json")


# SAELens's hook names for the Gemma Scope (Gemma 2) sites, keyed by the repository suffix
_GS1_HOOKS = {
    "res": "hook_resid_post",
    "mlp": "hook_mlp_out",
    "att": "attn.hook_z",
    "transcoders": "ln2.hook_normalized",
}


def _gemma_scope_1(file: Path) -> SparseDictionary:
    """Gemma Scope (Gemma 2) params.npz: x @ W_enc + b_enc, JumpReLU, @ W_dec + b_dec; no input shift."""
    where = str(file)
    if "embedding" in file.parts:
        raise ValueError(f"{where}: Gemma Scope embedding SAEs need a d_model rescaling not applied here")
    t = {("W_" + n[2:] if n.startswith("w_") else n): v for n, v in read_npz(file).items()}
    if "scaling_factor" in t and bool((t["scaling_factor"] == 1).all()):
        del t["scaling_factor"]
    t = take(t, ("W_enc", "b_enc", "threshold", "W_dec", "b_dec"), (), where)
    check_width(t, ("b_enc", "threshold", "W_dec"), t["W_enc"].shape[-1], where)
    d_in, width = t["W_enc"].shape
    path = str(file.parent)
    layer = re.search(r"layer_(\d+)", path)
    site = next((s for s in ("transcoders", "res", "mlp", "att") if f"-{s}" in path), None)
    hookpoint = f"blocks.{layer.group(1)}.{_GS1_HOOKS[site]}" if layer and site else None
    log.info("loaded Gemma Scope %s (%d -> %d)", where, d_in, width)
    return SparseDictionary(
        d_in,
        width,
        activation="jumprelu",
        **t,
        transcoder=site == "transcoders",
        meta={
            "format": "gemma-scope",
            "source": where,
            "hookpoint": hookpoint,
            "site": site,
            "layer": int(layer.group(1)) if layer else None,
            "hookpoint_out": f"blocks.{layer.group(1)}.hook_mlp_out"
            if layer and site == "transcoders"
            else None,
        },
    )


def _gemma_scope_2_config(cfg_path: Path, file: Path) -> dict[str, Any]:
    """Gemma Scope 2 config.json (hf_hook_point_in/out, width, l0, architecture, affine_connection, type)."""
    if cfg_path.is_file():
        cfg = read_json(cfg_path)
    else:
        log.warning("%s has no config.json beside it; taking everything from the tensors", file)
        cfg = {}
    where = str(cfg_path)
    if cfg.get("architecture", "jump_relu") != "jump_relu":
        raise ValueError(f"{where}: architecture {cfg['architecture']!r} is not supported (only jump_relu)")
    if cfg.get("type", "sae") not in ("sae", "transcoder"):
        raise ValueError(f"{where}: type {cfg['type']!r} is not supported (only sae and transcoder)")
    return cfg


def _gemma_scope_2(file: Path, cfg_path: Path) -> SparseDictionary:
    """Gemma Scope 2 params.safetensors: w_enc [d_in, width], w_dec [width, d_out], optional affine skip."""
    where = str(file)
    cfg = _gemma_scope_2_config(cfg_path, file)
    t = take(read_safetensors(file), ("w_enc", "b_enc", "threshold", "w_dec", "b_dec"),
              ("affine_skip_connection",), where)  # fmt: skip
    if t["w_dec"].ndim == 3:
        shape = tuple(t["w_dec"].shape)
        raise ValueError(f"{where}: w_dec has shape {shape}; cross-layer transcoders are not supported")
    check_width(t, ("b_enc", "threshold", "w_dec"), t["w_enc"].shape[-1], where)
    affine = "affine_skip_connection" in t
    if cfg.get("affine_connection", affine) != affine:
        has = "has" if affine else "lacks"
        raise ValueError(f"{cfg_path}: affine_connection={not affine}, but {file.name} {has} the affine skip")
    d_in, width = t["w_enc"].shape
    check_cfg_sizes({"width": cfg.get("width")}, {"width": width}, str(cfg_path))
    hook_in, hook_out = cfg.get("hf_hook_point_in"), cfg.get("hf_hook_point_out")
    transcoder = cfg.get("type") == "transcoder" or affine or (hook_out is not None and hook_out != hook_in)
    log.info("loaded Gemma Scope 2 %s (%d -> %d%s)", where, d_in, width, ", transcoder" if transcoder else "")
    return SparseDictionary(
        d_in,
        width,
        activation="jumprelu",
        W_enc=t["w_enc"],
        b_enc=t["b_enc"],
        threshold=t["threshold"],
        W_dec=t["w_dec"],
        b_dec=t["b_dec"],
        W_skip=t.get("affine_skip_connection"),  # Gemma Scope 2 adds x @ affine_skip_connection
        transcoder=transcoder,
        meta={
            "format": "gemma-scope-2",
            "source": where,
            "hookpoint": hook_in,
            "hookpoint_out": hook_out,
            "model_name": cfg.get("model_name"),
            "l0": cfg.get("l0"),
            "type": cfg.get("type"),
        },  # fmt: skip
    )
