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
    conda:
        "../envs/interpflow.yaml"
    threads: 2
    resources:
        mem_mb=6000,
    params:
        cfg=slice_of("explainers", "explainer"),
        cache_dir=config["llm_cache"],
    script:
        "../workflow/scripts/explain.py"
