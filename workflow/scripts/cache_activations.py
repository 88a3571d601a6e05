from pathlib import Path

from interpflow.activations import cache_activations
from interpflow.steps import logged

with logged(snakemake.log[0], threads=snakemake.threads):
    cache_activations(
        snakemake.input.tokens,
        snakemake.input.model,
        snakemake.params.cfg,
        [Path(path).parent.name for path in snakemake.output],  # .../{hookpoint}/activations.h5
        list(snakemake.output),
    )
