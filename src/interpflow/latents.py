"""Sparse latent store: encode activations into per-latent-range CSR shards and read them back."""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from interpflow.store import atomic_path, open_h5, write_parquet

if TYPE_CHECKING:
    import h5py
    import torch

log = logging.getLogger(__name__)

F16_MAX = float(np.finfo(np.float16).max)
QUANTILES = {"q50": 0.5, "q90": 0.9, "q99": 0.99}
_CHUNK = 1 << 16  # elements per HDF5 chunk of the phase-1 scratch file
_SORT_CHUNK = 1 << 20  # scratch triples sorted at a time in phase 2


class Encoder(Protocol):
    """Anything that maps activations to TopK latents (an SAE, a transcoder, a stub in tests)."""

    width: int

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map x [B, d_in] to (top values [B, k] >= 0, top indices [B, k] int64)."""
        ...


@dataclass(frozen=True, eq=False)  # eq=False: fields are arrays
class LatentShard:
    """The nonzero activations of latents [latent_start, latent_end), in CSR layout by latent."""

    latent_start: int
    """First latent stored in this shard."""
    latent_end: int
    """One past the last latent stored in this shard."""
    n_seq: int
    """Number of sequences in the corpus the activations come from."""
    ctx_len: int
    """Tokens per sequence; flat token index t = seq * ctx_len + pos."""
    offsets: np.ndarray
    """int64 [n_latents + 1]; latent i owns entries offsets[i - start] : offsets[i - start + 1]."""
    positions: np.ndarray
    """uint32 [nnz]; flat token index of each nonzero, ascending within a latent."""
    values: np.ndarray
    """float16 [nnz]; activation of each nonzero (> 0)."""

    def latent(self, latent: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (positions, values) of one latent."""
        i = _local_index(latent, self.latent_start, self.latent_end)
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return self.positions[lo:hi], self.values[lo:hi]


def _local_index(latent: int, start: int, end: int) -> int:
    """Index of `latent` within a shard covering [start, end), or a ValueError."""
    if not start <= latent < end:
        raise ValueError(f"latent {latent} is not in this shard's range [{start}, {end})")
    return int(latent - start)


def encode_to_shards(
    activations_path: str | os.PathLike,
    encoder: Encoder,
    width: int,
    shard_size: int,
    shard_paths: list[str],
    stats_paths: list[str],
    *,
    batch_size: int = 4096,
    device: str = "cpu",
) -> dict[str, Any]:
    """Encode every non-BOS token's activation and write the sparse shards and their stats tables."""
    import h5py

    if shard_size <= 0 or width <= 0:
        raise ValueError(f"width ({width}) and latent_store.shard_size ({shard_size}) must be positive")
    n_shards = math.ceil(width / shard_size)
    if len(shard_paths) != n_shards or len(stats_paths) != n_shards:
        raise ValueError(
            f"width {width} with latent_store.shard_size {shard_size} makes {n_shards} shards, but got "
            f"{len(shard_paths)} shard paths and {len(stats_paths)} stats paths"
        )
    if getattr(encoder, "width", width) != width:
        raise ValueError(f"encoder width {encoder.width} does not match width {width}")
    t0 = time.perf_counter()
    out_dir = Path(shard_paths[0]).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(prefix=".encode-", suffix=".h5.tmp", dir=out_dir)
    os.close(fd)
    try:
        with h5py.File(scratch, "w") as tmp:
            meta = _encode_pass(activations_path, encoder, width, shard_size, tmp, batch_size, device)
            for s in range(n_shards):
                start, end = s * shard_size, min((s + 1) * shard_size, width)
                _finalise_shard(tmp[f"s{s}"], start, end, meta, shard_paths[s], stats_paths[s])
    finally:
        Path(scratch).unlink(missing_ok=True)
    summary = {"tokens": meta["n_tokens"], "nonzeros": meta["nonzeros"], "seconds": time.perf_counter() - t0}
    log.info("encoded %(tokens)d tokens, %(nonzeros)d nonzeros in %(seconds).1f s", summary)
    return summary


