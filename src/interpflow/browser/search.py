"""Search latents by meaning, offline: explanations are embedded when a shard's pages are built (the
embedding scorer's packaged all-MiniLM-L6-v2); the server embeds the query with the same model and ranks
the explanations by cosine similarity."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from interpflow.store import atomic_path

log = logging.getLogger(__name__)

EMBEDDER = "all-MiniLM-L6-v2"
BATCH_SIZE = 64


def explained(entries: pd.DataFrame) -> pd.DataFrame:
    """The rows of entries that carry an explanation: the rows embeddings.npy is aligned with."""
    return entries[entries["explanation"].notna()].reset_index(drop=True)


def embed_entries(entries: pd.DataFrame, path: str | Path, model=None) -> None:
    """Write float16 unit-norm embeddings [n explained rows, dim] of the explanations to `path` (.npy)."""
    from interpflow.scoring.embedding import embed, load_embedder

    texts = explained(entries)["explanation"].astype(str).tolist()
    if texts:
        model = model or load_embedder(EMBEDDER, "cpu")
        vectors = embed(model, texts, BATCH_SIZE).astype(np.float16)
    else:
        vectors = np.zeros((0, 0), np.float16)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, vectors)


class SearchIndex:
    """Every shard's explained entries and their embeddings under a browser folder, searchable by a query."""

    def __init__(self, browser_dir: str | Path, model=None):
        tables, vectors = [], []
        for entries_path in sorted(Path(browser_dir).glob("units/**/entries.parquet")):
            rows = explained(pd.read_parquet(entries_path))
            emb_path = entries_path.with_name("embeddings.npy")
            emb = np.load(emb_path)
            if len(rows) != len(emb):
                raise ValueError(f"{emb_path}: {len(emb)} rows for {len(rows)} explanations; rebuild it")
            # a random baseline's text belongs to another latent: finding it here would point at the wrong one
            own = (rows["explainer_kind"] != "random").to_numpy() if "explainer_kind" in rows else slice(None)
            rows, emb = rows[own].reset_index(drop=True), emb[own]
            if len(rows):
                tables.append(rows)
                vectors.append(emb.astype(np.float32))
        self.entries = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        self.vectors = np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32)  # [n, dim]
        self._model = model
        log.info("search index: %d explanations", len(self.entries))

    def embed_query(self, text: str) -> np.ndarray:
        from interpflow.scoring.embedding import embed, load_embedder

        if self._model is None:
            self._model = load_embedder(EMBEDDER, "cpu")
        return embed(self._model, [text], 1)[0].astype(np.float32)

    def query(self, text: str, k: int = 20, unit: str | None = None, explainer: str | None = None):
        """The k entries whose explanation is nearest the text, best first, with their scores; optionally
        only those of one unit or one explainer. A list of result dicts (the /api/search records)."""
        if not text.strip():
            raise ValueError("q: empty query")
        keep = np.ones(len(self.entries), bool)
        for column, value in (("unit", unit), ("explainer", explainer)):
            if value:
                keep &= (self.entries[column] == value).to_numpy()
        if not keep.any():
            return []
        sims = np.where(keep, self.vectors @ self.embed_query(text), -np.inf)  # [n]
        top = np.argsort(-sims, kind="stable")[: min(k, int(keep.sum()))]
        return [self._result(self.entries.iloc[i], float(sims[i])) for i in top]

    @staticmethod
    def _result(row: pd.Series, similarity: float) -> dict:
        scores = {c.removeprefix("score."): _finite(row[c]) for c in row.index if c.startswith("score.")}
        return {
            "unit": row["unit"],
            "latent": int(row["latent"]),
            "explainer": row["explainer"],
            "explanation": row["explanation"],
            "similarity": round(similarity, 4),
            "url": row["url"],
            "scores": {s: v for s, v in scores.items() if v is not None},
        }


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None
