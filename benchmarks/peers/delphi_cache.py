"""delphi's latent caching (LatentCache: full forward of the base model, SAE encode, save_splits).

Driven as delphi's own `populate_cache` does it, minus the dataset download: the tokens come from
interpflow's tokens file, the SAE is interpflow's, converted to sparsify's format (same latents).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from common import read_tokens, run


def task(a: dict) -> dict:
    """Time LatentCache.run + save_splits on the given tokens; report the split files' size."""
    import torch
    from delphi.config import CacheConfig
    from delphi.latents import LatentCache
    from delphi.sparse_coders.load_sparsify import load_sparsify_hooks
    from transformers import AutoModel

    out = Path(a["out"])
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    # delphi's load_artifacts: AutoModel (no LM head) in the default dtype of this CPU (float32)
    model = AutoModel.from_pretrained(a["model_dir"], dtype=torch.float32).eval()
    hooks, transcode = load_sparsify_hooks(model, a["sae_root"], [a["hookpoint"]])
    tokens = read_tokens(a["tokens"])
    cfg = CacheConfig(
        batch_size=a["batch_size"],
        cache_ctx_len=tokens.shape[1],
        n_tokens=tokens.numel(),
        n_splits=a["n_splits"],
    )
    cache = LatentCache(model, hooks, batch_size=cfg.batch_size, transcode=transcode)
    t0 = time.perf_counter()
    cache.run(cfg.n_tokens, tokens)
    cache.save_splits(n_splits=cfg.n_splits, save_dir=out)
    cache.save_config(save_dir=out, cfg=cfg, model_name=a["model_dir"])
    seconds = time.perf_counter() - t0
    files = list(out.rglob("*.safetensors"))
    nnz = int(sum(len(v) for v in cache.cache.latent_activations.values()))
    size = sum(p.stat().st_size for p in files)
    shutil.rmtree(out)
    n = tokens.numel() // (cfg.batch_size * tokens.shape[1]) * cfg.batch_size * tokens.shape[1]
    return {
        "tokens": n,
        "seconds": seconds,
        "tokens_per_s": n / seconds,
        "nonzeros": nnz,
        "store_bytes": size,
        "bytes_per_nonzero": size / nnz,
        "n_files": len(files),
    }


if __name__ == "__main__":
    run(task)
