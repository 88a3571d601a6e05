"""Which explainer lets a small model name a token-level property (issue 13, "Explanations"), measured.

On the planted benchmark's dictionary (run `make validity` first, at least up to its latent store), samples
each planted latent's windows with held-out train windows (the validity sampler plus
`n_train_nonactivating`), explains every planted latent under each variant below with the validity
config's LLM explainer, and prints how many explanations name their planted property
(interpflow.planted's regexes) and, for the best-of variants, which candidate won and its held-out AUROC.
Only train windows reach the explainer and the selecting judge. Writes benchmarks/explainers.json.

Usage: python benchmarks/explainers.py [--config config/validity.yaml] [--variants NAME ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
from validity import Layout, say  # noqa: E402  (the same layout and output as the benchmark itself)

OUT = BENCH / "explainers.json"
HELD_OUT = {"n_train_nonactivating": 10}  # non-activating train windows for the best-of judge
# explainer options over the config's own LLM explainer entry
VARIANTS: dict[str, dict] = {
    "llm, 10 examples": {"max_examples": 10},
    "llm, 10 examples + top-token counts": {"max_examples": 10, "top_tokens": 10},
    "best-of by detection": {"max_examples": 10, "select": {"by": "detection"}},
    "best-of by fuzzing": {"max_examples": 10, "select": {"by": "fuzzing"}},
}


def sample(lay: Layout, cfg: dict, out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The planted dictionary's examples under the validity sampler plus held-out train windows."""
    from interpflow.sampling.step import run_sampling

    sampler = cfg["samplers"][lay.run["sampler"]] | HELD_OUT
    store = REPO / f"{lay.base}/{lay.hookpoint}/{lay.dictionary}/latents"
    tokens, _, vocab = (REPO / p for p in lay.upstream())
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for s in lay.shards:
        ex, lat = out / f"shard-{s}.parquet", out / f"latents-{s}.parquet"
        run_sampling(tokens, store / f"shard-{s}.h5", vocab, sampler, ex, lat, latents_dir=store)
        frames.append((pd.read_parquet(ex), pd.read_parquet(lat)))
    return pd.concat([f[0] for f in frames]), pd.concat([f[1] for f in frames])


def per_latent(out: pd.DataFrame, prop: dict) -> list[dict]:
    """Each explained latent: its property, explanation, whether it names the property, what was kept."""
    from interpflow.planted import names_property

    rows = []
    for r in out.to_dict("records"):
        lat, text = int(r["latent"]), r["explanation"]
        auroc = r.get("selection_auroc")
        rows.append(
            dict(
                latent=lat,
                property=prop[lat],
                explanation=text,
                named=names_property(text, prop[lat]),
                candidate=r.get("candidate", "llm"),
                auroc=None if auroc is None else round(auroc, 3),
            )
        )
    return rows


def main() -> int:
    from interpflow.explain import explain_and_select
    from interpflow.llm.client import LLMClient

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "config/validity.yaml")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), help=f"of {list(VARIANTS)}")
    args = ap.parse_args()
    cfg = yaml.safe_load(args.config.read_text())
    lay = Layout(cfg)
    planted = pd.DataFrame(json.loads((lay.planted / "planted.json").read_text())["latents"])
    planted = planted[planted["is_planted"].astype(bool)]
    examples, latents = sample(lay, cfg, REPO / "results/validity/explainers")
    latents = latents[latents["latent"].isin(planted["latent"])]
    prop = dict(zip(planted["latent"], planted["property"], strict=True))
    entry = cfg["explainers"][lay.explainer["llm"]]
    gguf = REPO / "results/llm" / (entry["llm"]["model"].removeprefix("local/") + ".gguf")
    rows = []
    with LLMClient.from_config(entry["llm"], cache_dir=REPO / cfg["llm_cache"], local_gguf=gguf) as client:
        for name in args.variants:
            t0 = time.perf_counter()
            out = explain_and_select(examples, latents, entry | VARIANTS[name], client)
            per = per_latent(out, prop)
            named = sum(x["named"] for x in per)
            rows.append(
                dict(
                    variant=name,
                    options=VARIANTS[name],
                    named=named,
                    of=len(out),
                    latents=per,
                    prompt_tokens=int(out["prompt_tokens"].sum()),
                    seconds=time.perf_counter() - t0,
                )
            )
            say(f"{name}: {named} of {len(out)} name their property")
    say("", "| variant | named | prompt tokens | candidates kept |", "|---|---|---|---|")
    for r in rows:
        kept = pd.Series([x["candidate"] for x in r["latents"]]).value_counts().to_dict()
        say(f"| {r['variant']} | {r['named']} of {r['of']} | {r['prompt_tokens']} | {kept} |")
    for r in rows:
        say("", f"{r['variant']}:", *(f"  {x['property']}: {x['candidate']} {x['auroc']} {x['explanation']!r}"
                                      for x in r["latents"]))  # fmt: skip
    OUT.write_text(json.dumps(dict(config=args.config.name, rows=rows), indent=2) + "\n")
    say(f"\nwritten: {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
