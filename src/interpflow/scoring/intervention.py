"""Intervention scoring (Paulo et al. 2024, App. G): does an explanation describe what its latent does to the
output?

Per latent, prompts come from its own activating windows (stratified by activation quintile, each cut at its
first activation; see intervention_inputs). The latent's decoder direction is added to the residual stream at
its hookpoint at the positions whose next token is sampled (the prompt's last token, then each generated one;
never BOS, never the rest of the prompt), with a strength binary-searched so that the steered next-token
distributions sit a target KL from the clean ones. Several sampled continuations of a few tokens are drawn
with and without steering (the same seeds). A scorer LM, prompted few-shot, reads each prompt's
continuations; the score is the mean gain in log P(explanation) from clean to steered continuations.
Two controls give the score a floor: a random direction of the same norm calibrated to the same KL
(score_random_direction), and another latent's explanation (score_shuffled).
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
from interpflow.scoring.intervention_inputs import (
    Prompt,
    check_cfg,
    check_examples,
    few_shot_prefix,
    latent_prompts,
    shuffled_donors,
)
from interpflow.scoring.intervention_model import (
    bos_of,
    continuations,
    device_of,
    explanation_logprobs,
    next_logprobs,
    padded,
    span_mask,
)
from interpflow.scoring.metrics import NO_USAGE, metric_columns
from interpflow.statuses import NO_TEST_EXAMPLES, NOT_SAMPLED, no_explanation
from interpflow.store import read_parquet, write_parquet

log = logging.getLogger(__name__)

_F, _I, _O = "float64", "int64", "object"
PREDICTION_COLUMNS = (
    dict.fromkeys(["latent", "prompt_index"], _I)
    | dict.fromkeys(["prompt", "clean", "steered"], _O)
    | dict.fromkeys(["logp_clean", "logp_steered", "alpha", "kl"], _F)
    | {"status": _O, "error": _O}
    | dict.fromkeys(["example_id", "quintile"], _I)
    | {"random_steered": _O, "logp_random": _F, "alpha_random": _F, "kl_random": _F, "shuffled_from": _I}
    | dict.fromkeys(["logp_shuffled_clean", "logp_shuffled_steered"], _F)
)
METRIC_COLUMNS = metric_columns(
    "alpha", "kl", "resid_norm", "score_random_direction", "score_shuffled", "alpha_random", "kl_random"
)


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


class Clean(NamedTuple):
    """One latent's prompts with their clean continuations: what its steered runs are compared to."""

    model: torch.nn.Module
    tokenizer: object
    hookpoint: str  # where the latent's decoder direction is added
    c: dict  # checked scorer options
    prompts: list[Prompt]
    seeds: list[int]  # per prompt: its clean and steered continuations are sampled with this seed
    gens: list[list[list[int]]]  # per prompt, its n_samples clean continuations
    seqs: list[list[int]]  # per continuation: prompt ids + continuation
    spans: list[tuple[int, int]]  # positions whose next token is sampled: the only ones steered
    mask: torch.Tensor  # (B, T) 1 on the spans
    logp: torch.Tensor  # (N, V) clean next-token log-probs on the spans
    resid_norm: float  # mean activation norm at the hookpoint over non-BOS tokens of seqs: the unit of alpha
    width: int  # activation dims at the hookpoint


