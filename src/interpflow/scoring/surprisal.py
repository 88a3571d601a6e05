"""Surprisal scorer: does reading the explanation first make a base LM less surprised by activating windows?

Paulo et al. 2024, section 4 ("surprisal"): a base causal LM reads each test window after a prompt that
holds the explanation, and again after the same prompt holding a neutral description. The loss drop
(neutral minus explained, mean cross-entropy per window token) should be larger for activating windows
than for others; the AUROC of the drop is the score. Only the window's tokens count, never the prompt's.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pandas as pd

from interpflow.defaults import with_defaults
from interpflow.scoring.common import auroc_metrics, check_caps, class_mean, save_scores, select_windows
from interpflow.store import read_parquet

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "The following passage is typical of texts with {description}:\n\n"
DEFAULT_NEUTRAL = "a variety of ordinary content"
PREDICTION_COLUMNS = {
    "latent": "int64",
    "example_id": "int64",
    "activating": "bool",
    "loss_explained": "float64",
    "loss_neutral": "float64",
    "drop": "float64",
    "status": "object",
    "error": "object",
}
_ERRORS = {
    "empty_text": "the window's text has no tokens",
    "too_long": "prompt plus window exceed the model's context",
    "nonfinite_loss": "the model gave a non-finite loss",
}


def _check_cfg(cfg: dict) -> tuple[str, str, int]:
    """Validate the surprisal options; return (prompt_template, neutral, batch_size)."""
    check_caps(cfg)
    cfg = with_defaults("scorers", cfg)
    template = str(cfg["prompt_template"] or DEFAULT_TEMPLATE)  # null in the config = the default
    if "{description}" not in template:
        raise ValueError(f"scorer option prompt_template must contain '{{description}}', got {template!r}")
    neutral = str(cfg["neutral"] or DEFAULT_NEUTRAL)
    if not neutral.strip():
        raise ValueError("scorer option neutral must be a non-empty description")
    return template, neutral, int(cfg["batch_size"])


def _batch_losses(model, seqs: list[list[int]], m: np.ndarray, n: np.ndarray, pad_id: int):
    """Mean cross-entropy of tokens m_i .. m_i+n_i-1 of each sequence (its text after an m_i-token prompt)."""
    import torch
    import torch.nn.functional as F

    device = getattr(model, "device", torch.device("cpu"))
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)  # [B, L], padded on the right
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
    # logits only where some row predicts a text token: position j predicts token j + 1
    lo, hi = int(m.min()) - 1, int((m + n).max()) - 1
    pos = torch.arange(lo, hi)  # [S]
    mt, nt = torch.as_tensor(m)[:, None], torch.as_tensor(n)[:, None]
    valid = (pos[None] >= mt - 1) & (pos[None] < mt + nt - 1)  # [B, S] the rows' own text tokens
    targets = ids[:, lo + 1 : hi + 1][valid]  # [n_valid]
    with torch.inference_mode():
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=pos.to(device))
        logits = out.logits[valid.to(device)].float()  # [n_valid, V]; the CE stays on the model's device
        ce = F.cross_entropy(logits, targets.to(device), reduction="none").cpu()  # [n_valid]
    rows = valid.nonzero()[:, 0]
    return (torch.zeros(len(seqs)).index_add_(0, rows, ce) / torch.as_tensor(n)).numpy()


def pair_losses(
    model, tokenizer, prompts: list[str], texts: list[str], batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean per-token cross-entropy (nats) of each text after its prompt, and each pair's status.

    The prompt is tokenised with the tokenizer's special tokens (a BOS where it uses one), the text without,
    so the text's tokens are the same after every prompt. Each distinct pair is run once, sorted by length
    so batches pad little.
    """
    from tqdm.auto import tqdm

    if not texts:
        return np.zeros(0), np.zeros(0, dtype=object)
    up, p_inv = np.unique(np.asarray(prompts, dtype=str), return_inverse=True)
    ut, t_inv = np.unique(np.asarray(texts, dtype=str), return_inverse=True)
    pairs, inv = np.unique(np.stack([p_inv, t_inv], 1), axis=0, return_inverse=True)  # [n_pairs, 2]
    p_ids = tokenizer(list(up), add_special_tokens=True)["input_ids"]
    t_ids = tokenizer(list(ut), add_special_tokens=False)["input_ids"]
    m = np.array([len(p_ids[i]) for i in pairs[:, 0]])
    n = np.array([len(t_ids[i]) for i in pairs[:, 1]])
    loss, status = np.full(len(pairs), np.nan), np.full(len(pairs), "ok", dtype=object)
    max_len = getattr(getattr(model, "config", None), "max_position_embeddings", None) or np.inf
    status[n == 0], status[(n > 0) & (m + n > max_len)] = "empty_text", "too_long"
    todo = np.flatnonzero(status == "ok")
    todo = todo[np.lexsort((n[todo], m[todo]))]  # equal prompts together, then by text length
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = [todo[s : s + batch_size] for s in range(0, len(todo), batch_size)]
    for b in tqdm(batches, desc="surprisal", unit="batch", disable=len(batches) < 2):
        seqs = [list(p_ids[p]) + list(t_ids[t]) for p, t in pairs[b]]
        loss[b] = _batch_losses(model, seqs, m[b], n[b], pad_id)
    status[(status == "ok") & ~np.isfinite(loss)] = "nonfinite_loss"
    inv = inv.reshape(-1)  # numpy 2.0-2.1 return it with an extra axis
    return loss[inv], status[inv]


