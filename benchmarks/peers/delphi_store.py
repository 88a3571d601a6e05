"""Write interpflow's latent store as delphi's split files, with delphi's own writer (save_splits).

Both example constructors then read the very same nonzeros: the (seq, pos, latent) locations and values
of interpflow's shards, in delphi's layout (locations [n, 3] uint16/uint32, float16 values, the token
matrix in every split file).
"""

from __future__ import annotations

from pathlib import Path

from common import read_tokens, run


def task(a: dict) -> dict:
    """Fill a LatentCache with interpflow's nonzeros and save them as delphi's splits and config."""
    import h5py
    import numpy as np
    import torch
    from delphi.config import CacheConfig
    from delphi.latents import LatentCache

    tokens = read_tokens(a["tokens"])
    ctx = tokens.shape[1]
    locs, vals = [], []
    for path in sorted(Path(a["store"]).glob("shard-*.h5")):
        with h5py.File(path, "r") as f:
            offsets, pos = f["offsets"][:], f["positions"][:].astype(np.int64)
            lat = np.repeat(np.arange(len(offsets) - 1) + int(f.attrs["latent_start"]), np.diff(offsets))
            locs.append(np.stack([pos // ctx, pos % ctx, lat], axis=1))
            vals.append(f["values"][:].astype(np.float32))
    cache = LatentCache(model=None, hookpoint_to_sparse_encode={}, batch_size=1)
    hook = a["hookpoint"]
    cache.cache.latent_locations[hook] = torch.from_numpy(np.concatenate(locs))
    cache.cache.latent_activations[hook] = torch.from_numpy(np.concatenate(vals))
    cache.cache.tokens[hook] = tokens
    cache.width = a["width"]
    out = Path(a["out"])
    cfg = CacheConfig(cache_ctx_len=ctx, n_tokens=tokens.numel(), n_splits=a["n_splits"])
    cache.save_splits(n_splits=cfg.n_splits, save_dir=out)
    cache.save_config(save_dir=out, cfg=cfg, model_name=a["model_dir"])
    return {"nonzeros": int(sum(len(v) for v in vals))}


if __name__ == "__main__":
    run(task)
