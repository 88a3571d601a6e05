"""Read one shard's inputs into per-latent lookups, one pass over each file.

The shard builder gets a dict of paths (browser design, "The shard builder's inputs"). Every table is read
once and grouped by latent; the HDF5 store is read only at the selected latents' ranges and the token file
once, in row blocks, at the positions those latents fire on. Nothing here is per-latent file access, so a
shard of thousands of latents costs one read of each table plus its store slices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from interpflow.store import open_h5, read_parquet

UNIT_FIELDS = ("corpus", "model", "hookpoint", "dictionary", "sampler")
TOKEN_BLOCK_ELEMENTS = 1 << 22  # tokens read per HDF5 call (16 MiB of int32): bounded memory on any corpus


@dataclass(frozen=True)
class Explainer:
    """One explainer of the unit and its explanations for this shard."""

    name: str
    kind: str
    """llm, random, top-tokens, file or a best-of kind, as in the config."""
    subject: str
    """As the summary names it, e.g. `trained SAE, random explanation`."""
    rows: dict[int, dict]
    """latent -> its explanations-{shard}.parquet row."""


@dataclass(frozen=True)
class Scorer:
    """One scorer run on one explainer's explanations for this shard."""

    explainer: str
    name: str
    kind: str
    """detection, fuzzing, simulation, embedding, surprisal or intervention."""
    metrics: dict[int, dict]
    """latent -> its metrics-{shard}.parquet row."""
    predictions: dict[int, pd.DataFrame]
    """latent -> its predictions rows (absent: the scorer produced none for that latent)."""


@dataclass(frozen=True)
class Partner:
    """A latent of another hookpoint matched to one of this shard's latents (crosslayer matches.parquet)."""

    latent: int
    other_latent: int
    other_unit: str
    other_hookpoint: str
    cosine: float


@dataclass(frozen=True)
class ShardData:
    """Everything a shard's pages and entries are made of, keyed by latent."""

    unit: dict
    """corpus, model, hookpoint, dictionary, sampler, shard."""
    selected: pd.DataFrame
    """examples/latents-{shard}.parquet: one row per selected latent, in file order."""
    stats: dict[int, dict]
    examples: dict[int, pd.DataFrame]
    explainers: list[Explainer]
    scorers: list[Scorer]
    partners: dict[int, list[Partner]]
    activations: dict[int, tuple[np.ndarray, np.ndarray]]
    """latent -> (token ids at its nonzero positions int32, values float32), both in store order."""
    vocab: np.ndarray
    """token id -> its text (object array; empty string for ids the vocabulary lacks)."""
    shard_size: int
    """latent_end - latent_start of the store: the dictionary's shard size."""

    @property
    def unit_id(self) -> str:
        return "/".join(str(self.unit[k]) for k in UNIT_FIELDS)

    @property
    def latents(self) -> list[int]:
        return [int(x) for x in self.selected["latent"]]


