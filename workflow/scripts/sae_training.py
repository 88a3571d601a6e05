from interpflow.sae.summary import training_table
from interpflow.steps import logged

with logged(snakemake.log[0]):
    training_table(snakemake.params.records, snakemake.output[0])
