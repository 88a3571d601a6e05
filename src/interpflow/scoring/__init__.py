"""Scorers: how well each explanation predicts where its latent fires (Paulo et al. 2024, section 4, App. G).

Modules; a scorer imports only `metrics` and `common`, never another scorer:

- `metrics`: the metrics table every scorer writes (columns, binary metrics, usage per latent)
- `common`: what scorers share: the latents and test windows a scorer scores (`scorable_latents`,
  `max_latents`), how an LLM scorer reads its model (`choose_method`, `run_llm_scorer`), the AUROC table of
  the continuous scorers, and writing a scorer's two tables
- `judge`: detection and fuzzing, an LLM judge saying yes or no per window
- `simulation` (with `simulation_slots`, `simulation_reply`): an LLM simulator predicting each token's
  activation, scored by correlation
- `embedding`: the explanation as a retrieval query over the windows (sentence embeddings)
- `surprisal`: the subject model's loss on the windows after the explanation against a neutral description
- `intervention` (with `intervention_inputs`: prompts and options; `intervention_model`: the subject model's
  forward passes): steering the subject model along the latent, judged by how
  much likelier the explanation becomes given the steered continuations

This file imports nothing: a rule reruns when a file of its script's import closure changes (code_of),
so importing one scorer must not pull in the others.
"""
