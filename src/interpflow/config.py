"""Cross-checks of a validated config (the JSON schema checks each key) and the runs it asks for."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path

from interpflow.defaults import SCHEMA, read_yaml

RUN_LISTS = {
    "hookpoints": None,
    "dictionaries": "dictionaries",
    "explainers": "explainers",
    "scorers": "scorers",
}
LLM_EXPLAINERS = ("llm",)
LLM_SCORERS = ("detection", "fuzzing", "simulation")
RUN_NAMES = {"corpus": "corpora", "model": "models", "sampler": "samplers"}




def validate_schema(config: dict, schema_path: str | os.PathLike = SCHEMA) -> None:
    """Check the config against the JSON schema and fill in its defaults (snakemake.utils.validate), but
    fail with one line per problem naming the key, not Snakemake's dump of the whole schema."""
    import jsonschema
    from snakemake.utils import validate

    schema = read_yaml(schema_path)
    validator = jsonschema.validators.validator_for(schema)(schema)
    problems = []
    for err in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        key = ".".join(str(p) for p in err.absolute_path)
        line = f"{key}: {err.message}" if key else err.message
        if line not in problems:
            problems.append(line)
    if problems:
        raise ValueError("invalid config:\n  " + "\n  ".join(problems))
    validate(config, str(schema_path))


def check_config(config: dict, n_layers: dict[str, int] | None = None) -> None:
    """Raise one ValueError naming every run entry that refers to a name the config does not define, and
    every hookpoint beyond its model's layers where `n_layers` (known_layers) knows the model."""
    problems = _layer_problems(config, n_layers or {})
    for i, run in enumerate(config["runs"]):
        for key, section in RUN_NAMES.items():
            if run[key] not in config[section]:
                problems.append(f"runs[{i}].{key}: '{run[key]}' is not defined under '{section}'")
        for key, section in RUN_LISTS.items():
            for name in run[key] if section else ():
                if name not in config[section]:
                    problems.append(f"runs[{i}].{key}: '{name}' is not defined under '{section}'")
    for name, corpus in config["corpora"].items():
        if corpus["source"] in ("text", "jsonl", "parquet") and not corpus.get("path"):
            problems.append(f"corpora.{name}.path: required for source '{corpus['source']}'")
        if corpus["source"] == "hf" and not corpus.get("hf_name"):
            problems.append(f"corpora.{name}.hf_name: required for source 'hf'")
    for name, model in config["models"].items():
        if model["source"] in ("gguf", "hf") and not model.get("path"):
            problems.append(f"models.{name}.path: required for source '{model['source']}'")
    problems += _dictionary_problems(config)
    for section, kinds in (("explainers", LLM_EXPLAINERS), ("scorers", LLM_SCORERS)):
        for name, entry in config[section].items():
            llm = entry.get("llm")
            if entry.get("kind", "llm") in kinds and llm is None:
                problems.append(f"{section}.{name}.llm: required for kind '{entry.get('kind', 'llm')}'")
            elif llm and llm["model"].startswith("local/") and llm.get("api_base"):
                problems.append(f"{section}.{name}.llm: a local/ model runs in-process and takes no api_base")
    for name, entry in config["explainers"].items():
        if (
            entry.get("kind") == "random"
            and config["explainers"].get(entry.get("source"), {}).get("kind", "llm") != "llm"
        ):
            problems.append(
                f"explainers.{name}.source: must name an LLM explainer, got '{entry.get('source')}'"
            )
    problems += _select_problems(config)
    problems += _paper_problems(config)
    for name, entry in config["scorers"].items():
        if entry.get("scorer_model") and entry["scorer_model"] not in config["models"]:
            problems.append(
                f"scorers.{name}.scorer_model: '{entry['scorer_model']}' is not defined under 'models'"
            )
    if problems:
        raise ValueError("invalid config:\n  " + "\n  ".join(dict.fromkeys(problems)))


def _paper_problems(config: dict) -> list[str]:
    """Every name a `paper` row refers to must be defined (the rows select outputs of this config's runs)."""
    paper, problems = config.get("paper") or {}, []
    rows = [("reference", paper.get("reference") or {})]
    for key in ("subjects", "explainers"):
        rows += [(f"{key}[{i}]", r) for i, r in enumerate(paper.get(key, []))]
    for name, entries in (paper.get("ablations") or {}).items():
        rows += [(f"ablations.{name}[{i}]", r) for i, r in enumerate(entries)]
    if paper.get("intervention_random"):
        rows.append(("intervention_random", paper["intervention_random"]))
    sections = {**RUN_NAMES, "dictionary": "dictionaries", "explainer": "explainers"}
    for where, row in rows:
        for key, section in sections.items():
            if key in row and row[key] not in config[section]:
                problems.append(f"paper.{where}.{key}: '{row[key]}' is not defined under '{section}'")
    # roles naming no scorer are not checked: a role the runs never score is left out of the tables
    listed = any(paper.get(k) for k in ("subjects", "explainers", "judges", "layers"))
    listed = listed or any((paper.get("ablations") or {}).values())
    if listed and not paper.get("reference"):
        problems.append("paper.reference: required when paper lists rows (the setting each row overrides)")
    return problems


