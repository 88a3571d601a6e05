# Latents of one dictionary on two layers of a run (same site) aligned by the Hungarian algorithm, and the
# explanations of matched pairs compared against random pairs.
rule match_layers:
    input:
        a="results/{corpus}/{model}/{hookpoint_a}/{dictionary}/dictionary/dictionary.json",
        b="results/{corpus}/{model}/{hookpoint_b}/{dictionary}/dictionary/dictionary.json",
        latents=match_latents_dirs,
    output:
        "results/{corpus}/{model}/crosslayer/{dictionary}/{hookpoint_a}__{hookpoint_b}/matches.parquet",
    log:
        "logs/{corpus}/{model}/crosslayer/{dictionary}/{hookpoint_a}__{hookpoint_b}/match.log",
    conda:
        "../envs/interpflow.yaml"
    threads: 2
    resources:
        mem_mb=lambda w, attempt: 8000 * attempt,
    params:
        code=code_of("../workflow/scripts/match_layers.py"),
        cfg=config["cross_layer"],
    script:
        "../workflow/scripts/match_layers.py"


rule compare_layer_explanations:
    input:
        matches=rules.match_layers.output[0],
        a=lambda w: shard_explanations(w, w.hookpoint_a),
        b=lambda w: shard_explanations(w, w.hookpoint_b),
    output:
        "results/{corpus}/{model}/crosslayer/{dictionary}/{hookpoint_a}__{hookpoint_b}/{sampler}/{explainer}/similarity.parquet",
    log:
        "logs/{corpus}/{model}/crosslayer/{dictionary}/{hookpoint_a}__{hookpoint_b}/{sampler}/{explainer}/similarity.log",
    conda:
        "../envs/interpflow.yaml"
    threads: 1  # embeds a few explanations: leaves the other core to another job
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
    params:
        code=code_of("../workflow/scripts/compare_layer_explanations.py"),
        cfg=config["cross_layer"],
    script:
        "../workflow/scripts/compare_layer_explanations.py"


rule summarize_crosslayer:
    input:
        similarity=[r["similarity"] for r in layer_pairs()],
        matches=[r["matches"] for r in layer_pairs()],
    output:
        table="results/summary/crosslayer.parquet",
        figure=report(
            "results/summary/crosslayer.png",
            category="Across layers",
            caption="../workflow/report/crosslayer.rst",
        ),
    log:
        "logs/summary-crosslayer.log",
    conda:
        "../envs/interpflow.yaml"
    params:
        code=code_of("../workflow/scripts/summarize_crosslayer.py"),
        records=layer_pairs(),
    script:
        "../workflow/scripts/summarize_crosslayer.py"
