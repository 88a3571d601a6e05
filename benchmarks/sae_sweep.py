"""`make sae-sweep`: which optimizer and learning rate the SAE trainer defaults to, measured (issue 12).

Trains interpflow's TopK SAE (interpflow.sae.train.train_sae, the workflow's own code) on one layer's cached
activations with each variant below, on the same shuffled tokens, and measures on held-out tokens (the last
40,960 rows, never trained on): fvu, the fraction of latents that never fire there, and training tokens/s.
Variants: Adam at Gao et al.'s rate and 5x it; sign descent with schedule-free averaging (sparsify's
default optimizer) at sparsify's rate with the biases at 1/1000 of it (the default), 1/100 of it and the
full rate, and at 1/4 of sparsify's rate with the biases at the full rate (the default before). Writes
benchmarks/sae_sweep.json and the README
block between <!-- sae-sweep:begin/end -->.

Usage: python benchmarks/sae_sweep.py [--activations results/wiki/gemma3-270m/resid_post.9/activations.h5]
       [--tokens 204800] [--epochs 1 3] [--width 4096] [--k 32] [--no-readme]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

from interpflow.readme import update_sae_sweep
from interpflow.sae.train import LR_BASE, train_sae

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "sae_sweep.json"
HELD_OUT = 40_960
SPARSIFY_SIGNUM = 5e-3  # sparsify 1.3.3's signum rate at 2^14 latents (its trainer.py)
# (name, optimizer, learning rate at 2^14 latents, biases' fraction of it); None = interpflow's default
VARIANTS = [
    ("adam, Gao et al.'s rate", "adam", None, None),
    ("adam, 5x", "adam", 5 * LR_BASE["adam"], None),
    ("signum, sparsify's rate, biases 1/1000 (default)", "signum", SPARSIFY_SIGNUM, None),
    ("signum, sparsify's rate, biases 1/100", "signum", SPARSIFY_SIGNUM, 1e-2),
    ("signum, sparsify's rate, biases at it", "signum", SPARSIFY_SIGNUM, 1.0),
    ("signum, 1/4 of sparsify's, biases at it", "signum", SPARSIFY_SIGNUM / 4, 1.0),
]


def held_out_metrics(sae, held: torch.Tensor, chunk: int = 8192) -> tuple[float, float]:
    """(fvu over all held-out rows, fraction of latents that fire on none of them)."""
    err, fired = 0.0, torch.zeros(sae.width, dtype=torch.bool)
    with torch.no_grad():
        for i in range(0, len(held), chunk):
            x = held[i : i + chunk]
            values, indices = sae.encode(x)
            err += float((sae.decode(values, indices) - x).pow(2).sum())
            fired[indices[values > 0]] = True
    total = float((held - held.mean(0)).pow(2).sum())
    return err / total, float((~fired).float().mean())


def read_rows(path: Path, n_train: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n_train and the last HELD_OUT activation rows [n, d], BOS rows left out as the workflow's
    trainer leaves them out (their norm is an outlier that would dominate the variance)."""
    with h5py.File(path) as f:
        acts, ctx_len = f["activations"], int(f.attrs["ctx_len"])
        keep = np.flatnonzero(np.arange(len(acts)) % ctx_len != 0)
        if len(keep) < n_train + HELD_OUT:
            sys.exit(f"{path}: {len(keep)} rows without BOS, need --tokens {n_train} + {HELD_OUT} held out")
        rows = lambda idx: torch.from_numpy(np.asarray(acts[idx], np.float32))  # noqa: E731
        return rows(keep[:n_train]), rows(keep[-HELD_OUT:])


def run_variant(name: str, optimizer: str, lr: float | None, bias_ratio: float | None, epochs: int,
                train: torch.Tensor, held: torch.Tensor, args: argparse.Namespace) -> dict:  # fmt: skip
    """Train one variant for `epochs` over `train` (rows shuffled per epoch, the same for every variant)
    and measure it."""
    width = args.width
    rate = None if lr is None else lr / math.sqrt(width / 2**14)
    cfg = {"width": width, "k": args.k, "batch_size": args.batch_size, "epochs": epochs,
           "optimizer": optimizer, "lr": rate, "seed": 0}  # fmt: skip
    if bias_ratio is not None:
        cfg["bias_lr_ratio"] = bias_ratio
    bs, seeds = args.batch_size, range(epochs)
    orders = [torch.randperm(len(train), generator=torch.Generator().manual_seed(e)) for e in seeds]
    batches = (train[o[i : i + bs]] for o in orders for i in range(0, len(o) - bs + 1, bs))
    n_tokens = (len(train) // bs) * bs * epochs
    init = train[:8192].numpy()
    sae, metrics = train_sae(batches, train.shape[1], cfg, n_tokens=n_tokens, sample_for_init=init)
    fvu, unfired = held_out_metrics(sae, held)
    row = {"variant": name, "epochs": epochs, "optimizer": optimizer, "lr": metrics["train"]["lr"],
           "bias_lr_ratio": metrics["train"]["bias_lr_ratio"] if optimizer == "signum" else None,
           "tokens": metrics["tokens_trained"], "held_out_fvu": fvu, "held_out_never_fired": unfired,
           "dead_fraction": metrics["dead_fraction"],
           "tokens_per_s": metrics["tokens_trained"] / metrics["seconds"]}  # fmt: skip
    sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--activations", default="results/wiki/gemma3-270m/resid_post.9/activations.h5")
    p.add_argument("--tokens", type=int, default=204_800, help="training rows (the bench's 200k)")
    p.add_argument("--epochs", type=int, nargs="+", default=[1, 3], help="each is a sweep over the variants")
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--no-readme", action="store_true")
    args = p.parse_args()
    torch.manual_seed(0)
    train, held = read_rows(REPO / args.activations, args.tokens)
    rows = [run_variant(n, o, lr, b, e, train, held, args) for e in args.epochs for n, o, lr, b in VARIANTS]
    about = {"activations": args.activations, "tokens": args.tokens, "epochs": args.epochs,
             "width": args.width, "k": args.k, "batch_size": args.batch_size, "held_out": HELD_OUT,
             "cpu": platform.processor(), "threads": torch.get_num_threads(), "rows": rows}  # fmt: skip
    OUT.write_text(json.dumps(about, indent=1) + "\n")
    if not args.no_readme:
        update_sae_sweep(REPO / "README.md", OUT)


if __name__ == "__main__":
    main()
