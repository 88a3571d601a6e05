"""The subject model's forward passes that intervention scoring needs (Paulo et al. 2024, App. G):
next-token log-probabilities over spans of padded sequences, continuations sampled with the KV cache (the
steering vector added only where a token is sampled), and the mean log-likelihood of an explanation after a
text, which is how the scorer LM reads continuations.
"""

from __future__ import annotations

import contextlib
import inspect

import numpy as np
import torch

from interpflow.activations import add_at


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def bos_of(tokenizer) -> int:
    """Sequence start as in the token corpus: BOS, else EOS."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if bos is None:
        raise ValueError("tokenizer has neither a BOS nor an EOS token")
    return bos


def padded(model: torch.nn.Module, seqs: list[list[int]]) -> torch.Tensor:
    """Right-padded ids (B, T): causal outputs at real positions never see the padding after them."""
    ids = torch.zeros(len(seqs), max(map(len, seqs)), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    return ids.to(device_of(model))


@torch.inference_mode()
def next_logprobs(
    model: torch.nn.Module, seqs: list[list[int]], spans: list[tuple[int, int]]
) -> torch.Tensor:
    """Log next-token distributions at positions [a, b) of each sequence, stacked: (sum(b - a), V)."""
    logits = model(input_ids=padded(model, seqs), use_cache=False).logits  # (B, T, V)
    return torch.cat([logits[i, a:b] for i, (a, b) in enumerate(spans)]).float().log_softmax(-1)


def span_mask(model: torch.nn.Module, seqs: list[list[int]], spans: list[tuple[int, int]]) -> torch.Tensor:
    """(B, T) float mask, 1 at each sequence's positions [a, b): where generation steers."""
    mask = torch.zeros(len(seqs), max(map(len, seqs)))
    for i, (a, b) in enumerate(spans):
        mask[i, a:b] = 1
    return mask.to(device_of(model))


def cache_name(model) -> str:
    """The forward's name for the KV cache: `cache` from transformers 5.2x on (where `past_key_values` warns
    once per call site as deprecated), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.inference_mode()
def continuations(
    model, prompt: list[int], c: dict, seed: int, steering: tuple[str, torch.Tensor] | None = None, stop=None
) -> list[list[int]]:
    """c['n_samples'] continuations of c['max_new_tokens'] tokens (each cut after `stop`), sampled from one
    seeded generator. With steering = (hookpoint, vector), the vector is added only at the positions whose
    next token is sampled: BOS and the prompt before its last token are read clean (one prefill)."""
    dev, n = device_of(model), c["n_samples"]
    name = cache_name(model)
    past = model(input_ids=torch.tensor([prompt[:-1]] * n, device=dev), use_cache=True)[name]
    x, gen, out = torch.tensor([[prompt[-1]]] * n, device=dev), torch.Generator().manual_seed(seed), []
    for _ in range(c["max_new_tokens"]):
        with add_at(model, *steering) if steering else contextlib.nullcontext():
            o = model(input_ids=x, use_cache=True, **{name: past})  # x: (S, 1)
        past, logits = o[name], o.logits[:, -1].float().cpu()  # logits: (S, V)
        if c["temperature"] > 0:
            tok = torch.multinomial((logits / c["temperature"]).softmax(-1), 1, generator=gen)[:, 0]
        else:
            tok = logits.argmax(-1)
        out.append(tok)
        x = tok[:, None].to(dev)
    rows = torch.stack(out, 1).tolist()  # (S, max_new_tokens)
    return [r[: r.index(stop) + 1] if stop in r else r for r in rows]


def explanation_logprobs(
    model, tokenizer, texts: list[str], explanation: str, template: str, prefix: str = ""
) -> np.ndarray:
    """Per text: mean log P(explanation token | prefix, template(text), earlier ones), nats, [len(texts)]."""
    ctxs = [
        [bos_of(tokenizer), *tokenizer(prefix + template.format(text=t), add_special_tokens=False).input_ids]
        for t in texts
    ]
    expl = tokenizer(" " + explanation.strip(), add_special_tokens=False).input_ids
    logp = next_logprobs(
        model, [c + expl for c in ctxs], [(len(c) - 1, len(c) - 1 + len(expl)) for c in ctxs]
    )
    target = torch.tensor(expl * len(texts), device=logp.device)  # (B * E,)
    return logp.gather(1, target[:, None]).view(len(texts), len(expl)).mean(1).double().cpu().numpy()
