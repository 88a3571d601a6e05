"""The TopK sparse autoencoder (Gao et al. 2024): encoder, sparse decoder, fvu and AuxK loss, and its files
(cfg.json + sae.safetensors)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interpflow.store import atomic_path

__all__ = ["ForwardOutput", "TopKSAE"]

WEIGHTS_FILE = "sae.safetensors"
CFG_FILE = "cfg.json"


class ForwardOutput(NamedTuple):
    """Result of one SAE forward pass."""

    x_hat: Tensor
    """Reconstruction [B, d_in], in the raw (unscaled) input space."""
    top_values: Tensor
    """Activations of the selected latents [B, k], >= 0."""
    top_indices: Tensor
    """Indices of the selected latents [B, k], int64."""
    fvu: Tensor
    """Fraction of variance unexplained of the batch, scalar."""
    auxk_loss: Tensor
    """AuxK loss (Gao et al. App. A.2), scalar; 0 when no dead latents are given."""
    pre_acts: Tensor | None = None
    """Dense ReLU pre-activations [B, width] (detached), only when requested."""


class _TopKEncoder(torch.autograd.Function):
    """Linear + ReLU + top-k (and top-aux_k over dead latents) whose backward touches only selected pairs.

    Also returns the dense linear outputs z [B, width] (pre-ReLU, not differentiable).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, k: int, dead: Tensor | None, aux_k: int):
        z = F.linear(x, weight, bias)  # [B, width]
        # ReLU is monotone, so top-k of z then ReLU equals top-k of ReLU(z) and skips a [B, width] pass.
        values, indices = z.topk(k, dim=-1, sorted=False)  # [B, k]
        values.clamp_min_(0)
        if dead is not None and aux_k > 0:
            dead_idx = dead.nonzero().squeeze(1)  # [n_dead]
            aux_values, j = z.index_select(1, dead_idx).topk(min(aux_k, len(dead_idx)), sorted=False)
            aux_values.clamp_min_(0)
            aux_indices = dead_idx[j]  # [B, aux_k]
        else:
            aux_values, aux_indices = z.new_empty(len(x), 0), indices.new_empty(len(x), 0)
        ctx.save_for_backward(
            x, weight, torch.cat([values, aux_values], 1), torch.cat([indices, aux_indices], 1)
        )
        ctx.mark_non_differentiable(indices, aux_indices, z)
        return values, indices, aux_values, aux_indices, z

    @staticmethod
    def backward(ctx, g_values, _gi, g_aux, _gai, _gz):
        x, weight, values, indices = ctx.saved_tensors
        # ReLU passes no gradient where a selected value was clipped to 0.
        g = torch.cat([g_values, g_aux], 1) * (values > 0)  # [B, k + aux_k]
        g_x = g_w = g_b = None
        if ctx.needs_input_grad[0]:
            g_x = F.embedding_bag(indices, weight, per_sample_weights=g, mode="sum")  # [B, d_in]
        if ctx.needs_input_grad[1]:
            g_w = _sparse_outer(g, indices, x, weight.shape[0])  # [width, d_in]
        if ctx.needs_input_grad[2]:
            g_b = torch.zeros_like(weight[:, 0]).index_add_(0, indices.flatten(), g.flatten())
        return g_x, g_w, g_b, None, None, None


def _sparse_outer(g: Tensor, indices: Tensor, x: Tensor, width: int) -> Tensor:
    """Return sum_b sum_j g[b, j] * onehot(indices[b, j]) x[b]^T as a dense [width, d_in] matrix."""
    # A sparse [width, B] matrix times x costs nnz * d_in, versus width * B * d_in for the dense product.
    B, kk = indices.shape
    rows = torch.arange(B, device=x.device).repeat_interleave(kk)
    sp = torch.sparse_coo_tensor(
        torch.stack([indices.flatten(), rows]), g.flatten(), (width, B), check_invariants=False
    )
    return torch.sparse.mm(sp, x)


