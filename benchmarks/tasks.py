"""interpflow's side of the benchmark: one measurement per call, in a fresh process, as one JSON line.

Usage: python benchmarks/tasks.py <task> '<json arguments>'. Called by benchmarks/run.py; each task times
only the work after its imports and model load, and reports its peak RSS (VmHWM) so every memory figure
comes from a fresh process.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("benchmarks")


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def dir_bytes(paths: list[Path]) -> int:
    """Total size on disk of the given files."""
    return sum(p.stat().st_size for p in paths)


def slice_h5(src: str, dst: str, name: str, rows: tuple[int, int], n_seq: int | None = None) -> None:
    """Copy rows [a, b) of dataset `name` (and its file attrs, n_seq/n_tokens updated) to a new file."""
    import h5py

    from interpflow.store import atomic_path

    with h5py.File(src, "r") as f, atomic_path(dst) as tmp, h5py.File(tmp, "w") as g:
        data = f[name][rows[0] : rows[1]]
        chunks = f[name].chunks and (min(len(data), f[name].chunks[0]), *f[name].chunks[1:])
        g.create_dataset(name, data=data, chunks=chunks)
        g.attrs.update(dict(f.attrs))
        g[name].attrs.update(dict(f[name].attrs))
        if n_seq is not None:
            g.attrs["n_seq"] = n_seq
        if "n_tokens" in f.attrs:
            g.attrs["n_tokens"] = data.size


def to_sparsify(sae_dir: str, out_dir: str) -> None:
    """Write interpflow's TopK SAE in sparsify's format (input scale folded into the weights).

    interpflow encodes z = W (s x - b) + c and decodes (D^T a + b) / s; sparsify encodes W' (x - b') + c'
    and decodes D'^T a + b'. With W' = s W, b' = b / s, c' = c, D' = D / s both give the same latents and
    reconstructions.
    """
    from safetensors.torch import save_file

    from interpflow.sae.model import TopKSAE

    sae = TopKSAE.load(sae_dir)
    s = sae.input_scale
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        "encoder.weight": (sae.encoder.weight * s).detach().contiguous(),
        "encoder.bias": sae.encoder.bias.detach().contiguous(),
        "W_dec": (sae.W_dec / s).detach().contiguous(),
        "b_dec": (sae.b_dec / s).detach().contiguous(),
    }
    save_file(tensors, str(out / "sae.safetensors"))
    cfg = {
        "activation": "topk",
        "expansion_factor": 32,
        "normalize_decoder": True,
        "num_latents": sae.width,
        "k": sae.k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": sae.d_in,
    }
    (out / "cfg.json").write_text(json.dumps(cfg))


def task_prepare(a: dict) -> dict:
    """Build (once) everything the measurements share: model, tokens, activations, SAE, stores, judge."""
    import torch

    from interpflow.activations import cache_activations
    from interpflow.corpus import build_tokens
    from interpflow.latents import encode_to_shards
    from interpflow.models import prepare_model
    from interpflow.sae.model import TopKSAE
    from interpflow.sae.step import train_sae_from_h5

    c = Path(a["cache"])
    model_dir, hook = c / "model", a["hookpoint"]
    done = []
    if not (model_dir / "model.json").exists():
        prepare_model(a["model_cfg"], model_dir / "model.json", model_dir / "vocab.parquet")
        done.append("model")
    corpus = dict(a["corpus"], n_sequences=a["n_seq_all"])
    if not (c / "tokens-all.h5").exists():
        build_tokens(corpus, model_dir / "model.json", c / "tokens-all.h5")
    for name, (lo, hi) in a["token_slices"].items():
        if not (c / f"tokens-{name}.h5").exists():
            slice_h5(str(c / "tokens-all.h5"), str(c / f"tokens-{name}.h5"), "tokens", (lo, hi))
            done.append(f"tokens-{name}")
    for name in ("train", "eval"):
        acts = c / f"acts-{name}.h5"
        if not acts.exists():
            cache_activations(
                c / f"tokens-{name}.h5", model_dir / "model.json", a["model_cfg"], [hook], [acts]
            )
            done.append(f"acts-{name}")
    ctx = a["corpus"]["ctx_len"]
    small_seq = a["token_slices"]["sample-small"][1]
    if not (c / "acts-sample-small.h5").exists():
        slice_h5(
            str(c / "acts-train.h5"),
            str(c / "acts-sample-small.h5"),
            "activations",
            (0, small_seq * ctx),
            n_seq=small_seq,
        )
    sae_dir = c / "sae"
    if not (sae_dir / "cfg.json").exists():
        train_sae_from_h5(c / "acts-train.h5", a["sae_cfg"], sae_dir, device="cpu")
        done.append("sae")
    if not (c / "sae-sparsify" / a["delphi_hookpoint"] / "cfg.json").exists():
        to_sparsify(str(sae_dir), str(c / "sae-sparsify" / a["delphi_hookpoint"]))
    sae = TopKSAE.load(sae_dir).eval()
    width, shard = sae.width, a["shard_size"]
    n = math.ceil(width / shard)
    for name in ("train", "sample-small"):
        out = c / f"store-{name}"
        if not (out / f"shard-{n - 1}.h5").exists():
            with torch.inference_mode():
                encode_to_shards(
                    c / f"acts-{name}.h5",
                    sae,
                    width,
                    shard,
                    [str(out / f"shard-{i}.h5") for i in range(n)],
                    [str(out / f"stats-{i}.parquet") for i in range(n)],
                )
            done.append(f"store-{name}")
    gguf = c / "llm" / f"{a['judge']}.gguf"
    if not gguf.exists():
        from interpflow.llm.local_parts import assemble_local_model

        assemble_local_model(a["judge"], gguf)
        done.append("judge")
    return {"built": done}


def task_cache(a: dict) -> dict:
    """interpflow's latent caching: forward cut after the layer -> HDF5, then encode -> sparse shards."""
    import torch

    from interpflow.activations import cache_activations
    from interpflow.latents import encode_to_shards
    from interpflow.sae.model import TopKSAE

    out = Path(a["out"])
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    fwd = cache_activations(a["tokens"], a["model_spec"], a["model_cfg"], [a["hookpoint"]], [out / "acts.h5"])
    t1 = time.perf_counter()
    sae = TopKSAE.load(a["sae"]).eval()
    n = math.ceil(sae.width / a["shard_size"])
    shards = [out / f"shard-{i}.h5" for i in range(n)]
    with torch.inference_mode():
        enc = encode_to_shards(
            out / "acts.h5",
            sae,
            sae.width,
            a["shard_size"],
            [str(p) for p in shards],
            [str(out / f"stats-{i}.parquet") for i in range(n)],
        )
    wall = time.perf_counter() - t0
    seconds = fwd["seconds"] + enc["seconds"]
    store = dir_bytes(shards)
    if not a.get("keep"):
        shutil.rmtree(out)
    return {
        "tokens": fwd["tokens"],
        "seconds": seconds,
        "seconds_forward": fwd["seconds"],
        "seconds_encode": enc["seconds"],
        "seconds_wall_incl_load": wall,
        "seconds_model_load": t1 - t0 - fwd["seconds"],
        "tokens_per_s": fwd["tokens"] / seconds,
        "nonzeros": enc["nonzeros"],
        "store_bytes": store,
        "bytes_per_nonzero": store / enc["nonzeros"],
    }


