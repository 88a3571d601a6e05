"""Cross-layer alignment: match the latents of two dictionaries (e.g. SAEs on adjacent layers) one to one, and
ask whether matched latents also get similar explanations.

Paulo et al. 2024 (section 5) align SAEs on adjacent residual layers with the Hungarian algorithm on decoder
directions and find them highly similar; here the similarity is measured (decoder cosine, activation
correlation, similarity of the embedded explanations) and set against random pairs of the same latents.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interpflow.store import read_parquet, write_parquet

__all__ = [
    "MAX_PAIRS",
    "activation_correlation",
    "cross_layer",
    "explanation_similarity",
    "match_latents",
    "paired_correlation",
    "plot_similarity_by_distance",
    "sae_decoder",
]

log = logging.getLogger(__name__)

MAX_PAIRS = 1 << 26
"""Default cap on n_a * n_b. A matching holds the float32 cosine matrix (4 bytes a pair, 8 with a correlation
mix) and scipy's linear_sum_assignment takes float64 copies of it (about 16 bytes a pair): 2**26 pairs
(8192 x 8192) peak at about 1.3 GiB. The correlation matrix costs 4 bytes a pair plus one chunk."""

MATCH_COLUMNS = {
    "latent_a": "int64",
    "latent_b": "int64",
    "cosine": "float64",
    "correlation": "float64",
    "score": "float64",
    "similarity": "float64",
    "layer_a": "int64",
    "layer_b": "int64",
    "distance": "int64",
}
SIMILARITY_COLUMNS = {
    "pair": "object",
    "latent_a": "int64",
    "latent_b": "int64",
    "explanation_a": "object",
    "explanation_b": "object",
    "similarity": "float64",
}
_CHUNK_CELLS = 1 << 24  # cells of one dense block of the correlation product (128 MiB in float64)


def _check_pairs(n_a: int, n_b: int, max_pairs: int, what: str) -> None:
    """Refuse an n_a x n_b matrix above `max_pairs` cells, suggesting a subset."""
    if n_a * n_b > max_pairs:
        raise ValueError(
            f"{what} needs a {n_a} x {n_b} matrix ({n_a * n_b:,} pairs, about "
            f"{n_a * n_b * 20 / 2**30:.1f} GiB at peak), above max_pairs={max_pairs:,}: match a subset of "
            f"latents (latents_a / latents_b, e.g. the explained ones) or raise max_pairs"
        )


def _unit_rows(x: Any, name: str) -> np.ndarray:
    """Rows of a 2-D array scaled to unit norm, float32 (all-zero rows stay zero)."""
    if hasattr(x, "detach"):  # a torch tensor, e.g. SparseDictionary.decoder_directions()
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"{name} must be a non-empty 2-D array [latents, d], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _ids(latents: Any, n: int, name: str) -> np.ndarray:
    """Latent ids labelling n rows: `latents` if given (checked), else 0..n-1."""
    if latents is None:
        return np.arange(n, dtype=np.int64)
    ids = np.asarray(latents, dtype=np.int64).ravel()
    if len(ids) != n:
        raise ValueError(f"{name} has {len(ids)} ids for {n} rows")
    return ids


def match_latents(
    dec_a: np.ndarray,
    dec_b: np.ndarray,
    *,
    corr: np.ndarray | None = None,
    corr_weight: float = 0.0,
    latents_a: np.ndarray | None = None,
    latents_b: np.ndarray | None = None,
    max_pairs: int = MAX_PAIRS,
) -> pd.DataFrame:
    """One-to-one matching maximising decoder cosine (optionally mixed with activation correlation).

    dec_a [n_a, d], dec_b [n_b, d]: decoder directions (normalised here); corr [n_a, n_b]: Pearson
    correlations, NaN counted as 0 in the score; score = (1 - corr_weight) * cosine + corr_weight * corr.
    Returns min(n_a, n_b) rows sorted by latent_a: latent_a, latent_b, cosine, and with corr also
    correlation and score. Rows are labelled by latents_a / latents_b (default: row numbers).
    """
    from scipy.optimize import linear_sum_assignment

    a, b = _unit_rows(dec_a, "dec_a"), _unit_rows(dec_b, "dec_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"decoder directions differ in dimension: dec_a {a.shape}, dec_b {b.shape}")
    ids_a, ids_b = _ids(latents_a, len(a), "latents_a"), _ids(latents_b, len(b), "latents_b")
    _check_pairs(len(a), len(b), max_pairs, "matching")
    if not 0.0 <= corr_weight <= 1.0:
        raise ValueError(f"corr_weight must be in [0, 1], got {corr_weight}")
    if corr is None and corr_weight > 0:
        raise ValueError("corr_weight > 0 needs the activation correlations (corr)")
    cos = a @ b.T  # [n_a, n_b]
    score = cos
    if corr is not None:
        corr = np.asarray(corr, dtype=np.float32)
        if corr.shape != cos.shape:
            raise ValueError(f"corr has shape {corr.shape}, the decoders make {cos.shape}")
        score = (1 - corr_weight) * cos + corr_weight * np.nan_to_num(corr, nan=0.0)  # [n_a, n_b]
    rows, cols = linear_sum_assignment(score, maximize=True)  # rows ascend
    out = pd.DataFrame(
        {"latent_a": ids_a[rows], "latent_b": ids_b[cols], "cosine": cos[rows, cols].astype(np.float64)}
    )
    if corr is not None:
        out["correlation"] = corr[rows, cols].astype(np.float64)
        out["score"] = score[rows, cols].astype(np.float64)
    return out.sort_values("latent_a", kind="stable", ignore_index=True)


def _shard_attrs(path: str | os.PathLike) -> dict[str, int]:
    """A latent shard's range and corpus attrs, without reading its arrays."""
    import h5py

    if not Path(path).is_file():
        raise FileNotFoundError(f"missing latent shard: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:  # h5py's message does not name the file
        raise ValueError(f"cannot read latent shard {path}: {exc}") from exc
    with f:
        keys = ("latent_start", "latent_end", "n_seq", "ctx_len", "n_tokens")
        missing = [k for k in keys if k not in f.attrs]
        if missing:
            raise ValueError(f"latent shard {path} lacks attrs {', '.join(missing)}")
        return {k: int(f.attrs[k]) for k in keys}


def _latent_rows(shard_paths: Sequence[str | os.PathLike], latents: Any) -> tuple[Any, dict[str, int]]:
    """CSR [len(latents), n_seq * ctx_len] (float64) of the latents' activations, and the corpus attrs."""
    from scipy import sparse

    from interpflow.latents import read_shard

    latents = np.asarray(latents, dtype=np.int64).ravel()
    parts: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(latents)
    corpus: dict[str, int] | None = None
    for path in shard_paths:
        attrs = _shard_attrs(path)
        here = {k: attrs[k] for k in ("n_seq", "ctx_len", "n_tokens")}
        if corpus is not None and here != corpus:
            raise ValueError(f"latent shard {path} has corpus attrs {here}, the other shards {corpus}")
        corpus = here
        inside = np.flatnonzero((latents >= attrs["latent_start"]) & (latents < attrs["latent_end"]))
        if inside.size:
            shard = read_shard(path)  # one read per shard, not per latent
            for i in inside:
                parts[i] = shard.latent(int(latents[i]))
    if corpus is None:
        raise ValueError("no latent shards given")
    if missing := [int(latents[i]) for i, p in enumerate(parts) if p is None]:
        raise ValueError(f"latents {missing[:10]} are in none of the {len(shard_paths)} shards given")
    counts = np.array([len(p[0]) for p in parts], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    indices = np.concatenate([p[0] for p in parts]).astype(np.int64) if len(parts) else np.zeros(0, np.int64)
    data = np.concatenate([p[1] for p in parts]).astype(np.float64) if len(parts) else np.zeros(0)
    shape = (len(latents), corpus["n_seq"] * corpus["ctx_len"])
    return sparse.csr_array((data, indices, indptr), shape=shape), corpus


def _moments(x: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean and standard deviation over n tokens of a sparse matrix (absent entries are zeros)."""
    mean = np.asarray(x.sum(axis=1)).ravel() / n
    var = np.asarray(x.multiply(x).sum(axis=1)).ravel() / n - mean**2
    return mean, np.sqrt(np.maximum(var, 0.0))


def _load_pair(shards_a, shards_b, latents_a, latents_b, n_tokens: int | None) -> tuple[Any, Any, int]:
    """Both sides' sparse activation rows, checked to index the same tokens, and the token count."""
    xa, ca = _latent_rows(shards_a, latents_a)
    xb, cb = _latent_rows(shards_b, latents_b)
    if ca != cb:
        raise ValueError(f"the two dictionaries' shards come from different corpora: {ca} vs {cb}")
    n = ca["n_tokens"] if n_tokens is None else int(n_tokens)
    if n < 2:
        raise ValueError(f"n_tokens must be >= 2 for a correlation, got {n}")
    return xa, xb, n


def activation_correlation(
    shard_paths_a: Sequence[str | os.PathLike],
    shard_paths_b: Sequence[str | os.PathLike],
    latents_a: Any,
    latents_b: Any,
    n_tokens: int | None = None,
    *,
    max_pairs: int = MAX_PAIRS,
) -> np.ndarray:
    """Pearson correlation [len(latents_a), len(latents_b)] (float32) of latent activations over tokens.

    Read from the sparse shards of two dictionaries on the same corpus; tokens a latent does not store count
    as 0, and n_tokens (default: the shards' non-BOS token count) is the number of observations. NaN where a
    latent never fires. The product is computed in row blocks, never as a dense token x latent matrix.
    """
    from tqdm.auto import tqdm

    n_a, n_b = len(np.ravel(latents_a)), len(np.ravel(latents_b))
    _check_pairs(n_a, n_b, max_pairs, "activation correlation")
    xa, xb, n = _load_pair(shard_paths_a, shard_paths_b, latents_a, latents_b, n_tokens)
    mean_a, std_a = _moments(xa, n)
    mean_b, std_b = _moments(xb, n)
    xb_t = xb.T.tocsc()  # [n_pos, n_b]
    out = np.empty((n_a, n_b), dtype=np.float32)
    step = max(1, _CHUNK_CELLS // max(n_b, 1))
    for lo in tqdm(range(0, n_a, step), desc="correlation", unit="block", disable=n_a <= step):
        hi = min(lo + step, n_a)
        sxy = (xa[lo:hi] @ xb_t).toarray()  # [block, n_b]
        cov = sxy / n - np.outer(mean_a[lo:hi], mean_b)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = cov / np.outer(std_a[lo:hi], std_b)
        out[lo:hi] = np.where(np.isfinite(r), np.clip(r, -1, 1), np.nan)
    return out


def paired_correlation(
    shard_paths_a: Sequence[str | os.PathLike],
    shard_paths_b: Sequence[str | os.PathLike],
    latents_a: Any,
    latents_b: Any,
    n_tokens: int | None = None,
) -> np.ndarray:
    """Pearson correlation [n] of latents_a[i] with latents_b[i] only (the matched pairs), as above."""
    if len(np.ravel(latents_a)) != len(np.ravel(latents_b)):
        raise ValueError("paired_correlation needs as many latents_a as latents_b")
    xa, xb, n = _load_pair(shard_paths_a, shard_paths_b, latents_a, latents_b, n_tokens)
    mean_a, std_a = _moments(xa, n)
    mean_b, std_b = _moments(xb, n)
    sxy = np.asarray(xa.multiply(xb).sum(axis=1)).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (sxy / n - mean_a * mean_b) / (std_a * std_b)
    return np.where(np.isfinite(r), np.clip(r, -1, 1), np.nan)


def _ok_explanations(expl: pd.DataFrame, name: str) -> pd.Series:
    """latent -> explanation text, for the rows with status ok and a non-empty explanation."""
    missing = {"latent", "explanation", "status"} - set(expl.columns)
    if missing:
        raise ValueError(f"{name} lacks columns {sorted(missing)}")
    ok = expl[(expl["status"] == "ok") & expl["explanation"].notna()]
    ok = ok[(ok["explanation"].astype(str).str.strip() != "") & ~ok["latent"].duplicated()]
    return pd.Series(ok["explanation"].astype(str).to_numpy(), index=ok["latent"].to_numpy(dtype=np.int64))


def _random_pairs(
    ok_a: np.ndarray, ok_b: np.ndarray, matched: set[tuple[int, int]], n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n random (a, b) pairs of explained latents, drawn with replacement, none of them a matched pair."""
    got_a, got_b = np.zeros(0, np.int64), np.zeros(0, np.int64)
    for _ in range(100):  # rejection: ends early only when nearly every candidate pair is matched
        if len(got_a) >= n or not len(ok_a) or not len(ok_b):
            break
        a, b = rng.choice(ok_a, n - len(got_a)), rng.choice(ok_b, n - len(got_a))
        keep = np.array([(int(x), int(y)) not in matched for x, y in zip(a, b, strict=True)], dtype=bool)
        got_a, got_b = np.concatenate([got_a, a[keep]]), np.concatenate([got_b, b[keep]])
    if len(got_a) < n:
        log.warning("only %d of %d random explanation pairs could be drawn", len(got_a), n)
    return got_a, got_b


def explanation_similarity(
    pairs: pd.DataFrame,
    expl_a: pd.DataFrame,
    expl_b: pd.DataFrame,
    embed: Callable[[list[str]], np.ndarray],
    *,
    n_random: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Cosine similarity of embedded explanations for matched pairs and for random pairs (the baseline).

    One row per pair (`pair` = "matched" or "random") with latent_a, latent_b, explanation_a, explanation_b,
    similarity. Matched pairs appear only when both latents have an ok explanation; random pairs draw
    n_random (a, b) from the explained latents of each side, with replacement, excluding matched pairs.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError("rng must be a numpy.random.Generator (seeded by the caller)")
    if n_random < 0:
        raise ValueError(f"n_random must be >= 0, got {n_random}")
    text_a, text_b = _ok_explanations(expl_a, "expl_a"), _ok_explanations(expl_b, "expl_b")
    la, lb = pairs["latent_a"].to_numpy(np.int64), pairs["latent_b"].to_numpy(np.int64)
    both = np.isin(la, text_a.index) & np.isin(lb, text_b.index)
    ra, rb = _random_pairs(
        text_a.index.to_numpy(),
        text_b.index.to_numpy(),
        set(zip(la.tolist(), lb.tolist(), strict=True)),
        n_random,
        rng,
    )
    out = pd.DataFrame(
        {
            "pair": ["matched"] * int(both.sum()) + ["random"] * len(ra),
            "latent_a": np.concatenate([la[both], ra]),
            "latent_b": np.concatenate([lb[both], rb]),
        }
    )
    out["explanation_a"] = text_a.reindex(out["latent_a"]).to_numpy(dtype=object)
    out["explanation_b"] = text_b.reindex(out["latent_b"]).to_numpy(dtype=object)
    out["similarity"] = np.nan
    if len(out):
        # each distinct text is embedded once
        both_texts = np.concatenate([out["explanation_a"], out["explanation_b"]]).astype(str)
        texts, idx = np.unique(both_texts, return_inverse=True)
        e = np.asarray(embed(list(texts)), dtype=np.float64)  # [n_texts, dim]
        if e.ndim != 2 or len(e) != len(texts):
            raise ValueError(f"embed returned shape {e.shape} for {len(texts)} texts")
        e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        ia, ib = idx[: len(out)], idx[len(out) :]
        out["similarity"] = np.einsum("nd,nd->n", e[ia], e[ib])
    return out.astype(SIMILARITY_COLUMNS)


def sae_decoder(sae_dir: str | os.PathLike) -> np.ndarray:
    """The decoder W_dec [width, d_in] of an SAE folder (sae.safetensors), without building the module."""
    from safetensors.numpy import load_file

    path = Path(sae_dir) / "sae.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"missing SAE weights: {path}")
    weights = load_file(str(path))
    if "W_dec" not in weights:
        raise ValueError(f"SAE weights {path} lack W_dec")
    return weights["W_dec"]


def _layer(layer: int | str) -> int:
    """A layer index from an int or a hookpoint name such as resid_post.6."""
    if isinstance(layer, str):
        from interpflow.activations import parse_hookpoint

        return parse_hookpoint(layer).layer
    return int(layer)


def _lazy_embedder(name: str) -> Callable[[list[str]], np.ndarray]:
    """An embed function that loads the sentence embedder on first use only."""
    from interpflow.embedding import embed, load_embedder

    model = None

    def run(texts: list[str]) -> np.ndarray:
        nonlocal model
        model = model if model is not None else load_embedder(name, "cpu")
        return embed(model, texts, batch_size=64)

    return run


def _read_explanations(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """All explanation shards of one dictionary as one table."""
    if not paths:
        return pd.DataFrame({"latent": [], "explanation": [], "status": []})
    return pd.concat([read_parquet(p) for p in paths], ignore_index=True)


def _decoders(decoder_a: Any, decoder_b: Any, ids_a: Any, ids_b: Any) -> tuple[np.ndarray, ...]:
    """Unit decoder rows of both dictionaries (restricted to the given latents) and their ids."""
    out = []
    for dec, ids, name in ((decoder_a, ids_a, "a"), (decoder_b, ids_b, "b")):
        dec = _unit_rows(dec() if callable(dec) else dec, f"decoder_{name}")  # [width, d]
        if ids is None:
            out += [dec, np.arange(len(dec), dtype=np.int64)]
            continue
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if len(ids) == 0 or ids.min() < 0 or ids.max() >= len(dec):
            raise ValueError(f"latents_{name} must be non-empty ids in [0, {len(dec)})")
        out += [dec[ids], ids]
    return tuple(out)


def _match(
    dec_a: np.ndarray, dec_b: np.ndarray, ids_a: np.ndarray, ids_b: np.ndarray,
    shards_a: Sequence, shards_b: Sequence, corr_weight: float, max_pairs: int,
) -> pd.DataFrame:  # fmt: skip
    """Matched pairs with cosine, correlation (NaN without shards) and score."""
    corr = None
    if corr_weight > 0:
        if not (shards_a and shards_b):
            raise ValueError("corr_weight > 0 needs the latent shards of both dictionaries (shards_a/b)")
        corr = activation_correlation(shards_a, shards_b, ids_a, ids_b, max_pairs=max_pairs)
    m = match_latents(
        dec_a,
        dec_b,
        corr=corr,
        corr_weight=corr_weight,
        latents_a=ids_a,
        latents_b=ids_b,
        max_pairs=max_pairs,
    )
    if corr is None:  # the matching used no correlation: compute only the matched pairs'
        have = bool(shards_a and shards_b)
        m["correlation"] = (
            paired_correlation(shards_a, shards_b, m["latent_a"], m["latent_b"]) if have else np.nan
        )
        m["score"] = m["cosine"]
    return m


def cross_layer(
    decoder_a: Any,
    decoder_b: Any,
    matches_out: str | os.PathLike,
    *,
    layer_a: int | str,
    layer_b: int | str,
    explanations_a: Sequence[str | os.PathLike] = (),
    explanations_b: Sequence[str | os.PathLike] = (),
    shards_a: Sequence[str | os.PathLike] = (),
    shards_b: Sequence[str | os.PathLike] = (),
    latents_a: np.ndarray | None = None,
    latents_b: np.ndarray | None = None,
    corr_weight: float = 0.0,
    embed: Callable[[list[str]], np.ndarray] | None = None,
    embedder: str = "all-MiniLM-L6-v2",
    n_random: int = 1000,
    seed: int = 0,
    max_pairs: int = MAX_PAIRS,
    similarity_out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Workflow step for one pair of dictionaries: match latents, write matches.parquet, return a summary.

    decoder_a/b: arrays or tensors [width, d] (or callables returning one); latents_a/b: the rows to match
    (default all). Shards give activation correlations (needed when corr_weight > 0); explanation shards
    give the similarity of matched explanations and the random-pair baseline (all pairs optionally written
    to similarity_out). Returns layer_a, layer_b, distance, n_a, n_b, n_matched, mean_cosine,
    mean_cosine_random, mean_correlation, n_explained_pairs, mean_similarity_matched, n_random_pairs,
    mean_similarity_random (NaN where not computable).
    """
    la, lb = _layer(layer_a), _layer(layer_b)
    dec_a, ids_a, dec_b, ids_b = _decoders(decoder_a, decoder_b, latents_a, latents_b)
    matches = _match(dec_a, dec_b, ids_a, ids_b, shards_a, shards_b, corr_weight, max_pairs)
    rng_expl, rng_cos = np.random.default_rng(seed).spawn(2)
    explained = bool(explanations_a and explanations_b)
    sims = explanation_similarity(
        matches,
        _read_explanations(explanations_a),
        _read_explanations(explanations_b),
        embed or _lazy_embedder(embedder),
        n_random=n_random if explained else 0,
        rng=rng_expl,
    )
    matched, rand = sims[sims["pair"] == "matched"], sims.loc[sims["pair"] == "random", "similarity"]
    keys = ["latent_a", "latent_b"]
    matches = matches.merge(matched[[*keys, "similarity"]], on=keys, how="left")
    matches = matches.assign(layer_a=la, layer_b=lb, distance=abs(lb - la))[[*MATCH_COLUMNS]]
    write_parquet(matches.astype(MATCH_COLUMNS), matches_out)
    if similarity_out is not None:
        write_parquet(sims, similarity_out)
    # baseline for the matched cosine: decoder directions of random (a, b) pairs
    ra, rb = rng_cos.integers(len(dec_a), size=n_random), rng_cos.integers(len(dec_b), size=n_random)
    random_cos = np.einsum("nd,nd->n", dec_a[ra], dec_b[rb]).astype(np.float64)
    summary = dict(
        layer_a=la,
        layer_b=lb,
        distance=abs(lb - la),
        n_a=len(dec_a),
        n_b=len(dec_b),
        n_matched=len(matches),
        mean_cosine=float(matches["cosine"].mean()),
        mean_cosine_random=float(random_cos.mean()) if n_random else np.nan,
        mean_correlation=float(matches["correlation"].mean()),
        n_explained_pairs=len(matched),
        mean_similarity_matched=float(matched["similarity"].mean()),
        n_random_pairs=len(rand),
        mean_similarity_random=float(rand.mean()),
    )
    log.info(
        "layers %d-%d: %d matches, mean cosine %.3f (random %.3f), explanation similarity %.3f (random %.3f)",
        *(summary[k] for k in ("layer_a", "layer_b", "n_matched", "mean_cosine", "mean_cosine_random")),
        *(summary[k] for k in ("mean_similarity_matched", "mean_similarity_random")),
    )
    return summary


def plot_similarity_by_distance(df: pd.DataFrame, out_path: str | os.PathLike) -> None:
    """Two panels by layer distance: decoder cosine and explanation similarity, matched vs random pairs.

    df: one row per pair of dictionaries, as returned by cross_layer (distance, mean_cosine,
    mean_cosine_random, mean_similarity_matched, mean_similarity_random); points per pair, lines through
    the per-distance means.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from interpflow.report import save_figure

    panels = {
        "decoder cosine": ("mean_cosine", "mean_cosine_random"),
        "explanation similarity": ("mean_similarity_matched", "mean_similarity_random"),
    }
    missing = {"distance", *sum(panels.values(), ())} - set(df.columns)
    if missing:
        raise ValueError(f"plot_similarity_by_distance: the table lacks columns {sorted(missing)}")
    if df.empty:
        raise ValueError("plot_similarity_by_distance: the table is empty")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (title, cols) in zip(axes, panels.items(), strict=True):
        for col, label, color in zip(cols, ("matched", "random"), ("C0", "grey"), strict=True):
            means = df.groupby("distance")[col].mean()
            ax.scatter(df["distance"], df[col], s=14, alpha=0.6, color=color)
            ax.plot(means.index, means.to_numpy(), marker="o", color=color, label=label)
        ax.set_xlabel("layer distance")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(sorted(df["distance"].unique()))
        ax.legend(fontsize=8)
    axes[0].set_ylabel("mean cosine")
    save_figure(fig, out_path)


def match_layers(
    dictionary_a: str | os.PathLike,
    dictionary_b: str | os.PathLike,
    cfg: dict,
    out_path: str | os.PathLike,
    *,
    latents_dirs: Sequence[str | os.PathLike] = (),
) -> dict[str, Any]:
    """Workflow step: align two prepared dictionaries' latents (decoder cosine, optionally correlation)."""
    from interpflow.dictionaries import SparseDictionary
    from interpflow.sampling import shard_files

    da, db = SparseDictionary.load(dictionary_a), SparseDictionary.load(dictionary_b)
    shards_a, shards_b = (shard_files(d) for d in latents_dirs) if latents_dirs else ((), ())
    return cross_layer(
        da.decoder_directions,
        db.decoder_directions,
        out_path,
        layer_a=da.meta.get("hookpoint", 0),
        layer_b=db.meta.get("hookpoint", 0),
        shards_a=shards_a,
        shards_b=shards_b,
        corr_weight=cfg.get("corr_weight", 0.0),
        n_random=cfg.get("n_random", 1000),
        seed=cfg.get("seed", 0),
        max_pairs=cfg.get("max_cells", MAX_PAIRS),
    )


def compare_explanations(
    matches_path: str | os.PathLike,
    explanations_a: Sequence[str | os.PathLike],
    explanations_b: Sequence[str | os.PathLike],
    cfg: dict,
    out_path: str | os.PathLike,
) -> pd.DataFrame:
    """Workflow step: embedding similarity of matched pairs' explanations, and of random pairs."""
    sims = explanation_similarity(
        read_parquet(matches_path),
        _read_explanations(explanations_a),
        _read_explanations(explanations_b),
        _lazy_embedder(cfg.get("embedding_model", "all-MiniLM-L6-v2")),
        n_random=cfg.get("n_random", 1000),
        rng=np.random.default_rng(cfg.get("seed", 0)),
    )
    write_parquet(sims, out_path)
    matched = sims["pair"] == "matched"
    log.info("%d explained matched pairs, %d random pairs", matched.sum(), (~matched).sum())
    return sims


def summarize_layers(
    records: list[dict], table_out: str | os.PathLike, figure_out: str | os.PathLike
) -> pd.DataFrame:
    """One row per aligned pair of layers (and explainer): matched cosine and explanation similarity."""
    keys = ["corpus", "model", "dictionary", "hookpoint_a", "hookpoint_b", "sampler", "explainer", "distance"]
    rows = []
    for r in records:
        matches, sims = read_parquet(r["matches"]), read_parquet(r["similarity"])
        matched, rand = sims[sims["pair"] == "matched"], sims[sims["pair"] == "random"]
        rows.append(
            {k: r[k] for k in keys}
            | dict(
                n_matched=len(matches),
                mean_cosine=float(matches["cosine"].mean()),
                mean_cosine_random=np.nan,  # Hungarian on unrelated dictionaries: see the random-sae rows
                n_explained_pairs=len(matched),
                mean_similarity_matched=float(matched["similarity"].mean()),
                n_random_pairs=len(rand),
                mean_similarity_random=float(rand["similarity"].mean()),
            )
        )
    table = pd.DataFrame(rows)
    write_parquet(table, table_out)
    plot_similarity_by_distance(table, figure_out)
    return table
