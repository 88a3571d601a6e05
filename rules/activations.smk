# Hookpoints of one model whose activations do not exist yet come from one forward pass (a job per corpus and
# model); once they exist, each hookpoint is its own job, so adding a layer later computes only that layer.
rule cache_activations:
    input:
        tokens="results/{corpus}/{model}/tokens.h5",
        model="results/models/{model}/model.json",
        code=code("activations", "models"),
    output:
        "results/{corpus}/{model}/{hookpoint}/activations.h5",
    log:
        "logs/{corpus}/{model}/{hookpoint}/activations.log",
    conda:
        "../envs/interpflow.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        gpu=gpu_count,
    params:
        cfg=slice_of("models", "model"),
    script:
        "../workflow/scripts/cache_activations.py"


for corpus, model, hookpoints in pending_hookpoints():

    rule:
        name:
            f"cache_activations_{corpus}_{model}"
        input:
            tokens=f"results/{corpus}/{model}/tokens.h5",
            model=f"results/models/{model}/model.json",
            code=code("activations", "models"),
        output:
            [f"results/{corpus}/{model}/{h}/activations.h5" for h in hookpoints],
        log:
            f"logs/{corpus}/{model}/activations.log",
        conda:
            "../envs/interpflow.yaml"
        threads: 2
        resources:
            mem_mb=8000,
            gpu=wants_gpu(config["models"][model]["device"]),
        params:
            cfg=config["models"][model],  # the same params as cache_activations: no rerun when it takes over
        script:
            "../workflow/scripts/cache_activations.py"

    workflow.ruleorder(f"cache_activations_{corpus}_{model}", "cache_activations")
