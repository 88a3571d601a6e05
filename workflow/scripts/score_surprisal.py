from interpflow.scoring.surprisal import run_surprisal
from interpflow.steps import logged

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
