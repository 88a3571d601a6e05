"""Sparse dictionaries: one canonical module for our TopK SAE, pretrained SAEs/transcoders and MLP neurons.

Every kind is rewritten exactly (up to float rounding) into one computation on raw inputs x [B, d_in]:

    z = x * input_scale - b_pre                       # b_pre lives in the scaled space
    h = z @ W_enc + b_enc                             # W_enc None: identity (the inputs are the latents)
    a = topk(h, k) | relu(h) | relu(h) * (h > threshold)
    y = (a @ W_dec + b_dec) / input_scale + x @ W_skip    # W_dec None: identity; W_skip only in forward

Loaders read sparsify (EleutherAI), SAELens and Gemma Scope 1/2 files from disk; they never download.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interpflow.store import atomic_path

__all__ = [
    "SparseDictionary",
    "from_topk_sae",
    "load_sparsify",
    "load_saelens",
    "load_gemma_scope",
    "load_pretrained",
    "neuron_dictionary",
    "check_dims",
]

log = logging.getLogger(__name__)

ACTIVATIONS = ("topk", "relu", "jumprelu")
CFG_FILE = "dictionary.json"
WEIGHTS_FILE = "dictionary.safetensors"
FORMATS = ("sparsify", "saelens", "gemma-scope")
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
        cfg = _read_json(path / CFG_FILE)
        tensors = _read_safetensors(path / WEIGHTS_FILE)
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


# ---------------------------------------------------------------------------------------------- file helpers


def _read_json(path: Path) -> dict[str, Any]:
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


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    """Read every tensor of a safetensors file, naming the file if it is missing or corrupt."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"missing dictionary file: {path}")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several types for truncated or foreign files
        raise ValueError(f"cannot read weights {path}: {exc}") from exc


def _read_npz(path: Path) -> dict[str, Tensor]:
    """Read every array of an .npz file as a tensor, naming the file if it is missing or corrupt."""
    import numpy as np

    if not path.is_file():
        raise FileNotFoundError(f"missing dictionary file: {path}")
    try:
        with np.load(path) as data:
            return {key: torch.from_numpy(np.array(data[key])) for key in data.files}
    except Exception as exc:  # zipfile and numpy raise several types for corrupt archives
        raise ValueError(f"cannot read weights {path}: {exc}") from exc


def _take(t: dict[str, Tensor], required: tuple[str, ...], optional: tuple[str, ...], where: str) -> dict:
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


def _check_width(t: dict[str, Tensor], names: tuple[str, ...], width: int, where: str) -> None:
    """Per-latent vectors (and W_dec rows) must match the encoder width before they are combined."""
    for name in ("W_enc", "w_enc", "encoder.weight", "W_dec", "w_dec"):
        if name in t and t[name].ndim != 2:
            raise ValueError(f"{where}: tensor {name} must be a matrix, got shape {tuple(t[name].shape)}")
    for name in names:
        if name in t and t[name].shape[0] != width:
            raise ValueError(
                f"{where}: tensor {name} has shape {tuple(t[name].shape)}, but the width is {width}"
            )


def _check_cfg_sizes(cfg_sizes: dict[str, Any], actual: dict[str, int], where: str) -> None:
    """Sizes the config declares must equal the tensors' (None: not declared)."""
    for key, want in cfg_sizes.items():
        if want is not None and int(want) != actual[key]:
            raise ValueError(
                f"{where}: config says {key} = {want}, but the weights have {key} = {actual[key]}"
            )


# ---------------------------------------------------------------------------------------------- constructors


def from_topk_sae(sae) -> SparseDictionary:
    """Our TopKSAE (interpflow.sae) as a dictionary that reproduces its encode/decode exactly."""
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


