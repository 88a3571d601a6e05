from interpflow.models import prepare_model
from interpflow.steps import logged

with logged(snakemake.log[0]):
    prepare_model(snakemake.params.cfg, snakemake.output.spec, snakemake.output.vocab)
