# Every dictionary, trained here or not, ends as one folder in a common format (dictionary.json and
# dictionary.safetensors) that encoding, steering and cross-layer matching read.
rule train_sae:
    input:
        activations="results/{corpus}/{model}/{hookpoint}/activations.h5",
    output:
        weights="results/{corpus}/{model}/{hookpoint}/{dictionary}/sae/sae.safetensors",
        cfg="results/{corpus}/{model}/{hookpoint}/{dictionary}/sae/cfg.json",
    log:
        "logs/{corpus}/{model}/{hookpoint}/{dictionary}/train_sae.log",
    wildcard_constraints:
        dictionary=names_of("dictionaries", "topk-sae"),
    conda:
        "../envs/interpflow.yaml"
    threads: 2
    resources:
        mem_mb=lambda w, attempt: 8000 * attempt,
        gpu=lambda w: wants_gpu(config["dictionaries"][w.dictionary]["device"], config["auto_gpu"]),
    params:
        code=code_of("../workflow/scripts/train_sae.py"),
        cfg=slice_of("dictionaries", "dictionary"),
    script:
        "../workflow/scripts/train_sae.py"


rule prepare_dictionary:
    input:
        activations="results/{corpus}/{model}/{hookpoint}/activations.h5",
        source=dictionary_source,
    output:
        cfg="results/{corpus}/{model}/{hookpoint}/{dictionary}/dictionary/dictionary.json",
        weights="results/{corpus}/{model}/{hookpoint}/{dictionary}/dictionary/dictionary.safetensors",
    log:
        "logs/{corpus}/{model}/{hookpoint}/{dictionary}/prepare_dictionary.log",
    conda:
        "../envs/interpflow.yaml"
    threads: 2
    resources:
        mem_mb=lambda w, attempt: 8000 * attempt,
    params:
        code=code_of("../workflow/scripts/prepare_dictionary.py"),
        cfg=lambda w: dict(config["dictionaries"][w.dictionary], name=w.dictionary),
        model_cfg=slice_of("models", "model"),
    script:
        "../workflow/scripts/prepare_dictionary.py"
