"""Example sampler: per latent, train and test windows stratified by activation quantile, never shared.

Besides the paper's random non-activating test windows, it can draw "hard" ones that resemble a latent's
activating windows while the latent stays at zero in them (`hard_negatives`): windows where the latents
that co-occur most with it fire, or windows holding the tokens it fires on most.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from interpflow.latents import LatentShard, read_shard
from interpflow.store import atomic_path, open_h5, read_parquet, write_parquet

if TYPE_CHECKING:
    from scipy import sparse

log = logging.getLogger(__name__)

EXAMPLE_COLUMNS = [
    "latent", "example_id", "split", "activating", "seq", "start",
    "tokens", "token_strs", "acts", "max_act", "quantile", "negative",
]  # fmt: skip
HARD_METHODS = ("none", "cooccurrence", "lexical")
NEGATIVES = ("random", "hard", "both")
LATENT_COLUMNS = ["latent", "n_activations", "n_activating_windows", "status", "reason"]
# Paulo et al. set aside latents with fewer than 200 activations over their 10M tokens (rare or dead ones)
MIN_ACTIVATIONS = 200


class Vocab(NamedTuple):
    """A model's vocabulary as the sampler reads it from vocab.parquet, indexed by token id."""

    text: np.ndarray
    """object [n_vocab]; each token's own decoded text."""
    raw: np.ndarray
    """object [n_vocab]; the bytes each token adds to a decoded span."""
    whole: np.ndarray
    """bool [n_vocab]; the token is whole characters (its text is exact); else part of a multi-byte one."""

    @classmethod
    def from_texts(cls, text: np.ndarray) -> Vocab:
        """A vocabulary in which every token is whole characters."""
        text = np.asarray(text, dtype=object)
        raw = np.empty(text.size, dtype=object)
        raw[:] = [str(t).encode() for t in text]
        return cls(text, raw, np.ones(text.size, bool))


def _examples_schema() -> Any:
    """Arrow schema of the examples table (fixed, so empty shards keep their list types)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("latent", pa.int64()),
            ("example_id", pa.int64()),
            ("split", pa.string()),
            ("activating", pa.bool_()),
            ("seq", pa.int64()),
            ("start", pa.int64()),
            ("tokens", pa.list_(pa.int32())),
            ("token_strs", pa.list_(pa.string())),
            ("acts", pa.list_(pa.float32())),
            ("max_act", pa.float32()),
            ("quantile", pa.int64()),
            ("negative", pa.string()),
        ]
    )


def select_latents(latent_start: int, latent_end: int, cfg: dict) -> list[int]:
    """Seeded random sample of cfg['latents']['n'] latents in [latent_start, latent_end), sorted."""
    sel = cfg.get("latents") or {}
    n, seed = sel.get("n"), sel.get("seed", cfg.get("seed", 0))
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


def _settings(cfg: dict, ctx_len: int) -> dict[str, int]:
    """Read and check the sampler settings, with the paper's defaults."""
    s = {
        "example_ctx_len": cfg.get("example_ctx_len", 32),
        "n_train": cfg.get("n_train", 40),
        "n_test": cfg.get("n_test", 100),
        "n_nonactivating": cfg.get("n_nonactivating", 100),
        "n_train_nonactivating": cfg.get("n_train_nonactivating", 0),
        "n_quantiles": cfg.get("n_quantiles", 10),
        "seed": cfg.get("seed", 0),
    }
    if "min_activating" in cfg:
        raise ValueError(
            "sampler setting min_activating (activating windows) was replaced by min_activations: the "
            "number of activations (tokens where the latent is nonzero) a latent needs to be sampled"
        )
    s["min_activations"] = cfg.get("min_activations", MIN_ACTIVATIONS)
    for key, value in s.items():
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"sampler setting {key} must be a non-negative integer, got {value!r}")
    if s["example_ctx_len"] < 1 or ctx_len % s["example_ctx_len"]:
        raise ValueError(f"example_ctx_len ({s['example_ctx_len']}) must divide the context length {ctx_len}")
    if s["n_quantiles"] < 1:
        raise ValueError("n_quantiles must be at least 1")
    return s


