from interpflow.steps import logged
from interpflow.surprisal import run_surprisal

with logged(snakemake.log[0], threads=snakemake.threads):
    run_surprisal(
        snakemake.input.examples,
        snakemake.input.explanations,
        snakemake.input.scorer_model,
        snakemake.params.model_cfg,
        snakemake.params.cfg,
        snakemake.output.predictions,
        snakemake.output.metrics,
    )
