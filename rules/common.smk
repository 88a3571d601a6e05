import ast
import functools
import hashlib
import json
import math
import os
import re
from pathlib import Path

from interpflow.config import check_config, layer_below, run_combinations, wants_gpu
from interpflow.config import Untracked, known_layers, split_transport, used_config
from interpflow.defaults import scorer_slice
from interpflow.config import layer_pairs as config_layer_pairs

check_config(config, known_layers(config))

PKG = "src/interpflow"

NAME = "[A-Za-z0-9][A-Za-z0-9_.-]*"


HOOKPOINT = r"(?:resid_post|attn_out|mlp_out|mlp_in|mlp_act)\.\d+"


wildcard_constraints:
    hookpoint_a=HOOKPOINT,
    hookpoint_b=HOOKPOINT,
    corpus=NAME,
    model=NAME,
    hookpoint=NAME,
    dictionary=NAME,
    sampler=NAME,
    explainer=NAME,
    scorer=NAME,
    shard=r"\d+",


def module_file(name):
    """The file of an interpflow module or package (dotted name) under src/, or None for a non-module name."""
    base = os.path.join("src", *name.split("."))
    return next((f for f in (f"{base}.py", os.path.join(base, "__init__.py")) if os.path.isfile(f)), None)


@functools.cache
def imported_modules(path, package):
    """The interpflow modules one file imports anywhere, inside functions too, read with ast (the file never
    runs). `package`: the dotted package its relative imports start from."""
    found = set()
    for node in ast.walk(ast.parse(Path(path).read_text(), filename=path)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")[: len(package.split(".")) + 1 - node.level] if node.level else []
            base = ".".join([*parts, *([node.module] if node.module else [])])
            found.update([base, *(f"{base}.{a.name}" for a in node.names)])  # `from pkg import module`
    return frozenset(n for n in found if n.split(".")[0] == "interpflow" and module_file(n))


def code_files(script):
    """The package files a rule's script runs (`script` as written in its script: line): its interpflow
    import closure, derived so it cannot drift."""
    names, todo = set(), list(imported_modules(os.path.normpath(os.path.join("rules", script)), ""))
    while todo:
        name = todo.pop()
        if name not in names:
            names.add(name)
            f = module_file(name)
            package = name if f.endswith("__init__.py") else name.rpartition(".")[0]
            todo += [name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)]  # parent packages run too
            todo += imported_modules(f, package)
    return sorted({f"{PKG}/__init__.py", *map(module_file, names)})


@functools.cache
def file_digest(path):
    """sha256 of a file's bytes, 16 hex digits."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


@functools.cache
def code_of(script):
    """A digest (16 hex digits) of the paths and contents of the package files a rule's script runs
    (code_files), for its params: Snakemake reruns a job whose params changed, so editing a module reruns
    exactly the rules that run it. A param, not inputs: as inputs, ~30 files on each of 3,000 jobs made
    Snakemake plan a million-latent run ~30% slower."""
    files = " ".join(f"{f}:{file_digest(f)}" for f in code_files(script))
    return hashlib.sha256(files.encode()).hexdigest()[:16]


def slice_of(section, key):
    """A params function handing a rule only config[section][wildcard value]."""
    return lambda w: config[section][getattr(w, key)]


def shard_size(dictionary):
    """Latents per shard file of a dictionary: its own setting, else the store's."""
    return config["dictionaries"][dictionary]["shard_size"] or config["latent_store"]["shard_size"]


def n_shards(dictionary):
    return math.ceil(config["dictionaries"][dictionary]["width"] / shard_size(dictionary))


def names_of(section, *kinds):
    """A wildcard regex matching exactly the entries of a section with one of these kinds."""
    names = [n for n, entry in config[section].items() if entry.get("kind", "llm") in kinds]
    return "|".join(re.escape(n) for n in names) or "(?!)"


def gpu_count(w):
    """The GPUs a model-running job declares: the model's device setting decides."""
    return wants_gpu(config["models"][w.model]["device"], config["auto_gpu"])


def run_hookpoints():
    """{(corpus, model): sorted hookpoints} over every run of the config."""
    groups = {}
    for c in run_combinations(config):
        groups.setdefault((c["corpus"], c["model"]), set()).add(c["hookpoint"])
    return {key: sorted(hps) for key, hps in groups.items()}


