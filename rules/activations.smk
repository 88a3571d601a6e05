# Hookpoints of one model whose activations do not exist yet come from one forward pass (a job per corpus and
# model); once they exist, each hookpoint is its own job, so adding a layer later computes only that layer.
# Both kinds of rule come from this one definition, so a file made by either counts as made by the other.
for rule_name, corpus, model, hookpoints in activation_rules():

    rule:
        name:
            rule_name
        input:
            tokens="results/{corpus}/{model}/tokens.h5",
            model="results/models/{model}/model.json",
        output:
            [f"results/{{corpus}}/{{model}}/{h}/activations.h5" for h in hookpoints],
        log:
            "logs/{corpus}/{model}/" + ("{hookpoint}/" if len(hookpoints) == 1 else "") + "activations.log",
        wildcard_constraints:
            corpus=corpus,
            model=model,
        conda:
            "../envs/interpflow.yaml"
        threads: 2
        resources:
            mem_mb=lambda w, attempt: 8000 * attempt,
            runtime=lambda w, attempt: 120 * attempt,  # minutes, on a cluster (the shared rule has no fixed name)
            gpu=gpu_count,
        params:
            code=code_of("../workflow/scripts/cache_activations.py"),
            cfg=slice_of("models", "model"),
        script:
            "../workflow/scripts/cache_activations.py"

    if rule_name != "cache_activations":
        workflow.ruleorder(rule_name, "cache_activations")
