import math
import re

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


def names_of(section, *kinds):
    """A wildcard regex matching exactly the entries of a section with one of these kinds."""
    names = [n for n, entry in config[section].items() if entry.get("kind", "llm") in kinds]
    return "|".join(re.escape(n) for n in names) or "(?!)"


def scorer_model(w):
    """The prepared model a surprisal or intervention scorer reads text with: its own, or the subject."""
    name = config["scorers"][w.scorer].get("scorer_model") or w.model
    return f"results/models/{name}/model.json"


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
    return rules.summarize.output
