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
    params:
        cfg=slice_of("models", "model"),
    script:
        "../workflow/scripts/cache_activations.py"
