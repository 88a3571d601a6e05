"""interpflow: explain and score the latents of sparse dictionaries."""
