from interpflow.config import with_transport
from interpflow.scoring.judge import run_score
from interpflow.scoring.simulation import run_simulation
from interpflow.steps import logged

run = run_simulation if snakemake.params.cfg["kind"] == "simulation" else run_score
with logged(snakemake.log[0], threads=snakemake.threads):
    run(
        snakemake.input.examples,
        snakemake.input.explanations,
        with_transport(snakemake.params.cfg, snakemake.params.transport),
        snakemake.output.predictions,
        snakemake.output.metrics,
        cache_dir=snakemake.params.cache_dir,
        local_gguf=snakemake.input.gguf or None,
    )
