from pathlib import Path

from interpflow.sae.step import train_sae_from_h5
from interpflow.steps import logged

with logged(snakemake.log[0], threads=snakemake.threads):
    train_sae_from_h5(snakemake.input.activations, snakemake.params.cfg, Path(snakemake.output.cfg).parent)
