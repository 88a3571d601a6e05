"""Training a TopK SAE: its initialisation (input scale, decoder bias at the geometric median, a seed per
hookpoint), the training config's defaults and checks, and the loop over activation batches (train_sae)."""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from interpflow.defaults import with_defaults
from interpflow.sae.model import TopKSAE

__all__ = ["geometric_median", "estimate_input_scale", "train_sae"]

log = logging.getLogger(__name__)

# Learning rates at 2^14 latents. adam: Gao et al.'s. signum: sparsify's (1.3.3, trainer.py), with the
# biases at `bias_lr_ratio` of it (make_optimizer).
LR_BASE = {"adam": 2e-4, "signum": 5e-3}


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
    cfg = with_defaults("dictionaries", cfg)
    if cfg["optimizer"] not in LR_BASE:
        raise ValueError(f"SAE config key 'optimizer' must be one of {sorted(LR_BASE)}: {cfg['optimizer']!r}")
    dead_default = 10_000_000 if n_tokens is None else max(1, min(10_000_000, n_tokens // 4))
    c = {
        "width": width,
        "k": k,
        "optimizer": cfg["optimizer"],
        # both fall as 1 / sqrt(width), Gao et al.'s scaling law; LR_BASE holds the rates at 2^14 latents
        "lr": cfg["lr"] or LR_BASE[cfg["optimizer"]] / math.sqrt(width / 2**14),
        "batch_size": int(cfg["batch_size"]),
        "epochs": int(cfg["epochs"]),
        "max_tokens": cfg["max_tokens"],
        "aux_k": int(cfg["aux_k"]) if cfg["aux_k"] is not None else d_in // 2,  # 0 disables AuxK
        "auxk_coef": float(cfg["auxk_coef"]),
        "dead_tokens": int(cfg["dead_tokens"] or dead_default),
        "bias_lr_ratio": float(cfg["bias_lr_ratio"]),
        "seed": int(cfg["seed"]),
        "grad_clip": float(cfg["grad_clip"]),
    }
    for key in ("lr", "batch_size", "epochs", "dead_tokens", "bias_lr_ratio"):
        if not c[key] > 0:
            raise ValueError(f"SAE config key {key!r} must be positive, got {c[key]!r}")
    if c["aux_k"] < 0 or c["auxk_coef"] < 0:
        raise ValueError(
            f"SAE config keys 'aux_k' and 'auxk_coef' must be >= 0, got {c['aux_k']}, {c['auxk_coef']}"
        )
    return c


class SignDescent(torch.optim.Optimizer):
    """Steepest descent in the max norm: every parameter moves by lr against the sign of its gradient
    (signSGD, Bernstein et al. 2018). Under schedule-free averaging it is sparsify's default SAE optimizer."""

    def __init__(self, params, lr: float):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])


def make_optimizer(sae: TopKSAE, c: dict) -> torch.optim.Optimizer:
    """Adam, or sign descent wrapped in schedule-free averaging (the schedulefree package: the weights
    trained are an interpolation, and `.eval()` swaps in the average, which is what gets saved).

    Under sign descent the biases step at c['bias_lr_ratio'] of the weights' rate. A sign step moves every
    coordinate by lr however small its gradient, and our inputs are scaled to coordinates of about 1, so
    biases at the full rate drift with the batch noise and push latents out of the top k (a third die at
    sparsify's rate, `make sae-sweep`). sparsify trains on raw activations, where the same step is tiny next
    to the data (gemma-3-270m's residual norm is ~3,600, input_scale ~0.007), so its biases barely move."""
    if c["optimizer"] == "adam":
        return torch.optim.Adam(sae.parameters(), lr=c["lr"], betas=(0.9, 0.999))
    from schedulefree import ScheduleFreeWrapper

    groups = [
        {"params": [sae.encoder.weight, sae.W_dec], "lr": c["lr"]},
        {"params": [sae.encoder.bias, sae.b_dec], "lr": c["lr"] * c["bias_lr_ratio"]},
    ]
    opt = ScheduleFreeWrapper(SignDescent(groups, lr=c["lr"]), momentum=0.95)
    opt.train()
    return opt