def activation_rules():
    """(name, corpus, model, hookpoints) of each activation-caching rule. First the one per hookpoint, for any
    corpus and model; then one per (corpus, model) making every hookpoint still missing in one pass."""
    rules_ = [("cache_activations", NAME, NAME, ["{hookpoint}"])]
    for (corpus, model), hps in run_hookpoints().items():
        missing = [h for h in hps if not os.path.exists(f"results/{corpus}/{model}/{h}/activations.h5")]
        if len(missing) > 1:
            name = re.sub(r"\W", "_", f"cache_activations_{corpus}_{model}")
            rules_.append((name, re.escape(corpus), re.escape(model), missing))
    return rules_


def dictionary_source(w):
    """What a dictionary is made from: the trained SAE, the subject model (neurons) or the files on disk."""
    d = config["dictionaries"][w.dictionary]
    if d["kind"] == "topk-sae":
        return expand(rules.train_sae.output.cfg, **w)
    if d["kind"] == "neurons":
        return f"results/models/{w.model}/model.json"
    if d["kind"] == "pretrained":
        layer = w.hookpoint.rsplit(".", 1)[1]
        return d["path"].format(layer=layer, hookpoint=w.hookpoint)
    return []


@functools.cache  # the config is read-only: planning a million latents asks once per shard
def layer_pairs():
    """One record per pair of layers aligned (interpflow.config.layer_pairs), with its two output files."""
    return [
        dict(
            w,
            similarity=expand(rules.compare_layer_explanations.output[0], **w)[0],
            matches=expand(rules.match_layers.output[0], **w)[0],
        )
        for w in config_layer_pairs(config)
    ]


def match_latents_dirs(w):
    """Both layers' latent stores, read only when activation correlation enters the matching."""
    if not config["cross_layer"]["corr_weight"]:
        return []
    base = f"results/{w.corpus}/{w.model}"
    return [f"{base}/{h}/{w.dictionary}/latents" for h in (w.hookpoint_a, w.hookpoint_b)]


def shard_explanations(w, hookpoint):
    """Every shard's explanations of one dictionary at one hookpoint."""
    return expand(
        "results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explanations-{shard}.parquet",
        corpus=w.corpus, model=w.model, hookpoint=hookpoint, dictionary=w.dictionary, sampler=w.sampler,
        explainer=w.explainer, shard=range(n_shards(w.dictionary)),
    )  # fmt: skip


def partner_matches(w):
    """With latents.partners, the matches from the nearest lower layer of the same site in a run, if any."""
    if not config["samplers"][w.sampler]["latents"]["partners"]:
        return []
    a = layer_below(config, w.corpus, w.model, w.sampler, w.dictionary, w.hookpoint)
    if a is None:
        return []
    return expand(rules.match_layers.output[0], corpus=w.corpus, model=w.model, dictionary=w.dictionary,
                  hookpoint_a=a, hookpoint_b=w.hookpoint)  # fmt: skip


def answers_of(entry):
    """An explainer or scorer entry as far as it shapes the answers: its llm block without the transport
    settings (api_base, timeouts, ...; those go to the job untracked, `transport_of`, so changing them never
    reruns it and deletes a finished output), with the run's budget when one is set."""
    budget = {k: v for k, v in config["budget"].items() if v is not None}
    entry = split_transport(entry)[0]
    if not (budget and entry.get("llm")):
        return entry
    return dict(entry, llm=dict(entry["llm"], budget=budget))


def transport_of(entry, threads):
    """The entry's LLM transport settings, as a param Snakemake does not compare; an in-process model runs
    on the job's threads (llama.cpp would pick its own count: half the host's cores for generation)."""
    transport = split_transport(entry)[1]
    if entry["llm"]["model"].startswith("local/"):
        transport.value["n_threads"] = threads
    return transport


