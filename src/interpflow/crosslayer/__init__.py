"""Cross-layer alignment: match the latents of two dictionaries (e.g. SAEs on adjacent layers) one to one, and
ask whether matched latents also get similar explanations.

Paulo et al. 2024 (section 5) align SAEs on adjacent residual layers with the Hungarian algorithm on decoder
directions and find them highly similar; here the similarity is measured (decoder cosine, activation
correlation, similarity of the embedded explanations) and set against random pairs of the same latents.
Modules, each importing only those above it:

- `limits`: MAX_PAIRS, the cap on the latent-pair matrices of a matching or a correlation
- `correlation`: Pearson correlation of latent activations read from the sparse shards (all pairs, or the
  matched pairs only)
- `compare`: embedding similarity of matched latents' explanations against random pairs, and the workflow
  step comparing them (after explaining)
- `align`: the Hungarian matching on decoder directions (optionally mixed with activation correlation), the
  random-pair cosine baseline, and the workflow step aligning two dictionaries (before sampling)
- `summary`: the cross-layer summary table and its figure by layer distance

This file imports nothing: a rule reruns when a file of its script's import closure changes (code_of),
so importing one submodule must not pull in the others.
"""
