"""Loader for EleutherAI sparsify (and EleutherAI/sae) TopK SAEs and transcoders."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from interpflow.dictionaries.dictionary import SparseDictionary
from interpflow.dictionaries.readers import check_cfg_sizes, check_width, read_json, read_safetensors, take

__all__ = ["load_sparsify"]

log = logging.getLogger(__name__)

# Config flags of sparsify (and its predecessor EleutherAI/sae, and known forks) that change inference
# in ways the canonical form cannot express.
_SPARSIFY_UNSUPPORTED = ("signed", "embed_skip", "gram_lookup")


def _sparsify_folder(path: Path, hookpoint: str | None) -> Path:
    """The folder holding cfg.json (path itself or path/hookpoint), else an error listing the hookpoints."""
    if hookpoint is not None and (path / hookpoint / "cfg.json").is_file():
        return path / hookpoint
    if (path / "cfg.json").is_file() and hookpoint in (None, path.name):
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"missing sparsify folder: {path}")
    found = sorted(p.name for p in path.iterdir() if (p / "cfg.json").is_file())
    what = f"hookpoint {hookpoint!r}" if hookpoint else "cfg.json (pass a hookpoint)"
    raise FileNotFoundError(f"no sparsify {what} in {path}; hookpoints found: {found or 'none'}")


def load_sparsify(path: str | os.PathLike, hookpoint: str | None = None) -> SparseDictionary:
    """Load an EleutherAI sparsify (or EleutherAI/sae) TopK SAE or transcoder: cfg.json + sae.safetensors."""
    folder = _sparsify_folder(Path(path), hookpoint)
    where = str(folder)
    cfg = read_json(folder / "cfg.json")
    t = read_safetensors(folder / "sae.safetensors")
    bad = [f for f in _SPARSIFY_UNSUPPORTED if cfg.get(f)]
    if bad:
        raise ValueError(f"{where}/cfg.json: {bad} is set; this loader supports plain TopK coders only")
    if cfg.get("activation", "topk") != "topk":
        raise ValueError(f"{where}/cfg.json: activation {cfg['activation']!r} is not supported (only topk)")
    if not isinstance(cfg.get("k"), int):
        raise ValueError(f"{where}/cfg.json: key 'k' must be an int, got {cfg.get('k')!r}")
    t = take(t, ("encoder.weight", "encoder.bias", "W_dec", "b_dec"), ("W_skip",), where)
    check_width(t, ("encoder.bias", "W_dec"), t["encoder.weight"].shape[0], where)
    if bool(cfg.get("skip_connection")) != ("W_skip" in t):
        raise ValueError(
            f"{where}: cfg skip_connection={cfg.get('skip_connection')} disagrees with the weights"
        )
    width, d_in = t["encoder.weight"].shape
    n_latents = cfg.get("num_latents") or d_in * (cfg.get("expansion_factor") or 0) or None
    check_cfg_sizes({"d_in": cfg.get("d_in"), "width": n_latents}, {"d_in": d_in, "width": width}, where)
    transcode = bool(cfg.get("transcode", False))
    model = None
    try:  # sparsify's training config, one level up: only a label, so a bad one is ignored
        model = read_json(folder.parent / "config.json").get("model")
    except (FileNotFoundError, ValueError):
        pass
    log.info("loaded sparsify %s (%d -> %d, k=%d)", where, d_in, width, cfg["k"])
    return SparseDictionary(
        d_in,
        width,
        activation="topk",
        k=cfg["k"],
        W_enc=t["encoder.weight"].T,
        b_enc=t["encoder.bias"],
        W_dec=t["W_dec"],
        b_dec=t["b_dec"],
        b_pre=None if transcode else t["b_dec"],  # sparsify subtracts b_dec from the input unless transcoding
        W_skip=t["W_skip"].T if "W_skip" in t else None,  # sparsify adds x @ W_skip.T
        transcoder=transcode,
        meta={"format": "sparsify", "source": where, "hookpoint": folder.name, "model": model},
    )
