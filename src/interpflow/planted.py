"""Planted latents whose truth is known: linear probes of token properties, written as a JumpReLU dictionary.

Issue 13's validity benchmark needs latents where the right explanation is known in advance. Each probe is
a logistic regression of one plainly defined token property (a comma, a digit, the word "the", ...) on the
subject model's cached activations; it becomes one latent whose encoder row is the probe and whose JumpReLU
threshold makes it fire on about as many tokens as carry the property. Beside each planted latent sits a
control: a random direction whose threshold makes it fire at the same rate (the same sparsity, no
meaning). The dictionary is written in the SAELens layout (cfg.json + sae_weights.safetensors,
architecture jumprelu), so the workflow loads it as any `kind: pretrained, format: saelens` dictionary;
oracle.parquet holds each latent's oracle explanation (its property's description) for the `file`
explainer, planted.json the fit's measurements.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .store import atomic_path, open_h5, read_parquet, write_parquet

log = logging.getLogger(__name__)

ORACLE_FILE = "oracle.parquet"
REPORT_FILE = "planted.json"
MARGIN = 1.0  # JumpReLU threshold: a firing latent's value is its probe logit above the cut, plus MARGIN
_BRACKETS = set("()[]{}")


@dataclass(frozen=True)
class Property:
    """A token property a planted latent is built to detect."""

    description: str
    """The oracle explanation: the property in plain words, as an explainer should state it."""
    test: Callable[[str], bool]
    """Whether a token has the property, given its text stripped of surrounding whitespace."""
    names: str
    """Regex (case-insensitive) that an explanation naming the property matches."""


def _word(w: str) -> Callable[[str], bool]:
    return lambda s: s.lower() == w


PROPERTIES: dict[str, Property] = {
    "digit": Property(
        "tokens containing a digit, in numbers such as years and dates",
        lambda s: any(c.isdigit() for c in s),
        r"digit|number|numer|year|date|\d",
    ),
    "comma": Property('the comma ","', lambda s: s == ",", r"comma|[\"'`“‘],"),
    "bracket": Property(
        'opening and closing parentheses or brackets, "(" and ")"',
        lambda s: bool(s) and set(s) <= _BRACKETS,
        r"parenthes|bracket|[()\[\]]",
    ),
    "capital": Property(
        "words starting with a capital letter",
        lambda s: s[:1].isupper(),
        r"capital|upper[- ]?case|proper noun",
    ),
    "the": Property('the word "the"', _word("the"), r"[\"'`“‘]the\b|\barticles?\b"),
    "of": Property('the word "of"', _word("of"), r"[\"'`“‘]of\b|preposition"),
    "period": Property(
        'the full stop "." ending a sentence', lambda s: s == ".", r"period|full stop|\bdot\b|[\"'`“‘]\."
    ),
    "and": Property('the word "and"', _word("and"), r"[\"'`“‘]and\b|conjunction"),
}


def names_property(explanation: str | None, prop: str) -> bool:
    """Whether an explanation names the property (its regex matches); None (no explanation) does not."""
    return bool(explanation) and re.search(PROPERTIES[prop].names, explanation, re.IGNORECASE) is not None


def vocab_texts(path: str | os.PathLike) -> np.ndarray:
    """Token id -> its text alone (vocab.parquet's `text`), an object array; absent ids map to ''."""
    vocab = read_parquet(path)
    if not {"token_id", "text"} <= set(vocab.columns):
        raise ValueError(f"vocabulary table {path} needs columns token_id, text")
    out = np.full(int(vocab["token_id"].max()) + 1 if len(vocab) else 0, "", dtype=object)
    out[vocab["token_id"].to_numpy()] = vocab["text"].to_numpy()
    return out


def token_labels(token_ids: np.ndarray, vocab: np.ndarray, props: list[str]) -> np.ndarray:
    """bool [n, P]: whether each token (by id) has each property, judged on its whitespace-stripped text."""
    unique, inverse = np.unique(token_ids, return_inverse=True)
    if unique.max(initial=0) >= len(vocab):
        raise ValueError(f"token id {unique.max()} is outside the vocabulary ({len(vocab)} tokens)")
    tests = [PROPERTIES[p].test for p in props]
    table = np.array([[t(str(vocab[i]).strip()) for t in tests] for i in unique], dtype=bool)
    return table.reshape(len(unique), len(props))[inverse]


def read_sample(
    activations_path: str | os.PathLike,
    tokens_path: str | os.PathLike,
    n_sequences: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random sample of whole sequences: activations float32 [n, d], token ids [n], sequence index [n].

    The BOS position of each sequence is left out, as the latent store leaves it out (no text, outlier
    norms), so rates and thresholds are those of the tokens the workflow encodes.
    """
    with open_h5(tokens_path) as f:
        tokens = f["tokens"][:]  # [n_seq, ctx_len]
    n_seq, ctx_len = tokens.shape
    seqs = np.sort(rng.choice(n_seq, size=min(n_sequences, n_seq), replace=False))
    with open_h5(activations_path) as f:
        acts = f["activations"]
        if acts.shape[0] != n_seq * ctx_len:
            raise ValueError(
                f"{activations_path} has {acts.shape[0]} rows, {tokens_path} {n_seq} x {ctx_len} tokens"
            )
        x = np.concatenate([acts[s * ctx_len + 1 : (s + 1) * ctx_len] for s in seqs])  # [n, d]
    ids = tokens[seqs, 1:].reshape(-1)
    return x.astype(np.float32), ids, np.repeat(seqs, ctx_len - 1)


def fit_probes(
    z: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float, l2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced logistic regressions, one per column of y: z [n, d], y bool [n, P] -> w [d, P], b [P].

    Each class carries half the loss weight, so a rare property's probe is not pulled to "never"; full-batch
    Adam with a small L2 penalty (standardised inputs, so one penalty fits every dimension).
    """
    yf = y.float()
    n_pos = yf.sum(0).clamp_min(1)
    weight = torch.where(y, 0.5 / n_pos, 0.5 / (len(y) - n_pos).clamp_min(1))  # [n, P], columns sum to 1
    w = torch.zeros(z.shape[1], y.shape[1], requires_grad=True)
    b = torch.zeros(y.shape[1], requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        logits = z @ w + b  # [n, P]
        loss = F.binary_cross_entropy_with_logits(logits, yf, weight=weight, reduction="sum")
        (loss / y.shape[1] + l2 * w.square().sum()).backward()
        opt.step()
    return w.detach(), b.detach()


def _balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    return 0.5 * (pred[truth].mean() + (~pred[~truth]).mean())


def _cut_at_rate(logits: np.ndarray, rate: float) -> float:
    """The logit above which a fraction `rate` of the tokens lie."""
    return float(np.quantile(logits, 1.0 - rate))


def _measure(fires: np.ndarray, truth: np.ndarray) -> dict:
    """Precision, recall and firing rate of a latent's firing against a property's labels."""
    tp = float((fires & truth).sum())
    return {
        "firing_rate": float(fires.mean()),
        "precision": tp / max(float(fires.sum()), 1.0),
        "recall": tp / max(float(truth.sum()), 1.0),
    }


@dataclass(frozen=True)
class FitOptions:
    """How the probes are fitted (defaults sized for the default run's 307k-token cache on 2 CPU cores)."""

    n_sequences: int = 300
    """Sequences sampled from the cache; the first half (by sequence) fits, the second half measures."""
    steps: int = 300
    """Full-batch Adam steps per fit."""
    lr: float = 0.05
    l2: float = 1e-2
    """L2 penalty on the weights of the standardised inputs (1e-4 overfits a few thousand tokens: SmolLM2's
    comma probe then fires on twice the commas held out; 1e-2 keeps precision and recall above 0.95)."""
    min_positives: int = 20
    """Fewest fitting tokens with a property; fewer is an error naming the property."""
    seed: int = 0


def _split(seq: np.ndarray, labels: np.ndarray, props: list[str], opts: FitOptions) -> np.ndarray:
    """bool [n]: the fitting half (earlier sequences); the rest is held out. Checks both halves exist."""
    seqs = np.unique(seq)
    if len(seqs) < 2:
        raise ValueError(f"planted: n_sequences={opts.n_sequences} gives {len(seqs)} sequence; need >= 2")
    fit = seq < seqs[len(seqs) // 2]
    counts = labels[fit].sum(0)
    few = {p: int(c) for p, c in zip(props, counts, strict=True) if c < opts.min_positives}
    if few:
        raise ValueError(
            f"planted: too few fitting tokens with properties {few} (min_positives={opts.min_positives}); "
            "sample more sequences (n_sequences) or drop those properties"
        )
    return fit


def _directions(z: torch.Tensor, labels: np.ndarray, fit: np.ndarray, opts: FitOptions):
    """Probe weights and random controls of the same norms: W [d, 2P], B [2P] (controls have no bias)."""
    fit_t = torch.from_numpy(fit)
    w, b = fit_probes(z[fit_t], torch.from_numpy(labels[fit]), steps=opts.steps, lr=opts.lr, l2=opts.l2)
    gen = torch.Generator().manual_seed(opts.seed)
    r = torch.randn(w.shape, generator=gen)  # [d, P]
    r = r / r.norm(dim=0) * w.norm(dim=0)
    return torch.cat([w, r], 1), torch.cat([b, torch.zeros_like(b)])


def build_planted(
    activations_path: str | os.PathLike,
    tokens_path: str | os.PathLike,
    vocab_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    properties: list[str] | None = None,
    hookpoint: str = "",
    model_name: str = "",
    opts: FitOptions = FitOptions(),
) -> pd.DataFrame:
    """Fit one probe per property, add matched random controls, write the dictionary; return its table.

    Latents 0..P-1 are the planted probes (in `properties` order), P..2P-1 their controls (latent P + i
    fires at latent i's rate). The returned table (also in planted.json) has one row per latent:
    latent, property, is_planted, probe_accuracy (held-out balanced accuracy of the probe's own sign;
    for a control, of its direction at its cut), property_rate, firing_rate, precision, recall (held out;
    a control's firing rate matches its property's over the whole sample, where its cut was set).
    """
    props = list(properties or PROPERTIES)
    unknown = sorted(set(props) - set(PROPERTIES))
    if unknown:
        raise ValueError(f"planted: unknown properties {unknown}; known: {list(PROPERTIES)}")
    rng = np.random.default_rng(opts.seed)
    x, ids, seq = read_sample(activations_path, tokens_path, opts.n_sequences, rng)
    labels = token_labels(ids, vocab_texts(vocab_path), props)  # [n, P]
    fit = _split(seq, labels, props, opts)
    mu, sd = x[fit].mean(0), x[fit].std(0)
    sd = np.maximum(sd, 1e-6 * sd.max())  # a constant dimension must not divide by zero
    z = torch.from_numpy((x - mu) / sd)  # [n, d], standardised: the residual stream has outlier dimensions
    W, B = _directions(z, labels, fit, opts)
    logits = (z @ W + B).numpy()  # [n, 2P]
    truth = np.concatenate([labels, labels], 1)  # control P + i is judged against property i
    # a probe's cut is fitted on the fitting half; a control fits nothing, so its cut uses every sampled
    # token (random directions pick up topic, so half the sample can fire at a rate far from the other's)
    on = [fit if j < len(props) else slice(None) for j in range(truth.shape[1])]
    cuts = np.array([_cut_at_rate(logits[on[j], j], truth[on[j], j].mean()) for j in range(truth.shape[1])])
    fires = logits > cuts
    held = ~fit
    rows = []
    for j in range(truth.shape[1]):
        sign = logits[held, j] > (0.0 if j < len(props) else cuts[j])
        rows.append(
            dict(latent=j, property=props[j % len(props)], is_planted=j < len(props),
                 probe_accuracy=_balanced_accuracy(sign, truth[held, j]),
                 property_rate=float(truth[held, j].mean()), **_measure(fires[held, j], truth[held, j]))
        )  # fmt: skip
    table = pd.DataFrame(rows)
    _write(out_dir, W / torch.from_numpy(sd)[:, None], B, cuts, mu, x, fires, logits, fit,
           dict(hookpoint=hookpoint, model_name=model_name))  # fmt: skip
    _write_tables(out_dir, table, dict(activations=str(activations_path), n_tokens=len(x),
                                       n_fit_tokens=int(fit.sum()), options=opts.__dict__))  # fmt: skip
    log.info("planted %d latents at %s:\n%s", len(table), out_dir, table.to_string(index=False))
    return table


def _write(out_dir, W_raw, B, cuts, mu, x, fires, logits, fit, names: dict) -> None:
    """The SAELens JumpReLU folder: pre = x @ W_enc + b_enc = logit - cut + MARGIN, firing above MARGIN.

    Decoder rows are the mean activation difference between the tokens a latent fires on and the rest,
    divided by its mean value where it fires, so decode(encode(x)) adds about that difference to b_dec
    (the mean activation); steering reads only the direction.
    """
    from safetensors.torch import save_file

    mu_t = torch.from_numpy(mu)
    b_enc = B - mu_t @ W_raw - torch.from_numpy(cuts).float() + MARGIN  # [2P]
    rows = []
    for j in range(W_raw.shape[1]):
        on, off = fit & fires[:, j], fit & ~fires[:, j]
        diff = x[on].mean(0) - x[off].mean(0)
        value = (logits[on, j] - cuts[j] + MARGIN).mean()
        rows.append(diff / value)
    tensors = {
        "W_enc": W_raw.float().contiguous(),  # [d, 2P]
        "b_enc": b_enc.float().contiguous(),
        "threshold": torch.full((W_raw.shape[1],), MARGIN),
        "W_dec": torch.from_numpy(np.stack(rows)).float().contiguous(),  # [2P, d]
        "b_dec": mu_t.float().contiguous(),
    }
    cfg = dict(architecture="jumprelu", d_in=int(W_raw.shape[0]), d_sae=int(W_raw.shape[1]), dtype="float32",
               apply_b_dec_to_input=False, normalize_activations="none", hook_name=names["hookpoint"],
               model_name=names["model_name"], sae_lens_version="interpflow-planted")  # fmt: skip
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "sae_weights.safetensors") as tmp:
        save_file(tensors, str(tmp))
    with atomic_path(out_dir / "cfg.json") as tmp:
        tmp.write_text(json.dumps(cfg, indent=2) + "\n")


def _write_tables(out_dir, table: pd.DataFrame, about: dict) -> None:
    """oracle.parquet (latent, property, explanation, is_planted) and planted.json (about + per latent)."""
    oracle = table[["latent", "property", "is_planted"]].copy()
    oracle.insert(2, "explanation", [PROPERTIES[p].description for p in oracle["property"]])
    write_parquet(oracle, Path(out_dir) / ORACLE_FILE)
    with atomic_path(Path(out_dir) / REPORT_FILE) as tmp:
        tmp.write_text(json.dumps(about | {"latents": table.to_dict("records")}, indent=2) + "\n")
