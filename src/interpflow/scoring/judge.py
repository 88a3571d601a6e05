"""Detection and fuzzing scorers: an LLM judge labels test windows given a latent's explanation.

Paulo et al. 2024, section 4: detection shows unmarked windows and asks which ones the explanation fits;
fuzzing marks tokens (the truly active ones in activating windows, as many random ones in the others)
and asks whether the marks fit. Labels come back as one list like [1, 0, 1]; when the judge returns
logprobs, each label's P(1) against P(0) gives a score for AUROC. With prompt logprobs (the slots method)
each window is one question. With `calibrate` (off by default) it is asked again under a neutral description
and windows are ranked by the log-odds gain over it, to take out the window's own pull towards Yes. Measured
on the planted latents (`make validity`'s windows), that raised the oracle's median detection AUROC only
from 0.773 to 0.789 and fuzzing from 0.898 to 0.961, but it raised the random explanation's detection floor
from 0.547 to 0.695: the neutral question's P(yes) itself differs between activating and non-activating
windows (alone it ranks them at a median AUROC of about 0.67), so subtracting it favours the activating
windows whatever the explanation says.
"""

from __future__ import annotations

import logging
import os
import re

import numpy as np
import pandas as pd

from interpflow import prompts
from interpflow.defaults import with_defaults
from interpflow.scoring.common import choose_method, run_llm_scorer, scorable_latents
from interpflow.scoring.metrics import METRIC_COLUMNS, latent_metrics
from interpflow.statuses import llm_failure

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = {
    "latent": "int64",
    "example_id": "int64",
    "activating": "bool",
    "prediction": "boolean",  # nullable: null where the judge gave no usable label
    "p_yes": "float64",
    "p_yes_neutral": "float64",  # calibrate (slots): P(yes) of the same window under the neutral description
    "prompt_index": "int64",
    "position": "int64",
    "seed": "int64",
    "method": "object",  # "slots": P(yes) of the answer token; "reply": labels parsed from a written list
    "status": "object",
    "error": "object",
}
# accepted spellings of a label, compared lower-case after stripping quotes and emphasis
YES, NO = ("1", "true", "yes"), ("0", "false", "no")
_LABELS = dict.fromkeys(YES, 1) | dict.fromkeys(NO, 0)
_INNER_LIST = re.compile(r"\[([^\[\]]*)\]")  # innermost brackets, so "[[1, 0]]" reads as [1, 0]
_ITEM = re.compile(r"[^,;\s]+")


def _items(text: str, offset: int) -> list[tuple[int, int, int]] | None:
    """(label, start, end) of each item if every comma/space-separated item of `text` is a label."""
    out = []
    for m in _ITEM.finditer(text):
        raw = m.group()
        core = raw.strip("\"'`*")
        if core.lower() not in _LABELS:
            return None
        start = offset + m.start() + raw.index(core)
        out.append((_LABELS[core.lower()], start, start + len(core)))
    return out or None


def label_spans(reply: str) -> list[tuple[int, int, int]] | None:
    """Find the answer list in a reply: (label, start, end) per label, or None if there is none.

    The answer is the last bracketed list whose items are all labels (1/0, true/false, yes/no); lists
    holding anything else ("[3]", "[see above]") are not answers and are passed over. A reply without
    any bracket is accepted only if it is a bare list of labels ("1, 0, 1"). Text inside a reasoning
    model's <think> block is ignored.
    """
    start = reply.rfind("</think>")
    start = start + len("</think>") if start >= 0 else 0
    if "<think>" in reply[start:]:  # an unclosed reasoning block holds no answer
        return None
    body = reply[start:]
    for m in reversed(list(_INNER_LIST.finditer(body))):
        items = _items(m.group(1), start + m.start(1))
        if items is not None:
            return items
    if "[" in body or "]" in body:
        return None
    return _items(body, start)