def clean_run(model, tokenizer, hookpoint: str, prompts: list[Prompt], c: dict, latent: int) -> Clean:
    """Sample the clean continuations of a latent's prompts; their next-token log-probs and residual norm."""
    seeds = [
        int(np.random.SeedSequence([c["seed"], latent, i]).generate_state(1)[0]) for i in range(len(prompts))
    ]
    gens = [
        continuations(model, p.ids, c, s, stop=tokenizer.eos_token_id)
        for p, s in zip(prompts, seeds, strict=True)
    ]
    seqs = [p.ids + g for p, gs in zip(prompts, gens, strict=True) for g in gs]
    spans = [
        (len(p.ids) - 1, len(p.ids) - 1 + len(g)) for p, gs in zip(prompts, gens, strict=True) for g in gs
    ]
    h = hidden_states(model, padded(model, seqs), [hookpoint])[hookpoint]  # (B, T, d)
    # BOS is left out: its residual is often an outlier (attention sink) far from the typical norm
    norm = torch.cat([h[i, 1 : len(s)].float().norm(dim=-1) for i, s in enumerate(seqs)]).mean()
    logp, mask = next_logprobs(model, seqs, spans), span_mask(model, seqs, spans)
    return Clean(
        model,
        tokenizer,
        hookpoint,
        c,
        prompts,
        seeds,
        gens,
        seqs,
        spans,
        mask,
        logp,
        float(norm),
        h.shape[-1],
    )


def mean_kl(s: Clean, vector: torch.Tensor) -> float:
    """Mean KL(clean || steered by `vector`) over the clean continuations' sampled positions, nats."""
    with add_at(s.model, s.hookpoint, vector, s.mask):
        logp = next_logprobs(s.model, s.seqs, s.spans)  # (N, V)
    return float(F.kl_div(logp, s.logp, log_target=True, reduction="sum")) / len(logp)


def _calibrated(s: Clean, direction: torch.Tensor) -> tuple[torch.Tensor, float, float, bool]:
    """(steering vector, alpha, kl, calibrated) for a direction; alpha 1 = one typical residual norm."""
    c, vec = s.c, s.resid_norm * direction / direction.norm()  # (d,)
    alpha, kl, ok = calibrate(
        lambda a: mean_kl(s, a * vec), c["target_kl"], c["max_alpha"], tol=c["kl_tolerance"]
    )
    return alpha * vec, alpha, kl, ok


def _texts(s: Clean, gens: list[list[list[int]]]) -> list[str]:
    """Per prompt, what the scorer reads: its continuations decoded, one per line (newlines inside one
    become spaces, so the lines stay the samples)."""
    dec = s.tokenizer.decode
    return ["\n".join(" ".join(dec(g, skip_special_tokens=True).split()) for g in gs) for gs in gens]


def _steered_texts(s: Clean, vector: torch.Tensor) -> list[str]:
    stop = s.tokenizer.eos_token_id
    gens = [
        continuations(s.model, p.ids, s.c, seed, (s.hookpoint, vector), stop)
        for p, seed in zip(s.prompts, s.seeds, strict=True)
    ]
    return _texts(s, gens)


def _random_direction(d: int, seed: int, latent: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, latent, 1]).generate_state(1)[0]))
    return torch.randn(d, generator=gen)  # (d,)


