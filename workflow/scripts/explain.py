from interpflow.config import with_transport
from interpflow.explain import run_explain
from interpflow.steps import logged

with logged(snakemake.log[0], threads=snakemake.threads):
    run_explain(
        snakemake.input.examples,
        snakemake.input.latents,
        with_transport(snakemake.params.cfg, snakemake.params.transport),
        snakemake.output[0],
        cache_dir=snakemake.params.cache_dir,
        local_gguf=snakemake.input.gguf or None,
        name=snakemake.wildcards.explainer,
    )
