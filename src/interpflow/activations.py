"""Subject-model activations at hookpoints, streamed batch by batch to HDF5, with the forward pass cut after
the last layer a hookpoint needs."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time

import h5py
import numpy as np
import torch
from tqdm import tqdm

from .models import load_model
from .store import atomic_path

log = logging.getLogger(__name__)

HOOKPOINT = re.compile(r"^resid_post\.(\d+)$")


class StopForward(Exception):
    """Raised by the last needed hook: nothing after that layer is computed."""


def parse_hookpoint(hookpoint: str) -> int:
    """The layer index of 'resid_post.L' (the residual stream after decoder layer L)."""
    match = HOOKPOINT.match(hookpoint)
    if not match:
        raise ValueError(f"hookpoint '{hookpoint}' is not of the form resid_post.<layer>")
    return int(match.group(1))


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's list of decoder blocks (the ModuleList as long as the model has layers)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n = config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"cannot find the {n} decoder layers of {type(model).__name__}")


@contextlib.contextmanager
def capture(model: torch.nn.Module, layers: list[int]):
    """Record each listed layer's output hidden states into a dict, and stop the forward after the last."""
    blocks = decoder_layers(model)
    for layer in layers:
        if not 0 <= layer < len(blocks):
            raise ValueError(
                f"hookpoint layer {layer} does not exist: the model has {len(blocks)} layers (0-based)"
            )
    seen: dict[int, torch.Tensor] = {}
    last = max(layers)

    def hook_for(layer: int):
        def hook(_module, _args, output):
            seen[layer] = output[0] if isinstance(output, tuple) else output  # (B, T, d_model)
            if layer == last:
                raise StopForward

        return hook

    handles = [blocks[layer].register_forward_hook(hook_for(layer)) for layer in set(layers)]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


@torch.inference_mode()
def hidden_states(
    model: torch.nn.Module, input_ids: torch.Tensor, layers: list[int]
) -> dict[int, torch.Tensor]:
    """Residual stream after each listed layer for a batch of token ids (B, T) -> {layer: (B, T, d_model)}."""
    with capture(model, layers) as seen:
        try:
            model(input_ids=input_ids, use_cache=False)
        except StopForward:
            pass
    return seen


def cache_activations(
    tokens_path: str | os.PathLike,
    model_spec: str | os.PathLike,
    cfg: dict,
    hookpoints: list[str],
    out_paths: list[str | os.PathLike],
) -> dict:
    """Write each hookpoint's activations, float32 [n_seq * ctx_len, d_model], from one forward pass."""
    layers = [parse_hookpoint(h) for h in hookpoints]
    model, _ = load_model(model_spec, cfg)
    device = next(model.parameters()).device
    with h5py.File(tokens_path, "r") as f:
        tokens = f["tokens"][:]
    n_seq, ctx_len = tokens.shape
    batch = cfg.get("batch_size", 8)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        outs = []
        for path in out_paths:
            tmp = stack.enter_context(atomic_path(path))
            outs.append(stack.enter_context(h5py.File(tmp, "w")))
        for i in tqdm(range(0, n_seq, batch), desc="activations", unit="batch"):
            ids = torch.from_numpy(tokens[i : i + batch].astype(np.int64)).to(device)
            seen = hidden_states(model, ids, layers)
            for out, layer, hookpoint in zip(outs, layers, hookpoints, strict=True):
                acts = seen[layer].float().reshape(-1, seen[layer].shape[-1]).cpu().numpy()
                if "activations" not in out:
                    out.create_dataset(
                        "activations",
                        shape=(n_seq * ctx_len, acts.shape[1]),
                        dtype="float32",
                        chunks=(min(n_seq * ctx_len, 4 * ctx_len), acts.shape[1]),
                    )
                    out.attrs.update(
                        model=str(model_spec),
                        hookpoint=hookpoint,
                        d_model=acts.shape[1],
                        n_seq=n_seq,
                        ctx_len=ctx_len,
                    )
                out["activations"][i * ctx_len : i * ctx_len + len(acts)] = acts
        for out in outs:
            out.close()  # before atomic_path renames the file
    seconds = time.perf_counter() - start
    log.info(
        "cached %d tokens at %s in %.1f s (%.0f tokens/s)",
        tokens.size,
        hookpoints,
        seconds,
        tokens.size / seconds,
    )
    return {"tokens": int(tokens.size), "seconds": seconds}
