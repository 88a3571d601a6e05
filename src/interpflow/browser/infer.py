"""Search by text (Neuronpedia's search by inference): run the subject model and the dictionary of one unit on
text a user types and list the latents that fire most, token by token, on CPU or GPU."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import pandas as pd
import torch

log = logging.getLogger(__name__)

MAX_TOKENS = 512  # one request's text; longer text is cut (the page says so)


class UnitModel:
    """The subject model cut at a unit's hookpoint and the unit's dictionary, loaded once per unit."""

    def __init__(self, results: Path, unit: str, device: str = "auto"):
        from interpflow.dictionaries.dictionary import SparseDictionary
        from interpflow.models import load_model

        corpus, model, hookpoint, dictionary, _sampler = unit.split("/")
        spec = results / "models" / model / "model.json"
        dict_dir = results / corpus / model / hookpoint / dictionary / "dictionary"
        for path in (spec, dict_dir):
            if not path.exists():
                raise FileNotFoundError(f"unit {unit}: {path} is missing (was the run finished?)")
        self.hookpoint = hookpoint
        # the spec's path is relative to the folder the workflow ran in: the one holding results/
        self.model, self.tokenizer = load_model(spec, {"device": device}, root=results.resolve().parent)
        device_ = next(self.model.parameters()).device
        self.dictionary = SparseDictionary.load(dict_dir, device=device_)
        vocab = pd.read_parquet(results / "models" / model / "vocab.parquet", columns=["token_id", "text"])
        self.texts = vocab.set_index("token_id")["text"]
        log.info("loaded %s for search by text", unit)

    def token_ids(self, text: str) -> list[int]:
        """BOS + the text's tokens, as every corpus row begins (interpflow.corpus)."""
        tok = self.tokenizer
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        return [bos, *tok(text, add_special_tokens=False)["input_ids"][: MAX_TOKENS - 1]]

    def activations(self, text: str) -> tuple[list[str], torch.Tensor]:
        """Token strings of the text (BOS dropped) and the dense latent activations [n_tokens, width]."""
        ids = self.token_ids(text)
        return [str(self.texts.get(i, "")) for i in ids[1:]], self.encode_ids(ids)

    @torch.no_grad()
    def encode_ids(self, ids: list[int]) -> torch.Tensor:
        """Dense latent activations [len(ids) - 1, width] of a BOS-led row of token ids, BOS dropped (as the
        latent store leaves it out)."""
        from interpflow.activations import hidden_states

        device = next(self.model.parameters()).device
        x = hidden_states(self.model, torch.tensor([ids], device=device), [self.hookpoint])[self.hookpoint]
        values, indices = self.dictionary.encode(x[0, 1:].float())  # [T - 1, m] each
        dense = values.new_zeros(len(values), self.dictionary.width).scatter_(1, indices, values)
        return dense.float().cpu()


def top_latents(dense: torch.Tensor, per_token: int = 5, overall: int = 20) -> tuple[list, list]:
    """From activations [T, width]: per token the (latent, value) of its `per_token` strongest latents, and
    the `overall` latents with the largest maximum over the text as (latent, max), both strongest first."""
    k = min(per_token, dense.shape[1])
    values, indices = dense.topk(k, dim=1)  # [T, k]
    tokens = [
        [(int(i), float(v)) for v, i in zip(vs, ix, strict=True) if v > 0]
        for vs, ix in zip(values.tolist(), indices.tolist(), strict=True)
    ]
    peak = dense.max(0).values if len(dense) else dense.new_zeros(dense.shape[1])  # [width]
    order = peak.topk(min(overall, len(peak))).indices.tolist()
    return tokens, [(int(i), float(peak[i])) for i in order if peak[i] > 0]


class TextSearch:
    """Search by text over every unit of a run; a unit's model and dictionary load when first asked for."""

    def __init__(self, results: str | Path, entries: pd.DataFrame, device: str = "auto"):
        self.results, self.entries, self.device = Path(results), entries, device
        self.units = sorted(entries["unit"].unique()) if len(entries) else []

    @functools.cache  # noqa: B019 (one TextSearch per server, kept for its life)
    def _unit(self, unit: str) -> UnitModel:
        return UnitModel(self.results, unit, self.device)

    def describe(self, unit: str) -> dict[int, dict]:
        """latent -> {url, explanation} for the unit, preferring an LLM explainer's explanation."""
        rows = self.entries[self.entries["unit"] == unit]
        rows = rows.sort_values("explainer_kind", key=lambda s: s != "llm", kind="stable")
        rows = rows.drop_duplicates("latent")
        return {int(r.latent): {"url": r.url, "explanation": r.explanation} for r in rows.itertuples()}

    def run(self, text: str, unit: str | None = None) -> dict:
        if not text or not text.strip():
            raise ValueError("text: empty")
        unit = unit or (self.units[0] if self.units else None)
        if unit not in self.units:
            raise ValueError(f"unit: '{unit}' is not a unit of this run (known: {', '.join(self.units)})")
        tokens, dense = self._unit(unit).activations(text)
        per_token, overall = top_latents(dense)
        known = self.describe(unit)

        def record(latent, value, key):
            info = known.get(latent, {})
            return {"latent": latent, key: round(value, 4), "url": info.get("url"),
                    "explanation": info.get("explanation")}  # fmt: skip

        return {
            "unit": unit,
            "tokens": tokens,
            "per_token": [[record(i, v, "value") for i, v in token] for token in per_token],
            "latents": [record(i, v, "max") for i, v in overall],
        }