def _open_activations(path: str | os.PathLike) -> tuple[h5py.File, h5py.Dataset, int, int]:
    """Open the activations file and check its shape against its n_seq/ctx_len attrs."""
    if not Path(path).exists():
        raise FileNotFoundError(f"missing activations file: {path}")
    f = open_h5(path)
    ds = f.get("activations")
    # the attrs may sit on the dataset or on the file
    attrs = {k: ds.attrs.get(k, f.attrs.get(k)) for k in ("n_seq", "ctx_len")} if ds is not None else {}
    if ds is None or None in attrs.values():
        f.close()
        raise ValueError(f"{path} lacks dataset `activations` or its attrs n_seq, ctx_len")
    n_seq, ctx_len = int(attrs["n_seq"]), int(attrs["ctx_len"])
    if ds.ndim != 2 or ds.shape[0] != n_seq * ctx_len or ds.shape[0] >= 2**32:
        f.close()
        raise ValueError(f"{path}: activations {ds.shape} do not match n_seq * ctx_len = {n_seq * ctx_len}")
    return f, ds, n_seq, ctx_len


def _encode_pass(
    activations_path: str | os.PathLike,
    encoder: Encoder,
    width: int,
    shard_size: int,
    tmp: h5py.File,
    batch_size: int,
    device: str,
) -> dict[str, int]:
    """Phase 1: encode in batches and append unsorted (latent, position, value) triples per shard."""
    import torch
    from tqdm.auto import tqdm

    n_shards = math.ceil(width / shard_size)
    for s in range(n_shards):
        g = tmp.create_group(f"s{s}")
        for name, dtype in (("latent", np.uint32), ("position", np.uint32), ("value", np.float16)):
            g.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(_CHUNK,))
    f, ds, n_seq, ctx_len = _open_activations(activations_path)
    nonzeros = 0
    with f, torch.inference_mode():
        for lo in tqdm(range(0, ds.shape[0], batch_size), desc="encode", unit="batch"):
            rows = np.arange(lo, min(lo + batch_size, ds.shape[0]), dtype=np.uint32)
            keep = rows % ctx_len != 0  # BOS rows carry no text (and outlier norms): never stored
            x = torch.from_numpy(ds[lo : lo + rows.size][keep]).to(device)  # [B, d_in]
            rows = rows[keep]
            if rows.size == 0:
                continue
            top_vals, top_idx = encoder.encode(x)  # [B, k], [B, k]
            vals = np.minimum(top_vals.float().cpu().numpy(), F16_MAX).astype(np.float16).ravel()
            idx = top_idx.cpu().numpy().ravel()
            pos = np.repeat(rows, top_idx.shape[1])  # row-major, so positions ascend within each latent
            if idx.size and (idx.min() < 0 or idx.max() >= width):
                raise ValueError(f"encoder returned latent indices outside [0, {width})")
            # top-k pads with zeros (and values below float16's range round to 0): drop them
            nz = vals > 0
            nonzeros += _append_by_shard(tmp, idx[nz].astype(np.uint32), pos[nz], vals[nz], shard_size)
    return {"n_seq": n_seq, "ctx_len": ctx_len, "n_tokens": n_seq * (ctx_len - 1), "nonzeros": nonzeros}


def _append_by_shard(tmp: h5py.File, lat: np.ndarray, pos: np.ndarray, val: np.ndarray, size: int) -> int:
    """Route triples to their shard's scratch datasets (stable, so positions keep their order)."""
    shard = lat // size
    order = np.argsort(shard, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(shard, minlength=len(tmp)))])
    for s in np.flatnonzero(np.diff(bounds)):
        sel = order[bounds[s] : bounds[s + 1]]
        g = tmp[f"s{s}"]
        n = g["latent"].shape[0]
        for name, data in (("latent", lat[sel] - s * size), ("position", pos[sel]), ("value", val[sel])):
            g[name].resize((n + sel.size,))
            g[name][n:] = data
    return int(lat.size)


