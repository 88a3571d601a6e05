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
rule explain_random:
    input:
        source=lambda w: expand(
            rules.explain.output[0], **dict(w, explainer=config["explainers"][w.explainer]["source"])
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
