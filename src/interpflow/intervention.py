"""Intervention scoring (Paulo et al. 2024): does an explanation describe what its latent does to the output?

The latent's decoder direction is added to the residual stream at its hookpoint (every position of prompt and
generation), with a strength calibrated per latent so that the steered next-token distributions sit a fixed
KL divergence from the clean ones. A scorer LM then compares log P(explanation | steered generations) with
log P(explanation | clean generations); a positive gain means the explanation names the latent's effect.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from interpflow.activations import add_at, hidden_states, parse_hookpoint
from interpflow.metrics import NO_USAGE, metric_columns
from interpflow.store import read_parquet, write_parquet

log = logging.getLogger(__name__)

DEFAULTS = {
    # 1 nat per token (delphi's default too): greedy continuations visibly change yet mostly stay text.
    "target_kl": 1.0,
    "kl_tolerance": 0.1,  # relative: |kl - target| <= tol * target counts as calibrated
    "prompts": ["The", "I think that", "In the", "It was", "This is"],
    "n_prompts": None,  # None: all prompts; else the first n
    "max_new_tokens": 16,
    "max_alpha": 8.0,  # in mean residual norms; far beyond the strengths that keep text readable
    "temperature": 0.0,  # 0: greedy; > 0: sampled, clean and steered from the same seeded generator
    "seed": 0,
    "prompt_template": "Text: {text}\nThe text above is about:",  # the explanation follows after a space
}
_F, _I, _O = "float64", "int64", "object"
PREDICTION_COLUMNS = (
    dict.fromkeys(["latent", "prompt_index"], _I)
    | dict.fromkeys(["prompt", "clean", "steered"], _O)
    | dict.fromkeys(["logp_clean", "logp_steered", "alpha", "kl"], _F)
    | {"status": _O, "error": _O}
)
METRIC_COLUMNS = metric_columns("alpha", "kl", "resid_norm")


def steer(model: torch.nn.Module, hookpoint: str, vector: torch.Tensor):
    """While active, add `vector` to the activations at `hookpoint` at every position."""
    return add_at(model, hookpoint, vector)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _padded(model: torch.nn.Module, seqs: list[list[int]]) -> torch.Tensor:
    """Right-padded ids (B, T): causal outputs at real positions never see the padding after them."""
    ids = torch.zeros(len(seqs), max(map(len, seqs)), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    return ids.to(_device(model))


@torch.inference_mode()
def next_logprobs(
    model: torch.nn.Module, seqs: list[list[int]], spans: list[tuple[int, int]]
) -> torch.Tensor:
    """Log next-token distributions at positions [a, b) of each sequence, stacked: (sum(b - a), V)."""
    logits = model(input_ids=_padded(model, seqs), use_cache=False).logits  # (B, T, V)
    return torch.cat([logits[i, a:b] for i, (a, b) in enumerate(spans)]).float().log_softmax(-1)


@torch.inference_mode()
def generate(
    model: torch.nn.Module, ids: list[int], n: int, *, temperature: float = 0.0, seed: int = 0, stop=None
) -> list[int]:
    """Up to n new tokens after `ids`, greedy or sampled (seeded), with a KV cache; ends after `stop`."""
    gen = torch.Generator().manual_seed(seed)
    x, past, out = torch.tensor([ids], device=_device(model)), None, []  # x: (1, T)
    for _ in range(n):
        o = model(input_ids=x, past_key_values=past, use_cache=True)
        past, logits = o.past_key_values, o.logits[0, -1].float().cpu()  # logits: (V,)
        if temperature > 0:
            tok = int(torch.multinomial((logits / temperature).softmax(-1), 1, generator=gen))
        else:
            tok = int(logits.argmax())
        out.append(tok)
        if tok == stop:
            break
        x = torch.tensor([[tok]], device=x.device)
    return out


def calibrate(
    kl_of: Callable[[float], float], target: float, max_alpha: float, *, tol: float = 0.1, max_steps: int = 24
) -> tuple[float, float, bool]:
    """Find alpha in (0, max_alpha] with |kl_of(alpha) - target| <= tol * target by doubling, then
    geometric bisection (KL grows about as alpha^2). Returns (alpha, kl, calibrated); when not calibrated,
    the alpha whose KL came closest."""
    seen: dict[float, float] = {}
    lo, hi, a = 0.0, math.inf, min(max_alpha, 0.125)
    for _ in range(max_steps):
        k = seen[a] = kl_of(a)
        if abs(k - target) <= tol * target:
            return a, k, True
        if k < target:
            if a >= max_alpha:
                break
            lo = a
            a = min(2 * a, max_alpha) if hi == math.inf else math.sqrt(lo * hi)
        else:  # NaN lands here too: treated as too strong
            hi = a
            a = a / 2 if lo == 0 else math.sqrt(lo * hi)
    best = min(seen, key=lambda x: abs(seen[x] - target) if math.isfinite(seen[x]) else math.inf)
    return best, seen[best], False


def _bos(tokenizer) -> int:
    """Sequence start as in the token corpus: BOS, else EOS."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if bos is None:
        raise ValueError("tokenizer has neither a BOS nor an EOS token")
    return bos


