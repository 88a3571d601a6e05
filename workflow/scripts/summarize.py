from interpflow.report import summarize
from interpflow.steps import logged

with logged(snakemake.log[0]):
    summarize(snakemake.params.records, dict(snakemake.output.items()), estimate=snakemake.input.estimate)
