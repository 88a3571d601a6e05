from interpflow.corpus import build_tokens
from interpflow.steps import logged

with logged(snakemake.log[0]):
    build_tokens(snakemake.params.cfg, snakemake.input.model, snakemake.output[0])
