rule score:
    input:
        examples="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/examples/shard-{shard}.parquet",
        explanations="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explanations-{shard}.parquet",
        gguf=lambda w: llm_gguf(config["scorers"][w.scorer]["llm"]),
        code=code("scorers", "metrics", "prompts", "llm", "local_llm"),
    output:
        predictions="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/{scorer}/predictions-{shard}.parquet",
        metrics="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/{scorer}/metrics-{shard}.parquet",
    log:
        "logs/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/{scorer}/score-{shard}.log",
    conda:
        "../envs/interpflow.yaml"
    threads: 2
    resources:
        mem_mb=6000,
    params:
        cfg=lambda w: dict(config["scorers"][w.scorer], name=w.scorer),
        cache_dir=config["llm_cache"],
    script:
        "../workflow/scripts/score.py"
