from interpflow.baselines import run_random
from interpflow.steps import logged

with logged(snakemake.log[0]):
    run_random(
        snakemake.input.source[0], list(snakemake.input.pool), snakemake.params.cfg, snakemake.output[0]
    )
