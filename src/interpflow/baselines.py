"""Explainers without an LLM, as baselines: the latent's top tokens, and another latent's explanation.

Both write the explanations table of interpflow.explain (the random one adds `donor_latent`), so every
scorer runs on them unchanged: "top-tokens" is the floor an LLM explanation has to beat, "random" is
chance (Paulo et al. 2024 report random explanations at 0.51 detection/fuzzing).
"""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np
import pandas as pd

from interpflow.defaults import with_defaults
from interpflow.explanations import EXPLANATION_COLUMNS, explanation_row
from interpflow.store import read_parquet, write_parquet

log = logging.getLogger(__name__)


def _token_keys(token_strs: pd.Series) -> pd.Series:
    """A token's key: its text stripped of surrounding whitespace (" 2" and "2" are one token), or as is."""
    stripped = token_strs.str.strip()
    return stripped.where(stripped != "", token_strs)


def _explode(ex: pd.DataFrame) -> pd.DataFrame:
    """One row per token of the windows in `ex`: latent, key, act."""
    lengths = ex["token_strs"].map(len).to_numpy()
    if not lengths.sum():
        return pd.DataFrame({"latent": [], "key": [], "act": []})
    return pd.DataFrame(
        {
            "latent": np.repeat(ex["latent"].to_numpy(np.int64), lengths),
            "key": _token_keys(pd.Series(np.concatenate(ex["token_strs"].to_numpy()), dtype=object)),
            "act": np.concatenate(ex["acts"].to_numpy()).astype(np.float64),
        }
    )


def top_tokens(examples: pd.DataFrame, n_tokens: int = 5) -> pd.DataFrame:
    """Each latent's most characteristic activating tokens: latent, key, mass, score, ranked best first.

    For latent l and token key t, over l's activating train windows, the mass A(t) is the sum of l's
    activations on t and p_l(t) = A(t) / sum_t A(t). The background p_bg(t) = n(t) / N is t's share of all
    tokens in the shard's train windows (every latent's, activating or not, each window counted once).
    The score A(t) * log(p_l(t) / p_bg(t)) is the token's term of the KL divergence from background to the
    latent's activation mass, scaled by the mass: a token wins by carrying much of the activation and being
    rarer in text than in the latent's activations, so a frequent token such as " the" does not win on
    frequency. Only tokens with a positive score are kept (the best one if none has). Ties go to the
    larger mass, then to the key.
    """
    train = examples[examples["split"] == "train"]
    background = _explode(train.drop_duplicates(["seq", "start"]))["key"].value_counts()
    tok = _explode(train[train["activating"].to_numpy(dtype=bool)])
    mass = (
        tok[tok["act"] > 0].groupby(["latent", "key"], sort=False)["act"].sum().rename("mass").reset_index()
    )
    p_latent = mass["mass"] / mass.groupby("latent")["mass"].transform("sum")
    p_bg = mass["key"].map(background).to_numpy(np.float64) / background.sum()
    mass["score"] = mass["mass"] * np.log(p_latent / p_bg)
    ranked = mass.sort_values(["latent", "score", "mass", "key"], ascending=[True, False, False, True])
    # a token no more common in the activations than in text is not characteristic: keep it only when
    # no token of the latent is (then the single best one)
    keep = (ranked["score"] > 0) | (ranked.groupby("latent", sort=False).cumcount() == 0)
    return ranked[keep].groupby("latent", sort=False).head(n_tokens).reset_index(drop=True)


def _describe(keys: list[str]) -> str:
    """The explanation sentence for a latent's top token keys, each quoted: the tokens "1", "2"."""
    quoted = ", ".join(json.dumps(k, ensure_ascii=False) for k in keys)
    return f"the token{'s' if len(keys) > 1 else ''} {quoted}"


def explain_top_tokens(examples: pd.DataFrame, latents: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """Top-tokens explanations: one row per row of `latents` (skipped latents get status "skipped")."""
    n_tokens = with_defaults("explainers", cfg)["n_tokens"]
    if not isinstance(n_tokens, int) or n_tokens < 1:
        raise ValueError(f"top-tokens option n_tokens must be an integer >= 1, got {n_tokens!r}")
    t0 = time.perf_counter()
    top = top_tokens(examples, n_tokens)
    keys = top.groupby("latent", sort=False)["key"].agg(list).to_dict()
    n_ok = max(len(keys), 1)
    latency = (time.perf_counter() - t0) / n_ok  # the shard's compute time, shared by its latents
    rows = []
    for lat, status, reason in latents[["latent", "status", "reason"]].itertuples(index=False):
        row = explanation_row(lat, "top-tokens", completion="")
        if status != "ok":
            row["error"] = reason or f"latent status {status}"
        elif lat not in keys:
            row["error"] = "no activating train examples"
        else:
            row |= dict(explanation=_describe(keys[lat]), status="ok", latency_s=latency)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(EXPLANATION_COLUMNS)).astype(EXPLANATION_COLUMNS)


