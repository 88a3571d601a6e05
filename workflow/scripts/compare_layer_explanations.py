from interpflow.crosslayer.compare import compare_explanations
from interpflow.steps import logged

with logged(snakemake.log[0], threads=snakemake.threads):
    compare_explanations(
        snakemake.input.matches,
        list(snakemake.input.a),
        list(snakemake.input.b),
        snakemake.params.cfg,
        snakemake.output[0],
    )
