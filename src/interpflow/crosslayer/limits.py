"""The cap on the latent-pair matrices (n_a x n_b) of a matching or an activation correlation."""

from __future__ import annotations

__all__ = ["MAX_PAIRS"]

MAX_PAIRS = 1 << 26
"""Default cap on n_a * n_b. A matching holds the float32 cosine matrix (4 bytes a pair, 8 with a correlation
mix) and scipy's linear_sum_assignment takes float64 copies of it (about 16 bytes a pair): 2**26 pairs
(8192 x 8192) peak at about 1.3 GiB. The correlation matrix costs 4 bytes a pair plus one chunk."""


def _check_pairs(n_a: int, n_b: int, max_pairs: int, what: str) -> None:
    """Refuse an n_a x n_b matrix above `max_pairs` cells, suggesting a subset."""
    if n_a * n_b > max_pairs:
        raise ValueError(
            f"{what} needs a {n_a} x {n_b} matrix ({n_a * n_b:,} pairs, about "
            f"{n_a * n_b * 20 / 2**30:.1f} GiB at peak), above max_pairs={max_pairs:,}: match a subset of "
            f"latents (latents_a / latents_b, e.g. the explained ones) or raise max_pairs"
        )
