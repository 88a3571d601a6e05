"""Subject-model activations at hookpoints (residual stream, attention and MLP outputs, MLP inputs and
neurons), streamed batch by batch to HDF5 from one forward pass cut after the last hookpoint it needs."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from typing import NamedTuple

import h5py
import numpy as np
import torch
from tqdm import tqdm

from .defaults import with_defaults
from .models import load_model
from .store import atomic_path, open_h5

log = logging.getLogger(__name__)

# site -> (path of the module under a decoder block, whether the hook reads its input or its output).
# Candidate names cover Llama/Gemma/Qwen/SmolLM (self_attn, mlp, down_proj) and GPT-2/NeoX-style blocks.
SITES = {
    "resid_post": ((), "output"),  # the residual stream after the block
    "attn_out": (("self_attn", "attn", "attention"), "output"),
    "mlp_in": (("mlp", "feed_forward"), "input"),  # after the pre-MLP norm: what a transcoder reads
    "mlp_out": (("mlp", "feed_forward"), "output"),  # before any post-MLP norm
    "mlp_act": (("mlp.down_proj", "mlp.c_proj", "mlp.fc2", "mlp.dense_4h_to_h", "feed_forward.w2"), "input"),
}
HOOKPOINT = re.compile(rf"^({'|'.join(SITES)})\.(\d+)$")


class StopForward(Exception):
    """Raised once every requested hookpoint is seen: nothing after it is computed."""


class Hookpoint(NamedTuple):
    site: str
    layer: int


def parse_hookpoint(hookpoint: str) -> Hookpoint:
    """Split '<site>.<layer>' (e.g. resid_post.6, mlp_out.6, attn_out.6, mlp_in.6, mlp_act.6)."""
    match = HOOKPOINT.match(hookpoint)
    if not match:
        raise ValueError(
            f"hookpoint '{hookpoint}' is not of the form <site>.<layer> with site in {list(SITES)}"
        )
    return Hookpoint(match.group(1), int(match.group(2)))


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's list of decoder blocks (the ModuleList as long as the model has layers)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n = config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"cannot find the {n} decoder layers of {type(model).__name__}")


def site_module(model: torch.nn.Module, hookpoint: str) -> tuple[torch.nn.Module, str]:
    """The module a hookpoint reads, and whether it reads that module's 'input' or 'output'."""
    site, layer = parse_hookpoint(hookpoint)
    blocks = decoder_layers(model)
    if not 0 <= layer < len(blocks):
        raise ValueError(
            f"hookpoint {hookpoint}: layer {layer} does not exist, the model has {len(blocks)} layers"
        )
    names, where = SITES[site]
    if not names:
        return blocks[layer], where
    for name in names:
        with contextlib.suppress(AttributeError):
            return blocks[layer].get_submodule(name), where
    raise ValueError(f"hookpoint {hookpoint}: block {layer} of {type(model).__name__} has none of {names}")


def _first(x):
    return x[0] if isinstance(x, tuple) else x


@contextlib.contextmanager
def capture(model: torch.nn.Module, hookpoints: list[str]):
    """Record each hookpoint's activations (B, T, d) into a dict, and stop the forward once all are seen."""
    wanted = set(hookpoints)
    seen: dict[str, torch.Tensor] = {}

    def hook_for(hookpoint: str, where: str):
        def record(x):
            seen[hookpoint] = _first(x)
            if len(seen) == len(wanted):
                raise StopForward

        if where == "input":
            return lambda _module, args: record(args)
        return lambda _module, _args, output: record(output)

    handles = []
    for h in wanted:
        module, where = site_module(model, h)
        register = module.register_forward_pre_hook if where == "input" else module.register_forward_hook
        handles.append(register(hook_for(h, where)))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def add_at(model: torch.nn.Module, hookpoint: str, vector: torch.Tensor, mask: torch.Tensor | None = None):
    """While active, add `vector` (d,) to the hookpoint's activations: at every position of each forward
    call, or where `mask` (B, T) is 1 (a full forward of padded sequences)."""
    module, where = site_module(model, hookpoint)

    def shift(x):
        h = x[0] if isinstance(x, tuple) else x  # (B, T, d)
        add = vector.to(h.dtype) if mask is None else mask[..., None].to(h.dtype) * vector.to(h.dtype)
        return (h + add, *x[1:]) if isinstance(x, tuple) else h + add

    if where == "input":
        handle = module.register_forward_pre_hook(lambda _m, args: shift(args))
    else:
        handle = module.register_forward_hook(lambda _m, _args, out: shift(out))
    try:
        yield
    finally:
        handle.remove()


@torch.inference_mode()
def hidden_states(
    model: torch.nn.Module, input_ids: torch.Tensor, hookpoints: list[str]
) -> dict[str, torch.Tensor]:
    """Activations at each hookpoint for a batch of token ids (B, T) -> {hookpoint: (B, T, d)}."""
    with capture(model, hookpoints) as seen:
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
    for h in hookpoints:
        parse_hookpoint(h)
    model, _ = load_model(model_spec, cfg)
    device = next(model.parameters()).device
    with open_h5(tokens_path) as f:
        tokens = f["tokens"][:]
    n_seq, ctx_len = tokens.shape
    batch = with_defaults("models", cfg)["batch_size"]
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        outs = []
        for path in out_paths:
            tmp = stack.enter_context(atomic_path(path))
            outs.append(stack.enter_context(h5py.File(tmp, "w")))
        for i in tqdm(range(0, n_seq, batch), desc="activations", unit="batch"):
            ids = torch.from_numpy(tokens[i : i + batch].astype(np.int64)).to(device)
            seen = hidden_states(model, ids, hookpoints)
            for out, hookpoint in zip(outs, hookpoints, strict=True):
                acts = seen[hookpoint].float().reshape(-1, seen[hookpoint].shape[-1]).cpu().numpy()
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
