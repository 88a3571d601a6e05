rule tokenize_corpus:
    input:
        model="results/models/{model}/model.json",
        code=code_of("../workflow/scripts/tokenize_corpus.py"),
    output:
        "results/{corpus}/{model}/tokens.h5",
    log:
        "logs/{corpus}/{model}/tokens.log",
    conda:
        "../envs/interpflow.yaml"
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
    params:
        cfg=slice_of("corpora", "corpus"),
    script:
        "../workflow/scripts/tokenize_corpus.py"
