"""Which latents a sampler picks: a seeded random sample per shard (cfg['latents']), the cross-layer partners
of those picked on the layer below; and the shard files of a latents folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from interpflow.defaults import with_defaults


def select_latents(latent_start: int, latent_end: int, cfg: dict) -> list[int]:
    """Seeded random sample of cfg['latents']['n'] latents in [latent_start, latent_end), sorted."""
    sel = with_defaults("samplers", cfg)["latents"]
    n, seed = sel["n"], sel["seed"]
    size = latent_end - latent_start
    if n is not None and (not isinstance(n, int) or n < 0):
        raise ValueError(f"latents.n must be a non-negative integer or null, got {n!r}")
    if n is None or n >= size:
        return list(range(latent_start, latent_end))
    # the shard start is mixed in so each shard draws its own offsets
    rng = np.random.default_rng([int(seed), latent_start])
    return sorted(int(i) for i in latent_start + rng.choice(size, size=n, replace=False))


def partner_latents(matches: pd.DataFrame, width_below: int, shard_size: int, cfg: dict) -> np.ndarray:
    """The cross-layer partners (latent_b) of every latent this sampler picks on the layer below."""
    picked = [
        lat
        for start in range(0, width_below, shard_size)
        for lat in select_latents(start, min(start + shard_size, width_below), cfg)
    ]
    partner = matches.set_index("latent_a")["latent_b"]
    return np.unique(partner.reindex(picked).dropna().to_numpy(dtype=np.int64))


def shard_files(latents_dir: str | os.PathLike) -> list[Path]:
    """The shard-{i}.h5 files of a latents folder, in shard order."""
    found = {
        int(p.stem.removeprefix("shard-")): p
        for p in Path(latents_dir).glob("shard-*.h5")
        if p.stem.removeprefix("shard-").isdigit()
    }
    if not found:
        raise FileNotFoundError(f"no latent shards (shard-<i>.h5) in {latents_dir}")
    return [found[i] for i in sorted(found)]
