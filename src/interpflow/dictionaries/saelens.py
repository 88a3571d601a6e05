"""Loader for SAELens SAEs and transcoders (cfg.json + sae_weights.safetensors, v6 and pre-v6 layouts)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from interpflow.dictionaries.dictionary import SparseDictionary
from interpflow.dictionaries.readers import check_cfg_sizes, check_width, read_json, read_safetensors, take

__all__ = ["load_saelens"]

log = logging.getLogger(__name__)

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
    t = take(t, ("W_enc", "W_dec", "b_dec", *enc, *jump, *(("W_skip",) if skip else ())),
              ("finetuning_scaling_factor",), where)  # fmt: skip
    check_width(t, ("W_dec", *enc, *jump, "finetuning_scaling_factor"), t["W_enc"].shape[-1], where)
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
    raw = read_json(folder / "cfg.json")
    t = read_safetensors(folder / "sae_weights.safetensors")
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
    check_cfg_sizes(declared, {"d_in": d_in, "width": width, "d_out": d_out}, where)
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
