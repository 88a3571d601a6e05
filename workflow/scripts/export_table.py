from interpflow.export.publish import export_table
from interpflow.steps import logged

with logged(snakemake.log[0]):
    export_table(snakemake.input.latents, snakemake.output.parquet, snakemake.output.jsonl)