def score_latent(
    s: Clean, latent: int, direction: torch.Tensor, explanation: str, shuffled: tuple[int, str] | None,
    scorer: tuple | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Calibrate, generate steered text (and the random-direction control), score the explanation and the
    shuffled one: one row per prompt."""
    c, n = s.c, len(s.prompts)
    clean = _texts(s, s.gens)
    rows = pd.DataFrame(
        {
            "prompt_index": np.arange(n), "prompt": [p.text for p in s.prompts], "clean": clean,
            "example_id": [p.example_id for p in s.prompts], "quintile": [p.quintile for p in s.prompts],
            "shuffled_from": shuffled[0] if shuffled else -1,
        }
    )  # fmt: skip
    vec, alpha, kl, ok = _calibrated(s, direction.to(s.logp.device))
    if not ok:
        error = f"mean KL {kl:.3g} at alpha {alpha:.3g} (max_alpha {c['max_alpha']}), target {c['target_kl']}"
        return rows.assign(alpha=alpha, kl=kl, status="calibration_failed", error=error)
    # the control: a random direction of the same norm, calibrated to the same KL on the same prompts
    rvec, ralpha, rkl, rok = _calibrated(s, _random_direction(len(direction), c["seed"], latent).to(vec))
    rows = rows.assign(alpha=alpha, kl=kl, alpha_random=ralpha, kl_random=rkl)
    steered = _steered_texts(s, vec)
    rand = _steered_texts(s, rvec) if rok else [None] * n
    judge, judge_tok = scorer or (s.model, s.tokenizer)
    prefix = few_shot_prefix(c["prompt_template"], c["n_shots"])

    def logp(texts: list[str], expl: str) -> np.ndarray:
        return explanation_logprobs(judge, judge_tok, texts, expl, c["prompt_template"], prefix)

    lp = logp(clean + steered + [t for t in rand if t is not None], explanation)
    rows = rows.assign(
        steered=steered, random_steered=rand, logp_clean=lp[:n], logp_steered=lp[n : 2 * n],
        logp_random=lp[2 * n :] if rok else np.nan, status="ok", error="",
    )  # fmt: skip
    if shuffled:
        sh = logp(clean + steered, shuffled[1])
        rows = rows.assign(logp_shuffled_clean=sh[:n], logp_shuffled_steered=sh[n:])
    return rows


def _mean_gain(rows: pd.DataFrame, a: str, b: str) -> float:
    if a not in rows or b not in rows:  # a control that did not run
        return np.nan
    gain = (rows[b] - rows[a])[rows["status"] == "ok"].dropna()
    return float(gain.mean()) if len(gain) else np.nan


def _metrics_row(lat: int, rows: pd.DataFrame | None, status: str, resid_norm: float) -> dict:
    """One latent's metrics; score = mean over prompts of the per-token log-likelihood gain (nats)."""
    if rows is None:
        return {"latent": lat, "status": status, "n": 0, "n_failed": 0}
    ok = rows["status"] == "ok"
    first = rows.iloc[0]
    out = {"latent": lat, "status": "ok" if ok.any() else str(first["status"]), "n": int(ok.sum())}
    out |= {"n_failed": int((~ok).sum()), "resid_norm": resid_norm}
    out |= {k: first.get(k, np.nan) for k in ("alpha", "kl", "alpha_random", "kl_random")}
    return out | {
        "score": _mean_gain(rows, "logp_clean", "logp_steered"),
        "score_random_direction": _mean_gain(rows, "logp_clean", "logp_random"),
        "score_shuffled": _mean_gain(rows, "logp_shuffled_clean", "logp_shuffled_steered"),
    }


def _ok_explanations(explanations: pd.DataFrame) -> dict[int, str]:
    ok = explanations["status"] == "ok"
    ok &= explanations["explanation"].map(lambda e: isinstance(e, str) and bool(e.strip()))
    good = explanations.loc[ok]
    return dict(zip(good["latent"].astype(int), good["explanation"], strict=True))


def score_latents(
    model, tokenizer, directions: torch.Tensor, hookpoint: str, explanations: pd.DataFrame,
    examples: pd.DataFrame, cfg: dict, scorer: tuple | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Steer along each explained latent's decoder direction [width, d] from its own activating windows
    (examples table); (predictions, metrics)."""
    from tqdm.auto import tqdm

    c = check_cfg(cfg)
    lats = explanations["latent"].to_numpy(dtype=np.int64)
    if len(lats) and not (lats.min() >= 0 and lats.max() < len(directions)):
        raise ValueError(f"explanations name latents outside the dictionary's 0..{len(directions) - 1}")
    ok, by_latent = _ok_explanations(explanations), dict(list(examples.groupby("latent")))
    donors = shuffled_donors(np.fromiter(ok, np.int64), c["seed"])
    frames, mrows, bos = [], [], bos_of(tokenizer)
    recs = explanations[["latent", "status"]].itertuples(index=False)
    cap = np.inf if cfg.get("max_latents") is None else int(cfg["max_latents"])
    for lat, status in tqdm(recs, total=len(explanations), desc="intervention", unit="latent"):
        lat, rows, norm = int(lat), None, np.nan
        why = no_explanation(status if status != "ok" else "empty")
        if lat in ok and len(frames) >= cap:  # the expensive scorer on a sample: the first max_latents
            why = NOT_SAMPLED
        elif lat in ok:
            rng = np.random.default_rng(np.random.SeedSequence([c["seed"], lat]))
            mine = by_latent.get(lat, examples.iloc[:0])
            prompts = latent_prompts(mine, c["n_prompts"], c["prompt_split"], bos, tokenizer, rng)
            why = NO_TEST_EXAMPLES
        if lat in ok and why == NO_TEST_EXAMPLES and prompts:
            s = clean_run(model, tokenizer, hookpoint, prompts, c, lat)
            if directions.shape[1] != s.width:
                raise ValueError(
                    f"decoder directions have {directions.shape[1]} dims, {hookpoint} has {s.width}"
                )
            donor = (donors[lat], ok[donors[lat]]) if lat in donors else None
            d = directions[lat].detach().to(device_of(model), torch.float32)
            rows, norm = score_latent(s, lat, d, ok[lat], donor, scorer), s.resid_norm
            frames.append(rows.assign(latent=lat))
        mrows.append(_metrics_row(lat, rows, why, norm))
    empty = pd.DataFrame(columns=[*PREDICTION_COLUMNS])
    preds = pd.concat(frames, ignore_index=True).reindex(columns=[*PREDICTION_COLUMNS]) if frames else empty
    name = str(cfg.get("name") or cfg.get("kind") or "intervention")
    # prompt_tokens etc. stay 0: the scorer is a local model outside the LLM client
    metrics = pd.DataFrame(mrows).reindex(columns=[*METRIC_COLUMNS])
    metrics = metrics.assign(scorer=name, kind="intervention", **NO_USAGE)
    preds = preds.fillna({"shuffled_from": -1})
    return preds.astype(PREDICTION_COLUMNS), metrics.astype(METRIC_COLUMNS)


def run_intervention(
    dictionary_dir: str | os.PathLike,
    model_spec: str | os.PathLike,
    model_cfg: dict,
    hookpoint: str,
    explanations_path: str | os.PathLike,
    examples_path: str | os.PathLike,
    cfg: dict,
    predictions_out: str | os.PathLike,
    metrics_out: str | os.PathLike,
    *,
    scorer_spec: str | os.PathLike | None = None,
    scorer_cfg: dict | None = None,
    model: torch.nn.Module | None = None,
    tokenizer=None,
) -> None:
    """Workflow step: intervention-score a shard's explanations; write predictions and metrics.

    `scorer_spec`, `scorer_cfg`: the model that reads the continuations and its models entry (dtype,
    device), when it is not the subject."""
    from interpflow.dictionaries.dictionary import SparseDictionary
    from interpflow.models import load_model

    t0 = time.perf_counter()
    check_cfg(cfg)
    explanations, examples = read_parquet(explanations_path), read_parquet(examples_path)
    missing = {"latent", "explanation", "status"} - set(explanations.columns)
    if missing:
        raise ValueError(f"{explanations_path} lacks columns {sorted(missing)}")
    check_examples(examples, examples_path)
    if model is None:
        model, tokenizer = load_model(model_spec, model_cfg)
    dictionary = SparseDictionary.load(dictionary_dir)
    # a transcoder or an MLP-neuron dictionary writes to another site than the one it reads
    out_hookpoint = dictionary.meta.get("out_hookpoint") or hookpoint
    parse_hookpoint(out_hookpoint)
    same = scorer_spec is None or Path(scorer_spec).resolve() == Path(model_spec).resolve()
    scorer = None if same else load_model(scorer_spec, scorer_cfg or model_cfg)  # None: the subject reads
    directions = dictionary.decoder_directions().float()
    predictions, metrics = score_latents(
        model, tokenizer, directions, out_hookpoint, explanations, examples, cfg, scorer
    )
    write_parquet(predictions, predictions_out)
    write_parquet(metrics, metrics_out)
    counts = metrics["status"].value_counts().to_dict()
    log.info(
        "intervention: %d latents %s, %d prompts at %s; %.1f s",
        len(metrics), counts, len(predictions), out_hookpoint, time.perf_counter() - t0,
    )  # fmt: skip
