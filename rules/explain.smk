rule explain:
    input:
        examples="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/examples/shard-{shard}.parquet",
        latents="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/examples/latents-{shard}.parquet",
        gguf=lambda w: llm_gguf(config["explainers"][w.explainer]["llm"]),
        code=code("explain", "prompts", "llm", "local_llm"),
    output:
        "results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explanations-{shard}.parquet",
    log:
        "logs/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explain-{shard}.log",
    wildcard_constraints:
        explainer=names_of("explainers", "llm"),
    conda:
        "../envs/interpflow.yaml"
    threads: 2
    resources:
        mem_mb=lambda w, attempt: 6000 * attempt,
    params:
        cfg=lambda w: with_budget(config["explainers"][w.explainer]),
        cache_dir=config["llm_cache"],
    script:
        "../workflow/scripts/explain.py"


# Baseline: the most characteristic activating tokens, no LLM.
rule explain_top_tokens:
    input:
        examples="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/examples/shard-{shard}.parquet",
        latents="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/examples/latents-{shard}.parquet",
        code=code("baselines", "explain", "prompts"),
    output:
        "results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explanations-{shard}.parquet",
    log:
        "logs/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explain-{shard}.log",
    wildcard_constraints:
        explainer=names_of("explainers", "top-tokens"),
    conda:
        "../envs/interpflow.yaml"
    params:
        cfg=slice_of("explainers", "explainer"),
    script:
        "../workflow/scripts/explain_top_tokens.py"


# Baseline: each latent gets another latent's explanation from a source explainer (the floor of every score).
# Donors come from every shard of the dictionary at this hookpoint (`pool`), so each job draws the same
# derangement of the union and a shard of few latents is not limited to its own.
rule explain_random:
    input:
        source=lambda w: expand(
            rules.explain.output[0], **dict(w, explainer=config["explainers"][w.explainer]["source"])
        ),
        pool=lambda w: expand(
            rules.explain.output[0],
            **dict(
                w,
                explainer=config["explainers"][w.explainer]["source"],
                shard=range(n_shards(w.dictionary)),
            ),
        ),
        code=code("baselines", "explain", "prompts"),
    output:
        "results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explanations-{shard}.parquet",
    log:
        "logs/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explain-{shard}.log",
    wildcard_constraints:
        explainer=names_of("explainers", "random"),
    conda:
        "../envs/interpflow.yaml"
    params:
        cfg=slice_of("explainers", "explainer"),
    script:
        "../workflow/scripts/explain_random.py"


# Explanations read from a table on disk (latent, explanation): e.g. the validity benchmark's oracle.
def explanations_file(w):
    """The table a `file` explainer reads, its path filled in for this hookpoint and dictionary."""
    path = config["explainers"][w.explainer].get("path")
    if not path:
        raise ValueError(f"explainers.{w.explainer}.path: required for kind 'file'")
    layer = w.hookpoint.rsplit(".", 1)[1]
    return path.format(hookpoint=w.hookpoint, layer=layer, dictionary=w.dictionary)


rule explain_file:
    input:
        latents="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/examples/latents-{shard}.parquet",
        table=explanations_file,
        code=code("file_explainer", "explain"),
    output:
        "results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explanations-{shard}.parquet",
    log:
        "logs/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explain-{shard}.log",
    wildcard_constraints:
        explainer=names_of("explainers", "file"),
    conda:
        "../envs/interpflow.yaml"
    script:
        "../workflow/scripts/explain_file.py"
