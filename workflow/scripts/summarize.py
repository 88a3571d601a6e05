from interpflow.report import summarize
from interpflow.steps import logged

with logged(snakemake.log[0]):
    summarize(snakemake.params.records, snakemake.output.table, snakemake.output.figure, snakemake.output.html)
