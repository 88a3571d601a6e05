# interpflow: explain the latents of sparse dictionaries trained on language models, and score the explanations.
from snakemake.utils import min_version

from interpflow.config import validate_schema

min_version("9.0")


configfile: "config/config.yaml"


validate_schema(config)  # src/interpflow/config.schema.yaml


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/corpus.smk"
include: "rules/activations.smk"
include: "rules/dictionaries.smk"
include: "rules/latents.smk"
include: "rules/sampling.smk"
include: "rules/explain.smk"
include: "rules/score.smk"
include: "rules/crosslayer.smk"
include: "rules/summary.smk"
include: "rules/browser.smk"
include: "rules/export.smk"
include: "rules/paper.smk"


localrules:
    all,
    estimate,
    summarize,
    summarize_crosslayer,
    browser,
    agreement,
    export_table,
    paper,


rule all:
    default_target: True
    input:
        all_targets(),
