from interpflow.estimate.counts import write_estimate
from interpflow.steps import logged

with logged(snakemake.log[0]):
    write_estimate(snakemake.params.cfg.value, snakemake.output[0])