def task_bare(a: dict) -> dict:
    """A bare forward pass: the model truncated after the hooked layer, nothing stored."""
    import h5py
    import torch
    from transformers import AutoModel

    layer = int(a["hookpoint"].rsplit(".", 1)[1])
    model = AutoModel.from_pretrained(a["model_dir"], dtype=torch.float32).eval()
    model.layers = model.layers[: layer + 1]
    with h5py.File(a["tokens"], "r") as f:
        tokens = torch.from_numpy(f["tokens"][:].astype(np.int64))
    b = a["batch_size"]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(tokens), b):
            model(input_ids=tokens[i : i + b], use_cache=False)
    seconds = time.perf_counter() - t0
    return {"tokens": tokens.numel(), "seconds": seconds, "tokens_per_s": tokens.numel() / seconds}


def eval_fvu(sae, path: str, batch: int = 4096) -> tuple[float, float]:
    """FVU of an interpflow SAE on the non-BOS rows of an activations file (one mean over all rows), and
    the fraction of its latents that never fire there."""
    import h5py
    import torch

    with h5py.File(path, "r") as f:
        x = f["activations"][:]
        ctx = int(f.attrs["ctx_len"])
    x = torch.from_numpy(x[np.arange(len(x)) % ctx != 0])
    err, fired = 0.0, torch.zeros(sae.width, dtype=torch.bool)
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            xb = x[i : i + batch]
            values, indices = sae.encode(xb)
            fired[indices[values > 0]] = True
            err += float((xb - sae.decode(values, indices)).pow(2).sum())
    return err / float((x - x.mean(0)).pow(2).sum()), 1 - float(fired.float().mean())


