# The latent browser (results/browser/): a static site built per shard, an index that pages, and the
# agreement of human ratings (results/ratings/, written by `interpflow serve`) with every scorer.


rule browser_shard:
    input:
        browser_shard_inputs,
    output:
        directory("results/browser/units/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/shard-{shard}"),
    log:
        "logs/browser/{corpus}/{model}/{hookpoint}/{dictionary}/{sampler}/shard-{shard}.log",
    conda:
        "../envs/interpflow.yaml"
    threads: 1  # pages and a few short embeddings: two such jobs at once beat one on two threads
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
    params:
        code=code_of("../workflow/scripts/browser_shard.py"),
        files=browser_shard_files,
    script:
        "../workflow/scripts/browser_shard.py"


rule browser:
    input:
        shards=browser_shards(),
        summary=rules.summarize.output.html,
        paper=lambda w: rules.paper.output if config["paper"]["reference"] else [],  # linked from the index
    output:
        index="results/browser/index.html",
        search="results/browser/search.html",
        rate="results/browser/rate.html",
        data=directory("results/browser/data"),
        static=directory("results/browser/static"),
    log:
        "logs/browser/index.log",
    conda:
        "../envs/interpflow.yaml"
    params:
        code=code_of("../workflow/scripts/browser_index.py"),
        paper_dir=lambda w: "results/paper" if config["paper"]["reference"] else None,
    script:
        "../workflow/scripts/browser_index.py"


rule agreement:
    input:
        ratings=rating_files(),
        latents=rules.summarize.output.table,
    output:
        latents="results/summary/agreement-latents.parquet",
        scorers="results/summary/agreement-scorers.parquet",
        alpha="results/summary/agreement-alpha.parquet",
    log:
        "logs/summary/agreement.log",
    conda:
        "../envs/interpflow.yaml"
    params:
        code=code_of("../workflow/scripts/agreement.py"),
        ratings_dir="results/ratings",
    script:
        "../workflow/scripts/agreement.py"
