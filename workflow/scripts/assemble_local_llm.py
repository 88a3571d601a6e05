from interpflow.llm.local_parts import assemble_local_model
from interpflow.steps import logged

with logged(snakemake.log[0]):
    assemble_local_model(snakemake.wildcards.name, snakemake.output[0])