def _train_step(sae: TopKSAE, opt: torch.optim.Optimizer, x: Tensor, dead: Tensor | None, c: dict):
    """One optimizer step on batch x; returns the (detached) forward output."""
    out = sae(x, dead_mask=dead, aux_k=c["aux_k"])
    (out.fvu + c["auxk_coef"] * out.auxk_loss).backward()
    sae.remove_gradient_parallel_to_decoder_directions()
    if c["grad_clip"] > 0 and c["optimizer"] == "adam":  # a sign step ignores the gradient's norm
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


class EpochStats:
    """Per epoch: the mean fvu and L0 (positive latents per token) of its batches, each measured before the
    step that trains on it, and the dead fraction at its end; logged, and kept for the metrics."""

    def __init__(self, tokens_per_epoch: int | None):
        self.size, self.rows = tokens_per_epoch, []
        self._fvu, self._l0, self._batches = 0.0, 0.0, 0

    def add(self, out: Any, seen: int, dead_fraction: Callable[[], float]) -> None:
        self._fvu = out.fvu.detach() + self._fvu  # device tensors: no sync per step
        self._l0 = (out.top_values > 0).sum(1).float().mean() + self._l0
        self._batches += 1
        if self.size and seen >= self.size * (len(self.rows) + 1):
            row = {"epoch": len(self.rows) + 1, "tokens": seen, "fvu": float(self._fvu) / self._batches,
                   "l0": float(self._l0) / self._batches, "dead_fraction": dead_fraction()}  # fmt: skip
            msg = "epoch %(epoch)d, %(tokens)d tokens: fvu %(fvu).4f, L0 %(l0).1f, dead %(dead_fraction).3f"
            log.info(msg, row)
            self.rows.append(row)
            self._fvu, self._l0, self._batches = 0.0, 0.0, 0


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
    opt = make_optimizer(sae, c)
    since_fired = torch.zeros(c["width"], dtype=torch.long, device=device)  # tokens since each latent fired
    dead_fraction = lambda: float((since_fired >= c["dead_tokens"]).float().mean())  # noqa: E731
    n_steps = None if n_tokens is None else math.ceil(n_tokens / c["batch_size"])
    log_every = max(1, (n_steps or 2000) // 20)
    # fvu of a batch is measured before the step that trains on it, so in the first epoch it is held out.
    recent = deque(maxlen=max(1, min(50, (n_steps or 200) // 10)))
    epochs = EpochStats(None if n_tokens is None else n_tokens // c["epochs"])
    seen, t0 = 0, time.perf_counter()
    bar = tqdm(total=n_tokens, unit="tok", unit_scale=True, desc="train SAE", mininterval=2.0)
    for step, batch in enumerate(batches):
        x = torch.as_tensor(batch).to(device, torch.float32, non_blocking=True)
        out = _train_step(sae, opt, x, since_fired >= c["dead_tokens"], c)
        since_fired += len(x)
        since_fired[out.top_indices.flatten()] = 0
        seen += len(x)
        recent.append(out.fvu.detach())
        epochs.add(out, seen, dead_fraction)
        bar.update(len(x))
        if (step + 1) % log_every == 0:
            fvu_now = _finite_mean(recent, seen)  # one device sync per log line
            log.info("tokens %d  fvu %.4f  dead %.3f  %.0f tok/s",
                     seen, fvu_now, dead_fraction(), seen / (time.perf_counter() - t0))  # fmt: skip
    bar.close()
    if seen == 0:
        raise ValueError("train_sae got no batches")
    if hasattr(opt, "eval"):  # schedule-free: keep the averaged weights, their decoder rows unit again
        opt.eval()
        sae.set_decoder_norm_to_unit()
    metrics = {
        "fvu": _finite_mean(recent, seen),
        "dead_fraction": dead_fraction(),
        "tokens_trained": seen,
        "seconds": time.perf_counter() - t0,
        "epochs": epochs.rows,
        "train": c,
    }
    log.info("trained SAE on %d tokens: fvu %.4f, dead fraction %.3f, %.0f tok/s",
             seen, metrics["fvu"], metrics["dead_fraction"], seen / metrics["seconds"])  # fmt: skip
    return sae, metrics
