"""TopK sparse autoencoder (Gao et al. 2024, "Scaling and evaluating sparse autoencoders") and its trainer.

Modules, each importing only those above it:

- `model`: TopKSAE (encode, decode, the forward pass with fvu and AuxK loss, save and load) and ForwardOutput
- `train`: the initialisation, the training config and the training loop, train_sae
- `batches`: shuffled training batches and the initialisation sample read from activations.h5
- `step`: the workflow steps, train_sae_from_h5 and random_sae_from_h5 (the untrained control)
- `summary`: training_table, every trained SAE's fvu, L0 and dead fraction per epoch (sae_training.parquet)

This file imports nothing: a rule reruns when a file of its script's import closure changes (code_of),
so importing one submodule must not pull in the others.
"""
