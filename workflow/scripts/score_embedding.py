from interpflow.scoring.embedding import run_embedding
from interpflow.steps import logged

with logged(snakemake.log[0], threads=snakemake.threads):
    run_embedding(
        snakemake.input.examples,
        snakemake.input.explanations,
        snakemake.params.cfg,
        snakemake.output.predictions,
        snakemake.output.metrics,
    )
