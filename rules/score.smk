# Judge scorers: an LLM labels test examples (detection, fuzzing) or predicts their activations (simulation).
rule score:
    input:
        examples="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/examples/shard-{shard}.parquet",
        explanations="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explanations-{shard}.parquet",
        gguf=lambda w: llm_gguf(config["scorers"][w.scorer]["llm"]),
    output:
        predictions="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/{scorer}/predictions-{shard}.parquet",
        metrics="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/{scorer}/metrics-{shard}.parquet",
    log:
        "logs/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/{scorer}/score-{shard}.log",
    wildcard_constraints:
        scorer=names_of("scorers", "detection", "fuzzing", "simulation"),
    conda:
        "../envs/interpflow.yaml"
    threads: 2
    resources:
        mem_mb=lambda w, attempt: 6000 * attempt,
    params:
        code=code_of("../workflow/scripts/score.py"),
        cfg=lambda w: answers_of(scorer_params(w)),
        transport=lambda w, threads: transport_of(config["scorers"][w.scorer], threads),
        cache_dir=config["llm_cache"],
    script:
        "../workflow/scripts/score.py"


rule score_embedding:
    input:
        examples="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/examples/shard-{shard}.parquet",
        explanations="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explanations-{shard}.parquet",
    output:
        predictions="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/{scorer}/predictions-{shard}.parquet",
        metrics="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/{scorer}/metrics-{shard}.parquet",
    log:
        "logs/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/{scorer}/score-{shard}.log",
    wildcard_constraints:
        scorer=names_of("scorers", "embedding"),
    conda:
        "../envs/interpflow.yaml"
    threads: 1  # a small embedder: jobs run side by side rather than one on two threads
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
    params:
        code=code_of("../workflow/scripts/score_embedding.py"),
        cfg=scorer_params,
    script:
        "../workflow/scripts/score_embedding.py"


rule score_surprisal:
    input:
        examples="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/examples/shard-{shard}.parquet",
        explanations="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explanations-{shard}.parquet",
        scorer_model=scorer_model,
    output:
        predictions="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/{scorer}/predictions-{shard}.parquet",
        metrics="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/{scorer}/metrics-{shard}.parquet",
    log:
        "logs/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/{scorer}/score-{shard}.log",
    wildcard_constraints:
        scorer=names_of("scorers", "surprisal"),
    conda:
        "../envs/interpflow.yaml"
    threads: 2
    resources:
        mem_mb=lambda w, attempt: 8000 * attempt,
        gpu=scorer_gpu,
    params:
        code=code_of("../workflow/scripts/score_surprisal.py"),
        cfg=scorer_params,
        model_cfg=scorer_model_cfg,
    script:
        "../workflow/scripts/score_surprisal.py"


# Steer the subject model along the latent's decoder direction, from prompts cut out of the latent's own
# activating examples, and ask whether the explanation predicts the change in what it writes (App. G; finds
# output features that context-based scorers miss).
rule score_intervention:
    input:
        examples="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/examples/shard-{shard}.parquet",
        explanations="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/explanations-{shard}.parquet",
        dictionary="results/{corpus}/{model}/{hookpoint}/{dictionary}/dictionary/dictionary.json",
        subject="results/models/{model}/model.json",
        scorer_model=scorer_model,
    output:
        predictions="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/{scorer}/predictions-{shard}.parquet",
        metrics="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/{scorer}/metrics-{shard}.parquet",
    log:
        "logs/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/{explainer}/{scorer}/score-{shard}.log",
    wildcard_constraints:
        scorer=names_of("scorers", "intervention"),
    conda:
        "../envs/interpflow.yaml"
    threads: 1  # many tiny forward passes: a second thread only adds hand-offs
    resources:
        mem_mb=lambda w, attempt: 8000 * attempt,
        gpu=scorer_gpu,
    params:
        code=code_of("../workflow/scripts/score_intervention.py"),
        cfg=scorer_params,
        model_cfg=lambda w: config["models"][w.model],
        scorer_cfg=scorer_model_cfg,
    script:
        "../workflow/scripts/score_intervention.py"
