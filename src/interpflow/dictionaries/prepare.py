"""Workflow step: build the configured dictionary for one hookpoint, check it, save it canonically."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from torch import nn

from interpflow.dictionaries.dictionary import SparseDictionary, check_dims, from_topk_sae, neuron_dictionary
from interpflow.dictionaries.pretrained import load_pretrained

__all__ = ["prepare_dictionary"]

log = logging.getLogger(__name__)


def _activations_width(path: str | os.PathLike) -> int:
    """The width of the activations a dictionary will encode (from the HDF5 file's shape)."""
    from interpflow.store import open_h5

    with open_h5(path) as f:
        if "activations" not in f or f["activations"].ndim != 2:
            raise ValueError(f"{path} lacks a 2-D dataset 'activations'")
        return int(f["activations"].shape[1])


def _neurons(cfg: dict, hookpoint: str, d_mlp: int, model_spec: str, model_cfg: dict) -> SparseDictionary:
    """The MLP neurons of a layer, decoding through the model's down projection into the MLP output."""
    from interpflow.activations import site_module
    from interpflow.models import load_model

    model, _ = load_model(model_spec, dict(model_cfg, device="cpu"))
    down, _ = site_module(model, hookpoint)
    weight = down.weight.detach().float()
    W_out = weight if isinstance(down, nn.Linear) else weight.T  # GPT-2's Conv1D stores [in, out]
    bias = None if getattr(down, "bias", None) is None else down.bias.detach().float()
    return neuron_dictionary(d_mlp, k=cfg.get("k"), W_out=W_out, b_out=bias)


def prepare_dictionary(
    cfg: dict,
    hookpoint: str,
    activations_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    source: str | os.PathLike | list = (),
    model_cfg: dict | None = None,
) -> SparseDictionary:
    """Build the configured dictionary for one hookpoint, check it against the activations, save it."""
    from interpflow.activations import parse_hookpoint
    from interpflow.sae.model import TopKSAE
    from interpflow.sae.step import random_sae_from_h5

    name, kind = cfg.get("name", "?"), cfg["kind"]
    where = f"dictionaries.{name}"
    site, layer = parse_hookpoint(hookpoint)
    source = source[0] if isinstance(source, list | tuple) and source else source
    d_in = _activations_width(activations_path)
    if kind == "topk-sae":
        d = from_topk_sae(TopKSAE.load(Path(source).parent))
    elif kind == "random-sae":
        d = from_topk_sae(random_sae_from_h5(activations_path, cfg))
    elif kind == "neurons":
        if site != "mlp_act":
            raise ValueError(
                f"{where}: neurons read the MLP hidden layer, hookpoint mlp_act.{layer}, not {hookpoint}"
            )
        d = _neurons(cfg, hookpoint, d_in, str(source), model_cfg or {})
    elif kind == "pretrained":
        sub = cfg.get("subfolder")
        d = load_pretrained(
            cfg["format"], source, hookpoint=sub.format(layer=layer, hookpoint=hookpoint) if sub else None
        )
        if d.transcoder and site != "mlp_in":
            raise ValueError(f"{where} at {source} is a transcoder: it reads mlp_in.{layer}, not {hookpoint}")
    else:
        raise ValueError(f"{where}.kind: unknown kind {kind!r}")
    check_dims(d, d_in, f"{where} at {hookpoint}")
    if d.width != cfg["width"]:
        raise ValueError(
            f"{where}.width is {cfg['width']}, but the dictionary at {hookpoint} has {d.width} latents"
        )
    # a transcoder (and a neuron dictionary) writes to the MLP output; an SAE back to where it reads
    out_hookpoint = f"mlp_out.{layer}" if d.transcoder else hookpoint
    d.meta = {f"source_{k}" if k.startswith("hookpoint") else k: v for k, v in d.meta.items()}
    d.meta |= {"kind": kind, "name": name, "hookpoint": hookpoint, "out_hookpoint": out_hookpoint}
    d.save(out_dir)
    log.info("%s at %s: %s, %d -> %d latents -> %s", where, hookpoint, kind, d.d_in, d.width, out_hookpoint)
    return d
