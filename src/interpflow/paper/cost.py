"""Table 1: what scoring costs per latent at 100 test windows, in tokens, and in dollars for the priced
models (litellm's local price map; no network)."""

from __future__ import annotations

import functools
import logging
import os

import numpy as np

from .cells import Table, cell, frame, mean_cell
from .select import Context

log = logging.getLogger(__name__)

TOKENS = {
    "input_tokens": "prompt_tokens",
    "cached_tokens": "cached_tokens",
    "output_tokens": "completion_tokens",
}
"""Table 1's columns and the usage fields they come from (input includes its cacheable part, as there)."""
WINDOWS = 100
"""The paper's test set per latent: 100 windows (Table 1)."""


@functools.cache
def knows(model: str) -> bool:
    """Whether litellm's bundled price map prices `model` (asked once per model)."""
    return price(model, 1, 1, quiet=False) is not None


def price(model: str, input_tokens: float, output_tokens: float, quiet: bool = True) -> float | None:
    """Dollars for the tokens (rounded to whole tokens, as litellm wants) from litellm's bundled price map;
    None where litellm has no price."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # the bundled map: no network
    import litellm

    litellm.suppress_debug_info = True
    try:
        prompt, completion = litellm.cost_per_token(
            model=model, prompt_tokens=round(input_tokens), completion_tokens=round(output_tokens)
        )
    except Exception as exc:  # litellm raises several types for a model it does not know
        if not quiet:
            log.info("no litellm price for %s: %s", model, str(exc).splitlines()[0])
        return None
    return float(prompt + completion)


def dollars(role: str, per: dict[str, np.ndarray], models: list[str]) -> list[dict]:
    """The role's mean tokens priced for each model litellm knows (prices are linear, so this is also the
    mean of the per-latent dollars)."""
    n = len(per["input_tokens"])
    usd = {m: price(m, per["input_tokens"].mean(), per["output_tokens"].mean()) for m in models if knows(m)}
    return [cell(role, f"usd_{m}", v, n) for m, v in usd.items()]


def cost(ctx: Context) -> Table | str:
    """Per role on the reference: the mean over latents scored ok of tokens / n * 100 (the paper reports a
    per-latent cost, so a mean, not a median), and its price for each priced model."""
    models = list(ctx.spec.get("priced_models") or [])
    cells, notes = [], []
    for role, scorer in ctx.roles.items():
        rows = ctx.scores.rows(ctx.reference, scorer)
        rows = rows[rows["n"] > 0]
        if rows.empty:
            notes.append(f"{role} (scorer {scorer!r}): no latents scored ok on the reference, left out")
            continue
        scale = WINDOWS / rows["n"].to_numpy(dtype=np.float64)
        per = {m: rows[c].fillna(0).to_numpy(dtype=np.float64) * scale for m, c in TOKENS.items()}
        cells += [mean_cell(role, metric, v) for metric, v in per.items()] + dollars(role, per, models)
        if not per["input_tokens"].any():
            notes.append(f"{role}: no LLM tokens recorded (scored locally, or its usage not reported)")
    if not cells:
        return "no role in `paper.roles` scored the reference's latents"
    notes += [f"litellm's price map does not know {m!r} (`paper.priced_models`): no dollars for it"
              for m in models if not knows(m)]  # fmt: skip
    if any(knows(m) for m in models):
        notes.append("dollars: the mean input and output tokens at the model's list price (cached tokens "
                     "billed as input, no cache discount)")  # fmt: skip
    settings = {role: f"reference, scorer {scorer}" for role, scorer in ctx.roles.items()}
    return Table(frame(cells), {r: s for r, s in settings.items() if r in {c["row"] for c in cells}}, notes)
