rule train_sae:
    input:
        activations="results/{corpus}/{model}/{hookpoint}/activations.h5",
        code=code("sae"),
    output:
        weights="results/{corpus}/{model}/{hookpoint}/{dictionary}/sae/sae.safetensors",
        cfg="results/{corpus}/{model}/{hookpoint}/{dictionary}/sae/cfg.json",
    log:
        "logs/{corpus}/{model}/{hookpoint}/{dictionary}/train_sae.log",
    conda:
        "../envs/interpflow.yaml"
    threads: 2
    resources:
        mem_mb=8000,
    params:
        cfg=slice_of("dictionaries", "dictionary"),
    script:
        "../workflow/scripts/train_sae.py"
