from interpflow.baselines import run_top_tokens
from interpflow.steps import logged

with logged(snakemake.log[0]):
    run_top_tokens(snakemake.input.examples, snakemake.input.latents, snakemake.params.cfg, snakemake.output[0])