def run_top_tokens(
    examples_path: str | os.PathLike,
    latents_path: str | os.PathLike,
    cfg: dict,
    out_path: str | os.PathLike,
) -> None:
    """Workflow step: top-tokens explanations of a shard's latents; write explanations-{shard}.parquet."""
    t0 = time.perf_counter()
    out = explain_top_tokens(read_parquet(examples_path), read_parquet(latents_path), cfg)
    write_parquet(out, out_path)
    log.info(
        "top-tokens: %d latents %s; %.1f s -> %s",
        len(out),
        out["status"].value_counts().to_dict(),
        time.perf_counter() - t0,
        out_path,
    )


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation of range(n) without fixed points (n >= 2), by rejection (~e draws)."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 elements, got {n}")
    while True:
        perm = rng.permutation(n)
        if (perm != np.arange(n)).all():
            return perm


# the random baseline's table: the explanations table plus the latent whose explanation was given
RANDOM_COLUMNS = EXPLANATION_COLUMNS | {"donor_latent": "int64"}
_NO_DONOR = "no other explained latent of the dictionary at this hookpoint has a different explanation"


def normalise_text(text: str) -> str:
    """An explanation as compared for identity: case-folded, whitespace runs collapsed to one space."""
    return " ".join(str(text).split()).casefold()


def assign_donors(texts: list[str], rng: np.random.Generator) -> np.ndarray:
    """For each of `texts`, the index of a donor whose normalised text differs, or -1 if none exists.

    A seeded derangement, then each latent whose donor has the same normalised text (a near-duplicate
    explanation would score like the real one, and the baseline would not be a floor) swaps donors with
    a random latent for which the swap is valid too. Such a swap exists while no text is shared by more
    than half the latents, so the result is a permutation: each explanation given once. With all texts
    distinct it is a uniform derangement. Past half, a permutation is impossible; the latents left get a
    random donor of another text (reused), and -1 only when every text is the same as theirs.
    """
    group = pd.factorize(pd.Series([normalise_text(t) for t in texts], dtype=object))[0]
    if len(texts) < 2:
        return np.full(len(texts), -1)
    donor = derangement(len(texts), rng)
    left = []
    for i in np.flatnonzero(group[donor] == group):
        if group[donor[i]] != group[i]:
            continue  # fixed already, as the partner of an earlier swap
        # j outside i's text whose donor is outside it too: after the swap both donors differ in text
        partners = np.flatnonzero((group != group[i]) & (group[donor] != group[i]))
        if partners.size:
            j = rng.choice(partners)
            donor[i], donor[j] = donor[j], donor[i]
        else:
            left.append(i)
    for i in left:
        others = np.flatnonzero(group != group[i])
        donor[i] = rng.choice(others) if others.size else -1
    return donor


def _pooled_donors(pool: pd.DataFrame, seed: int) -> dict[int, tuple[int, str] | None]:
    """Each ok latent of `pool` (every shard's source explanations) -> (donor latent, donor explanation).

    Drawn over the union sorted by latent with `seed` alone, so every shard job draws the same assignment.
    """
    ok = pool[pool["status"].to_numpy() == "ok"].sort_values("latent", kind="stable")
    dup = ok["latent"][ok["latent"].duplicated()]
    if len(dup):
        raise ValueError(f"latent {int(dup.iloc[0])} has two ok source explanations across the shards")
    latent, texts = ok["latent"].to_numpy(np.int64), ok["explanation"].tolist()
    donor = assign_donors(texts, np.random.default_rng(seed))
    return {int(latent[i]): (int(latent[d]), texts[d]) if d >= 0 else None for i, d in enumerate(donor)}


def explain_random(source: pd.DataFrame, cfg: dict, pool: pd.DataFrame | None = None) -> pd.DataFrame:
    """Give each latent of `source` (one shard) with an ok explanation another latent's explanation.

    The donors come from `pool`, the source explanations of every shard of the dictionary at this
    hookpoint (default: `source` alone), by assign_donors: never the latent itself, never an identical
    (case- and whitespace-normalised) text. Latents whose source explanation is not ok stay out (status
    "skipped"), so the baseline covers the same latents as its source. One row per row of `source`.
    """
    seed = with_defaults("explainers", cfg)["seed"]
    if not isinstance(seed, int):
        raise ValueError(f"random explainer option seed must be an integer, got {seed!r}")
    donors = _pooled_donors(source if pool is None else pool, seed)
    rows = []
    for lat, status, error in source[["latent", "status", "error"]].itertuples(index=False):
        row = explanation_row(lat, "random", completion="") | {"donor_latent": -1}
        if status != "ok":
            row["error"] = f"source explanation {status}" + (f": {error}" if error else "")
        elif int(lat) not in donors:
            raise ValueError(f"latent {lat} of the shard is missing from the pooled source explanations")
        elif donors[int(lat)] is None:
            row["error"] = _NO_DONOR
        else:
            d, text = donors[int(lat)]
            row |= dict(explanation=text, status="ok", completion=f"from latent {d}", donor_latent=d)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(RANDOM_COLUMNS)).astype(RANDOM_COLUMNS)


def run_random(
    source_explanations_path: str | os.PathLike,
    pool_paths: list[str | os.PathLike],
    cfg: dict,
    out_path: str | os.PathLike,
) -> None:
    """Workflow step: the random-explanation baseline of one shard, donors from every shard's file."""
    pool = pd.concat([read_parquet(p) for p in pool_paths], ignore_index=True)
    out = explain_random(read_parquet(source_explanations_path), cfg, pool)
    write_parquet(out, out_path)
    log.info(
        "random: %d latents %s from %s (donors from %d shards) -> %s",
        len(out),
        out["status"].value_counts().to_dict(),
        source_explanations_path,
        len(pool_paths),
        out_path,
    )