def task_train(a: dict) -> dict:
    """interpflow's SAE training on cached activations; FVU on held-out activations."""
    from interpflow.sae.model import TopKSAE
    from interpflow.sae.step import train_sae_from_h5

    out = Path(a["out"])
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    metrics = train_sae_from_h5(a["acts"], a["sae_cfg"], out, device="cpu")
    wall = time.perf_counter() - t0
    fvu, dead = eval_fvu(TopKSAE.load(out).eval(), a["eval_acts"])
    shutil.rmtree(out)
    return {
        "tokens": metrics["tokens_trained"],
        "seconds": wall,
        "seconds_loop": metrics["seconds"],
        "tokens_per_s": metrics["tokens_trained"] / wall,
        "train_fvu": metrics["fvu"],
        "eval_fvu": fvu,
        "eval_dead_fraction": dead,
    }


def task_sample(a: dict) -> dict:
    """interpflow's example construction for one shard (read, sample, write), as the workflow runs it."""
    import h5py  # noqa: F401  (imported before the clock starts, as the peers' modules are)
    import pandas as pd
    import pyarrow.parquet  # noqa: F401
    import tqdm.auto  # noqa: F401

    from interpflow.sampling.step import run_sampling

    out = Path(a["out"])
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run_sampling(
        a["tokens"], a["shard"], a["vocab"], a["cfg"], out / "examples.parquet", out / "latents.parquet"
    )
    seconds = time.perf_counter() - t0
    latents = pd.read_parquet(out / "latents.parquet")
    n_rows = len(pd.read_parquet(out / "examples.parquet", columns=["latent"]))
    if not a.get("keep"):
        shutil.rmtree(out)
    return {
        "latents": len(latents),
        "latents_ok": int((latents["status"] == "ok").sum()),
        "example_rows": n_rows,
        "seconds": seconds,
        "latents_per_s": len(latents) / seconds,
    }


def task_sample_fixed(a: dict) -> dict:
    """The sampler's steps (read tokens, vocabulary and shard; sample; write) on a fixed list of latents,
    so that runs on different corpus sizes build the same number of examples."""
    import h5py

    from interpflow.latents import read_shard
    from interpflow.sampling.examples import sample_examples
    from interpflow.sampling.vocab import read_vocab
    from interpflow.store import write_parquet

    out = Path(a["out"])
    t0 = time.perf_counter()
    with h5py.File(a["tokens"], "r") as f:
        tokens = f["tokens"][:]
    shard = read_shard(a["shard"])
    examples, latents = sample_examples(tokens, read_vocab(a["vocab"]), shard, a["cfg"], a["latents"])
    write_parquet(examples, out / "examples.parquet")
    seconds = time.perf_counter() - t0
    shutil.rmtree(out)
    return {
        "tokens": int(tokens.size),
        "shard_nonzeros": int(shard.values.size),
        "latents_ok": int((latents["status"] == "ok").sum()),
        "example_rows": len(examples),
        "seconds": seconds,
    }


