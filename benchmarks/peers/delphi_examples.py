"""delphi's example construction: LatentDataset (split loading, constructor, sampler) over chosen latents."""

from __future__ import annotations

import time

from common import run


def task(a: dict) -> dict:
    """Time building delphi's LatentDataset and iterating every record of the chosen latents."""
    import torch
    from delphi.config import ConstructorConfig, SamplerConfig
    from delphi.latents import LatentDataset
    from transformers import AutoTokenizer

    s = a["settings"]
    tokenizer = AutoTokenizer.from_pretrained(a["model_dir"])
    sampler_cfg = SamplerConfig(
        n_examples_train=s["n_train"],
        n_examples_test=s["n_test"],
        n_quantiles=s["n_quantiles"],
        train_type="quantiles",
    )
    constructor_cfg = ConstructorConfig(
        example_ctx_len=s["example_ctx_len"],
        min_examples=s["min_activations"],  # delphi also counts activations
        n_non_activating=s["n_nonactivating"],
        non_activating_source="random",
    )
    hook = a["hookpoint"]
    t0 = time.perf_counter()
    dataset = LatentDataset(
        a["raw_dir"],
        sampler_cfg,
        constructor_cfg,
        tokenizer=tokenizer,
        modules=[hook],
        latents={hook: torch.tensor(a["latents"])},
    )
    records = list(dataset)
    seconds = time.perf_counter() - t0
    n = len(a["latents"])
    return {"latents": n, "latents_ok": len(records), "seconds": seconds, "latents_per_s": n / seconds}


if __name__ == "__main__":
    run(task)