def explanation_logprobs(model, tokenizer, texts: list[str], explanation: str, template: str) -> np.ndarray:
    """Per text, mean log P(explanation token | template(text), earlier ones) in nats: (len(texts),)."""
    ctxs = [
        [_bos(tokenizer), *tokenizer(template.format(text=t), add_special_tokens=False).input_ids]
        for t in texts
    ]
    expl = tokenizer(" " + explanation.strip(), add_special_tokens=False).input_ids
    logp = next_logprobs(
        model, [c + expl for c in ctxs], [(len(c) - 1, len(c) - 1 + len(expl)) for c in ctxs]
    )
    target = torch.tensor(expl * len(texts), device=logp.device)  # (B * E,)
    return logp.gather(1, target[:, None]).view(len(texts), len(expl)).mean(1).double().cpu().numpy()


class Setup(NamedTuple):
    """The subject model at its hookpoint with its clean generations: what every latent is compared to."""

    model: torch.nn.Module
    tokenizer: object
    hookpoint: str  # where the latent's decoder direction is added
    c: dict  # checked scorer options
    prompt_ids: list[list[int]]  # BOS + prompt tokens, per prompt
    texts: list[str]  # prompt + clean continuation, decoded
    seqs: list[list[int]]  # BOS + prompt + clean continuation tokens
    spans: list[tuple[int, int]]  # positions whose next token is generated: where steering shapes the text
    logp: torch.Tensor  # (N, V) clean next-token log-probs at those positions
    width: int  # activation dims at the hookpoint
    resid_norm: float  # mean activation norm at the hookpoint over non-BOS tokens of seqs: the unit of alpha


def _continue(model, tokenizer, prompt_ids: list[list[int]], c: dict) -> list[list[int]]:
    """Each prompt's continuation; prompt i samples with the same seed in clean and steered runs."""
    seeds = [int(np.random.SeedSequence([c["seed"], i]).generate_state(1)[0]) for i in range(len(prompt_ids))]
    return [
        generate(
            model, p, c["max_new_tokens"], temperature=c["temperature"], seed=s, stop=tokenizer.eos_token_id
        )
        for p, s in zip(prompt_ids, seeds, strict=True)
    ]


def _decode(tokenizer, prompt_ids: list[list[int]], gen_ids: list[list[int]]) -> list[str]:
    return [
        tokenizer.decode(p[1:] + g, skip_special_tokens=True)
        for p, g in zip(prompt_ids, gen_ids, strict=True)
    ]


def setup(model: torch.nn.Module, tokenizer, hookpoint: str, cfg: dict) -> Setup:
    """Generate clean continuations and measure their next-token log-probs and residual norm."""
    c = check_cfg(cfg)
    prompt_ids = [[_bos(tokenizer), *tokenizer(p, add_special_tokens=False).input_ids] for p in c["prompts"]]
    gen_ids = _continue(model, tokenizer, prompt_ids, c)
    seqs = [p + g for p, g in zip(prompt_ids, gen_ids, strict=True)]
    spans = [(len(p) - 1, len(p) - 1 + len(g)) for p, g in zip(prompt_ids, gen_ids, strict=True)]
    h = hidden_states(model, _padded(model, seqs), [hookpoint])[hookpoint]  # (B, T, d)
    # BOS is left out: its residual is often an outlier (attention sink) far from the typical norm
    norm = torch.cat([h[i, 1 : len(s)].float().norm(dim=-1) for i, s in enumerate(seqs)]).mean()
    logp, texts = next_logprobs(model, seqs, spans), _decode(tokenizer, prompt_ids, gen_ids)
    return Setup(
        model, tokenizer, hookpoint, c, prompt_ids, texts, seqs, spans, logp, h.shape[-1], float(norm)
    )