def _finalise_shard(
    g: h5py.Group, start: int, end: int, meta: dict[str, int], shard_path: str, stats_path: str
) -> None:
    """Phase 2: sort one shard's triples by latent, write its CSR file and its stats table."""
    import h5py

    offsets, pos, val = _sorted_by_latent(g, end - start)
    with atomic_path(shard_path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("offsets", data=offsets, dtype=np.int64)
        # byte-shuffled deflate: ~2.6 bytes per nonzero instead of 6, transparent to every HDF5 reader
        packed = {"chunks": (max(1, min(pos.size, 1 << 16)),), "maxshape": (None,), "shuffle": True,
                  "compression": "gzip", "compression_opts": 1}  # fmt: skip
        f.create_dataset("positions", data=pos, dtype=np.uint32, **packed)
        f.create_dataset("values", data=val, dtype=np.float16, **packed)
        f.attrs.update(latent_start=start, latent_end=end)
        f.attrs.update({k: meta[k] for k in ("n_seq", "ctx_len", "n_tokens")})
    write_parquet(_stats_by_block(offsets, val, start, meta["n_tokens"]), stats_path)


def _sorted_by_latent(g: h5py.Group, n_latents: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A shard's scratch triples in CSR order: (offsets [n_latents + 1], positions [nnz], values [nnz]).

    A counting sort over chunks of the scratch: memory is the 6 bytes per nonzero of the result, where one
    argsort of the whole shard and its sorted copies took ~30, so a run's peak no longer grows with its
    tokens. Stable: within a latent, positions keep their (ascending) order of arrival."""
    nnz = g["latent"].shape[0]
    counts = np.zeros(n_latents, np.int64)
    for lo in range(0, nnz, _SORT_CHUNK):
        counts += np.bincount(g["latent"][lo : lo + _SORT_CHUNK], minlength=n_latents)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    pos, val = np.empty(nnz, np.uint32), np.empty(nnz, np.float16)
    cursor = offsets[:-1].copy()  # [n_latents] next free slot of each latent
    for lo in range(0, nnz, _SORT_CHUNK):
        lat = g["latent"][lo : lo + _SORT_CHUNK]
        order = np.argsort(lat, kind="stable")  # [c]
        lat = lat[order]
        c = np.bincount(lat, minlength=n_latents)
        dest = cursor[lat] + np.arange(lat.size) - (np.cumsum(c) - c)[lat]  # [c] slot of each triple
        pos[dest] = g["position"][lo : lo + _SORT_CHUNK][order]
        val[dest] = g["value"][lo : lo + _SORT_CHUNK][order]
        cursor += c
    return offsets, pos, val


def _stats_by_block(offsets: np.ndarray, val: np.ndarray, start: int, n_tokens: int) -> pd.DataFrame:
    """latent_stats of a CSR shard, a block of latents (about _SORT_CHUNK nonzeros) at a time."""
    n = offsets.size - 1
    cuts = np.unique(np.searchsorted(offsets, np.arange(0, offsets[-1], _SORT_CHUNK), "right") - 1)
    bounds = [*cuts[cuts > 0].tolist(), n]
    blocks, a = [], 0
    for b in bounds:
        lat = np.repeat(np.arange(b - a, dtype=np.uint32), np.diff(offsets[a : b + 1]))  # local, sorted
        blocks.append(latent_stats(lat, val[offsets[a] : offsets[b]], start + a, start + b, n_tokens))
        a = b
    return pd.concat(blocks, ignore_index=True)


def latent_stats(lat: np.ndarray, val: np.ndarray, start: int, end: int, n_tokens: int) -> pd.DataFrame:
    """Per-latent count, frequency, max, mean and quantiles of the nonzeros (lat is local, sorted)."""
    n = end - start
    counts = np.bincount(lat, minlength=n)
    v = val.astype(np.float64)[np.lexsort((val, lat))]  # sorted by latent, then by value
    base = np.concatenate([[0], np.cumsum(counts)[:-1]])
    has = counts > 0
    stats: dict[str, np.ndarray] = {
        "latent": np.arange(start, end, dtype=np.int64),
        "count": counts.astype(np.int64),
        "frequency": counts / max(n_tokens, 1),
        "max": np.full(n, np.nan),
        "mean": np.full(n, np.nan),
    }
    stats["max"][has] = v[base[has] + counts[has] - 1]
    stats["mean"][has] = np.bincount(lat, weights=val.astype(np.float64), minlength=n)[has] / counts[has]
    for name, q in QUANTILES.items():
        # numpy's default "linear" quantile, computed for every segment at once
        h = (counts[has] - 1) * q
        lo = np.floor(h).astype(np.int64)
        hi = np.minimum(lo + 1, counts[has] - 1)
        a, b = v[base[has] + lo], v[base[has] + hi]
        stats[name] = np.full(n, np.nan)
        stats[name][has] = a + (h - lo) * (b - a)
    return pd.DataFrame(stats)


def _check_shard_file(f: h5py.File, path: str | os.PathLike) -> None:
    """Raise a ValueError naming `path` if it lacks the shard datasets or attrs."""
    missing = [k for k in ("offsets", "positions", "values") if k not in f]
    missing += [k for k in ("latent_start", "latent_end", "n_seq", "ctx_len") if k not in f.attrs]
    if missing:
        raise ValueError(f"latent shard {path} lacks {', '.join(missing)}")
    n = int(f.attrs["latent_end"]) - int(f.attrs["latent_start"])
    if f["offsets"].shape != (n + 1,) or f["positions"].shape != f["values"].shape:
        raise ValueError(f"latent shard {path} has inconsistent dataset shapes")


def _open_shard(path: str | os.PathLike) -> h5py.File:
    """Open a shard file for reading, naming it if missing, unreadable or malformed."""
    import h5py

    if not Path(path).exists():
        raise FileNotFoundError(f"missing latent shard: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"cannot read latent shard {path}: {exc}") from exc
    try:
        _check_shard_file(f, path)
    except Exception:
        f.close()
        raise
    return f


def read_shard(path: str | os.PathLike) -> LatentShard:
    """Load a whole latent shard into memory."""
    with _open_shard(path) as f:
        shard = LatentShard(
            latent_start=int(f.attrs["latent_start"]),
            latent_end=int(f.attrs["latent_end"]),
            n_seq=int(f.attrs["n_seq"]),
            ctx_len=int(f.attrs["ctx_len"]),
            offsets=f["offsets"][:],
            positions=f["positions"][:],
            values=f["values"][:],
        )
    if shard.offsets[-1] != shard.positions.size:
        raise ValueError(f"latent shard {path}: offsets end at {shard.offsets[-1]}, not {shard.values.size}")
    return shard


def read_latent(path: str | os.PathLike, latent: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one latent's (positions, values) from a shard file without loading the rest."""
    with _open_shard(path) as f:
        i = _local_index(latent, int(f.attrs["latent_start"]), int(f.attrs["latent_end"]))
        lo, hi = (int(o) for o in f["offsets"][i : i + 2])
        return f["positions"][lo:hi], f["values"][lo:hi]


def encode_dictionary(
    activations_path: str | os.PathLike,
    dictionary_dir: str | os.PathLike,
    width: int,
    store_cfg: dict,
    out_dir: str | os.PathLike,
) -> dict:
    """Encode all activations with a prepared dictionary into `out_dir`/shard-{i}.h5 and stats-{i}.parquet."""
    import torch

    from interpflow.defaults import with_defaults
    from interpflow.dictionaries.dictionary import SparseDictionary
    from interpflow.models import resolve_device

    store_cfg = with_defaults("latent_store", store_cfg)
    device = resolve_device(store_cfg["device"])
    dictionary = SparseDictionary.load(dictionary_dir).to(device).eval()
    shard_size = store_cfg["shard_size"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = math.ceil(width / shard_size)
    with torch.inference_mode():
        return encode_to_shards(
            activations_path,
            dictionary,
            width,
            shard_size,
            [str(out / f"shard-{i}.h5") for i in range(n)],
            [str(out / f"stats-{i}.parquet") for i in range(n)],
            batch_size=store_cfg["batch_size"],
            device=str(device),
        )
