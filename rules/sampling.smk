rule sample_examples:
    input:
        tokens="results/{corpus}/{model}/tokens.h5",
        vocab="results/models/{model}/vocab.parquet",
        latents="results/{corpus}/{model}/{hookpoint}/{dictionary}/latents",
        matches=partner_matches,
    output:
        examples="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/examples/shard-{shard}.parquet",
        latents="results/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/examples/latents-{shard}.parquet",
    log:
        "logs/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/examples/shard-{shard}.log",
    conda:
        "../envs/interpflow.yaml"
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
    params:
        code=code_of("../workflow/scripts/sample_examples.py"),
        cfg=slice_of("samplers", "sampler"),
        shard_size=lambda w: shard_size(w.dictionary),
        width=lambda w: config["dictionaries"][w.dictionary]["width"],
    script:
        "../workflow/scripts/sample_examples.py"