def parse_labels(reply: str | None, n: int) -> list[int] | None:
    """The judge's n labels as 0/1 ints, or None if the reply has no answer list of exactly n labels."""
    spans = label_spans(reply) if reply else None
    if spans is None or len(spans) != n:
        return None
    return [lab for lab, _, _ in spans]


def _p_one(top: dict[str, float], pre: str, post: str) -> float:
    """P(1) / (P(1) + P(0)) over a token's alternatives that spell a label between `pre` and `post`."""
    yes = {(pre + w + post).strip().lower() for w in YES}
    no = {(pre + w + post).strip().lower() for w in NO}
    lp = np.array([v for k, v in top.items() if k.strip().lower() in yes], dtype=np.float64)
    ln = np.array([v for k, v in top.items() if k.strip().lower() in no], dtype=np.float64)
    l1 = np.logaddexp.reduce(lp) if lp.size else -np.inf  # a missing alternative has probability 0
    l0 = np.logaddexp.reduce(ln) if ln.size else -np.inf
    if not np.isfinite(max(l1, l0)):
        return float("nan")
    return float(np.exp(l1 - np.logaddexp(l1, l0)))


def label_probs(logprobs, labels: list[int]) -> np.ndarray:
    """P(label = 1) for each label of the answer list, from the generated tokens' top alternatives.

    Walks the generated tokens, finds the answer list in their concatenated text and, for each label, the
    token carrying it. NaN where logprobs are missing, the tokens do not spell the parsed answer, a label
    is split over tokens, or one token carries several labels.
    """
    out = np.full(len(labels), np.nan)
    if not logprobs:
        return out
    toks = [t.token for t in logprobs]
    spans = label_spans("".join(toks))
    if spans is None or [lab for lab, _, _ in spans] != list(labels):
        return out
    ends = np.cumsum([len(t) for t in toks])  # [n_tokens] end offset of each token in the text
    owner = np.searchsorted(ends, [s for _, s, _ in spans], side="right")  # token holding each label start
    shared = np.bincount(owner, minlength=len(toks))
    for i, (_, s, e) in enumerate(spans):
        k = int(owner[i])
        t0 = int(ends[k]) - len(toks[k])
        if e > ends[k] or shared[k] != 1:
            continue
        top = dict(logprobs[k].top)
        top.setdefault(toks[k], logprobs[k].logprob)  # the chosen token is an alternative too
        out[i] = _p_one(top, toks[k][: s - t0], toks[k][e - t0 :])
    return out


