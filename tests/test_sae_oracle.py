"""Our TopK SAE against eai-sparsify's own SparseCoder on the same weights (the way SAELens checks itself
against reference implementations): encoding, reconstruction, fvu, gradients, and the AuxK loss up to the
two libraries' different normalisations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interpflow.sae.model import TopKSAE

sparsify = pytest.importorskip("sparsify", reason="eai-sparsify is a dev dependency (pyproject [dev])")

D_IN, WIDTH, K = 16, 64, 4


def pair(input_scale: float = 1.0, seed: int = 0) -> tuple[TopKSAE, torch.nn.Module]:
    """Our SAE with random weights and biases, and sparsify's SparseCoder holding the same ones (in the
    scaled space ours works in)."""
    gen = torch.Generator().manual_seed(seed)
    ours = TopKSAE(D_IN, WIDTH, K, input_scale, generator=gen)
    with torch.no_grad():
        ours.encoder.bias.copy_(torch.randn(WIDTH, generator=gen) * 0.1)
        ours.b_dec.copy_(torch.randn(D_IN, generator=gen))
        ours.W_dec.copy_(ours.W_dec + 0.3 * torch.randn(WIDTH, D_IN, generator=gen))  # untied, then unit
    ours.set_decoder_norm_to_unit()
    ref = sparsify.SparseCoder(D_IN, sparsify.SparseCoderConfig(num_latents=WIDTH, k=K))
    with torch.no_grad():
        for name in ("encoder.weight", "encoder.bias", "W_dec", "b_dec"):
            ref.get_parameter(name).copy_(ours.get_parameter(name))
    return ours, ref


def by_index(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Top-k codes [B, k] as dense rows [B, WIDTH] (the two sort their k differently)."""
    return torch.zeros(len(values), WIDTH).scatter(1, indices, values)


@pytest.mark.parametrize("input_scale", [1.0, 0.37])
def test_forward_matches_sparsify(input_scale):
    ours, ref = pair(input_scale)
    x = torch.randn(64, D_IN, generator=torch.Generator().manual_seed(1)) * 3 + 1
    out = ours(x)
    expected = ref(x * input_scale)  # sparsify has no input scale: feed it the scaled inputs
    torch.testing.assert_close(by_index(out.top_values, out.top_indices),
                               by_index(expected.latent_acts, expected.latent_indices))  # fmt: skip
    torch.testing.assert_close(out.x_hat * input_scale, expected.sae_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.fvu, expected.fvu, rtol=1e-5, atol=1e-7)
    values, indices = ours.encode(x)
    torch.testing.assert_close(ours.decode(values, indices), out.x_hat)


def test_gradients_match_sparsify():
    ours, ref = pair()
    x = torch.randn(64, D_IN, generator=torch.Generator().manual_seed(2)) * 2
    ours(x).fvu.backward()
    ref(x).fvu.backward()
    for name in ("encoder.weight", "encoder.bias", "W_dec", "b_dec"):
        torch.testing.assert_close(ours.get_parameter(name).grad, ref.get_parameter(name).grad,
                                   rtol=1e-4, atol=1e-6, msg=name)  # fmt: skip


def test_auxk_loss_matches_sparsify_up_to_its_normalisation():
    """Both pick the same top dead latents and fit the same residual; ours divides the squared error by the
    residual's variance (Gao et al.'s reference), sparsify by the input's variance times
    min(n_dead / k_aux, 1)."""
    ours, ref = pair()
    x = torch.randn(64, D_IN, generator=torch.Generator().manual_seed(3)) * 2
    dead = torch.zeros(WIDTH, dtype=torch.bool)
    dead[np.random.default_rng(0).choice(WIDTH, 5, replace=False)] = True  # fewer than k_aux = D_IN // 2
    out, expected = ours(x, dead_mask=dead), ref(x, dead_mask=dead)
    e = (x - out.x_hat).detach()
    sq_err_ours = out.auxk_loss * (e - e.mean(0)).pow(2).sum()
    sq_err_ref = expected.auxk_loss * (x - x.mean(0)).pow(2).sum() / min(5 / (D_IN // 2), 1.0)
    torch.testing.assert_close(sq_err_ours, sq_err_ref, rtol=1e-4, atol=1e-6)
    assert out.auxk_loss > 0