def _select_problems(config: dict) -> list[str]:
    """A best-of explainer (`select`) needs held-out train windows from every sampler it runs with."""
    problems = []
    for run in config["runs"]:
        sampler = config["samplers"].get(run["sampler"], {})
        for name in run["explainers"]:
            entry = config["explainers"].get(name, {})
            if entry.get("select") is None:
                continue
            where = f"explainers.{name}.select (with sampler '{run['sampler']}')"
            n_train, shown = sampler.get("n_train", 0), entry.get("max_examples")
            if shown is None or shown >= n_train:
                held = "so some activating train windows stay hidden from the explainer"
                problems.append(f"{where}: needs max_examples < samplers.{run['sampler']}.n_train, {held}")
            if not sampler.get("n_train_nonactivating"):
                problems.append(f"{where}: needs samplers.{run['sampler']}.n_train_nonactivating >= 1")
    return problems


def known_layers(config: dict, results: str | os.PathLike = "results") -> dict[str, int]:
    """Layer counts of the models whose config.json is on disk before any job runs: prepared by an earlier
    run (results/models/<name>/), or a local Hugging Face folder."""
    counts = {}
    for name, model in config["models"].items():
        local = model["source"] == "hf" and model.get("path")
        path = (Path(model["path"]) if local else Path(results) / "models" / name) / "config.json"
        try:
            spec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        n = spec.get("num_hidden_layers", (spec.get("text_config") or {}).get("num_hidden_layers"))
        if isinstance(n, int):
            counts[name] = n
    return counts


def _layer_problems(config: dict, n_layers: dict[str, int]) -> list[str]:
    """Hookpoints whose layer the run's model does not have (issue 15: named before any job runs)."""
    problems = []
    for i, run in enumerate(config["runs"]):
        n = n_layers.get(run["model"])
        beyond = [h for h in run["hookpoints"] if n is not None and site_layer(h)[1] >= n]
        if beyond:
            problems.append(f"runs[{i}].hookpoints: {beyond} beyond the {n} layers (0-{n - 1}) of model "
                            f"'{run['model']}'")  # fmt: skip
    return problems


def _dictionary_problems(config: dict) -> list[str]:
    """Kind-specific keys of each dictionary, and hookpoints a dictionary cannot read."""
    problems = []
    for name, d in config["dictionaries"].items():
        where = f"dictionaries.{name}"
        if d["kind"] in ("topk-sae", "random-sae") and d.get("k") is None:
            problems.append(f"{where}.k: required for kind '{d['kind']}'")
        if d.get("k") is not None and d["k"] > d["width"]:
            problems.append(f"{where}.k: {d['k']} exceeds width {d['width']}")
        if d["kind"] == "pretrained":
            problems += [
                f"{where}.{key}: required for kind 'pretrained'"
                for key in ("format", "path")
                if not d.get(key)
            ]
    for i, run in enumerate(config["runs"]):
        for name in run["dictionaries"]:
            problems += _latents_n_problems(config, run["sampler"], name)
            kind = config["dictionaries"].get(name, {}).get("kind")
            wrong = [h for h in run["hookpoints"] if kind == "neurons" and not h.startswith("mlp_act.")]
            if wrong:
                problems.append(
                    f"runs[{i}]: dictionary '{name}' (neurons) reads MLP neurons (mlp_act.<layer>), "
                    f"not {wrong}"
                )
    return problems


def _latents_n_problems(config: dict, sampler: str, dictionary: str) -> list[str]:
    """latents.n above what a shard holds: a typo that would explain and judge every latent (issue 15)."""
    n = config["samplers"].get(sampler, {}).get("latents", {}).get("n")
    d = config["dictionaries"].get(dictionary)
    if n is None or d is None:
        return []
    per_shard = min(d["width"], d.get("shard_size") or config["latent_store"]["shard_size"])
    if n <= per_shard:
        return []
    return [f"samplers.{sampler}.latents.n: {n} is more than the {per_shard} latents a shard of dictionary "
            f"'{dictionary}' holds; it counts latents per shard (null explains every latent)"]  # fmt: skip


def run_combinations(config: dict) -> Iterator[dict[str, str]]:
    """Yield the wildcard values of each (run, hookpoint, dictionary, explainer, scorer), once each."""
    seen = set()
    for run in config["runs"]:
        for hookpoint, dictionary, explainer, scorer in itertools.product(
            run["hookpoints"], run["dictionaries"], run["explainers"], run["scorers"]
        ):
            combo = dict(
                corpus=run["corpus"],
                model=run["model"],
                hookpoint=hookpoint,
                dictionary=dictionary,
                sampler=run["sampler"],
                explainer=explainer,
                scorer=scorer,
            )
            key = tuple(combo.values())
            if key not in seen:
                seen.add(key)
                yield combo


