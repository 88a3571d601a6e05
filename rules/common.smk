import math

from interpflow.config import check_config, run_combinations

check_config(config)

PKG = "src/interpflow"

NAME = "[A-Za-z0-9][A-Za-z0-9_.-]*"


wildcard_constraints:
    corpus=NAME,
    model=NAME,
    hookpoint=NAME,
    dictionary=NAME,
    sampler=NAME,
    explainer=NAME,
    scorer=NAME,
    shard=r"\d+",


def code(*modules):
    """The package modules a rule runs, as inputs, so editing one reruns exactly its rules."""
    return [f"{PKG}/{m}.py" for m in ("__init__", "store", *modules)]


def slice_of(section, key):
    """A params function handing a rule only config[section][wildcard value]."""
    return lambda w: config[section][getattr(w, key)]


def n_shards(dictionary):
    return math.ceil(config["dictionaries"][dictionary]["width"] / config["latent_store"]["shard_size"])


def shards(w):
    return range(n_shards(w.dictionary))


def llm_gguf(llm):
    """The GGUF file an in-process local/<name> model needs, or nothing for API models."""
    if not llm["model"].startswith("local/"):
        return []
    return llm["gguf"] or f"results/llm/{llm['model'].removeprefix('local/')}.gguf"


def scored_shards():
    """One record per (run combination, shard): its wildcard values and its metrics and explanations files."""
    records = []
    for c in run_combinations(config):
        for shard in range(n_shards(c["dictionary"])):
            w = dict(c, shard=shard)
            records.append(
                dict(
                    w,
                    metrics=expand(rules.score.output.metrics, **w)[0],
                    explanations=expand(rules.explain.output[0], **w)[0],
                )
            )
    return records


def all_targets():
    return ["results/summary/latents.parquet", "results/summary/scores.png", "results/summary/latents.html"]
