# The paper's tables and figures, regenerated from this config's runs beside its published numbers
# (results/paper/; `snakemake paper`, `make paper`). Each table selects rows of the summary, so an ablation
# changed in the config reruns its own jobs and then only this page.


rule paper:
    input:
        table=rules.summarize.output.table,
        crosslayer=lambda w: rules.summarize_crosslayer.output.table if layer_pairs() else [],
        agreement=lambda w: rules.agreement.output.scorers if rating_files() else [],
    output:
        directory("results/paper"),
    log:
        "logs/paper.log",
    conda:
        "../envs/interpflow.yaml"
    params:
        code=code_of("../workflow/scripts/paper.py"),
        spec=config["paper"],
    script:
        "../workflow/scripts/paper.py"
