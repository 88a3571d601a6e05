from pathlib import Path

from interpflow.latents import encode_dictionary
from interpflow.steps import logged

with logged(snakemake.log[0], threads=snakemake.threads):
    encode_dictionary(
        snakemake.input.activations,
        Path(snakemake.input.dictionary).parent,
        snakemake.params.width,
        snakemake.params.store,
        snakemake.output[0],
    )
