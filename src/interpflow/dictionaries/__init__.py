"""Sparse dictionaries: one canonical module for our TopK SAE, pretrained SAEs/transcoders and MLP neurons.

Every kind is rewritten exactly (up to float rounding) into the one computation of `dictionary`'s
SparseDictionary. Loaders read sparsify (EleutherAI), SAELens and Gemma Scope 1/2 files from disk; they never
download. Modules, each importing only those above it:

- `readers`: reading and checking dictionary files, each error naming its file
- `dictionary`: SparseDictionary (its docstring gives the computation), our TopK SAE and MLP neurons as
  dictionaries, and the width check against the activations
- `sparsify`, `saelens`, `gemma_scope`: one loader per foreign format
- `pretrained`: load_pretrained, the dispatch on the configured format
- `prepare`: prepare_dictionary, the workflow step

This file imports nothing: a rule reruns when a file of its script's import closure changes (code_of),
so importing one submodule must not pull in the others.
"""
