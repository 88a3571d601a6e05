rule tokenize_corpus:
    input:
        model="results/models/{model}/model.json",
    output:
        "results/{corpus}/{model}/tokens.h5",
    log:
        "logs/{corpus}/{model}/tokens.log",
    conda:
        "../envs/interpflow.yaml"
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
    params:
        code=code_of("../workflow/scripts/tokenize_corpus.py"),
        cfg=slice_of("corpora", "corpus"),
    script:
        "../workflow/scripts/tokenize_corpus.py"
