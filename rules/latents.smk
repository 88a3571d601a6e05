# One pass over the activations encodes every latent; the folder holds one file per shard of latents.
rule encode_latents:
    input:
        activations="results/{corpus}/{model}/{hookpoint}/activations.h5",
        dictionary="results/{corpus}/{model}/{hookpoint}/{dictionary}/dictionary/dictionary.json",
    output:
        directory("results/{corpus}/{model}/{hookpoint}/{dictionary}/latents"),
    log:
        "logs/{corpus}/{model}/{hookpoint}/{dictionary}/encode_latents.log",
    conda:
        "../envs/interpflow.yaml"
    threads: 2
    resources:
        mem_mb=lambda w, attempt: 8000 * attempt,
        gpu=gpu_count,
    params:
        code=code_of("../workflow/scripts/encode_latents.py"),
        store=lambda w: dict(config["latent_store"], shard_size=shard_size(w.dictionary)),
        width=lambda w: config["dictionaries"][w.dictionary]["width"],
    script:
        "../workflow/scripts/encode_latents.py"
