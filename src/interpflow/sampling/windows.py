"""One latent's windows: the sampler settings, quantile-stratified train and test windows (never shared),
random non-activating windows and the hard negatives."""

from __future__ import annotations

import numpy as np

from interpflow.defaults import with_defaults
from interpflow.sampling.hard import _hardest

SETTINGS = ("example_ctx_len", "n_train", "n_test", "n_nonactivating", "n_train_nonactivating", "n_quantiles",
            "seed", "min_activations")  # fmt: skip
TRAIN_SAMPLING = ("quantiles", "random", "top")  # the paper's Table A5 ablation of the explainer's examples
# (split, negative) of _sample_windows' row groups, by its `group` column; the first two are activating
GROUPS = (("train", ""), ("test", ""), ("test", "random"), ("train", "random"), ("test", "hard"))


def _settings(cfg: dict, ctx_len: int) -> dict[str, int]:
    """Read and check the sampler settings; absent ones take the schema's defaults (the paper's: e.g.
    min_activations 200, as Paulo et al. set aside latents with fewer activations over their 10M tokens)."""
    if "min_activating" in cfg:
        raise ValueError(
            "sampler setting min_activating (activating windows) was replaced by min_activations: the "
            "number of activations (tokens where the latent is nonzero) a latent needs to be sampled"
        )
    cfg = with_defaults("samplers", cfg)
    s = {key: cfg[key] for key in SETTINGS}
    for key, value in s.items():
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"sampler setting {key} must be a non-negative integer, got {value!r}")
    s["train_sampling"] = mode = cfg["train_sampling"]
    if mode not in TRAIN_SAMPLING:
        raise ValueError(f"sampler setting train_sampling: {mode!r} is not one of {TRAIN_SAMPLING}")
    if s["example_ctx_len"] < 1 or ctx_len % s["example_ctx_len"]:
        raise ValueError(f"example_ctx_len ({s['example_ctx_len']}) must divide the context length {ctx_len}")
    if s["n_quantiles"] < 1:
        raise ValueError("n_quantiles must be at least 1")
    return s


def _stratified(bins: np.ndarray, n: int, n_bins: int, rng: np.random.Generator) -> np.ndarray:
    """Pick min(n, len(bins)) indices, about n / n_bins per bin; short bins are filled from the others."""
    n = min(n, bins.size)
    quota = np.full(n_bins, n // n_bins)
    quota[rng.permutation(n_bins)[: n % n_bins]] += 1  # spread the remainder over random bins
    prio = rng.permutation(bins.size)  # random rank of every candidate
    # by bin, then by random rank: the keys are distinct (prio is a permutation), so one argsort gives
    # lexsort((prio, bins))'s order at a fraction of its cost
    order = np.argsort(bins.astype(np.int64) * bins.size + prio)
    sorted_bins = bins[order]
    count = np.bincount(bins, minlength=n_bins)  # [n_bins]
    rank_in_bin = np.arange(bins.size) - (np.cumsum(count) - count)[sorted_bins]
    take = rank_in_bin < quota[sorted_bins]
    chosen = order[take]
    if chosen.size == n:  # every bin filled its quota: nothing to fill
        return chosen
    rest = order[~take]
    fill = rest[np.argsort(prio[rest])[: n - chosen.size]]
    return np.concatenate([chosen, fill])


def _train_windows(bins: np.ndarray, rank: np.ndarray, s: dict, rng: np.random.Generator) -> np.ndarray:
    """The explainer's activating windows (indices into the latent's windows): across activation quantiles
    (the paper's default), uniformly at random, or the strongest only (Table A5: top-only explanations are
    too specific). The test windows are drawn across quantiles from the rest in every case."""
    n = min(s["n_train"], bins.size)
    if s["train_sampling"] == "random":
        return rng.choice(bins.size, size=n, replace=False)
    if s["train_sampling"] == "top":
        return np.argsort(-rank, kind="stable")[:n]
    return _stratified(bins, s["n_train"], s["n_quantiles"], rng)


def _inactive_windows(active: np.ndarray, n_windows: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw n distinct window ids uniformly among those not in the sorted array `active`."""
    n_inactive = n_windows - active.size
    r = np.sort(rng.choice(n_inactive, size=min(n, n_inactive), replace=False))
    # the r-th inactive window skips every active id a[i] with a[i] - i <= r inactive windows before it
    return r + np.searchsorted(active - np.arange(active.size), r, side="right")


def _run_starts(sorted_ids: np.ndarray) -> np.ndarray:
    """Index of the first element of each run of equal values in a sorted array (np.unique's return_index)."""
    new = np.ones(sorted_ids.size, bool)
    new[1:] = sorted_ids[1:] != sorted_ids[:-1]
    return np.flatnonzero(new)


def _sample_windows(
    pos: np.ndarray,
    vals: np.ndarray,
    n_windows: int,
    s: dict[str, int],
    rng: np.random.Generator,
    hard_score: np.ndarray | None = None,
    n_hard: int = 0,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Choose one latent's windows: returns (window ids [m], their columns group (GROUPS) and quantile)."""
    # flat window id; ctx_len % L == 0 keeps every window inside one sequence
    wid = pos.astype(np.int64) // s["example_ctx_len"]
    first = _run_starts(wid)  # positions ascend within a latent, so window ids come in sorted runs
    active = wid[first]  # [n_act], sorted
    max_act = np.maximum.reduceat(vals.astype(np.float32), first)
    rank = np.empty(active.size, np.int64)
    rank[np.argsort(max_act, kind="stable")] = np.arange(active.size)
    bins = rank * s["n_quantiles"] // active.size  # equal-count bins, 0 = weakest
    train = _train_windows(bins, rank, s, rng)
    free = np.ones(active.size, bool)
    free[train] = False
    left = np.flatnonzero(free)  # test never reuses a train window
    test = left[_stratified(bins[left], s["n_test"], s["n_quantiles"], rng)]
    train, test = np.sort(train), np.sort(test)
    inactive = _inactive_windows(active, n_windows, s["n_nonactivating"], rng)
    # the draws below are skipped when off, so default settings give the same windows as before
    train_inactive, hard = np.empty(0, np.int64), np.empty(0, np.int64)
    want_hard = hard_score is not None and n_hard > 0
    if s["n_train_nonactivating"] or want_hard:
        used = np.union1d(active, inactive)
        if s["n_train_nonactivating"]:
            train_inactive = _inactive_windows(used, n_windows, s["n_train_nonactivating"], rng)
            used = np.union1d(used, train_inactive)
        if want_hard:
            hard = _hardest(hard_score, used, n_hard, rng)
    parts = [active[train], active[test], inactive, train_inactive, hard]  # in GROUPS' order
    group = np.repeat(np.arange(len(parts), dtype=np.int8), [p.size for p in parts])
    quantile = np.concatenate([bins[train], bins[test], np.full(group.size - train.size - test.size, -1)])
    return np.concatenate(parts), {"group": group, "quantile": quantile}