# ---------------------------------------------------------------------------------------------- sparsify

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
    cfg = _read_json(folder / "cfg.json")
    t = _read_safetensors(folder / "sae.safetensors")
    bad = [f for f in _SPARSIFY_UNSUPPORTED if cfg.get(f)]
    if bad:
        raise ValueError(f"{where}/cfg.json: {bad} is set; this loader supports plain TopK coders only")
    if cfg.get("activation", "topk") != "topk":
        raise ValueError(f"{where}/cfg.json: activation {cfg['activation']!r} is not supported (only topk)")
    if not isinstance(cfg.get("k"), int):
        raise ValueError(f"{where}/cfg.json: key 'k' must be an int, got {cfg.get('k')!r}")
    t = _take(t, ("encoder.weight", "encoder.bias", "W_dec", "b_dec"), ("W_skip",), where)
    _check_width(t, ("encoder.bias", "W_dec"), t["encoder.weight"].shape[0], where)
    if bool(cfg.get("skip_connection")) != ("W_skip" in t):
        raise ValueError(
            f"{where}: cfg skip_connection={cfg.get('skip_connection')} disagrees with the weights"
        )
    width, d_in = t["encoder.weight"].shape
    n_latents = cfg.get("num_latents") or d_in * (cfg.get("expansion_factor") or 0) or None
    _check_cfg_sizes({"d_in": cfg.get("d_in"), "width": n_latents}, {"d_in": d_in, "width": width}, where)
    transcode = bool(cfg.get("transcode", False))
    model = None
    try:  # sparsify's training config, one level up: only a label, so a bad one is ignored
        model = _read_json(folder.parent / "config.json").get("model")
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


# ---------------------------------------------------------------------------------------------- SAELens

# architecture -> (activation, transcoder, skip); gated is rewritten exactly as JumpReLU (_saelens_tensors)
_OLD_NORM = {None: "none", False: "none", True: "expected_average_only_in"}  # pre-v6 wrote a bool
_SAELENS_ARCHS = {
    "standard": ("relu", False, False),
    "topk": ("topk", False, False),
    "jumprelu": ("jumprelu", False, False),
    "gated": ("jumprelu", False, False),
    "transcoder": ("relu", True, False),
    "skip_transcoder": ("relu", True, True),
    "jumprelu_transcoder": ("jumprelu", True, False),
    "jumprelu_skip_transcoder": ("jumprelu", True, True),
}


