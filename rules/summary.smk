# What the config will cost, before anything is sent (also: python -m interpflow.estimate <config>).
rule estimate:
    output:
        "results/summary/estimate.parquet",
    log:
        "logs/estimate.log",
    conda:
        "../envs/interpflow.yaml"
    params:
        code=code_of("../workflow/scripts/estimate.py"),
        cfg=ESTIMATE_PARAMS[0],
        digest=ESTIMATE_PARAMS[1],
    script:
        "../workflow/scripts/estimate.py"


# How each trained SAE trained, per epoch (its cfg.json keeps the trainer's metrics).
rule sae_training:
    input:
        cfgs=[r["cfg"] for r in trained_saes()],
    output:
        "results/summary/sae_training.parquet",
    log:
        "logs/summary/sae_training.log",
    conda:
        "../envs/interpflow.yaml"
    params:
        code=code_of("../workflow/scripts/sae_training.py"),
        records=trained_saes(),
    script:
        "../workflow/scripts/sae_training.py"


rule summarize:
    input:
        metrics=[r["metrics"] for r in scored_shards()],
        explanations=[r["explanations"] for r in scored_shards()],
        estimate=rules.estimate.output[0],
    output:
        table="results/summary/latents.parquet",
        aggregates="results/summary/aggregates.parquet",
        subjects="results/summary/subjects.parquet",
        comparisons="results/summary/comparisons.parquet",
        correlations="results/summary/correlations.parquet",
        costs="results/summary/costs.parquet",
        spent="results/summary/estimate_vs_spent.parquet",
        figure=report(
            "results/summary/scores.png", category="Scores", caption="../workflow/report/scores.rst"
        ),
        subjects_figure=report(
            "results/summary/subjects.png", category="Scores", caption="../workflow/report/subjects.rst"
        ),
        heatmap=report(
            "results/summary/correlations.png",
            category="Scores",
            caption="../workflow/report/correlations.rst",
        ),
        html=report("results/summary/summary.html", category="Tables", caption="../workflow/report/table.rst"),
    log:
        "logs/summary.log",
    conda:
        "../envs/interpflow.yaml"
    params:
        code=code_of("../workflow/scripts/summarize.py"),
        records=scored_shards(),
    script:
        "../workflow/scripts/summarize.py"
