from interpflow.browser.site import build_shard
from interpflow.steps import logged

with logged(snakemake.log[0], threads=snakemake.threads):
    build_shard(snakemake.params.files, snakemake.output[0])