def _saelens_cfg(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Flatten a SAELens cfg.json of either layout (v6: nested `metadata`; pre-v6: flat) into our fields."""
    v6 = isinstance(raw.get("metadata"), dict)
    md = raw["metadata"] if v6 else raw
    hook = md.get("hook_name", md.get("hook_point"))  # pre-v6 cfgs used hook_point
    norm = raw.get("normalize_activations")
    c = {
        "layout": "v6" if v6 else "pre-v6",
        "sae_lens_version": md.get("sae_lens_version", raw.get("sae_lens_version")),
        "hook_name": hook,
        "hook_name_out": md.get("hook_name_out"),
        "hook_head_index": md.get("hook_head_index", md.get("hook_point_head_index")),
        "model_name": md.get("model_name"),
        "architecture": raw.get("architecture", "standard"),
        "apply_b_dec_to_input": bool(raw.get("apply_b_dec_to_input", True)),
        "normalize_activations": _OLD_NORM.get(norm, norm) if isinstance(norm, bool | None) else norm,
        "reshape_activations": raw.get("reshape_activations", "hook_z" if "hook_z" in str(hook) else "none"),
        "rescale_acts_by_decoder_norm": bool(raw.get("rescale_acts_by_decoder_norm", False)),
        "finetuning_scaling_factor": bool(raw.get("finetuning_scaling_factor", False)),
        "k": raw.get("k"),
        "d_in": raw.get("d_in"),
        "d_sae": raw.get("d_sae"),
        "d_out": raw.get("d_out"),
        "dtype": raw.get("dtype"),
    }
    if not v6:
        fn = raw.get("activation_fn", raw.get("activation_fn_str")) or "relu"
        if fn == "topk" and c["architecture"] in ("standard", "topk"):
            c["architecture"], c["k"] = "topk", (raw.get("activation_fn_kwargs") or {}).get("k")
        elif fn != "relu":
            raise ValueError(f"{where}/cfg.json: activation_fn {fn!r} ({c['architecture']}) is not supported")
    for key in ("d_in", "d_sae"):
        if not isinstance(c[key], int):
            raise ValueError(f"{where}/cfg.json: key {key!r} must be an int, got {c[key]!r}")
    if c["architecture"] == "topk" and not isinstance(c["k"], int):
        raise ValueError(f"{where}/cfg.json: a topk SAE needs an int k, got {c['k']!r}")
    return c


def _saelens_tensors(t: dict[str, Tensor], c: dict[str, Any], where: str) -> dict[str, Tensor | None]:
    """SAELens state dict -> canonical tensors, folding gates, decoder-norm rescaling, fine-tuning scales."""
    arch = c["architecture"]
    activation, _, skip = _SAELENS_ARCHS[arch]
    t = dict(t)
    if "log_threshold" in t:  # older JumpReLU checkpoints stored log(threshold)
        t["threshold"] = t.pop("log_threshold").exp()
    if "scaling_factor" in t:  # some versions always wrote one; all ones means unused
        sf = t.pop("scaling_factor")
        if not bool((sf == 1).all()):
            if not c["finetuning_scaling_factor"]:
                raise ValueError(
                    f"{where}: scaling_factor is not all ones, finetuning_scaling_factor is false"
                )
            t["finetuning_scaling_factor"] = sf
    enc = ("b_gate", "b_mag", "r_mag") if arch == "gated" else ("b_enc",)
    jump = ("threshold",) if activation == "jumprelu" and arch != "gated" else ()
    t = _take(t, ("W_enc", "W_dec", "b_dec", *enc, *jump, *(("W_skip",) if skip else ())),
              ("finetuning_scaling_factor",), where)  # fmt: skip
    _check_width(t, ("W_dec", *enc, *jump, "finetuning_scaling_factor"), t["W_enc"].shape[-1], where)
    out = {name: t.get(name) for name in ("W_enc", "b_enc", "threshold", "W_dec", "b_dec")}
    out["W_skip"] = t["W_skip"].T if skip else None  # SAELens adds x @ W_skip.T
    if arch == "gated":
        # gate z@W + b_gate > 0  <=>  mag = z@(W e^r) + b_mag > b_mag - e^r b_gate: a JumpReLU on mag
        gain = t["r_mag"].exp()
        out |= {"W_enc": t["W_enc"] * gain, "b_enc": t["b_mag"], "threshold": t["b_mag"] - gain * t["b_gate"]}
    if arch == "topk" and c["rescale_acts_by_decoder_norm"]:
        # top-k ranks h * |W_dec| and decodes a / |W_dec| @ W_dec: fold the norms into the encoder
        norm = out["W_dec"].norm(dim=1).clamp_min(1e-8)
        out |= {"W_enc": out["W_enc"] * norm, "b_enc": out["b_enc"] * norm}
        out["W_dec"] = out["W_dec"] / norm[:, None]
    if "finetuning_scaling_factor" in t:  # decode multiplied the activations by it
        out["W_dec"] = out["W_dec"] * t["finetuning_scaling_factor"][:, None]
    return out


def _saelens_input_scale(c: dict[str, Any], factor: float | None, transcoder: bool, where: str) -> float:
    """Constant input scale implied by normalize_activations (the factor itself is not in cfg.json)."""
    norm = c["normalize_activations"]
    if norm == "none":
        if factor is not None:
            raise ValueError(f"{where}: norm_scaling_factor given, but cfg normalize_activations is 'none'")
        return 1.0
    if norm == "expected_average_only_in" and not transcoder:
        if factor is None:
            raise ValueError(
                f"{where}/cfg.json: normalize_activations='expected_average_only_in' scales inputs by a "
                "constant that cfg.json does not store; pass norm_scaling_factor (SAELens lists it per SAE)"
            )
        return float(factor)
    raise ValueError(
        f"{where}/cfg.json: normalize_activations={norm!r} is not supported"
        f"{' for transcoders' if transcoder else ''} (supported: 'none', 'expected_average_only_in' for SAEs)"
    )


def load_saelens(path: str | os.PathLike, *, norm_scaling_factor: float | None = None) -> SparseDictionary:
    """Load a SAELens SAE or transcoder folder (cfg.json + sae_weights.safetensors), any cfg layout."""
    folder = Path(path)
    where = str(folder)
    raw = _read_json(folder / "cfg.json")
    t = _read_safetensors(folder / "sae_weights.safetensors")
    c = _saelens_cfg(raw, where)
    arch = c["architecture"]
    if arch not in _SAELENS_ARCHS:
        raise ValueError(
            f"{where}/cfg.json: architecture {arch!r} is not supported (supported: "
            f"{', '.join(_SAELENS_ARCHS)}; for batchtopk/matryoshka training checkpoints load the inference "
            "SAE, which SAELens saves as jumprelu)"
        )
    activation, transcoder, _ = _SAELENS_ARCHS[arch]
    if transcoder and c["apply_b_dec_to_input"]:
        raise ValueError(f"{where}/cfg.json: apply_b_dec_to_input is true for a transcoder (SAELens forbids)")
    input_scale = _saelens_input_scale(c, norm_scaling_factor, transcoder, where)
    w = _saelens_tensors(t, c, where)
    d_in, width = w["W_enc"].shape
    d_out = w["W_dec"].shape[1]
    declared = {"d_in": c["d_in"], "width": c["d_sae"], "d_out": c["d_out"] if transcoder else c["d_in"]}
    _check_cfg_sizes(declared, {"d_in": d_in, "width": width, "d_out": d_out}, where)
    meta = {"format": "saelens", "source": where, "hookpoint": c["hook_name"], "architecture": arch}
    meta["hookpoint_out"] = c["hook_name_out"]
    meta |= {key: c[key] for key in ("hook_head_index", "model_name", "layout",
                                     "sae_lens_version", "reshape_activations", "dtype")}  # fmt: skip
    log.info("loaded SAELens %s %s (%d -> %d)", arch, where, d_in, width)
    return SparseDictionary(
        d_in,
        width,
        activation=activation,
        k=c["k"] if activation == "topk" else None,
        **w,
        b_pre=w["b_dec"] if c["apply_b_dec_to_input"] else None,
        input_scale=input_scale,
        transcoder=transcoder,
        meta=meta,
    )


# ---------------------------------------------------------------------------------------------- Gemma Scope


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
    t = {("W_" + n[2:] if n.startswith("w_") else n): v for n, v in _read_npz(file).items()}
    if "scaling_factor" in t and bool((t["scaling_factor"] == 1).all()):
        del t["scaling_factor"]
    t = _take(t, ("W_enc", "b_enc", "threshold", "W_dec", "b_dec"), (), where)
    _check_width(t, ("b_enc", "threshold", "W_dec"), t["W_enc"].shape[-1], where)
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
        cfg = _read_json(cfg_path)
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
    t = _take(_read_safetensors(file), ("w_enc", "b_enc", "threshold", "w_dec", "b_dec"),
              ("affine_skip_connection",), where)  # fmt: skip
    if t["w_dec"].ndim == 3:
        shape = tuple(t["w_dec"].shape)
        raise ValueError(f"{where}: w_dec has shape {shape}; cross-layer transcoders are not supported")
    _check_width(t, ("b_enc", "threshold", "w_dec"), t["w_enc"].shape[-1], where)
    affine = "affine_skip_connection" in t
    if cfg.get("affine_connection", affine) != affine:
        has = "has" if affine else "lacks"
        raise ValueError(f"{cfg_path}: affine_connection={not affine}, but {file.name} {has} the affine skip")
    d_in, width = t["w_enc"].shape
    _check_cfg_sizes({"width": cfg.get("width")}, {"width": width}, str(cfg_path))
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


# ---------------------------------------------------------------------------------------------- workflow


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
    from interpflow.sae import TopKSAE, random_sae_from_h5

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
