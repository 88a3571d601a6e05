from interpflow.export.neuronpedia import export_neuronpedia
from interpflow.steps import logged

with logged(snakemake.log[0]):
    export_neuronpedia(snakemake.params.shards, snakemake.output[0], **snakemake.params.options)
