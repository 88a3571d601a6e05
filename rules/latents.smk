# One pass over the activations encodes every latent; the folder holds one file per shard of latents.
rule encode_latents:
    input:
        activations="results/{corpus}/{model}/{hookpoint}/activations.h5",
        sae="results/{corpus}/{model}/{hookpoint}/{dictionary}/sae/cfg.json",
        code=code("latents", "sae"),
    output:
        directory("results/{corpus}/{model}/{hookpoint}/{dictionary}/latents"),
    log:
        "logs/{corpus}/{model}/{hookpoint}/{dictionary}/encode_latents.log",
    conda:
        "../envs/interpflow.yaml"
    threads: 2
    resources:
        mem_mb=8000,
    params:
        store=config["latent_store"],
        width=lambda w: config["dictionaries"][w.dictionary]["width"],
    script:
        "../workflow/scripts/encode_latents.py"