def shared_prefix(lists: list[list[int]]) -> int:
    """Length of the longest common prefix of token lists."""
    n = min(len(x) for x in lists)
    first = np.asarray(lists[0][:n])
    for x in lists[1:]:
        diff = np.flatnonzero(first != np.asarray(x[:n]))
        n = int(diff[0]) if diff.size else n
        first = first[:n]
    return n


def task_llm_tokens(a: dict) -> dict:
    """Judge prompt tokens per latent (detection + fuzzing) counted with the judge's own tokenizer."""
    import pandas as pd

    from interpflow.llm.local_model import LocalChatModel
    from interpflow.scoring.judge import build_prompts

    examples = pd.read_parquet(a["examples"])
    test = examples[examples["split"] == "test"]
    n_act = test[test["activating"]].groupby("latent").size()
    n_non = test[~test["activating"]].groupby("latent").size()
    full = sorted(set(n_act.index[n_act >= a["n_test"]]) & set(n_non.index[n_non >= a["n_test"]]))
    latents = full[: a["max_latents"]]
    if not latents:
        raise ValueError(f"no latent in {a['examples']} has {a['n_test']} + {a['n_test']} test windows")
    test = test[test["latent"].isin(latents)]
    explanations = pd.DataFrame({"latent": latents, "explanation": a["explanation"], "status": "ok"})
    judge = LocalChatModel(a["gguf"], n_ctx=512)
    per_kind = {}
    try:
        for kind in ("detection", "fuzzing"):
            cfg = {
                "kind": kind,
                "examples_per_prompt": a["examples_per_prompt"],
                "seed": 0,
                "max_activating": a["n_test"],
                "max_nonactivating": a["n_test"],
            }
            requests, meta, _ = build_prompts(test, explanations, cfg)
            toks = [judge.prompt_tokens(r) for r in requests]
            lat = np.array([m[0] for m in meta])
            total = np.array([sum(len(t) for t, m in zip(toks, lat, strict=True) if m == x) for x in latents])
            prefix = shared_prefix(toks)  # the system message and chat header, the same in every prompt
            n_prompts = np.array([(lat == x).sum() for x in latents])
            per_kind[kind] = {
                "tokens_per_latent": float(np.median(total)),
                "prompts_per_latent": float(np.median(n_prompts)),
                "shared_prefix_tokens": prefix,
                # what a provider with prefix caching bills at full price: the prefix once per latent
                "uncached_tokens_per_latent": float(np.median(total - (n_prompts - 1) * prefix)),
            }
    finally:
        judge.close()
    both = {
        k: sum(v[k] for v in per_kind.values()) for k in ("tokens_per_latent", "uncached_tokens_per_latent")
    }
    return {"latents": len(latents), "per_scorer": per_kind, **both}


def task_concurrency(a: dict) -> dict:
    """The LLM client's concurrency benchmark, benchmarks/llm_concurrency.py, imported by its path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("llm_concurrency", a.pop("path"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.measure(**a))


TASKS = {
    "prepare": task_prepare,
    "cache": task_cache,
    "bare": task_bare,
    "train": task_train,
    "sample": task_sample,
    "sample_fixed": task_sample_fixed,
    "llm_tokens": task_llm_tokens,
    "concurrency": task_concurrency,
}


def main() -> None:
    """Run one task and print its result (with peak RSS) as the last line of stdout."""
    import torch

    task, args = sys.argv[1], json.loads(sys.argv[2])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    result = TASKS[task](args)
    result["peak_rss_mb"] = peak_rss_mb()
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
