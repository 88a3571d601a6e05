"""The latent browser: a static site per run, searched, run on text and rated through `interpflow serve`."""
