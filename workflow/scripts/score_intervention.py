from pathlib import Path

from interpflow.scoring.intervention import run_intervention
from interpflow.steps import logged

with logged(snakemake.log[0], threads=snakemake.threads):
    run_intervention(
        Path(snakemake.input.dictionary).parent,
        snakemake.input.subject,
        snakemake.params.model_cfg,
        snakemake.wildcards.hookpoint,
        snakemake.input.explanations,
        snakemake.input.examples,
        snakemake.params.cfg,
        snakemake.output.predictions,
        snakemake.output.metrics,
        scorer_spec=snakemake.input.scorer_model,
        scorer_cfg=snakemake.params.scorer_cfg,
    )
