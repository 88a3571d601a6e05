"""SparseDictionary: the canonical, inference-only form of every kind of sparse dictionary.

Every kind is rewritten exactly (up to float rounding) into one computation on raw inputs x [B, d_in]:

    z = x * input_scale - b_pre                       # b_pre lives in the scaled space
    h = z @ W_enc + b_enc                             # W_enc None: identity (the inputs are the latents)
    a = topk(h, k) | relu(h) | relu(h) * (h > threshold)
    y = (a @ W_dec + b_dec) / input_scale + x @ W_skip    # W_dec None: identity; W_skip only in forward

Also our TopK SAE and MLP neurons as dictionaries, and the width check against the activations.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interpflow.dictionaries.readers import read_json, read_safetensors
from interpflow.store import atomic_path

__all__ = ["SparseDictionary", "from_topk_sae", "neuron_dictionary", "check_dims"]

ACTIVATIONS = ("topk", "relu", "jumprelu")
CFG_FILE = "dictionary.json"
WEIGHTS_FILE = "dictionary.safetensors"
_TENSORS = ("W_enc", "b_enc", "threshold", "W_dec", "b_dec", "b_pre", "W_skip")


class SparseDictionary(nn.Module):
    """A sparse dictionary (SAE, transcoder or neuron basis) in one canonical, inference-only form."""

    W_enc: Tensor | None  # [d_in, width]; None: identity
    b_enc: Tensor | None  # [width]
    threshold: Tensor | None  # [width], jumprelu only
    W_dec: Tensor | None  # [width, d_out]; None: identity
    b_dec: Tensor | None  # [d_out]
    b_pre: Tensor | None  # [d_in], subtracted from the scaled input before encoding
    W_skip: Tensor | None  # [d_in, d_out], applied to the raw input in forward only

    def __init__(
        self,
        d_in: int,
        width: int,
        *,
        activation: str,
        k: int | None = None,
        d_out: int | None = None,
        W_enc: Tensor | None = None,
        b_enc: Tensor | None = None,
        threshold: Tensor | None = None,
        W_dec: Tensor | None = None,
        b_dec: Tensor | None = None,
        b_pre: Tensor | None = None,
        W_skip: Tensor | None = None,
        input_scale: float = 1.0,
        transcoder: bool = False,
        meta: dict[str, Any] | None = None,
    ):
        """Check every shape and setting against the others and store copies of the tensors as buffers."""
        super().__init__()
        self.meta = dict(meta or {})
        where = self.meta.get("source") or self.meta.get("format") or "dictionary"
        if d_out is None:
            d_out = W_dec.shape[-1] if W_dec is not None else width
        self.d_in, self.width, self.d_out = int(d_in), int(width), int(d_out)
        self.activation, self.k = activation, None if k is None else int(k)
        self.input_scale, self.transcoder = float(input_scale), bool(transcoder)
        tensors = dict(
            W_enc=W_enc,
            b_enc=b_enc,
            threshold=threshold,
            W_dec=W_dec,
            b_dec=b_dec,
            b_pre=b_pre,
            W_skip=W_skip,
        )
        _check_settings(self, tensors, where)
        dtype = next((t.dtype for t in tensors.values() if t is not None), torch.float32)
        for name, t in tensors.items():
            # clone keeps strides: a transposed nn.Linear weight stays exact (and fast) in F.linear
            self.register_buffer(name, None if t is None else t.detach().to(dtype).clone())

    @property
    def dtype(self) -> torch.dtype | None:
        """Floating dtype of the stored tensors (None for a bare identity, which keeps the input's dtype)."""
        return next((b.dtype for b in self.buffers()), None)

    def _cast(self, t: Tensor) -> Tensor:
        """t in the dtype of the stored tensors (a bare identity keeps float inputs as they are)."""
        dtype = self.dtype or (t.dtype if t.is_floating_point() else torch.float32)
        return t.to(dtype)

    def extra_repr(self) -> str:
        """Short summary for print()."""
        k = f", k={self.k}" if self.k is not None else ""
        dims = f"{self.d_in} -> {self.width} -> {self.d_out}"
        return f"{self.meta.get('format', '?')}: {dims}, {self.activation}{k}"

    def pre_activations(self, x: Tensor) -> Tensor:
        """Raw inputs x [B, d_in] -> encoder pre-activations h [B, width] (a fresh tensor, never x itself)."""
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"expected inputs [B, {self.d_in}], got {tuple(x.shape)}")
        z = self._cast(x)
        if self.input_scale != 1.0:
            z = z * self.input_scale
        if self.b_pre is not None:
            z = z - self.b_pre
        if self.W_enc is not None:
            return F.linear(z, self.W_enc.mT, self.b_enc)
        return z + self.b_enc if self.b_enc is not None else z.clone()

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, d_in] -> (values [B, m] >= 0, indices [B, m] int64); zeros are inactive, m = k or max nnz."""
        h = self.pre_activations(x)  # [B, width]
        if self.activation == "topk":
            # ReLU is monotone, so top-k then ReLU equals top-k of ReLU(h) without a dense pass
            values, indices = h.topk(self.k, dim=1, sorted=False)
            return values.clamp_min_(0), indices
        if self.activation == "jumprelu":
            h.masked_fill_(h <= self.threshold, 0)
        h.clamp_min_(0)
        m = int((h > 0).sum(1).max()) if len(h) else 0
        return h.topk(m, dim=1, sorted=False)

    def decode(self, values: Tensor, indices: Tensor) -> Tensor:
        """Sparse codes (values, indices) [B, m] -> output [B, d_out], raw scale, without the skip term."""
        values = self._cast(values)
        if self.W_dec is None:
            y = values.new_zeros(len(values), self.width).scatter_add_(1, indices, values)
        elif values.shape[1] == 0:  # embedding_bag rejects empty bags of width 0
            y = values.new_zeros(len(values), self.d_out)
        else:
            y = F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum")  # [B, d_out]
        if self.b_dec is not None:
            y = y + self.b_dec
        return y / self.input_scale if self.input_scale != 1.0 else y

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction (or transcoder prediction) of x [B, d_in]: decode(encode(x)) plus the skip term."""
        y = self.decode(*self.encode(x))
        if self.W_skip is not None:
            y = y + self._cast(x) @ self.W_skip
        return y

    def decoder_directions(self) -> Tensor:
        """Unit-norm decoder rows [width, d_out] (the identity when W_dec is None; zero rows stay zero)."""
        if self.W_dec is None:
            return torch.eye(self.width, dtype=self.dtype or torch.float32, device=_device(self))
        norm = self.W_dec.norm(dim=1, keepdim=True)
        return self.W_dec / norm.clamp_min(torch.finfo(self.W_dec.dtype).tiny)

    def save(self, out_dir: str | os.PathLike) -> None:
        """Write out_dir/dictionary.safetensors, then out_dir/dictionary.json, each atomically."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        # clone: safetensors refuses tensors that share memory (b_pre is often b_dec)
        tensors = {
            n: b.detach().cpu().clone(memory_format=torch.contiguous_format) for n, b in self._present()
        }
        cfg = {
            "format": "interpflow-dictionary",
            "version": 1,
            "d_in": self.d_in,
            "width": self.width,
            "d_out": self.d_out,
            "activation": self.activation,
            "k": self.k,
            "input_scale": self.input_scale,
            "transcoder": self.transcoder,
            "tensors": sorted(tensors),
            "meta": self.meta,
        }
        with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp))
        with atomic_path(out_dir / CFG_FILE) as tmp:
            tmp.write_text(json.dumps(cfg, indent=2, default=str) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> SparseDictionary:
        """Load a folder written by `save` (dictionary.json + dictionary.safetensors)."""
        path = Path(path)
        cfg = read_json(path / CFG_FILE)
        tensors = read_safetensors(path / WEIGHTS_FILE)
        if cfg.get("format") != "interpflow-dictionary":
            raise ValueError(f"{path / CFG_FILE} is not an interpflow dictionary config")
        listed = set(cfg.get("tensors", []))
        if listed != set(tensors) or not listed <= set(_TENSORS):
            raise ValueError(
                f"{path / WEIGHTS_FILE} holds tensors {sorted(tensors)}, {CFG_FILE} lists {sorted(listed)}"
            )
        try:
            keys = ("d_in", "width", "d_out", "activation", "k", "input_scale", "transcoder", "meta")
            d = cls(**{key: cfg[key] for key in keys}, **tensors)
        except KeyError as exc:
            raise ValueError(f"{path / CFG_FILE} lacks the key {exc}") from exc
        except ValueError as exc:
            raise ValueError(f"invalid dictionary in {path}: {exc}") from exc
        return d.to(device)

    def _present(self) -> list[tuple[str, Tensor]]:
        """(name, tensor) of the stored, non-None tensors."""
        return [(n, b) for n, b in self.named_buffers() if b is not None]


def _device(d: SparseDictionary) -> torch.device:
    """Device of the dictionary's tensors (cpu for a bare identity)."""
    return next((b.device for b in d.buffers()), torch.device("cpu"))


