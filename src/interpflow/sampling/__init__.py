"""Example sampler: per latent, train and test windows stratified by activation quantile, never shared.

Besides the paper's random non-activating test windows, it can draw "hard" ones that resemble a latent's
activating windows while the latent stays at zero in them (`hard_negatives`): windows where the latents
that co-occur most with it fire, or windows holding the tokens it fires on most. Modules, each importing only
those above it:

- `vocab`: the model's vocabulary as the sampler reads it, and windows' token strings decoded as one span
- `selection`: which latents a sampler picks (a seeded sample per shard, plus cross-layer partners) and the
  shard files of a latents folder
- `hard`: hard negatives: their settings, the window x latent incidence, the co-occurrence and lexical scores
- `windows`: the sampler settings and one latent's windows: quantile-stratified train and test windows,
  random non-activating ones and the hard negatives
- `examples`: sample_examples, the examples and latents tables of one shard
- `step`: run_sampling, the workflow step
- `scored`: select_test_examples, the test windows a scorer scores (read by the scorers, not the sampler)

This file imports nothing: a rule reruns when a file of its script's import closure changes (code_of),
so importing one submodule must not pull in the others.
"""
