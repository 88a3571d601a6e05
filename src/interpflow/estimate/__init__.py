"""What a run will cost before anything is sent: LLM calls, tokens, dollars and time per explainer and scorer,
and the forward-pass and SAE-training tokens of the stages before them.

The prompts are built by the workflow's own builders (explain, scorers, simulation) on one synthetic latent
whose examples have the configured sizes, so every prompt setting (examples per prompt, caps, contrastive
prompts, hard negatives, chunking) is followed without a second copy of its arithmetic. Tokens are counted
without a tokenizer download (estimate_tokens), or by a counter passed in.

Every selected latent is assumed to fire often enough to be explained and to get an explanation, so LLM
counts are upper bounds where the sampler skips latents or explanations fail to parse.

Usage: python -m interpflow.estimate config/config.yaml [more.yaml ...] [--set key=value ...]

Modules, each importing only those above it:

- `synthetic`: the token counter, the synthetic latent and the requests the builders make for it
- `counts`: the counting model, estimate_run (one row per stage and subject), and write_estimate, the
  workflow step
- `display`: format_estimate (the readable table, totals, notes, budget) and compare (against a run's costs)
- `cli`: the command line and its config loading (`__main__` runs it)

This file imports nothing: a rule reruns when a file of its script's import closure changes (code_of),
so importing one submodule must not pull in the others.
"""