def _check_settings(d: SparseDictionary, tensors: dict[str, Tensor | None], where: str) -> None:
    """Raise a ValueError naming `where` if shapes, activation, k or input_scale disagree."""
    if min(d.d_in, d.width, d.d_out) <= 0:
        raise ValueError(f"{where}: d_in, width, d_out must be positive, got {d.d_in}, {d.width}, {d.d_out}")
    if d.activation not in ACTIVATIONS:
        raise ValueError(f"{where}: activation {d.activation!r} is not one of {ACTIVATIONS}")
    if d.activation == "topk" and not (d.k is not None and 0 < d.k <= d.width):
        raise ValueError(f"{where}: topk needs 0 < k <= width ({d.width}), got k={d.k}")
    if d.activation != "topk" and d.k is not None:
        raise ValueError(f"{where}: k is only meaningful for topk, got k={d.k} with {d.activation}")
    if (d.activation == "jumprelu") != (tensors["threshold"] is not None):
        raise ValueError(f"{where}: a threshold is needed by jumprelu and only by jumprelu ({d.activation})")
    if not (math.isfinite(d.input_scale) and d.input_scale > 0):
        raise ValueError(f"{where}: input_scale must be a positive finite number, got {d.input_scale}")
    if tensors["W_enc"] is None and d.d_in != d.width:
        raise ValueError(f"{where}: an identity encoder needs d_in == width, got {d.d_in} and {d.width}")
    if tensors["W_dec"] is None and d.d_out != d.width:
        raise ValueError(f"{where}: an identity decoder needs d_out == width, got {d.d_out} and {d.width}")
    shapes = dict(
        W_enc=(d.d_in, d.width), b_enc=(d.width,), threshold=(d.width,), W_dec=(d.width, d.d_out),
        b_dec=(d.d_out,), b_pre=(d.d_in,), W_skip=(d.d_in, d.d_out),
    )  # fmt: skip
    for name, t in tensors.items():
        if t is None:
            continue
        if tuple(t.shape) != shapes[name]:
            raise ValueError(f"{where}: tensor {name} has shape {tuple(t.shape)}, expected {shapes[name]}")
        if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
            raise ValueError(f"{where}: tensor {name} must be floating point and finite")


