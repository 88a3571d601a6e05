rule explain:
    input:
        examples="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/examples/shard-{shard}.parquet",
        latents="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/examples/latents-{shard}.parquet",
        gguf=lambda w: llm_gguf(config["explainers"][w.explainer]["llm"]),
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
        code=code_of("../workflow/scripts/explain.py"),
        cfg=lambda w: answers_of(config["explainers"][w.explainer]),
        transport=lambda w, threads: transport_of(config["explainers"][w.explainer], threads),
        cache_dir=config["llm_cache"],
    script:
        "../workflow/scripts/explain.py"


# Baseline: the most characteristic activating tokens, no LLM.
rule explain_top_tokens:
    input:
        examples="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/examples/shard-{shard}.parquet",
        latents="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/examples/latents-{shard}.parquet",
    output:
        "results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explanations-{shard}.parquet",
    log:
        "logs/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explain-{shard}.log",
    wildcard_constraints:
        explainer=names_of("explainers", "top-tokens"),
    conda:
        "../envs/interpflow.yaml"
    params:
        code=code_of("../workflow/scripts/explain_top_tokens.py"),
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
    output:
        "results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explanations-{shard}.parquet",
    log:
        "logs/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explain-{shard}.log",
    wildcard_constraints:
        explainer=names_of("explainers", "random"),
    conda:
        "../envs/interpflow.yaml"
    params:
        code=code_of("../workflow/scripts/explain_random.py"),
        cfg=slice_of("explainers", "explainer"),
    script:
        "../workflow/scripts/explain_random.py"


# Explanations read from a table on disk (latent, explanation): e.g. the validity benchmark's oracle.
rule explain_file:
    input:
        latents="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/examples/latents-{shard}.parquet",
        table=explanations_file,
    output:
        "results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explanations-{shard}.parquet",
    log:
        "logs/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explain-{shard}.log",
    wildcard_constraints:
        explainer=names_of("explainers", "file"),
    conda:
        "../envs/interpflow.yaml"
    params:
        code=code_of("../workflow/scripts/explain_file.py"),
    script:
        "../workflow/scripts/explain_file.py"