def score_latents(
    examples: pd.DataFrame, explanations: pd.DataFrame, cfg: dict, model, tokenizer
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each test window's loss after the explanation vs the neutral description; (predictions, metrics)."""
    template, neutral, bs = _check_cfg(cfg)
    windows, unscored = select_windows(examples, explanations, cfg)
    texts = windows["text"].tolist()
    explained = [template.replace("{description}", e) for e in windows["explanation"]]
    # the neutral prompt is the same for every latent, so pair_losses reads each window after it only once
    loss, status = pair_losses(
        model, tokenizer, explained + [template.replace("{description}", neutral)] * len(texts), texts * 2, bs
    )
    k = len(texts)
    l_exp, l_neu = loss[:k], loss[k:]
    st = np.where(status[:k] != "ok", status[:k], status[k:])
    ok = st == "ok"
    predictions = pd.DataFrame(
        {
            "latent": windows["latent"],
            "example_id": windows["example_id"],
            "activating": windows["activating"],
            "loss_explained": np.where(ok, l_exp, np.nan),
            "loss_neutral": np.where(ok, l_neu, np.nan),
            "drop": np.where(ok, l_neu - l_exp, np.nan),
            "status": st,
            "error": [_ERRORS.get(s, "") for s in st],
        }
    ).astype(PREDICTION_COLUMNS)
    means = {
        "mean_drop_activating": class_mean("drop", True),
        "mean_drop_nonactivating": class_mean("drop", False),
    }
    name = str(cfg.get("name") or "surprisal")
    return predictions, auroc_metrics(predictions, "drop", explanations, unscored, name, "surprisal", means)


def run_surprisal(
    examples_path: str | os.PathLike,
    explanations_path: str | os.PathLike,
    model_spec: str | os.PathLike,
    model_cfg: dict,
    cfg: dict,
    predictions_out: str | os.PathLike,
    metrics_out: str | os.PathLike,
    *,
    model=None,
    tokenizer=None,
) -> None:
    """Workflow step: surprisal-score a shard's explanations; write predictions-/metrics-{shard}.parquet."""
    t0 = time.perf_counter()
    _check_cfg(cfg)
    examples, explanations = read_parquet(examples_path), read_parquet(explanations_path)
    if model is None:
        from interpflow.models import load_model

        load_cfg = {**model_cfg, **({"device": cfg["device"]} if cfg.get("device") else {})}
        model, loaded_tokenizer = load_model(model_spec, load_cfg)
        tokenizer = tokenizer or loaded_tokenizer
    elif tokenizer is None:
        from interpflow.models import load_tokenizer

        tokenizer = load_tokenizer(model_spec)
    predictions, metrics = score_latents(examples, explanations, cfg, model, tokenizer)
    name = str(cfg.get("name") or cfg.get("kind"))
    save_scores(predictions, metrics, predictions_out, metrics_out, name, time.perf_counter() - t0)
