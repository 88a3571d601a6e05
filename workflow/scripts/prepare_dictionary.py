from pathlib import Path

from interpflow.dictionaries.prepare import prepare_dictionary
from interpflow.steps import logged

with logged(snakemake.log[0], threads=snakemake.threads):
    prepare_dictionary(
        snakemake.params.cfg,
        snakemake.wildcards.hookpoint,
        snakemake.input.activations,
        Path(snakemake.output.cfg).parent,
        source=snakemake.input.source,
        model_cfg=snakemake.params.model_cfg,
    )
