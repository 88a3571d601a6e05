from interpflow.baselines import run_top_tokens
from interpflow.steps import logged

with logged(snakemake.log[0]):
    inputs = snakemake.input
    run_top_tokens(inputs.examples, inputs.latents, snakemake.params.cfg, snakemake.output[0])
