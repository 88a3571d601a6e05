from interpflow.file_explainer import run_file
from interpflow.steps import logged

with logged(snakemake.log[0]):
    run_file(snakemake.input.latents, snakemake.input.table, snakemake.output[0])