def wants_gpu(device: str, auto_gpu: str = "host") -> int:
    """1 when a job's device setting asks for CUDA, else 0. 'auto' asks when the host running Snakemake has an
    NVIDIA device (auto_gpu 'host': a workstation), or always (auto_gpu 'node': on a cluster the login node
    seldom has one; the job then uses the GPU of the node it lands on, `models.resolve_device`). Decided
    without importing torch, which would cost every Snakemake start seconds."""
    if device != "auto":
        return int(device.startswith("cuda"))
    return int(auto_gpu == "node" or os.path.exists("/dev/nvidiactl"))


def site_layer(hookpoint: str) -> tuple[str, int]:
    """('resid_post', 6) of 'resid_post.6'."""
    site, layer = hookpoint.rsplit(".", 1)
    return site, int(layer)


def layer_pairs(config: dict) -> list[dict]:
    """Wildcards of each (run, dictionary, same-site hookpoint pair, non-random explainer) aligned across
    layers, with the pair's layer `distance`; none when cross_layer.enabled is false."""
    cl = config["cross_layer"]
    records: dict[tuple, dict] = {}
    for run in config["runs"] if cl["enabled"] else ():
        for a, b in itertools.combinations(sorted(run["hookpoints"], key=site_layer), 2):
            (site_a, layer_a), (site_b, layer_b) = site_layer(a), site_layer(b)
            if site_a != site_b or (cl["max_distance"] and layer_b - layer_a > cl["max_distance"]):
                continue
            for dictionary, explainer in itertools.product(run["dictionaries"], run["explainers"]):
                if config["explainers"][explainer].get("kind", "llm") == "random":
                    continue
                w = dict(corpus=run["corpus"], model=run["model"], dictionary=dictionary, hookpoint_a=a,
                         hookpoint_b=b, sampler=run["sampler"], explainer=explainer)  # fmt: skip
                records[tuple(w.values())] = w | {"distance": layer_b - layer_a}
    return list(records.values())


def layer_below(
    config: dict, corpus: str, model: str, sampler: str, dictionary: str, hookpoint: str
) -> str | None:
    """The nearest lower hookpoint of the same site in a run having this one and this dictionary, if any."""
    site, layer = site_layer(hookpoint)
    below = [
        h
        for run in config["runs"]
        if (run["corpus"], run["model"], run["sampler"]) == (corpus, model, sampler)
        and dictionary in run["dictionaries"]
        and hookpoint in run["hookpoints"]
        for h in run["hookpoints"]
        if site_layer(h)[0] == site and site_layer(h)[1] < layer
    ]
    return max(below, key=site_layer) if below else None


# How an LLM is reached, not what it answers (issue 15): a change of one of these must neither rerun a job
# (Snakemake would delete its finished output first) nor miss the LLM cache.
TRANSPORT_KEYS = ("api_base", "max_concurrency", "max_retries", "timeout_s")


class Untracked:
    """A rule param that Snakemake does not compare between runs (it records only params of builtin types),
    so changing it reruns nothing; it pickles into the job's script like any param."""

    def __init__(self, value):
        self.value = value

    def __eq__(self, other) -> bool:
        return isinstance(other, Untracked) and self.value == other.value

    def __repr__(self) -> str:
        return f"Untracked({self.value!r})"


def split_transport(entry: dict) -> tuple[dict, Untracked]:
    """An explainer or scorer entry without its llm's transport settings, and those settings, untracked."""
    llm = entry.get("llm")
    if not llm:
        return entry, Untracked({})
    answers = {k: v for k, v in llm.items() if k not in TRANSPORT_KEYS}
    return dict(entry, llm=answers), Untracked({k: llm[k] for k in TRANSPORT_KEYS if k in llm})


def with_transport(entry: dict, transport: Untracked) -> dict:
    """The entry of split_transport put back together, as the LLM client needs it."""
    if not transport.value or not entry.get("llm"):
        return entry
    return dict(entry, llm=entry["llm"] | transport.value)


def used_config(config: dict) -> dict:
    """The config restricted to the named entries that some run uses (directly, as a random explainer's
    source, or as a scorer's own model): what an estimate of the runs depends on, and nothing else."""
    sections = ("corpora", "models", "samplers", "dictionaries", "explainers", "scorers")
    used: dict[str, set] = {section: set() for section in sections}
    for run in config["runs"]:
        for key, section in RUN_NAMES.items():
            used[section].add(run[key])
        for key, section in RUN_LISTS.items():
            if section:
                used[section].update(run[key])
    for name in list(used["explainers"]):
        if source := config["explainers"].get(name, {}).get("source"):
            used["explainers"].add(source)
    scorers = [config["scorers"][n] for n in used["scorers"] if n in config["scorers"]]
    used["models"].update(s["scorer_model"] for s in scorers if s.get("scorer_model"))
    return config | {
        section: {n: e for n, e in config[section].items() if n in names} for section, names in used.items()
    }
