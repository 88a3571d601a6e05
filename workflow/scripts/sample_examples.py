from interpflow.sampling import run_sampling
from interpflow.steps import logged

with logged(snakemake.log[0]):
    run_sampling(
        snakemake.input.tokens,
        f"{snakemake.input.latents}/shard-{snakemake.wildcards.shard}.h5",
        snakemake.input.vocab,
        snakemake.params.cfg,
        snakemake.output.examples,
        snakemake.output.latents,
        latents_dir=snakemake.input.latents,
    )