def mean_kl(s: Setup, vector: torch.Tensor) -> float:
    """Mean over the clean continuations' positions of KL(clean || steered by `vector`), nats."""
    with steer(s.model, s.hookpoint, vector):
        logp = next_logprobs(s.model, s.seqs, s.spans)  # (N, V)
    return float(F.kl_div(logp, s.logp, log_target=True, reduction="sum")) / len(logp)


def score_latent(
    s: Setup, direction: torch.Tensor, explanation: str, scorer: tuple | None = None
) -> pd.DataFrame:
    """Calibrate the strength, generate steered text, score the explanation: one row per prompt."""
    c, n = s.c, len(s.texts)
    vec = s.resid_norm * direction / direction.norm()  # (d_model,): alpha 1 = one typical residual norm
    alpha, kl, ok = calibrate(
        lambda a: mean_kl(s, a * vec), c["target_kl"], c["max_alpha"], tol=c["kl_tolerance"]
    )
    rows = pd.DataFrame(
        {"prompt_index": np.arange(n), "prompt": c["prompts"], "clean": s.texts, "alpha": alpha, "kl": kl}
    )
    if not ok:
        error = f"mean KL {kl:.3g} at alpha {alpha:.3g} (max_alpha {c['max_alpha']}), target {c['target_kl']}"
        return rows.assign(
            steered=None, logp_clean=np.nan, logp_steered=np.nan, status="calibration_failed", error=error
        )
    with steer(s.model, s.hookpoint, alpha * vec):
        steered = _decode(s.tokenizer, s.prompt_ids, _continue(s.model, s.tokenizer, s.prompt_ids, c))
    lp = explanation_logprobs(
        *(scorer or (s.model, s.tokenizer)), s.texts + steered, explanation, c["prompt_template"]
    )
    return rows.assign(steered=steered, logp_clean=lp[:n], logp_steered=lp[n:], status="ok", error="")


def check_cfg(cfg: dict) -> dict:
    """Scorer options with defaults filled in and prompts cut to n_prompts; a ValueError names a bad key."""
    c = DEFAULTS | {k: v for k, v in cfg.items() if v is not None}
    prompts = c["prompts"]
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise ValueError(f"intervention option prompts must be a non-empty list of strings, got {prompts!r}")
    n = len(prompts) if c["n_prompts"] is None else int(c["n_prompts"])
    if n < 1:
        raise ValueError(f"intervention option n_prompts must be >= 1, got {n}")
    n = min(n, len(prompts))  # a cap: the schema's default may exceed a short custom list
    for key in ("target_kl", "max_alpha", "max_new_tokens"):
        if not c[key] > 0:
            raise ValueError(f"intervention option {key} must be > 0, got {c[key]!r}")
    if not 0 < c["kl_tolerance"] < 1 or c["temperature"] < 0:
        raise ValueError("intervention options need 0 < kl_tolerance < 1 and temperature >= 0")
    if "{text}" not in c["prompt_template"]:
        raise ValueError(
            f"intervention option prompt_template must contain '{{text}}': {c['prompt_template']!r}"
        )
    return c | {"prompts": prompts[:n], "n_prompts": n}


def _metrics_row(lat: int, rows: pd.DataFrame | None, status: str) -> dict:
    """One latent's metrics; score = mean over prompts of the per-token log-likelihood gain (nats)."""
    if rows is None:
        return {"latent": lat, "status": status, "n": 0, "n_failed": 0}
    ok = rows["status"] == "ok"
    gain = (rows["logp_steered"] - rows["logp_clean"])[ok]
    status = "ok" if ok.any() else str(rows["status"].iloc[0])
    score = float(gain.mean()) if ok.any() else np.nan
    out = {"latent": lat, "status": status, "n": int(ok.sum()), "n_failed": int((~ok).sum()), "score": score}
    return out | {"alpha": rows["alpha"].iloc[0], "kl": rows["kl"].iloc[0]}


