# What a run publishes (results/export/): each unit as Neuronpedia import records, and one flat table of
# every explanation with every score.


rule export_neuronpedia:
    input:
        lambda w: [
            p
            for f in neuronpedia_shards(w)
            for p in (
                f["examples"],
                f["selected"],
                os.path.dirname(f["stats"]),  # the latent store folder, which holds the stats
                *(e["explanations"] for e in f["explainers"]),
                *(s["metrics"] for s in f["scores"]),
            )
        ],
        # fmt: skip
    output:
        directory("results/export/neuronpedia/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}"),
    log:
        "logs/export/neuronpedia/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}.log",
    conda:
        "../envs/interpflow.yaml"
    params:
        code=code_of("../workflow/scripts/export_neuronpedia.py"),
        shards=neuronpedia_shards,
        options=neuronpedia_options,
    script:
        "../workflow/scripts/export_neuronpedia.py"


rule export_table:
    input:
        latents=rules.summarize.output.table,
    output:
        parquet="results/export/explanations.parquet",
        jsonl="results/export/explanations.jsonl",
    log:
        "logs/export/table.log",
    conda:
        "../envs/interpflow.yaml"
    params:
        code=code_of("../workflow/scripts/export_table.py"),
    script:
        "../workflow/scripts/export_table.py"
