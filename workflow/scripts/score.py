from interpflow.scorers import run_score
from interpflow.steps import logged

with logged(snakemake.log[0], threads=snakemake.threads):
    run_score(
        snakemake.input.examples,
        snakemake.input.explanations,
        snakemake.params.cfg,
        snakemake.output.predictions,
        snakemake.output.metrics,
        cache_dir=snakemake.params.cache_dir,
        local_gguf=snakemake.input.gguf or None,
    )
