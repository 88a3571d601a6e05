from interpflow.sampling.step import run_sampling
from interpflow.steps import logged

# with latents.partners, the layer below shares the dictionary name, hence its width
matches = list(snakemake.input.matches)
partners = (matches[0], snakemake.params.width, snakemake.params.shard_size) if matches else None
with logged(snakemake.log[0]):
    run_sampling(
        snakemake.input.tokens,
        f"{snakemake.input.latents}/shard-{snakemake.wildcards.shard}.h5",
        snakemake.input.vocab,
        snakemake.params.cfg,
        snakemake.output.examples,
        snakemake.output.latents,
        latents_dir=snakemake.input.latents,
        partners=partners,
    )