def fuzz_marks(acts: list[np.ndarray], activating: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Fuzzing marks: active tokens in activating windows; in the others as many random tokens.

    "As many" draws a count from the activating windows' counts, so the number of marks gives no hint.
    """
    counts = [int((a > 0).sum()) for a, on in zip(acts, activating, strict=True) if on]
    pool = [c for c in counts if c > 0] or [1]
    marks = []
    for a, on in zip(acts, activating, strict=True):
        if on:
            marks.append(np.asarray(a) > 0)
            continue
        mask = np.zeros(len(a), dtype=bool)
        mask[rng.choice(len(a), size=min(int(rng.choice(pool)), len(a)), replace=False)] = True
        marks.append(mask)
    return marks


def _check_cfg(cfg: dict) -> tuple[str, int, int]:
    """Validate the scorer options; return (kind, examples_per_prompt, seed)."""
    cfg = with_defaults("scorers", cfg)
    kind = cfg.get("kind")
    if kind not in prompts.SCORER_KINDS:
        raise ValueError(f"scorer option kind must be one of {prompts.SCORER_KINDS}, got {kind!r}")
    per_prompt = int(cfg["examples_per_prompt"])
    if per_prompt < 1:
        raise ValueError(f"scorer option examples_per_prompt must be >= 1, got {per_prompt}")
    for key in ("max_activating", "max_nonactivating"):
        if cfg.get(key) is not None and int(cfg[key]) < 0:
            raise ValueError(f"scorer option {key} must be >= 0, got {cfg[key]}")
    return kind, per_prompt, int(cfg["seed"])


def build_prompts(
    examples: pd.DataFrame, explanations: pd.DataFrame, cfg: dict, method: str = "reply"
) -> tuple[list, list[tuple[int, int, pd.DataFrame, bool]], dict[int, str]]:
    """Judge prompts for every latent with an "ok" explanation.

    Returns the requests (reply: chat messages with examples_per_prompt windows each; slots: one yes/no
    question per window as (messages, [0]), the answer read at the start of the reply), per request (latent,
    prompt_index, its windows in order, whether it is the neutral question of the request before it), and
    the status of each latent that gets no prompt. With slots and `calibrate` (default off) each window's
    question is followed by the same question under prompts.NEUTRAL_DESCRIPTION: it shares the window's
    prefix, so the model evaluates only the question's last tokens again.
    """
    kind, per_prompt, _ = _check_cfg(cfg)
    per_prompt = 1 if method == "slots" else per_prompt
    calibrate = method == "slots" and bool(with_defaults("scorers", cfg)["calibrate"])
    requests, meta, unscored = [], [], {}
    for lat, expl, ex, rng in scorable_latents(examples, explanations, cfg, unscored):
        acts = [np.asarray(a, dtype=np.float64) for a in ex["acts"]]
        if kind == "fuzzing":
            marks = fuzz_marks(acts, ex["activating"].to_numpy(dtype=bool), rng)
        else:
            marks = [np.zeros(len(a), dtype=bool) for a in acts]
        texts = [prompts.mark_text(list(t), m) for t, m in zip(ex["token_strs"], marks, strict=True)]
        for p, s in enumerate(range(0, len(ex), per_prompt)):
            windows = ex.iloc[s : s + per_prompt]
            if method != "slots":
                requests.append(prompts.judge_messages(kind, expl, texts[s : s + per_prompt]))
                meta.append((lat, p, windows, False))
                continue
            for neutral in (False, True) if calibrate else (False,):
                described = prompts.NEUTRAL_DESCRIPTION if neutral else expl
                requests.append((prompts.judge_question_messages(kind, described, texts[s]), [0]))
                meta.append((lat, p, windows, neutral))
    return requests, meta, unscored


def _answer_probs(c, n: int) -> tuple[list | None, np.ndarray, str, str]:
    """(labels or None, P(yes) [n], status, error) of one completion of the slots method (n = 1)."""
    lp = np.array([[d[a] for a in prompts.ANSWERS] for d in c.slot_logprobs], dtype=np.float64)  # [n, 2]
    p_yes = 1.0 / (1.0 + np.exp(lp[:, 1] - lp[:, 0]))  # renormalised over the two answers
    return [bool(p >= 0.5) for p in p_yes], p_yes, "ok", ""


def _read_judgment(
    lat: int, p: int, ex: pd.DataFrame, c, seed: int, method: str = "reply", neutral=None
) -> pd.DataFrame:
    """Prediction rows of one prompt's windows from the judge's completion (and, when calibrated, the
    completion of the same window's neutral question: a window whose neutral question failed fails too)."""
    n = len(ex)
    pred, p_yes, p_neutral, status, error = [None] * n, np.full(n, np.nan), np.full(n, np.nan), "ok", ""
    failed = next((x for x in (c, neutral) if x is not None and x.status != "ok"), None)
    if failed is not None:
        status, error = llm_failure(failed.status), failed.error or "llm error"
    elif method == "slots":
        pred, p_yes, status, error = _answer_probs(c, n)
        if neutral is not None:
            p_neutral = _answer_probs(neutral, n)[1]
    else:
        labels = parse_labels(c.text, n)
        if labels is None:
            status, error = "parse_error", f"no answer list of {n} labels in reply: {str(c.text)[:200]!r}"
        else:
            pred, p_yes = [bool(x) for x in labels], label_probs(c.logprobs, labels)
    return pd.DataFrame(
        {
            "latent": lat,
            "example_id": ex["example_id"].to_numpy(),
            "activating": ex["activating"].to_numpy(),
            "prediction": pd.array(pred, dtype="boolean"),
            "p_yes": p_yes,
            "p_yes_neutral": p_neutral,
            "prompt_index": p,
            "position": np.arange(n),
            "seed": seed,
            "method": method,
            "status": status,
            "error": error,
        }
    )


def _neutral_of(pairs: list, i: int):
    """The completion of request i's neutral question (the request right after it), or None."""
    return pairs[i + 1][1] if i + 1 < len(pairs) and pairs[i + 1][0][3] else None


def score_latents(
    examples: pd.DataFrame, explanations: pd.DataFrame, cfg: dict, client
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score every latent's explanation with one judge call per prompt; return (predictions, metrics)."""
    kind, _, seed = _check_cfg(cfg)
    method = choose_method(cfg, bool(getattr(client, "supports_slots", False)))
    requests, meta, unscored = build_prompts(examples, explanations, cfg, method)
    log.info("%s (%s): %d prompts for %d latents (%d without prompts)", kind, method, len(requests),
             len(explanations), len(unscored))  # fmt: skip
    if not requests:
        completions = []
    elif method == "slots":
        completions = client.slot_logprobs_many(requests, list(prompts.ANSWERS), desc=kind)
    else:
        completions = client.complete_many(requests, desc=kind)
    pairs = list(zip(meta, completions, strict=True))
    frames = [
        _read_judgment(lat, p, ex, c, seed, method, _neutral_of(pairs, i))
        for i, ((lat, p, ex, neutral), c) in enumerate(pairs)
        if not neutral
    ]
    predictions = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*PREDICTION_COLUMNS])
    )
    predictions = predictions.astype(PREDICTION_COLUMNS)
    usage = pd.DataFrame(
        [
            (lat, c.prompt_tokens, c.completion_tokens, c.cached_tokens, c.cost_usd)
            for (lat, _, _, _), c in pairs
        ],
        columns=["latent", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd"],
    ).astype({"cost_usd": "float64"})
    name = str(cfg.get("name") or kind)
    scored = latent_metrics(predictions, name, usage, kind=kind)
    empty = pd.DataFrame(
        {
            "latent": list(unscored),
            "scorer": name,
            "kind": kind,
            "status": list(unscored.values()),
            "n": 0,
            "n_failed": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cached_tokens": 0,
            "cost_usd": 0.0,
        }
    )
    parts = [f.astype(METRIC_COLUMNS) for f in (scored, empty.reindex(columns=[*METRIC_COLUMNS])) if len(f)]
    metrics = pd.concat(parts, ignore_index=True) if parts else scored
    order = {int(lat): i for i, lat in enumerate(explanations["latent"])}  # the explanations' row order
    metrics = metrics.sort_values("latent", key=lambda s: s.map(order), kind="stable", ignore_index=True)
    return predictions, metrics.astype(METRIC_COLUMNS)


def run_score(
    examples_path: str | os.PathLike,
    explanations_path: str | os.PathLike,
    cfg: dict,
    predictions_out: str | os.PathLike,
    metrics_out: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None,
    local_gguf: str | os.PathLike | None = None,
    client=None,
) -> None:
    """Workflow step: judge a shard's explanations, write predictions-{shard} and metrics-{shard}.parquet."""
    if client is None and "llm" not in cfg:
        raise ValueError("scorer config needs an 'llm' section")
    llm_cfg = {"logprobs": True, **cfg.get("llm", {})}  # P(yes) for AUROC needs the label tokens' logprobs
    run_llm_scorer(
        score_latents, llm_cfg, examples_path, explanations_path, cfg, predictions_out, metrics_out,
        cache_dir=cache_dir, local_gguf=local_gguf, client=client,
    )  # fmt: skip