class TopKSAE(nn.Module):
    """A TopK sparse autoencoder whose inputs are scaled by a constant so their mean squared norm is d_in."""

    def __init__(
        self,
        d_in: int,
        width: int,
        k: int,
        input_scale: float = 1.0,
        *,
        generator: torch.Generator | None = None,
    ):
        """Build an SAE with tied init: encoder rows = decoder rows = random unit directions; biases 0."""
        super().__init__()
        if not 0 < k <= width:
            raise ValueError(f"need 0 < k <= width, got k={k}, width={width}")
        self.d_in, self.width, self.k, self.input_scale = d_in, width, k, float(input_scale)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        w = torch.randn(width, d_in, generator=gen)
        w /= w.norm(dim=1, keepdim=True)
        self.encoder = nn.Linear(d_in, width)
        with torch.no_grad():
            self.encoder.weight.copy_(w)
            self.encoder.bias.zero_()
        self.W_dec = nn.Parameter(w.clone())  # [width, d_in]
        self.b_dec = nn.Parameter(torch.zeros(d_in))  # [d_in], lives in the scaled space

    def _encode_scaled(self, xs: Tensor, dead: Tensor | None = None, aux_k: int = 0):
        """Top-k (and top-aux_k dead) latents of scaled inputs xs [B, d_in]."""
        return _TopKEncoder.apply(
            xs - self.b_dec, self.encoder.weight, self.encoder.bias, self.k, dead, aux_k
        )

    def _decode_scaled(self, values: Tensor, indices: Tensor) -> Tensor:
        """Sparse decoder product without the bias: [B, k] x [width, d_in] -> [B, d_in]."""
        return F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum")

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Raw inputs x [B, d_in] -> (top_values [B, k] >= 0, top_indices [B, k] int64)."""
        values, indices, *_ = self._encode_scaled(x.to(self.W_dec.dtype) * self.input_scale)
        return values, indices

    def decode(self, top_values: Tensor, top_indices: Tensor) -> Tensor:
        """Sparse codes -> reconstruction x_hat [B, d_in] in the raw input scale."""
        return (self._decode_scaled(top_values, top_indices) + self.b_dec) / self.input_scale

    def forward(
        self,
        x: Tensor,
        *,
        dead_mask: Tensor | None = None,
        aux_k: int | None = None,
        return_pre_acts: bool = False,
    ) -> ForwardOutput:
        """Encode, decode, and compute fvu and (if any latent is dead) the AuxK loss in the scaled space."""
        xs = x.to(self.W_dec.dtype) * self.input_scale  # [B, d_in]
        n_dead = 0 if dead_mask is None else int(dead_mask.sum())
        aux_k = (self.d_in // 2 if aux_k is None else aux_k) if n_dead else 0
        values, indices, aux_values, aux_indices, z = self._encode_scaled(
            xs, dead_mask if aux_k else None, aux_k
        )
        xs_hat = self._decode_scaled(values, indices) + self.b_dec
        e = xs - xs_hat  # [B, d_in]
        fvu = e.pow(2).sum() / (xs - xs.mean(0)).pow(2).sum()
        if aux_k:
            # Gao et al. App. A.2: dead latents learn to predict the live latents' residual.
            e = e.detach()
            e_hat = self._decode_scaled(aux_values, aux_indices)
            auxk_loss = (e - e_hat).pow(2).sum() / (e - e.mean(0)).pow(2).sum()
        else:
            auxk_loss = xs.new_zeros(())
        return ForwardOutput(
            xs_hat / self.input_scale, values, indices, fvu, auxk_loss, z.relu() if return_pre_acts else None
        )

    @torch.no_grad()
    def set_decoder_norm_to_unit(self) -> None:
        """Rescale decoder rows to unit norm (latent magnitudes then live in the activations)."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(torch.finfo(self.W_dec.dtype).eps)

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder_directions(self) -> None:
        """Project out the gradient component along each (unit) decoder row, as in Gao et al. / sparsify."""
        if self.W_dec.grad is None:
            return
        parallel = (self.W_dec.grad * self.W_dec).sum(1, keepdim=True)  # [width, 1]
        self.W_dec.grad -= parallel * self.W_dec

    def save(self, out_dir: str | os.PathLike, extra_cfg: dict | None = None) -> None:
        """Write out_dir/sae.safetensors and then out_dir/cfg.json, each atomically."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        tensors = {name: t.detach().cpu().contiguous() for name, t in self.state_dict().items()}
        cfg = {
            "d_in": self.d_in,
            "width": self.width,
            "k": self.k,
            "input_scale": self.input_scale,
            **(extra_cfg or {}),
        }
        with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp))
        with atomic_path(out_dir / CFG_FILE) as tmp:
            tmp.write_text(json.dumps(cfg, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> TopKSAE:
        """Load an SAE folder written by `save` (cfg.json + sae.safetensors)."""
        from safetensors.torch import load_file

        path = Path(path)
        cfg_path, weights_path = path / CFG_FILE, path / WEIGHTS_FILE
        for p in (cfg_path, weights_path):
            if not p.is_file():
                raise FileNotFoundError(f"missing SAE file: {p}")
        try:
            cfg = json.loads(cfg_path.read_text())
            sae = cls(int(cfg["d_in"]), int(cfg["width"]), int(cfg["k"]), float(cfg["input_scale"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"invalid SAE config {cfg_path}: {exc!r}") from exc
        try:
            sae.load_state_dict(load_file(str(weights_path)))
        except Exception as exc:  # safetensors and load_state_dict raise several types
            raise ValueError(f"invalid SAE weights {weights_path}: {exc}") from exc
        return sae.to(device)
