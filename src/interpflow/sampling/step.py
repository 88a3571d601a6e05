"""run_sampling, the workflow step: sample one shard's examples and write the examples and latents tables."""

from __future__ import annotations

import logging
import os

from interpflow.latents import read_shard
from interpflow.sampling.examples import sample_table, write_examples
from interpflow.sampling.hard import window_incidence
from interpflow.sampling.selection import partner_latents, select_latents, shard_files
from interpflow.sampling.vocab import read_vocab
from interpflow.sampling.windows import _settings
from interpflow.store import open_h5, read_parquet, write_parquet

log = logging.getLogger(__name__)


def run_sampling(
    tokens_path: str | os.PathLike,
    shard_path: str | os.PathLike,
    vocab_path: str | os.PathLike,
    cfg: dict,
    examples_out: str | os.PathLike,
    latents_out: str | os.PathLike,
    latents_dir: str | os.PathLike | None = None,
    partners: tuple[str | os.PathLike, int, int] | None = None,
) -> None:
    """Step: sample one shard's examples and write the examples and latents tables.

    `latents_dir` (the folder of every shard) is read only by hard_negatives.method cooccurrence.
    `partners` (matches file, width and shard size of the layer below) adds the partners of the latents
    sampled there.
    """
    import time

    with open_h5(tokens_path) as f:
        if "tokens" not in f:
            raise ValueError(f"{tokens_path} lacks dataset `tokens`")
        tokens = f["tokens"][:]
    vocab = read_vocab(vocab_path)
    if tokens.size and tokens.max() >= vocab.text.size:
        raise ValueError(f"token id {tokens.max()} in {tokens_path} is missing from vocabulary {vocab_path}")
    shard = read_shard(shard_path)
    incidence = None
    if (cfg.get("hard_negatives") or {}).get("method") == "cooccurrence":
        if latents_dir is None:
            raise ValueError("hard_negatives.method cooccurrence needs latents_dir, the folder of all shards")
        t0 = time.perf_counter()
        incidence = window_incidence(
            shard_files(latents_dir), _settings(cfg, tokens.shape[1])["example_ctx_len"]
        )
        log.info(
            "window x latent incidence: %d x %d, %d nonzeros, %.1f s",
            *incidence.shape,
            incidence.nnz,
            time.perf_counter() - t0,
        )
    chosen = None
    if partners is not None:
        matches_path, width_below, shard_size = partners
        extra = partner_latents(read_parquet(matches_path), width_below, shard_size, cfg)
        own = select_latents(shard.latent_start, shard.latent_end, cfg)
        in_range = extra[(extra >= shard.latent_start) & (extra < shard.latent_end)]
        chosen = sorted(set(own) | {int(i) for i in in_range})
        log.info("%d sampled latents + %d cross-layer partners", len(own), len(chosen) - len(own))
    examples, latents = sample_table(tokens, vocab, shard, cfg, chosen, incidence=incidence)
    write_examples(examples, examples_out)
    write_parquet(latents, latents_out)
