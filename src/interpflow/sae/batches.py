"""Training rows from an activations dataset (activations.h5) without the BOS rows: shuffled buffers of
contiguous blocks, cut into batches, and the sample the initialisation is fitted to."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np


def _read_rows(ds, start: int, stop: int, ctx_len: int) -> np.ndarray:
    """Rows [start, stop) of the activations dataset without the BOS rows (position 0 of each sequence)."""
    rows = np.asarray(ds[start:stop], dtype=np.float32)
    return rows[np.arange(start, stop) % ctx_len != 0]


def _shuffled_buffers(
    ds, ctx_len: int, epochs: int, rng: np.random.Generator, block_rows: int, buffer_blocks: int
) -> Iterator[np.ndarray]:
    """Yield shuffled buffers of a few contiguous blocks each, blocks taken in random order per epoch."""
    n_rows = ds.shape[0]
    for _ in range(epochs):
        order = rng.permutation(np.arange(0, n_rows, block_rows)).tolist()
        for i in range(0, len(order), buffer_blocks):
            spans = [(s, min(s + block_rows, n_rows)) for s in order[i : i + buffer_blocks]]
            # Filled in place and shuffled in place: peak memory is one buffer plus one block.
            n_keep = sum(np.count_nonzero(np.arange(a, b) % ctx_len) for a, b in spans)
            buf = np.empty((n_keep, ds.shape[1]), np.float32)
            o = 0
            for a, b in spans:
                rows = _read_rows(ds, a, b, ctx_len)
                buf[o : o + len(rows)] = rows
                o += len(rows)
            rng.shuffle(buf)
            yield buf
            del buf


def _batches(buffers: Iterable[np.ndarray], batch_size: int, max_tokens: int | None) -> Iterator[np.ndarray]:
    """Cut buffers into batches of batch_size rows; the tail is merged into the last batch, never dropped."""
    left = math.inf if max_tokens is None else int(max_tokens)
    pending, parts, n_parts = None, [], 0  # parts: pieces of the batch being assembled
    for buf in buffers:
        buf = buf[: int(min(len(buf), left))]
        left -= len(buf)
        s = 0
        while s < len(buf):
            piece = buf[s : s + batch_size - n_parts]
            parts.append(piece)
            n_parts, s = n_parts + len(piece), s + len(piece)
            if n_parts == batch_size:
                if pending is not None:
                    yield pending
                pending, parts, n_parts = np.concatenate(parts), [], 0  # a copy, so buffers die early
        parts = [np.concatenate(parts)] if parts else []
        del buf
        if left <= 0:
            break
    tail = [pending] if pending is not None else []
    if tail or parts:
        yield np.concatenate(tail + parts)


def _init_sample(ds, ctx_len: int, rng: np.random.Generator, n: int = 65536, chunk: int = 4096) -> np.ndarray:
    """Up to n non-BOS rows read as random contiguous chunks (cheap HDF5 reads, spread over the file)."""
    n_rows = ds.shape[0]
    starts = np.sort(
        rng.choice(
            max(1, n_rows - chunk + 1), size=min(n // chunk + 1, max(1, n_rows // chunk)), replace=False
        )
    )
    return np.concatenate([_read_rows(ds, int(s), min(int(s) + chunk, n_rows), ctx_len) for s in starts])
