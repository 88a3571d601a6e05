"""sparsify's trainer on cached activations: a stand-in model returns the activations at `layers.0`.

sparsify trains on activations it gets by running a model; here the "model" looks up rows of the cached
activations (the same file interpflow trains on), so only sparsify's own training loop is measured.
"""

from __future__ import annotations

import tempfile
import time
from types import SimpleNamespace

from common import run


def load_rows(path: str):
    """Non-BOS rows of an activations.h5, float32 [n, d]."""
    import h5py
    import numpy as np
    import torch

    with h5py.File(path, "r") as f:
        x = f["activations"][:]
        ctx = int(f.attrs["ctx_len"])
    return torch.from_numpy(x[np.arange(len(x)) % ctx != 0])


def stand_in(acts):
    """A minimal model whose only layer returns the activation rows its input ids point at."""
    import torch
    from torch import nn

    class Lookup(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("acts", acts, persistent=False)

        def forward(self, ids):
            return self.acts[ids]  # (B, T, d)

    class StandIn(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([Lookup()])
            self.config = SimpleNamespace(num_hidden_layers=1)
            self.dummy_inputs = {"input_ids": torch.zeros(1, 1, dtype=torch.long)}

        @property
        def base_model(self):
            return self

        @property
        def device(self):
            return self.layers[0].acts.device

        def forward(self, input_ids, **_):
            return self.layers[0](input_ids)

    return StandIn()


def task(a: dict) -> dict:
    """Train sparsify's SparseCoder with its defaults (signum, no AuxK) on the rows; FVU on held-out rows."""
    import torch
    from sparsify import SaeConfig, SparseCoder, TrainConfig, Trainer

    acts = load_rows(a["acts"])
    gen = torch.Generator().manual_seed(a["seed"])
    ctx = a["seq_len"]
    n_seq = min(len(acts), a.get("max_tokens") or len(acts)) // ctx
    ids = torch.randperm(len(acts), generator=gen)[: n_seq * ctx].reshape(n_seq, ctx)  # pre-shuffled
    dataset = [{"input_ids": row} for row in ids]
    model = stand_in(acts)
    with tempfile.TemporaryDirectory() as save_dir:
        cfg = TrainConfig(
            SaeConfig(num_latents=a["width"], k=a["k"]),
            batch_size=a["batch_seqs"],
            hookpoints=["layers.0"],
            init_seeds=[a["seed"]],
            log_to_wandb=False,
            save_every=10**9,
            save_dir=save_dir,
            run_name="bench",
        )
        t0 = time.perf_counter()
        trainer = Trainer(cfg, dataset, model)
        trainer.fit()
        seconds = time.perf_counter() - t0
        sae = SparseCoder.load_from_disk(f"{save_dir}/bench/layers.0")  # saved in schedule-free eval mode
    x = load_rows(a["eval_acts"])
    err, fired = 0.0, torch.zeros(sae.num_latents, dtype=torch.bool)
    with torch.inference_mode():
        for i in range(0, len(x), 4096):
            xb = x[i : i + 4096]
            values, indices, _ = sae.encode(xb)
            fired[indices[values > 0]] = True
            err += float((xb - sae.decode(values, indices)).pow(2).sum())
    return {
        "tokens": ids.numel(),
        "seconds": seconds,
        "tokens_per_s": ids.numel() / seconds,
        "eval_fvu": err / float((x - x.mean(0)).pow(2).sum()),
        "eval_dead_fraction": 1 - float(fired.float().mean()),
    }


if __name__ == "__main__":
    run(task)
