rule prepare_model:
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
        code=code_of("../workflow/scripts/prepare_model.py"),
        cfg=slice_of("models", "model"),
    script:
        "../workflow/scripts/prepare_model.py"


rule assemble_local_llm:
    output:
        "results/llm/{name}.gguf",
    log:
        "logs/llm/{name}.log",
    conda:
        "../envs/interpflow.yaml"
    params:
        code=code_of("../workflow/scripts/assemble_local_llm.py"),
    script:
        "../workflow/scripts/assemble_local_llm.py"
