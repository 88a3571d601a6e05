"""TopK sparse autoencoder (Gao et al. 2024, "Scaling and evaluating sparse autoencoders") and its trainer."""

from __future__ import annotations

import json
import logging
import math
import os
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interpflow.store import atomic_path, open_h5

__all__ = [
    "ForwardOutput",
    "TopKSAE",
    "geometric_median",
    "estimate_input_scale",
    "train_sae",
    "train_sae_from_h5",
]

log = logging.getLogger(__name__)

WEIGHTS_FILE = "sae.safetensors"
CFG_FILE = "cfg.json"


class ForwardOutput(NamedTuple):
    """Result of one SAE forward pass."""

    x_hat: Tensor
    """Reconstruction [B, d_in], in the raw (unscaled) input space."""
    top_values: Tensor
    """Activations of the selected latents [B, k], >= 0."""
    top_indices: Tensor
    """Indices of the selected latents [B, k], int64."""
    fvu: Tensor
    """Fraction of variance unexplained of the batch, scalar."""
    auxk_loss: Tensor
    """AuxK loss (Gao et al. App. A.2), scalar; 0 when no dead latents are given."""
    pre_acts: Tensor | None = None
    """Dense ReLU pre-activations [B, width] (detached), only when requested."""


class _TopKEncoder(torch.autograd.Function):
    """Linear + ReLU + top-k (and top-aux_k over dead latents) whose backward touches only selected pairs.

    Also returns the dense linear outputs z [B, width] (pre-ReLU, not differentiable).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, k: int, dead: Tensor | None, aux_k: int):
        z = F.linear(x, weight, bias)  # [B, width]
        # ReLU is monotone, so top-k of z then ReLU equals top-k of ReLU(z) and skips a [B, width] pass.
        values, indices = z.topk(k, dim=-1, sorted=False)  # [B, k]
        values.clamp_min_(0)
        if dead is not None and aux_k > 0:
            dead_idx = dead.nonzero().squeeze(1)  # [n_dead]
            aux_values, j = z.index_select(1, dead_idx).topk(min(aux_k, len(dead_idx)), sorted=False)
            aux_values.clamp_min_(0)
            aux_indices = dead_idx[j]  # [B, aux_k]
        else:
            aux_values, aux_indices = z.new_empty(len(x), 0), indices.new_empty(len(x), 0)
        ctx.save_for_backward(
            x, weight, torch.cat([values, aux_values], 1), torch.cat([indices, aux_indices], 1)
        )
        ctx.mark_non_differentiable(indices, aux_indices, z)
        return values, indices, aux_values, aux_indices, z

    @staticmethod
    def backward(ctx, g_values, _gi, g_aux, _gai, _gz):
        x, weight, values, indices = ctx.saved_tensors
        # ReLU passes no gradient where a selected value was clipped to 0.
        g = torch.cat([g_values, g_aux], 1) * (values > 0)  # [B, k + aux_k]
        g_x = g_w = g_b = None
        if ctx.needs_input_grad[0]:
            g_x = F.embedding_bag(indices, weight, per_sample_weights=g, mode="sum")  # [B, d_in]
        if ctx.needs_input_grad[1]:
            g_w = _sparse_outer(g, indices, x, weight.shape[0])  # [width, d_in]
        if ctx.needs_input_grad[2]:
            g_b = torch.zeros_like(weight[:, 0]).index_add_(0, indices.flatten(), g.flatten())
        return g_x, g_w, g_b, None, None, None


def _sparse_outer(g: Tensor, indices: Tensor, x: Tensor, width: int) -> Tensor:
    """Return sum_b sum_j g[b, j] * onehot(indices[b, j]) x[b]^T as a dense [width, d_in] matrix."""
    # A sparse [width, B] matrix times x costs nnz * d_in, versus width * B * d_in for the dense product.
    B, kk = indices.shape
    rows = torch.arange(B, device=x.device).repeat_interleave(kk)
    sp = torch.sparse_coo_tensor(
        torch.stack([indices.flatten(), rows]), g.flatten(), (width, B), check_invariants=False
    )
    return torch.sparse.mm(sp, x)


class TopKSAE(nn.Module):
    """A TopK sparse autoencoder whose inputs are scaled by a constant so their mean squared norm is d_in."""

    def __init__(
        self,
        d_in: int,
        width: int,
        k: int,
        input_scale: float = 1.0,
        *,
        generator: torch.Generator | None = None,
    ):
        """Build an SAE with tied init: encoder rows = decoder rows = random unit directions; biases 0."""
        super().__init__()
        if not 0 < k <= width:
            raise ValueError(f"need 0 < k <= width, got k={k}, width={width}")
        self.d_in, self.width, self.k, self.input_scale = d_in, width, k, float(input_scale)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        w = torch.randn(width, d_in, generator=gen)
        w /= w.norm(dim=1, keepdim=True)
        self.encoder = nn.Linear(d_in, width)
        with torch.no_grad():
            self.encoder.weight.copy_(w)
            self.encoder.bias.zero_()
        self.W_dec = nn.Parameter(w.clone())  # [width, d_in]
        self.b_dec = nn.Parameter(torch.zeros(d_in))  # [d_in], lives in the scaled space

    def _encode_scaled(self, xs: Tensor, dead: Tensor | None = None, aux_k: int = 0):
        """Top-k (and top-aux_k dead) latents of scaled inputs xs [B, d_in]."""
        return _TopKEncoder.apply(
            xs - self.b_dec, self.encoder.weight, self.encoder.bias, self.k, dead, aux_k
        )

    def _decode_scaled(self, values: Tensor, indices: Tensor) -> Tensor:
        """Sparse decoder product without the bias: [B, k] x [width, d_in] -> [B, d_in]."""
        return F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum")

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Raw inputs x [B, d_in] -> (top_values [B, k] >= 0, top_indices [B, k] int64)."""
        values, indices, *_ = self._encode_scaled(x.to(self.W_dec.dtype) * self.input_scale)
        return values, indices

    def decode(self, top_values: Tensor, top_indices: Tensor) -> Tensor:
        """Sparse codes -> reconstruction x_hat [B, d_in] in the raw input scale."""
        return (self._decode_scaled(top_values, top_indices) + self.b_dec) / self.input_scale

    def forward(
        self,
        x: Tensor,
        *,
        dead_mask: Tensor | None = None,
        aux_k: int | None = None,
        return_pre_acts: bool = False,
    ) -> ForwardOutput:
        """Encode, decode, and compute fvu and (if any latent is dead) the AuxK loss in the scaled space."""
        xs = x.to(self.W_dec.dtype) * self.input_scale  # [B, d_in]
        n_dead = 0 if dead_mask is None else int(dead_mask.sum())
        aux_k = (self.d_in // 2 if aux_k is None else aux_k) if n_dead else 0
        values, indices, aux_values, aux_indices, z = self._encode_scaled(
            xs, dead_mask if aux_k else None, aux_k
        )
        xs_hat = self._decode_scaled(values, indices) + self.b_dec
        e = xs - xs_hat  # [B, d_in]
        fvu = e.pow(2).sum() / (xs - xs.mean(0)).pow(2).sum()
        if aux_k:
            # Gao et al. App. A.2: dead latents learn to predict the live latents' residual.
            e = e.detach()
            e_hat = self._decode_scaled(aux_values, aux_indices)
            auxk_loss = (e - e_hat).pow(2).sum() / (e - e.mean(0)).pow(2).sum()
        else:
            auxk_loss = xs.new_zeros(())
        return ForwardOutput(
            xs_hat / self.input_scale, values, indices, fvu, auxk_loss, z.relu() if return_pre_acts else None
        )

    @torch.no_grad()
    def set_decoder_norm_to_unit(self) -> None:
        """Rescale decoder rows to unit norm (latent magnitudes then live in the activations)."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(torch.finfo(self.W_dec.dtype).eps)

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder_directions(self) -> None:
        """Project out the gradient component along each (unit) decoder row, as in Gao et al. / sparsify."""
        if self.W_dec.grad is None:
            return
        parallel = (self.W_dec.grad * self.W_dec).sum(1, keepdim=True)  # [width, 1]
        self.W_dec.grad -= parallel * self.W_dec

    def save(self, out_dir: str | os.PathLike, extra_cfg: dict | None = None) -> None:
        """Write out_dir/sae.safetensors and then out_dir/cfg.json, each atomically."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        tensors = {name: t.detach().cpu().contiguous() for name, t in self.state_dict().items()}
        cfg = {
            "d_in": self.d_in,
            "width": self.width,
            "k": self.k,
            "input_scale": self.input_scale,
            **(extra_cfg or {}),
        }
        with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp))
        with atomic_path(out_dir / CFG_FILE) as tmp:
            tmp.write_text(json.dumps(cfg, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> TopKSAE:
        """Load an SAE folder written by `save` (cfg.json + sae.safetensors)."""
        from safetensors.torch import load_file

        path = Path(path)
        cfg_path, weights_path = path / CFG_FILE, path / WEIGHTS_FILE
        for p in (cfg_path, weights_path):
            if not p.is_file():
                raise FileNotFoundError(f"missing SAE file: {p}")
        try:
            cfg = json.loads(cfg_path.read_text())
            sae = cls(int(cfg["d_in"]), int(cfg["width"]), int(cfg["k"]), float(cfg["input_scale"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"invalid SAE config {cfg_path}: {exc!r}") from exc
        try:
            sae.load_state_dict(load_file(str(weights_path)))
        except Exception as exc:  # safetensors and load_state_dict raise several types
            raise ValueError(f"invalid SAE weights {weights_path}: {exc}") from exc
        return sae.to(device)


def estimate_input_scale(sample: np.ndarray | Tensor) -> float:
    """Constant c such that c * x has mean squared norm d_in over the sample [n, d_in]."""
    x = torch.as_tensor(sample, dtype=torch.float64)
    msn = float(x.pow(2).sum(1).mean())
    if not msn > 0 or not math.isfinite(msn):
        raise ValueError(f"cannot estimate input scale: mean squared norm of the sample is {msn}")
    return math.sqrt(x.shape[1] / msn)


def geometric_median(x: Tensor, n_iter: int = 30, eps: float = 1e-8) -> Tensor:
    """Geometric median of the rows of x [n, d] by Weiszfeld's iteration (robust b_dec init, Gao et al.)."""
    x = x.double()
    m = x.mean(0)
    for _ in range(n_iter):
        w = 1.0 / (x - m).norm(dim=1).clamp_min(eps)  # [n]
        m = (w[:, None] * x).sum(0) / w.sum()
    return m.float()


def _train_cfg(cfg: dict, d_in: int, n_tokens: int | None) -> dict[str, Any]:
    """Fill defaults into the training config and check it, naming the bad key."""
    for key in ("width", "k"):
        if not isinstance(cfg.get(key), int) or cfg[key] <= 0:
            raise ValueError(f"SAE config key {key!r} must be a positive int, got {cfg.get(key)!r}")
    width, k = cfg["width"], cfg["k"]
    if k > width:
        raise ValueError(f"SAE config: k ({k}) must not exceed width ({width})")
    dead_default = 10_000_000 if n_tokens is None else max(1, min(10_000_000, n_tokens // 4))
    c = {
        "width": width,
        "k": k,
        "lr": cfg.get("lr") or 2e-4 / math.sqrt(width / 2**14),  # Gao et al. lr scaling law
        "batch_size": int(cfg.get("batch_size") or 4096),
        "epochs": int(cfg.get("epochs") or 1),
        "max_tokens": cfg.get("max_tokens"),
        "aux_k": int(cfg["aux_k"]) if cfg.get("aux_k") is not None else d_in // 2,  # 0 disables AuxK
        "auxk_coef": float(cfg["auxk_coef"]) if cfg.get("auxk_coef") is not None else 1 / 32,
        "dead_tokens": int(cfg.get("dead_tokens") or dead_default),
        "seed": int(cfg.get("seed") or 0),
        "grad_clip": float(cfg["grad_clip"]) if cfg.get("grad_clip") is not None else 1.0,
    }
    for key in ("lr", "batch_size", "epochs", "dead_tokens"):
        if not c[key] > 0:
            raise ValueError(f"SAE config key {key!r} must be positive, got {c[key]!r}")
    if c["aux_k"] < 0 or c["auxk_coef"] < 0:
        raise ValueError(
            f"SAE config keys 'aux_k' and 'auxk_coef' must be >= 0, got {c['aux_k']}, {c['auxk_coef']}"
        )
    return c


def _train_step(sae: TopKSAE, opt: torch.optim.Optimizer, x: Tensor, dead: Tensor | None, c: dict):
    """One Adam step on batch x; returns the (detached) forward output."""
    out = sae(x, dead_mask=dead, aux_k=c["aux_k"])
    (out.fvu + c["auxk_coef"] * out.auxk_loss).backward()
    sae.remove_gradient_parallel_to_decoder_directions()
    if c["grad_clip"] > 0:
        nn.utils.clip_grad_norm_(sae.parameters(), c["grad_clip"])
    opt.step()
    opt.zero_grad(set_to_none=True)
    sae.set_decoder_norm_to_unit()
    return out


def _finite_mean(fvus: Iterable[Tensor], seen: int) -> float:
    """Mean of recent batch fvus; a NaN/inf means training diverged (or the data holds NaNs), so stop."""
    m = float(torch.stack(list(fvus)).mean())
    if not math.isfinite(m):
        raise ValueError(f"SAE training diverged: fvu is {m} after {seen} tokens (check the activations)")
    return m


def hookpoint_seed(seed: int, hookpoint: str | None) -> int:
    """The config seed mixed with the hookpoint: dictionaries on different layers must not share an init."""
    return seed if not hookpoint else zlib.crc32(f"{seed}:{hookpoint}".encode())


def init_sae(sample: np.ndarray, d_in: int, width: int, k: int, seed: int) -> TopKSAE:
    """A TopK SAE at its initialisation: input scale and decoder bias fitted to a sample [n, d_in]."""
    sample = torch.as_tensor(np.asarray(sample, dtype=np.float32))
    if sample.ndim != 2 or sample.shape[1] != d_in or len(sample) < 2:
        raise ValueError(f"sample_for_init must be [n >= 2, {d_in}], got {tuple(sample.shape)}")
    scale = estimate_input_scale(sample)
    sae = TopKSAE(d_in, width, k, scale, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        # 8,192 rows pin the median well (0.25% of its norm here); 65,536 made init cost ~15% of a short run
        sae.b_dec.copy_(geometric_median(sample[:8192] * scale))
    return sae


def train_sae(
    batches: Iterable[np.ndarray | Tensor],
    d_in: int,
    cfg: dict,
    *,
    n_tokens: int | None = None,
    device: str = "cpu",
    sample_for_init: np.ndarray,
) -> tuple[TopKSAE, dict]:
    """Train a TopK SAE on raw activation batches [B, d_in]; returns the SAE and its training metrics."""
    from tqdm.auto import tqdm

    c = _train_cfg(cfg, d_in, n_tokens)
    sae = init_sae(sample_for_init, d_in, c["width"], c["k"], c["seed"]).to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=c["lr"], betas=(0.9, 0.999))
    since_fired = torch.zeros(c["width"], dtype=torch.long, device=device)  # tokens since each latent fired
    n_steps = None if n_tokens is None else math.ceil(n_tokens / c["batch_size"])
    log_every = max(1, (n_steps or 2000) // 20)
    # fvu of a batch is measured before the step that trains on it, so in the first epoch it is held out.
    recent = deque(maxlen=max(1, min(50, (n_steps or 200) // 10)))
    seen, t0 = 0, time.perf_counter()
    bar = tqdm(total=n_tokens, unit="tok", unit_scale=True, desc="train SAE", mininterval=2.0)
    for step, batch in enumerate(batches):
        x = torch.as_tensor(batch).to(device, torch.float32, non_blocking=True)
        dead = since_fired >= c["dead_tokens"]
        out = _train_step(sae, opt, x, dead, c)
        since_fired += len(x)
        since_fired[out.top_indices.flatten()] = 0
        seen += len(x)
        recent.append(out.fvu.detach())
        bar.update(len(x))
        if (step + 1) % log_every == 0:
            fvu_now = _finite_mean(recent, seen)  # one device sync per log line
            log.info(
                "tokens %d  fvu %.4f  dead %.3f  %.0f tok/s",
                seen,
                fvu_now,
                float(dead.float().mean()),
                seen / (time.perf_counter() - t0),
            )
    bar.close()
    if seen == 0:
        raise ValueError("train_sae got no batches")
    metrics = {
        "fvu": _finite_mean(recent, seen),
        "dead_fraction": float((since_fired >= c["dead_tokens"]).float().mean()),
        "tokens_trained": seen,
        "seconds": time.perf_counter() - t0,
        "train": c,
    }
    log.info(
        "trained SAE on %d tokens: fvu %.4f, dead fraction %.3f, %.0f tok/s",
        seen,
        metrics["fvu"],
        metrics["dead_fraction"],
        seen / metrics["seconds"],
    )
    return sae, metrics


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


def train_sae_from_h5(
    activations_path: str | os.PathLike, cfg: dict, out_dir: str | os.PathLike, *, device: str = "auto"
) -> dict:
    """Train an SAE on activations.h5 (skipping BOS rows), save it to out_dir and return its metrics."""

    path = Path(activations_path)
    if not path.is_file():
        raise FileNotFoundError(f"missing activations file: {path}")
    if device == "auto":  # an explicit argument wins over the dictionary config's `device`
        device = cfg.get("device") or "auto"
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    with open_h5(path) as f:
        if "activations" not in f:
            raise ValueError(f"{path} has no dataset 'activations'")
        ds = f["activations"]
        attrs = dict(f.attrs) | dict(ds.attrs)
        if "ctx_len" not in attrs:
            raise ValueError(f"{path} lacks the attribute 'ctx_len'")
        ctx_len, (n_rows, d_in) = int(attrs["ctx_len"]), ds.shape
        n_train = n_rows - (n_rows + ctx_len - 1) // ctx_len  # rows minus BOS rows
        if n_train < 2:
            raise ValueError(f"{path} has {n_train} non-BOS rows; need at least 2 to train an SAE")
        c = _train_cfg(cfg, d_in, None)
        c["seed"] = hookpoint_seed(c["seed"], _plain(attrs.get("hookpoint")))
        n_tokens = n_train * c["epochs"]
        if c["max_tokens"] is not None:
            n_tokens = min(n_tokens, int(c["max_tokens"]))
        rng = np.random.default_rng(c["seed"])
        sample = _init_sample(ds, ctx_len, rng)
        buffers = _shuffled_buffers(
            ds, ctx_len, c["epochs"], rng, int(cfg.get("block_rows", 65536)), int(cfg.get("buffer_blocks", 4))
        )
        sae, metrics = train_sae(
            _batches(buffers, c["batch_size"], c["max_tokens"]),
            d_in,
            cfg | {"seed": c["seed"]},
            n_tokens=n_tokens,
            device=device,
            sample_for_init=sample,
        )
    for key in ("model", "hookpoint"):
        metrics[key] = _plain(attrs.get(key))
    sae.save(out_dir, extra_cfg=metrics)
    return metrics


def _plain(v: Any) -> Any:
    """HDF5 attribute -> JSON-serialisable value."""
    if isinstance(v, bytes):
        return v.decode()
    return v.item() if isinstance(v, np.generic) else v


def random_sae_from_h5(activations_path: str | os.PathLike, cfg: dict) -> TopKSAE:
    """A TopK SAE of the configured shape left at the trained SAE's initialisation: a control dictionary."""

    path = Path(activations_path)
    if not path.is_file():
        raise FileNotFoundError(f"missing activations file: {path}")
    with open_h5(path) as f:
        if "activations" not in f:
            raise ValueError(f"{path} has no dataset 'activations'")
        ds = f["activations"]
        attrs = dict(f.attrs) | dict(ds.attrs)
        ctx_len = int(attrs.get("ctx_len", 0))
        if ctx_len < 2:
            raise ValueError(f"{path} lacks a valid 'ctx_len' attribute")
        d_in = ds.shape[1]
        c = _train_cfg(cfg, d_in, None)
        c["seed"] = hookpoint_seed(c["seed"], _plain(attrs.get("hookpoint")))
        sample = _init_sample(ds, ctx_len, np.random.default_rng(c["seed"]))
    return init_sae(sample, d_in, c["width"], c["k"], c["seed"])
