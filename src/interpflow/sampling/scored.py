"""select_test_examples: the test windows a scorer scores for a latent (its activating ones plus the negatives
it asks for, capped); read by the scorers and the estimate, not by the sampler."""

from __future__ import annotations

import numpy as np
import pandas as pd

from interpflow.defaults import with_defaults

NEGATIVES = ("random", "hard", "both")


def select_test_examples(
    examples: pd.DataFrame, latent: int, cfg: dict, rng: np.random.Generator | None = None
) -> pd.DataFrame:
    """A latent's scored test windows: its activating ones plus the negatives cfg['negatives'] names, capped.

    cfg (a scorer's): `negatives` "random" (default, the paper's), "hard" or "both"; `max_activating` and
    `max_nonactivating` cap each class (all chosen negatives together) by a seeded draw from `rng`, by
    default np.random.default_rng([cfg['seed'], latent]). Activating rows come first, then negatives, each
    in example_id order; callers shuffle. Without a `negative` column every negative counts as random.
    """
    cfg = with_defaults("scorers", cfg)
    which = cfg["negatives"]
    if which not in NEGATIVES:
        raise ValueError(f"scorer option negatives must be one of {NEGATIVES}, got {which!r}")
    ex = examples[(examples["latent"] == latent) & (examples["split"] == "test")]
    ex = ex.sort_values("example_id", kind="stable")
    on = ex["activating"].to_numpy(dtype=bool)
    if "negative" in ex.columns:
        kind = ex["negative"].to_numpy()
    elif which == "random":
        kind = np.where(on, "", "random")
    else:
        raise ValueError(f"scorer option negatives={which} needs examples with a `negative` column")
    wanted = {"random": ["random"], "hard": ["hard"], "both": ["random", "hard"]}[which]
    if rng is None:
        rng = np.random.default_rng([int(cfg["seed"]), int(latent)])
    parts = []
    for sub, key in ((ex[on], "max_activating"), (ex[~on & np.isin(kind, wanted)], "max_nonactivating")):
        cap = cfg.get(key)
        if cap is not None and int(cap) < 0:
            raise ValueError(f"scorer option {key} must be >= 0, got {cap}")
        if cap is not None and len(sub) > int(cap):
            sub = sub.iloc[np.sort(rng.choice(len(sub), size=int(cap), replace=False))]
        parts.append(sub)
    return pd.concat(parts)