def by_latent(df: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """Group a table by latent once (the only way the builder touches a table's rows)."""
    return {int(k): g for k, g in df.groupby("latent", sort=False)}


def rows_by_latent(df: pd.DataFrame) -> dict[int, dict]:
    """One dict per latent of a table with one row per latent (the last row wins on duplicates)."""
    return {int(r["latent"]): r for r in df.to_dict("records")}


def read_vocab(path: str | os.PathLike) -> np.ndarray:
    """Token id -> text, as a dense object array for vectorised lookups."""
    vocab = read_parquet(path)
    ids = vocab["token_id"].to_numpy(dtype=np.int64)
    texts = np.full(int(ids.max(initial=-1)) + 1, "", dtype=object)
    texts[ids] = vocab["text"].to_numpy(dtype=object)
    return texts


def read_store(path: str | os.PathLike, latents: list[int]) -> tuple[dict, dict[int, tuple]]:
    """The store's attrs and, per requested latent, (flat positions, values); empty for latents outside it."""
    with open_h5(path) as f:
        attrs = {k: int(f.attrs[k]) for k in ("latent_start", "latent_end", "n_seq", "ctx_len")}
        offsets = f["offsets"][:]
        out = {}
        for latent in sorted(latents):  # ascending: each compressed chunk is read about once
            i = latent - attrs["latent_start"]
            if not 0 <= i < attrs["latent_end"] - attrs["latent_start"]:
                out[latent] = (np.zeros(0, np.int64), np.zeros(0, np.float32))
                continue
            lo, hi = int(offsets[i]), int(offsets[i + 1])
            out[latent] = (f["positions"][lo:hi].astype(np.int64), f["values"][lo:hi].astype(np.float32))
    return attrs, out


def tokens_at(path: str | os.PathLike, flat: np.ndarray) -> np.ndarray:
    """Token ids at flat indices t = seq * ctx_len + pos, reading tokens.h5 once in row blocks."""
    out = np.zeros(len(flat), dtype=np.int32)
    if len(flat) == 0:
        return out
    with open_h5(path) as f:
        ds = f["tokens"]
        n_seq, ctx_len = ds.shape
        block = max(1, TOKEN_BLOCK_ELEMENTS // ctx_len)
        seq, pos = np.divmod(flat, ctx_len)
        if seq.max() >= n_seq:
            raise ValueError(
                f"{path}: store position {int(flat.max())} is past the corpus ({n_seq} sequences)"
            )
        order = np.argsort(seq, kind="stable")
        seq_sorted = seq[order]
        for b in np.unique(seq_sorted // block):
            first = int(b) * block
            lo, hi = np.searchsorted(seq_sorted, [first, first + block])
            idx = order[lo:hi]
            rows = ds[first : min(first + block, n_seq)]  # (block, ctx_len)
            out[idx] = rows[seq[idx] - first, pos[idx]]
    return out


def read_activations(store: str, tokens: str, latents: list[int]) -> tuple[int, dict]:
    """The shard size and, per latent, (token ids, values) of its nonzero store entries."""
    attrs, slices = read_store(store, latents)
    flat = np.concatenate([slices[k][0] for k in latents]) if latents else np.zeros(0, np.int64)
    ids = tokens_at(tokens, flat)
    out, at = {}, 0
    for latent in latents:
        positions, values = slices[latent]
        out[latent] = (ids[at : at + len(positions)], values)
        at += len(positions)
    return attrs["latent_end"] - attrs["latent_start"], out


def read_partners(specs: list[dict], latents: list[int]) -> dict[int, list[Partner]]:
    """Matches where one of `latents` is on this unit's side, sorted by cosine, per latent."""
    wanted = set(latents)
    out: dict[int, list[Partner]] = {}
    for spec in specs:
        mine, theirs = ("latent_a", "latent_b") if spec["side"] == "a" else ("latent_b", "latent_a")
        matches = read_parquet(spec["matches"])
        matches = matches[matches[mine].isin(wanted)]
        for row in matches.itertuples(index=False):
            row = row._asdict()
            out.setdefault(int(row[mine]), []).append(
                Partner(int(row[mine]), int(row[theirs]), spec["other_unit"], spec["other_hookpoint"],
                        float(row["cosine"]))
            )  # fmt: skip
    return {k: sorted(v, key=lambda p: -p.cosine) for k, v in out.items()}


def read_scorer(spec: dict) -> Scorer:
    """A scorer's metrics and predictions for the shard (predictions may be missing: none were written)."""
    metrics = rows_by_latent(read_parquet(spec["metrics"]))
    path = spec.get("predictions")
    predictions = by_latent(read_parquet(path)) if path and Path(path).exists() else {}
    return Scorer(spec["explainer"], spec["scorer"], spec["kind"], metrics, predictions)


def load_shard(files: dict) -> ShardData:
    """Read every input of one shard (see the module docstring for what is read how)."""
    selected = read_parquet(files["selected"])
    latents = [int(x) for x in selected["latent"]]
    shard_size, activations = read_activations(files["store"], files["tokens"], latents)
    explainers = [
        Explainer(e["name"], e["kind"], e["subject"], rows_by_latent(read_parquet(e["explanations"])))
        for e in files.get("explainers", [])
    ]
    return ShardData(
        unit=dict(files["unit"]),
        selected=selected.reset_index(drop=True),
        stats=rows_by_latent(read_parquet(files["stats"])),
        examples=by_latent(read_parquet(files["examples"])),
        explainers=explainers,
        scorers=[read_scorer(s) for s in files.get("scores", [])],
        partners=read_partners(files.get("partners", []), latents),
        activations=activations,
        vocab=read_vocab(files["vocab"]),
        shard_size=shard_size,
    )


def activation_histogram(values: np.ndarray, n_bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(edges [n_bins + 1], counts [n_bins]) of equal-width bins from min(0, lowest) to the highest value."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    lo, hi = min(0.0, float(values.min())), float(values.max())
    if hi <= lo:  # a single repeated value: one visible bin
        hi = lo + 1.0
    counts, edges = np.histogram(values, bins=n_bins, range=(lo, hi))
    return edges, counts


def top_tokens(token_ids: np.ndarray, values: np.ndarray, vocab: np.ndarray, k: int = 10) -> list[dict]:
    """The k most frequent tokens at a latent's nonzero positions (ties: lower id), with mean activation."""
    if len(token_ids) == 0:
        return []
    ids, inverse, counts = np.unique(token_ids, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=values.astype(np.float64), minlength=len(ids))
    order = np.lexsort((ids, -counts))[:k]  # last key sorts first: count desc, then id asc
    return [
        {
            "token_id": int(ids[i]),
            "text": str(vocab[ids[i]]) if ids[i] < len(vocab) else f"<{int(ids[i])}>",
            "count": int(counts[i]),
            "mean": float(sums[i] / counts[i]),
        }
        for i in order
    ]