def from_topk_sae(sae) -> SparseDictionary:
    """Our TopKSAE (interpflow.sae.model) as a dictionary that reproduces its encode/decode exactly."""
    return SparseDictionary(
        sae.d_in,
        sae.width,
        activation="topk",
        k=sae.k,
        W_enc=sae.encoder.weight.T,
        b_enc=sae.encoder.bias,
        W_dec=sae.W_dec,
        b_dec=sae.b_dec,
        b_pre=sae.b_dec,
        input_scale=sae.input_scale,
        meta={"format": "interpflow-topk"},
    )


def neuron_dictionary(
    d_mlp: int, *, k: int | None = None, W_out: Tensor | None = None, b_out: Tensor | None = None
) -> SparseDictionary:
    """MLP neurons as latents: positive part (k None) or top-k; W_out [d_model, d_mlp] decodes to MLP out."""
    if W_out is not None and (W_out.ndim != 2 or W_out.shape[1] != d_mlp):
        raise ValueError(
            f"W_out must be [d_model, {d_mlp}] (the down projection's weight), got {tuple(W_out.shape)}"
        )
    if b_out is not None and W_out is None:
        raise ValueError("b_out needs W_out")
    return SparseDictionary(
        d_mlp,
        d_mlp,
        activation="relu" if k is None else "topk",
        k=k,
        W_dec=None if W_out is None else W_out.T,
        b_dec=b_out,
        transcoder=W_out is not None,  # reads the MLP hidden layer, writes the MLP output
        meta={"format": "neurons", "k": k},
    )


def check_dims(d: SparseDictionary, d_in: int, where: str) -> None:
    """Raise a ValueError naming `where` and the dictionary if its input width is not the activations'."""
    if d.d_in != d_in:
        src = d.meta.get("source") or d.meta.get("format") or "dictionary"
        raise ValueError(
            f"{where}: dictionary {src} reads inputs of width {d.d_in}, "
            f"but the hookpoint activations have width {d_in}"
        )
