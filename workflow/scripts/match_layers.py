from pathlib import Path

from interpflow.crosslayer.align import match_layers
from interpflow.steps import logged

with logged(snakemake.log[0], threads=snakemake.threads):
    match_layers(
        Path(snakemake.input.a).parent,
        Path(snakemake.input.b).parent,
        snakemake.params.cfg,
        snakemake.output[0],
        latents_dirs=list(snakemake.input.latents),
    )
