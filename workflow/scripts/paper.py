from pathlib import Path

from interpflow.paper import build_paper
from interpflow.steps import logged

with logged(snakemake.log[0]):
    build_paper(Path(snakemake.input.table).parent, snakemake.params.spec, snakemake.output[0])