def estimate_params():
    """The estimate's config (only the entries runs use) untracked, and a short digest of it that is tracked:
    a change reruns the estimate (of a scorer, only a key its kind reads), and the reason line names a digest
    instead of printing the config."""
    used = used_config(config)
    tracked = used | {"scorers": {n: scorer_slice(e) for n, e in used["scorers"].items()}}  # what each reads
    digest = hashlib.sha256(json.dumps(tracked, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Untracked(used), digest


ESTIMATE_PARAMS = estimate_params()  # once per parse: the estimate rule reads both


def scorer_params(w):
    """A scorer job's config: the keys its kind reads (interpflow.defaults.scorer_slice) and its name."""
    return dict(scorer_slice(config["scorers"][w.scorer]), name=w.scorer)


def scorer_gpu(w):
    """The GPUs a surprisal or intervention job declares: its scorer model's device decides."""
    return max(gpu_count(w), wants_gpu(scorer_model_cfg(w)["device"], config["auto_gpu"]))


def scorer_model_name(w):
    """The models entry a surprisal or intervention scorer reads text with: its own, or the subject."""
    return config["scorers"][w.scorer].get("scorer_model") or w.model


def scorer_model(w):
    """The prepared model a surprisal or intervention scorer reads text with."""
    return f"results/models/{scorer_model_name(w)}/model.json"


def scorer_model_cfg(w):
    """The models entry (dtype, device, ...) of that model, which it is loaded with."""
    return config["models"][scorer_model_name(w)]


def llm_gguf(llm):
    """The GGUF file an in-process local/<name> model needs, or nothing for API models."""
    if not llm["model"].startswith("local/"):
        return []
    return llm["gguf"] or f"results/llm/{llm['model'].removeprefix('local/')}.gguf"


def subject_kind(dictionary, explainer):
    """What a score describes, for comparing subjects: the kind of dictionary, or a baseline explainer."""
    e, d = config["explainers"][explainer].get("kind", "llm"), config["dictionaries"][dictionary]
    if d["kind"] == "neurons":
        label = "neurons" if d["k"] is None else f"neurons top-{d['k']}"
    else:
        label = {"topk-sae": "trained SAE", "random-sae": "random SAE"}.get(d["kind"], f"{d['format']} SAE")
    return label if e == "llm" else f"{label}, {dict(random='random explanation').get(e, e)}"


@functools.cache  # three rule sections ask; expand() per shard is slow at a million latents
def scored_shards():
    """One record per (run combination, shard): its wildcard values, its subject, the explainer's kind (llm,
    random, top-tokens: what the summary pairs LLM against baseline by) and its metrics and explanations files.
    """
    records = []
    for c in run_combinations(config):
        for shard in range(n_shards(c["dictionary"])):
            w = dict(c, shard=shard)
            records.append(
                dict(
                    w,
                    subject=subject_kind(c["dictionary"], c["explainer"]),
                    explainer_kind=config["explainers"][c["explainer"]].get("kind", "llm"),
                    metrics=expand(rules.score.output.metrics, **w)[0],
                    explanations=expand(rules.explain.output[0], **w)[0],
                )
            )
    return records


def explanations_file(w):
    """The table a `file` explainer reads, its path filled in for this hookpoint and dictionary."""
    path = config["explainers"][w.explainer].get("path")
    if not path:
        raise ValueError(f"explainers.{w.explainer}.path: required for kind 'file'")
    layer = w.hookpoint.rsplit(".", 1)[1]
    return path.format(hookpoint=w.hookpoint, layer=layer, dictionary=w.dictionary)


def trained_saes():
    """One record per SAE trained in the runs (topk-sae at a hookpoint): its keys and its cfg.json."""
    keys, seen = ("corpus", "model", "hookpoint", "dictionary"), {}
    for c in run_combinations(config):
        if config["dictionaries"][c["dictionary"]]["kind"] == "topk-sae":
            key = tuple(c[k] for k in keys)
            seen[key] = dict(zip(keys, key), cfg="results/{}/{}/{}/{}/sae/cfg.json".format(*key))
    return list(seen.values())


def all_targets():
    return [
        *rules.summarize.output,
        *(rules.sae_training.output if trained_saes() else []),
        *(rules.summarize_crosslayer.output if layer_pairs() else []),
        *rules.browser.output,
        *export_targets(),
        *(rules.paper.output if config["paper"]["reference"] else []),  # the paper's tables, where set
        *(rules.agreement.output if rating_files() else []),  # once someone has rated in `interpflow serve`
    ]


# The browser (browser.smk) and exports (export.smk): a unit is corpus/model/hookpoint/dictionary/sampler.

UNIT = "{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}"


@functools.cache  # asked once per shard by shard_files
def browser_units():
    """{unit wildcards: [(explainer, scorer), ...]} over every run combination, in config order."""
    units = {}
    for c in run_combinations(config):
        key = tuple(c[k] for k in ("corpus", "model", "hookpoint", "dictionary", "sampler"))
        units.setdefault(key, []).append((c["explainer"], c["scorer"]))
    return units


def shard_files(corpus, model, hookpoint, dictionary, sampler, shard):
    """Everything one shard of a unit shows (the browser's pages, the Neuronpedia export), as paths."""
    w = dict(corpus=corpus, model=model, hookpoint=hookpoint, dictionary=dictionary, sampler=sampler)
    base, store = UNIT.format(**w), f"results/{corpus}/{model}/{hookpoint}/{dictionary}/latents"
    pairs = browser_units()[tuple(w.values())]
    partners = []
    for p in layer_pairs():
        run = (p["corpus"], p["model"], p["dictionary"], p["sampler"])
        # partners explained by this unit's own sampler
        if run == (corpus, model, dictionary, sampler) and hookpoint in (p["hookpoint_a"], p["hookpoint_b"]):
            side = "a" if hookpoint == p["hookpoint_a"] else "b"
            other = p["hookpoint_b" if side == "a" else "hookpoint_a"]
            partners.append(dict(matches=p["matches"], side=side, other_hookpoint=other,
                                 other_unit=UNIT.format(**dict(w, hookpoint=other))))  # fmt: skip
    return dict(
        unit=dict(w, shard=int(shard)),
        examples=f"results/{base}/examples/shard-{shard}.parquet",
        selected=f"results/{base}/examples/latents-{shard}.parquet",
        stats=f"{store}/stats-{shard}.parquet",
        store=f"{store}/shard-{shard}.h5",
        tokens=f"results/{corpus}/{model}/tokens.h5",
        vocab=f"results/models/{model}/vocab.parquet",
        explainers=[
            dict(name=e, kind=config["explainers"][e].get("kind", "llm"), subject=subject_kind(dictionary, e),
                 explanations=f"results/{base}/{e}/explanations-{shard}.parquet")
            for e in dict.fromkeys(e for e, _ in pairs)
        ],  # fmt: skip
        scores=[
            dict(explainer=e, scorer=s, kind=config["scorers"][s]["kind"],
                 model=(config["scorers"][s].get("llm") or {}).get("model"),
                 metrics=f"results/{base}/{e}/{s}/metrics-{shard}.parquet",
                 predictions=f"results/{base}/{e}/{s}/predictions-{shard}.parquet")
            for e, s in pairs
        ],  # fmt: skip
        partners=list({p["matches"] + p["side"]: p for p in partners}.values()),
    )


def browser_shard_files(w):
    return shard_files(w.corpus, w.model, w.hookpoint, w.dictionary, w.sampler, w.shard)


def browser_shard_inputs(w):
    f = browser_shard_files(w)
    return [
        f["examples"], f["selected"], os.path.dirname(f["store"]), f["tokens"], f["vocab"],
        *(e["explanations"] for e in f["explainers"]),
        *(p for s in f["scores"] for p in (s["metrics"], s["predictions"])),
        *(p["matches"] for p in f["partners"]),
    ]  # fmt: skip


def unit_ids():
    """The id (a path) of every unit: corpus/model/hookpoint/dictionary/sampler."""
    return ["/".join(u) for u in browser_units()]


def browser_shards():
    """Every shard folder of the browser."""
    return [
        f"results/browser/units/{u}/shard-{i}" for u in unit_ids() for i in range(n_shards(u.split("/")[3]))
    ]


def rating_files():
    """The raters' files so far: a new rating reruns only the agreement tables."""
    return sorted(str(p) for p in Path("results/ratings").glob("*.jsonl"))


NEURONPEDIA_READS = ("unit", "examples", "selected", "stats", "explainers", "scores")


def neuronpedia_shards(w):
    """Every shard of the unit, as the browser's pages read it (shard_files), without what the export does
    not read (partners, the store): a new layer's partner links rerun the pages, not the export."""
    unit = [w.corpus, w.model, w.hookpoint, w.dictionary, w.sampler]
    files = [shard_files(*unit, shard) for shard in range(n_shards(w.dictionary))]
    return [{key: f[key] for key in NEURONPEDIA_READS} for f in files]


def neuronpedia_options(w):
    np_cfg = config["export"]["neuronpedia"]
    return dict(model_id=np_cfg["model_ids"].get(w.model), features_per_batch=np_cfg["features_per_batch"])


def export_targets():
    table = [*rules.export_table.output]
    if not config["export"]["neuronpedia"]["enabled"]:
        return table
    return table + [f"results/export/neuronpedia/{u}" for u in unit_ids()]
