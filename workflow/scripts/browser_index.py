from pathlib import Path

from interpflow.browser.site import build_index
from interpflow.steps import logged

with logged(snakemake.log[0]):
    build_index(
        snakemake.input.shards,
        Path(snakemake.output.index).parent,
        summary_dir=Path(snakemake.input.summary).parent,
        paper_dir=snakemake.params.paper_dir,
    )
