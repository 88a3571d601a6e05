from interpflow.browser.agreement import write_agreement
from interpflow.steps import logged

with logged(snakemake.log[0]):
    write_agreement(snakemake.params.ratings_dir, snakemake.input.latents, dict(snakemake.output.items()))
