"""The workflow steps: train an SAE on activations.h5 and save it (train_sae_from_h5), or leave one of the
configured shape at its initialisation, a control dictionary (random_sae_from_h5)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from interpflow.defaults import with_defaults
from interpflow.sae.batches import _batches, _init_sample, _shuffled_buffers
from interpflow.sae.model import TopKSAE
from interpflow.sae.train import _train_cfg, hookpoint_seed, init_sae, train_sae
from interpflow.store import open_h5

__all__ = ["train_sae_from_h5", "random_sae_from_h5"]


def train_sae_from_h5(
    activations_path: str | os.PathLike, cfg: dict, out_dir: str | os.PathLike, *, device: str = "auto"
) -> dict:
    """Train an SAE on activations.h5 (skipping BOS rows), save it to out_dir and return its metrics."""

    path = Path(activations_path)
    if not path.is_file():
        raise FileNotFoundError(f"missing activations file: {path}")
    cfg = with_defaults("dictionaries", cfg)
    if device == "auto":  # an explicit argument wins over the dictionary config's `device`
        device = cfg["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    with open_h5(path) as f:
        if "activations" not in f:
            raise ValueError(f"{path} has no dataset 'activations'")
        ds = f["activations"]
        attrs = dict(f.attrs) | dict(ds.attrs)
        if "ctx_len" not in attrs:
            raise ValueError(f"{path} lacks the attribute 'ctx_len'")
        ctx_len, (n_rows, d_in) = int(attrs["ctx_len"]), ds.shape
        n_train = n_rows - (n_rows + ctx_len - 1) // ctx_len  # rows minus BOS rows
        if n_train < 2:
            raise ValueError(f"{path} has {n_train} non-BOS rows; need at least 2 to train an SAE")
        c = _train_cfg(cfg, d_in, None)
        c["seed"] = hookpoint_seed(c["seed"], _plain(attrs.get("hookpoint")))
        n_tokens = n_train * c["epochs"]
        if c["max_tokens"] is not None:
            n_tokens = min(n_tokens, int(c["max_tokens"]))
        rng = np.random.default_rng(c["seed"])
        sample = _init_sample(ds, ctx_len, rng)
        buffers = _shuffled_buffers(
            ds, ctx_len, c["epochs"], rng, int(cfg["block_rows"]), int(cfg["buffer_blocks"])
        )
        sae, metrics = train_sae(
            _batches(buffers, c["batch_size"], c["max_tokens"]),
            d_in,
            cfg | {"seed": c["seed"]},
            n_tokens=n_tokens,
            device=device,
            sample_for_init=sample,
        )
    for key in ("model", "hookpoint"):
        metrics[key] = _plain(attrs.get(key))
    sae.save(out_dir, extra_cfg=metrics)
    return metrics


def _plain(v: Any) -> Any:
    """HDF5 attribute -> JSON-serialisable value."""
    if isinstance(v, bytes):
        return v.decode()
    return v.item() if isinstance(v, np.generic) else v


def random_sae_from_h5(activations_path: str | os.PathLike, cfg: dict) -> TopKSAE:
    """A TopK SAE of the configured shape left at the trained SAE's initialisation: a control dictionary."""

    path = Path(activations_path)
    if not path.is_file():
        raise FileNotFoundError(f"missing activations file: {path}")
    with open_h5(path) as f:
        if "activations" not in f:
            raise ValueError(f"{path} has no dataset 'activations'")
        ds = f["activations"]
        attrs = dict(f.attrs) | dict(ds.attrs)
        ctx_len = int(attrs.get("ctx_len", 0))
        if ctx_len < 2:
            raise ValueError(f"{path} lacks a valid 'ctx_len' attribute")
        d_in = ds.shape[1]
        c = _train_cfg(cfg, d_in, None)
        c["seed"] = hookpoint_seed(c["seed"], _plain(attrs.get("hookpoint")))
        sample = _init_sample(ds, ctx_len, np.random.default_rng(c["seed"]))
    return init_sae(sample, d_in, c["width"], c["k"], c["seed"])
