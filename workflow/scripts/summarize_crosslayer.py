from interpflow.crosslayer.summary import summarize_layers
from interpflow.steps import logged

with logged(snakemake.log[0]):
    summarize_layers(snakemake.params.records, snakemake.output.table, snakemake.output.figure)