def score_latents(
    model,
    tokenizer,
    directions: torch.Tensor,
    hookpoint: str,
    explanations: pd.DataFrame,
    cfg: dict,
    scorer: tuple | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Steer along each explained latent's decoder direction [width, d]; (predictions, metrics)."""
    from tqdm.auto import tqdm

    check_cfg(cfg)
    lats = explanations["latent"].to_numpy(dtype=np.int64)
    if len(lats) and not (lats.min() >= 0 and lats.max() < len(directions)):
        raise ValueError(f"explanations name latents outside the dictionary's 0..{len(directions) - 1}")
    s = setup(model, tokenizer, hookpoint, cfg) if (explanations["status"] == "ok").any() else None
    if s is not None and directions.shape[1] != s.width:
        raise ValueError(f"decoder directions have {directions.shape[1]} dims, {hookpoint} has {s.width}")
    frames, mrows = [], []
    recs = explanations[["latent", "explanation", "status"]].itertuples(index=False)
    for lat, expl, status in tqdm(recs, total=len(explanations), desc="intervention", unit="latent"):
        rows, why = None, f"no_explanation: {status}"
        if status == "ok" and not (isinstance(expl, str) and expl.strip()):
            why = "no_explanation: empty"
        elif status == "ok":
            rows = score_latent(
                s, directions[int(lat)].detach().to(_device(model), torch.float32), expl, scorer
            )
            frames.append(rows.assign(latent=int(lat)))
        mrows.append(_metrics_row(int(lat), rows, why))
    preds = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*PREDICTION_COLUMNS])
    name = str(cfg.get("name") or cfg.get("kind") or "intervention")
    # prompt_tokens etc. stay 0: the scorer is a local model outside the LLM client
    metrics = pd.DataFrame(mrows).reindex(columns=[*METRIC_COLUMNS])
    metrics = metrics.assign(
        scorer=name, kind="intervention", resid_norm=s.resid_norm if s else np.nan, **NO_USAGE
    )
    return preds[[*PREDICTION_COLUMNS]].astype(PREDICTION_COLUMNS), metrics.astype(METRIC_COLUMNS)


def run_intervention(
    dictionary_dir: str | os.PathLike,
    model_spec: str | os.PathLike,
    model_cfg: dict,
    hookpoint: str,
    explanations_path: str | os.PathLike,
    cfg: dict,
    predictions_out: str | os.PathLike,
    metrics_out: str | os.PathLike,
    *,
    scorer_spec: str | os.PathLike | None = None,
    model: torch.nn.Module | None = None,
    tokenizer=None,
) -> None:
    """Workflow step: intervention-score a shard's explanations; write predictions and metrics."""
    from interpflow.dictionaries import SparseDictionary
    from interpflow.models import load_model

    t0 = time.perf_counter()
    check_cfg(cfg)
    explanations = read_parquet(explanations_path)
    missing = {"latent", "explanation", "status"} - set(explanations.columns)
    if missing:
        raise ValueError(f"{explanations_path} lacks columns {sorted(missing)}")
    if model is None:
        model, tokenizer = load_model(model_spec, model_cfg)
    dictionary = SparseDictionary.load(dictionary_dir)
    # a transcoder or an MLP-neuron dictionary writes to another site than the one it reads
    out_hookpoint = dictionary.meta.get("out_hookpoint") or hookpoint
    parse_hookpoint(out_hookpoint)
    same = scorer_spec is None or Path(scorer_spec).resolve() == Path(model_spec).resolve()
    scorer = None if same else load_model(scorer_spec, model_cfg)  # None: the subject reads its own text
    directions = dictionary.decoder_directions().float()
    predictions, metrics = score_latents(
        model, tokenizer, directions, out_hookpoint, explanations, cfg, scorer
    )
    write_parquet(predictions, predictions_out)
    write_parquet(metrics, metrics_out)
    counts = metrics["status"].value_counts().to_dict()
    log.info(
        "intervention: %d latents %s, %d generations at %s; %.1f s",
        len(metrics),
        counts,
        len(predictions),
        out_hookpoint,
        time.perf_counter() - t0,
    )