def _hard_settings(cfg: dict, n_nonactivating: int) -> tuple[str, int, int]:
    """Read and check cfg['hard_negatives']: (method, n windows per latent, top_k latents or tokens)."""
    hard = cfg.get("hard_negatives") or {}
    method = hard.get("method", "none")
    if method not in HARD_METHODS:
        raise ValueError(f"hard_negatives.method must be one of {HARD_METHODS}, got {method!r}")
    n, top_k = hard.get("n"), hard.get("top_k", 5)
    n = n_nonactivating if n is None else n
    for key, value, low in (("n", n, 0), ("top_k", top_k, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"hard_negatives.{key} must be an integer >= {low}, got {value!r}")
    return method, (0 if method == "none" else n), top_k


def _stratified(bins: np.ndarray, n: int, n_bins: int, rng: np.random.Generator) -> np.ndarray:
    """Pick min(n, len(bins)) indices, about n / n_bins per bin; short bins are filled from the others."""
    n = min(n, bins.size)
    quota = np.full(n_bins, n // n_bins)
    quota[rng.permutation(n_bins)[: n % n_bins]] += 1  # spread the remainder over random bins
    prio = rng.permutation(bins.size)  # random rank of every candidate
    order = np.lexsort((prio, bins))  # by bin, then by random rank
    rank_in_bin = np.arange(bins.size) - np.searchsorted(bins[order], bins[order])
    take = rank_in_bin < quota[bins[order]]
    chosen, rest = order[take], order[~take]
    fill = rest[np.argsort(prio[rest])[: n - chosen.size]]
    return np.concatenate([chosen, fill])


def _inactive_windows(active: np.ndarray, n_windows: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw n distinct window ids uniformly among those not in the sorted array `active`."""
    n_inactive = n_windows - active.size
    r = np.sort(rng.choice(n_inactive, size=min(n, n_inactive), replace=False))
    # the r-th inactive window skips every active id a[i] with a[i] - i <= r inactive windows before it
    return r + np.searchsorted(active - np.arange(active.size), r, side="right")


def _hardest(score: np.ndarray, used: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """The n windows of highest positive score that are not in `used` (ties broken at random), sorted."""
    cand = np.setdiff1d(np.flatnonzero(score > 0), used)
    order = np.lexsort((rng.random(cand.size), -score[cand]))
    return np.sort(cand[order[:n]])


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
    """Choose one latent's windows: returns (window ids, their split/activating/quantile/negative columns)."""
    # flat window id; ctx_len % L == 0 keeps every window inside one sequence
    wid = pos.astype(np.int64) // s["example_ctx_len"]
    first = _run_starts(wid)  # positions ascend within a latent, so window ids come in sorted runs
    active = wid[first]  # [n_act], sorted
    max_act = np.maximum.reduceat(vals.astype(np.float32), first)
    rank = np.empty(active.size, np.int64)
    rank[np.argsort(max_act, kind="stable")] = np.arange(active.size)
    bins = rank * s["n_quantiles"] // active.size  # equal-count bins, 0 = weakest
    train = _stratified(bins, s["n_train"], s["n_quantiles"], rng)
    left = np.setdiff1d(np.arange(active.size), train)  # test never reuses a train window
    test = left[_stratified(bins[left], s["n_test"], s["n_quantiles"], rng)]
    train, test = np.sort(train), np.sort(test)
    inactive = _inactive_windows(active, n_windows, s["n_nonactivating"], rng)
    # the draws below are skipped when off, so default settings give the same windows as before
    used = np.union1d(active, inactive)
    train_inactive = np.empty(0, np.int64)
    if s["n_train_nonactivating"]:
        train_inactive = _inactive_windows(used, n_windows, s["n_train_nonactivating"], rng)
        used = np.union1d(used, train_inactive)
    hard = np.empty(0, np.int64)
    if hard_score is not None and n_hard:
        hard = _hardest(hard_score, used, n_hard, rng)
    parts = [active[train], active[test], inactive, train_inactive, hard]
    group = np.repeat(np.arange(len(parts)), [p.size for p in parts])
    cols = {
        "split": np.where((group == 0) | (group == 3), "train", "test"),
        "activating": group < 2,
        "quantile": np.concatenate(
            [bins[train], bins[test], np.full(group.size - train.size - test.size, -1)]
        ),
        "negative": np.array(["", "", "random", "random", "hard"], dtype=object)[group],
    }
    return np.concatenate(parts), cols


def cooccurrence_scores(
    incidence: sparse.csc_matrix, latent: int, active: np.ndarray, top_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hard-negative score of every window for `latent` by co-occurrence, and the latents it used.

    Latents are ranked by the Jaccard index of their window set B with this latent's window set A,
    |A & B| / |A | B| (raw counts would favour latents that fire everywhere); a window's score is the summed
    Jaccard index of the top_k latents that fire in it.
    """
    x = np.zeros(incidence.shape[0], np.float32)
    x[active] = 1.0
    inter = np.asarray(incidence.T @ x, dtype=np.float64)  # [n_latents]: windows shared with A
    union = active.size + np.diff(incidence.indptr) - inter
    jac = inter / np.maximum(union, 1)
    jac[latent] = 0.0
    top = np.argsort(-jac, kind="stable")[:top_k]
    top = top[jac[top] > 0]
    return np.asarray(incidence[:, top] @ jac[top], dtype=np.float64), top  # [n_windows]


def lexical_scores(
    tokens_w: np.ndarray, pos: np.ndarray, vals: np.ndarray, top_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hard-negative score of every window (tokens_w [n_windows, L]) by shared tokens, and the token ids used.

    The top_k token ids carrying most of the latent's activation mass (the sum of its activations on each
    id); a window's score is the summed mass share of those ids that occur in it.
    """
    ids = tokens_w.ravel()[pos]  # token id at each nonzero (flat token index = window * L + offset)
    mass = np.bincount(ids, weights=vals.astype(np.float64))
    top = np.argsort(-mass, kind="stable")[:top_k]
    top = top[mass[top] > 0]
    score = np.zeros(tokens_w.shape[0])
    for t, share in zip(top, mass[top] / mass.sum(), strict=True):
        score += share * (tokens_w == t).any(axis=1)
    return score, top


def _hard_scores(
    method: str,
    latent: int,
    pos: np.ndarray,
    vals: np.ndarray,
    tokens_w: np.ndarray,
    incidence: sparse.csc_matrix | None,
    top_k: int,
) -> np.ndarray | None:
    """Every window's hard-negative score for `latent` under `method` (None when hard negatives are off)."""
    if method == "none":
        return None
    if method == "lexical":
        score, used = lexical_scores(tokens_w, pos, vals, top_k)
    else:
        active = np.unique(pos.astype(np.int64) // tokens_w.shape[1])
        score, used = cooccurrence_scores(incidence, latent, active, top_k)
    log.debug("latent %d: %s hard negatives from %s", latent, method, used.tolist())
    return score


def window_incidence(shard_paths: Sequence[str | os.PathLike], example_ctx_len: int) -> sparse.csc_matrix:
    """Which latents fire in which window: bool CSC [n_windows, n_latents] from shards in latent order."""
    from scipy import sparse

    indptr, indices, end, dims = [np.zeros(1, np.int64)], [], 0, None
    for path in shard_paths:
        shard = read_shard(path)
        if shard.latent_start != end:
            raise ValueError(f"latent shard {path} starts at latent {shard.latent_start}, expected {end}")
        if dims not in (None, (shard.n_seq, shard.ctx_len)):
            raise ValueError(
                f"latent shard {path} has (n_seq, ctx_len) {shard.n_seq, shard.ctx_len}, not {dims}"
            )
        dims, end = (shard.n_seq, shard.ctx_len), shard.latent_end
        # positions ascend within a latent, so its window ids do too: keep the first of each run
        wid = (shard.positions // example_ctx_len).astype(np.int32)
        new = np.ones(wid.size, bool)
        new[1:] = wid[1:] != wid[:-1]
        new[shard.offsets[:-1][np.diff(shard.offsets) > 0]] = True  # a latent's first entry
        kept = np.concatenate([[0], np.cumsum(new)])[shard.offsets]  # [n_latents + 1]
        indptr.append(indptr[-1][-1] + kept[1:])
        indices.append(wid[new])
    if dims is None:
        raise ValueError("window_incidence needs at least one latent shard")
    if dims[1] % example_ctx_len:
        raise ValueError(f"example_ctx_len ({example_ctx_len}) must divide the context length {dims[1]}")
    idx = np.concatenate(indices)
    shape = (dims[0] * (dims[1] // example_ctx_len), end)
    return sparse.csc_matrix((np.ones(idx.size, bool), idx, np.concatenate(indptr)), shape=shape)


def span_strings(pieces: Sequence[bytes]) -> list[str]:
    """Per-token text of a token span decoded as one UTF-8 string: joined, they are exactly that string.

    A character split over tokens (byte-level BPE, SentencePiece byte fallback) goes whole to the token that
    completes it and the others get ""; only bytes the span itself cannot decode become U+FFFD (a character
    cut by the window's edge).
    """
    data = b"".join(pieces)
    lens = np.fromiter(map(len, pieces), np.int64, len(pieces))
    starts = np.cumsum(lens) - lens  # [n] byte offset of each token
    buf = np.frombuffer(data + b"\0", np.uint8)  # the end counts as a character start
    lead = np.flatnonzero((buf & 0xC0) != 0x80)  # bytes that begin a character (not 10xxxxxx)
    i = np.searchsorted(lead, starts, side="right") - 1
    back = lead[np.maximum(i, 0)]
    # a token boundary inside a character moves back to its first byte (UTF-8 characters have <= 4); a
    # decoder restarts at every such byte, so decoding the pieces apart equals decoding the span
    cut = np.append(np.where((i >= 0) & (starts - back < 4), back, starts), len(data))
    return [data[a:b].decode("utf-8", "replace") for a, b in zip(cut[:-1], cut[1:], strict=True)]


def window_strings(toks: np.ndarray, vocab: Vocab) -> np.ndarray:
    """Token strings [m, L] of windows toks [m, L], each window decoded as one span (span_strings).

    Windows of whole-character tokens (nearly all) are a lookup; only the others are decoded.
    """
    strs = vocab.text[toks]  # [m, L]
    for w in np.flatnonzero(~vocab.whole[toks].all(axis=1)):
        strs[w] = span_strings(vocab.raw[toks[w]])
    return strs


def _example_rows(
    latent: int,
    windows: np.ndarray,
    pos: np.ndarray,
    vals: np.ndarray,
    tokens: np.ndarray,
    vocab: Vocab,
    L: int,
) -> dict[str, Any]:
    """Columns of the example rows for the given window ids (tokens, their text, the latent's acts)."""
    per_seq = tokens.shape[1] // L
    seq, start = windows // per_seq, (windows % per_seq) * L
    toks = tokens[seq[:, None], start[:, None] + np.arange(L)]  # [m, L]
    acts = np.zeros((windows.size, L), np.float32)  # [m, L]
    wid = pos.astype(np.int64) // L
    order = np.argsort(windows)
    hit = np.isin(wid, windows)
    acts[order[np.searchsorted(windows[order], wid[hit])], pos[hit] % L] = vals[hit]
    strs = window_strings(toks, vocab)
    return {
        "latent": np.full(windows.size, latent, np.int64),
        "example_id": np.arange(windows.size, dtype=np.int64),
        "seq": seq.astype(np.int64),
        "start": start.astype(np.int64),
        "tokens": list(toks.astype(np.int32)),
        "token_strs": list(strs),
        "acts": list(acts),
        "max_act": acts.max(axis=1),
    }


def _concat(pieces: list) -> np.ndarray | list:
    """Join one column's per-latent pieces (arrays, or lists of per-row arrays)."""
    if isinstance(pieces[0], list):
        return [row for piece in pieces for row in piece]
    return np.concatenate(pieces)


def sample_examples(
    tokens: np.ndarray,
    vocab: Vocab | np.ndarray,
    shard: LatentShard,
    cfg: dict,
    latents: Sequence[int] | None = None,
    *,
    incidence: sparse.csc_matrix | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sample train/test example windows per latent (None = the latents cfg['latents'] selects).

    `vocab`: read_vocab's Vocab, or an array of token strings (every token whole characters).
    `incidence` (window_incidence over all shards) is needed by hard_negatives.method cooccurrence.
    Latents with fewer than cfg['min_activations'] activations are `skipped`, with the reason.
    """
    from tqdm.auto import tqdm

    n_seq, ctx_len = tokens.shape
    if (n_seq, ctx_len) != (shard.n_seq, shard.ctx_len):
        raise ValueError(
            f"tokens {tokens.shape} do not match the shard's (n_seq, ctx_len) {shard.n_seq, shard.ctx_len}"
        )
    s = _settings(cfg, ctx_len)
    method, n_hard, top_k = _hard_settings(cfg, s["n_nonactivating"])
    L = s["example_ctx_len"]
    n_windows = n_seq * (ctx_len // L)
    if method == "cooccurrence" and (
        incidence is None or incidence.shape[0] != n_windows or incidence.shape[1] < shard.latent_end
    ):
        raise ValueError(
            f"hard_negatives.method cooccurrence needs the window x latent incidence of all latents "
            f"({n_windows} windows, >= {shard.latent_end} latents); got "
            f"{None if incidence is None else incidence.shape}"
        )
    if latents is None:
        latents = select_latents(shard.latent_start, shard.latent_end, cfg)
    tokens_w = tokens.reshape(n_windows, L)  # [n_windows, L]; window = flat token index // L
    if not isinstance(vocab, Vocab):
        vocab = Vocab.from_texts(vocab)
    parts, status = [], []
    for latent in tqdm(latents, desc="sample", unit="latent"):
        pos, vals = shard.latent(int(latent))  # the shard keeps only nonzeros: pos.size activations
        n_act, n_win = int(pos.size), int(_run_starts(pos // L).size)
        if n_act == 0 or n_act < s["min_activations"]:
            status.append((int(latent), n_act, n_win, "skipped", _skip_reason(n_act, s["min_activations"])))
            continue
        # a generator per (seed, latent): a latent's examples do not depend on which others are sampled
        rng = np.random.default_rng([s["seed"], int(latent)])
        hard_score = _hard_scores(method, int(latent), pos, vals, tokens_w, incidence, top_k)
        windows, cols = _sample_windows(pos, vals, n_windows, s, rng, hard_score, n_hard)
        rows = _example_rows(int(latent), windows, pos, vals, tokens, vocab, L)
        parts.append(rows | cols)
        status.append((int(latent), n_act, n_win, "ok", ""))
    # one frame at the end: a DataFrame per latent cost more than sampling the latent
    examples = (
        pd.DataFrame({c: _concat([p[c] for p in parts]) for c in EXAMPLE_COLUMNS})
        if parts
        else pd.DataFrame(columns=EXAMPLE_COLUMNS)
    )
    table = pd.DataFrame(status, columns=LATENT_COLUMNS)
    table = table.astype({"latent": np.int64, "n_activations": np.int64, "n_activating_windows": np.int64})
    _warn_if_short(table, s)
    n_skipped = int((table.status != "ok").sum())
    n_hard_rows = int((examples["negative"] == "hard").sum())
    log.info(
        "sampled %d latents (%d skipped), %d examples (%d hard negatives, method %s)",
        len(table),
        n_skipped,
        len(examples),
        n_hard_rows,
        method,
    )
    return examples.astype({"quantile": np.int64, "max_act": np.float32}), table


def select_test_examples(
    examples: pd.DataFrame, latent: int, cfg: dict, rng: np.random.Generator | None = None
) -> pd.DataFrame:
    """A latent's scored test windows: its activating ones plus the negatives cfg['negatives'] names, capped.

    cfg (a scorer's): `negatives` "random" (default, the paper's), "hard" or "both"; `max_activating` and
    `max_nonactivating` cap each class (all chosen negatives together) by a seeded draw from `rng`, by
    default np.random.default_rng([cfg['seed'], latent]). Activating rows come first, then negatives, each
    in example_id order; callers shuffle. Without a `negative` column every negative counts as random.
    """
    which = cfg.get("negatives", "random")
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
        rng = np.random.default_rng([int(cfg.get("seed", 0)), int(latent)])
    parts = []
    for sub, key in ((ex[on], "max_activating"), (ex[~on & np.isin(kind, wanted)], "max_nonactivating")):
        cap = cfg.get(key)
        if cap is not None and int(cap) < 0:
            raise ValueError(f"scorer option {key} must be >= 0, got {cap}")
        if cap is not None and len(sub) > int(cap):
            sub = sub.iloc[np.sort(rng.choice(len(sub), size=int(cap), replace=False))]
        parts.append(sub)
    return pd.concat(parts)


def _warn_if_short(table: pd.DataFrame, s: dict[str, int]) -> None:
    """Say so when no sampled latent has the activating windows n_train + n_test ask for (issue 15): every
    latent then gets fewer explanation and test examples than the config says."""
    windows = table.loc[table["status"] == "ok", "n_activating_windows"]
    want = s["n_train"] + s["n_test"]
    if len(windows) and windows.max() < want:
        log.warning(
            "n_train + n_test = %d activating windows, but the most any of these %d latents has is %d: each "
            "gets fewer examples than configured (lower n_train / n_test, or use a larger corpus)",
            want, len(windows), int(windows.max()),
        )  # fmt: skip


def _skip_reason(n_act: int, need: int) -> str:
    """Why a latent with n_act activations is set aside."""
    if n_act == 0:
        return "never fires"
    return f"only {n_act} activations; need {need} (min_activations)"


def read_vocab(path: str | os.PathLike) -> Vocab:
    """The vocabulary table as a Vocab indexed by token id (ids absent from the table map to '')."""
    vocab = read_parquet(path)
    if not {"token_id", "text"} <= set(vocab.columns):
        raise ValueError(f"vocabulary table {path} needs columns token_id, text")
    text = np.full(int(vocab.token_id.max()) + 1 if len(vocab) else 0, "", dtype=object)
    text[vocab.token_id.to_numpy()] = vocab.text.to_numpy()
    out = Vocab.from_texts(text)
    if "bytes" not in vocab.columns:  # written before the column existed
        log.warning("%s has no `bytes` column: tokens holding part of a character show U+FFFD", path)
        return out
    raw = vocab["bytes"].to_numpy()
    if not all(isinstance(b, bytes) for b in raw):
        raise ValueError(f"vocabulary table {path}: column `bytes` must hold bytes")
    out.raw[vocab.token_id.to_numpy()] = raw
    whole = np.array([_decodes_to(b, t) for b, t in zip(out.raw, text, strict=True)], dtype=bool)
    return Vocab(text, out.raw, whole)


def _decodes_to(raw: bytes, text: str) -> bool:
    """Whether `raw` is valid UTF-8 that decodes to exactly `text`."""
    try:
        return raw.decode("utf-8") == text
    except UnicodeDecodeError:
        return False


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


def run_sampling(
    tokens_path: str | os.PathLike,
    shard_path: str | os.PathLike,
    vocab_path: str | os.PathLike,
    cfg: dict,
    examples_out: str | os.PathLike,
    latents_out: str | os.PathLike,
    latents_dir: str | os.PathLike | None = None,
    partners: tuple[str | os.PathLike, int, int] | None = None,
) -> None:
    """Step: sample one shard's examples and write the examples and latents tables.

    `latents_dir` (the folder of every shard) is read only by hard_negatives.method cooccurrence.
    `partners` (matches file, width and shard size of the layer below) adds the partners of the latents
    sampled there.
    """
    import time

    with open_h5(tokens_path) as f:
        if "tokens" not in f:
            raise ValueError(f"{tokens_path} lacks dataset `tokens`")
        tokens = f["tokens"][:]
    vocab = read_vocab(vocab_path)
    if tokens.size and tokens.max() >= vocab.text.size:
        raise ValueError(f"token id {tokens.max()} in {tokens_path} is missing from vocabulary {vocab_path}")
    shard = read_shard(shard_path)
    incidence = None
    if (cfg.get("hard_negatives") or {}).get("method") == "cooccurrence":
        if latents_dir is None:
            raise ValueError("hard_negatives.method cooccurrence needs latents_dir, the folder of all shards")
        t0 = time.perf_counter()
        incidence = window_incidence(
            shard_files(latents_dir), _settings(cfg, tokens.shape[1])["example_ctx_len"]
        )
        log.info(
            "window x latent incidence: %d x %d, %d nonzeros, %.1f s",
            *incidence.shape,
            incidence.nnz,
            time.perf_counter() - t0,
        )
    chosen = None
    if partners is not None:
        matches_path, width_below, shard_size = partners
        extra = partner_latents(read_parquet(matches_path), width_below, shard_size, cfg)
        own = select_latents(shard.latent_start, shard.latent_end, cfg)
        in_range = extra[(extra >= shard.latent_start) & (extra < shard.latent_end)]
        chosen = sorted(set(own) | {int(i) for i in in_range})
        log.info("%d sampled latents + %d cross-layer partners", len(own), len(chosen) - len(own))
    examples, latents = sample_examples(tokens, vocab, shard, cfg, chosen, incidence=incidence)
    with atomic_path(examples_out) as tmp:
        examples.to_parquet(tmp, index=False, schema=_examples_schema())
    write_parquet(latents, latents_out)
