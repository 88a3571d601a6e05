rule prepare_model:
    input:
        code=code_of("../workflow/scripts/prepare_model.py"),
    output:
        spec="results/models/{model}/model.json",
        vocab="results/models/{model}/vocab.parquet",
    log:
        "logs/models/{model}.log",
    conda:
        "../envs/interpflow.yaml"
    threads: 2
    resources:
        mem_mb=lambda w, attempt: 8000 * attempt,
    params:
        cfg=slice_of("models", "model"),
    script:
        "../workflow/scripts/prepare_model.py"


rule assemble_local_llm:
    input:
        code=code_of("../workflow/scripts/assemble_local_llm.py"),
    output:
        "results/llm/{name}.gguf",
    log:
        "logs/llm/{name}.log",
    conda:
        "../envs/interpflow.yaml"
    script:
        "../workflow/scripts/assemble_local_llm.py"
