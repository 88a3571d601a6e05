"""The paper's tables in page order: id, title, what the paper measured there (cited), and the builder."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from . import tables
from .cost import cost
from .external import crosslayer, human
from .intervention import intervention

MEDIAN = (
    "Ours: the median over the row's latents scored ok, its 95% order-statistic interval (empty below 6 "
    "latents) and IQR."
)


class Entry(NamedTuple):
    id: str
    title: str
    caption: str
    build: Callable


CATALOG = [
    Entry("1", "Table 1: scoring cost per latent at 100 test windows",
          "Paper (Table 1): tokens each scorer spends per latent at 100 test examples: input (with its "
          "cacheable part) and output. Ours: the mean over the reference's latents scored ok of tokens / n "
          "x 100 (n = windows scored); a mean, not a median, because the paper reports a per-latent average "
          "cost (so no interval; q25-q75 are the per-latent quartiles). Dollars: litellm's price map.",
          cost),
    Entry("A10", "Table A10: interpretability of subjects",
          "Paper (Table A10, Fig. 2): median fuzzing and detection scores of trained SAEs, sparsified "
          "neurons, a randomly initialised SAE and random explanations (Llama-3.1-70B explainer and scorer). "
          "A row's paper value is that of the published subject its `paper_row` names. " + MEDIAN,
          tables.subjects),
    Entry("A1", "Table A1: Spearman correlation between scorers",
          "Paper (Table A1): Spearman correlation of scorers' scores over 800 explanations. Ours: over the "
          "reference's latents scored ok by both; 95% Fisher-z interval with Fieller's variance "
          "1.06 / (n - 3) (empty below 4 pairs); n = pairs.",
          tables.correlations("spearman")),
    Entry("A2", "Table A2: Pearson correlation between scorers",
          "Paper (Table A2): Pearson correlation of scorers' scores. Ours: the latents of A1; 95% Fisher-z "
          "interval, variance 1 / (n - 3).",
          tables.correlations("pearson")),
    Entry("A3", "Table A3: examples shown to the explainer",
          "Paper (Table A3): the number of activating examples the explainer sees (10, 20, 40, 60). "
          + MEDIAN,
          tables.ablation("examples_shown")),
    Entry("A4", "Table A4: window length",
          "Paper (Table A4): the length in tokens of the example windows (16, 32, 64). " + MEDIAN,
          tables.ablation("window_length")),
    Entry("A5", "Table A5: sampling of the explainer's examples",
          "Paper (Table A5): examples drawn across activation quantiles, at random, or only the top "
          "activations. " + MEDIAN,
          tables.ablation("sampling")),
    Entry("activations", "Activations shown to the explainer",
          "Paper (text, explainer prompt ablation): the activation strength of each marked token listed in "
          "the explainer's prompt or not: 0.76 / 0.74 with, 0.75 / 0.73 without. " + MEDIAN,
          tables.ablation("activations_shown")),
    Entry("cot", "Chain of thought",
          "Paper (text): chain-of-thought explanations gave no gain and cost much more; it publishes no "
          "number, so the paper column is empty. " + MEDIAN,
          tables.ablation("chain_of_thought")),
    Entry("A8", "Table A8: explainer models",
          "Paper (Table A8): fuzzing, detection, embedding and simulation medians of explanations by Claude "
          "3.5 Sonnet, Llama-3.1-70B, Llama-3.1-8B and humans (100 latents), scored by one scorer. " + MEDIAN,
          tables.explainers),
    Entry("A9", "Table A9: scorer (judge) models",
          "Paper (Table A9): fuzzing, detection and simulation medians of the same explanations scored by "
          "Claude 3.5 Sonnet, Llama-3.1-70B and Llama-3.1-8B. " + MEDIAN,
          tables.judges),
    Entry("human", "Agreement with human ratings (§4.1)",
          "Paper (§4.1): Spearman correlation of human ratings of 81 explanations with each scorer. Ours: "
          "from agreement-scorers.parquet (the browser's ratings), a row per scorer (by role where it plays "
          "one); 95% Fisher-z interval (Fieller) from its n.",
          human),
    Entry("intervention", "Intervention scoring (App. G)",
          "Paper (App. G; no number published): intervention scores of trained-SAE latents lie above those "
          "of shuffled explanations and of a random TopK SAE, and correlate slightly negatively with "
          "fuzzing. Ours: the reference's median intervention score; each floor (shuffled explanation, "
          "random direction) over the latents where both are finite, with the paired median difference; "
          "the median KL the steering reached; the `intervention_random` row's median; Spearman of "
          "intervention vs fuzzing over latents scored by both (Fisher-z interval).",
          intervention),
    Entry("crosslayer", "Explanations across layers",
          "Paper (qualitative; no number published): SAEs on adjacent residual layers are highly similar "
          "once latents are aligned with the Hungarian algorithm. Ours: mean explanation similarity of "
          "matched vs random latent pairs, averaged over the layer pairs at each distance, per dictionary "
          "(reference corpus, model, sampler and explainer); n = pairs of latents.",
          crosslayer),
    Entry("layers", "Scores by layer",
          "Paper (text; no number published): early layers score lower, later ones about the same. Ours: "
          "the reference at each hookpoint of `paper.layers`. " + MEDIAN,
          tables.layers),
]  # fmt: skip
"""Every table id of paper-design.md, in the page's order."""
ORDER = [e.id for e in CATALOG]
