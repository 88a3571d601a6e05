"""One unit's explanations, windows and scores as Neuronpedia import records (see neuronpedia_records.py).

The tree mirrors Neuronpedia's dataset bucket (`s3://neuronpedia-datasets/v1/`), so it can be synced there
as is or loaded into a self-hosted instance's database:

    {out_dir}/config/{explanation_type,explanation_model_type,explanation_score_type,explanation_score_model}.jsonl
    {out_dir}/{modelId}/{sourceId}/{release,model,sourceset,source}.jsonl
    {out_dir}/{modelId}/{sourceId}/{features,activations,explanations,explanation_scores}/batch-{i}.jsonl.gz

Batch i of every kind holds the records of the same features (at most `features_per_batch` of them, in
latent order); a batch with no records is not written, since Neuronpedia's importer fails on an empty file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import pandas as pd

from interpflow.config import site_layer
from interpflow.export.neuronpedia_records import BATCHES, CONFIG, validate_records
from interpflow.store import atomic_path, read_parquet

log = logging.getLogger(__name__)
by_index = itemgetter("index")

# The bot user Neuronpedia's prisma/seed.ts creates; its .env.localhost names it DEFAULT_CREATOR_USER_ID.
DEFAULT_CREATOR_ID = "clkht01d40000jv08hvalcvly"


@dataclass(frozen=True)
class NeuronpediaIds:
    """Where an export sits in Neuronpedia and who it is credited to."""

    model_id: str
    """Neuronpedia's model id (letters, digits, '-', '_', lower case), e.g. 'gemma-3-270m'."""
    set_name: str
    """The source set: one dictionary at one kind of site, e.g. 'interpflow-resid_post-topk-4k'."""
    source_id: str
    """'{layer}-{set_name}', Neuronpedia's convention (e.g. '9-res-jb')."""
    release: str
    """The release (a group of source sets) the set belongs to."""
    creator_id: str
    """A User id of the target instance; every record's creatorId / authorId."""
    creator_name: str


def neuronpedia_id(text: str) -> str:
    """A string as a Neuronpedia id: lower case, runs of other characters than [a-z0-9_-] made '-'."""
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-")


def ids_for(
    unit: Mapping,
    model_id: str | None = None,
    set_name: str | None = None,
    release: str = "interpflow",
    creator_id: str = DEFAULT_CREATOR_ID,
    creator_name: str = "interpflow",
) -> NeuronpediaIds:
    """Neuronpedia ids of a unit ({corpus, model, hookpoint, dictionary, sampler}), by default our names."""
    site, layer = site_layer(unit["hookpoint"])
    set_name = neuronpedia_id(set_name or f"interpflow-{site}-{unit['dictionary']}")
    return NeuronpediaIds(
        neuronpedia_id(model_id or unit["model"]),
        set_name,
        f"{layer}-{set_name}",
        neuronpedia_id(release),
        creator_id,
        creator_name,
    )


def _record_id(*parts) -> str:
    """A stable id (25 characters, like Neuronpedia's cuids): ids are primary keys across every export
    loaded into one database, so they hash the model, source and what the record is of."""
    return "ipf" + hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:22]


def metadata_records(ids: NeuronpediaIds, unit: Mapping, layers: int, neurons_per_layer: int) -> dict:
    """The release, model, source set and source records of one export."""
    who = {"creatorId": ids.creator_id}
    site = site_layer(unit["hookpoint"])[0]
    unit_id = "/".join(unit[k] for k in ("corpus", "model", "hookpoint", "dictionary", "sampler"))
    return {
        "release": {
            "name": ids.release,
            "description": "Latent explanations and scores from interpflow",
            "creatorName": ids.creator_name,
            **who,
            "urls": [],
            "visibility": "PUBLIC",
        },
        "model": {
            "id": ids.model_id,
            "displayName": unit["model"],
            "displayNameShort": unit["model"],
            **who,
            "layers": layers,
            "neuronsPerLayer": neurons_per_layer,
            "owner": ids.creator_name,
            "visibility": "PUBLIC",
        },
        "sourceset": {
            "modelId": ids.model_id,
            "name": ids.set_name,
            "releaseName": ids.release,
            "description": f"{unit['dictionary']} at {site} (interpflow)",
            "creatorName": ids.creator_name,
            **who,
            "urls": [],
            "visibility": "PUBLIC",
        },
        "source": {
            "id": ids.source_id,
            "modelId": ids.model_id,
            "setName": ids.set_name,
            **who,
            "visibility": "PUBLIC",
            "dataset": unit["corpus"],
            "notes": f"interpflow unit {unit_id}",
        },
    }


def feature_records(ids: NeuronpediaIds, selected: pd.DataFrame, stats: pd.DataFrame) -> list[dict]:
    """One Neuron record per selected latent: maxActApprox = its largest activation over the corpus,
    frac_nonzero = the fraction of (non-BOS) tokens where it is nonzero."""
    rows = selected[["latent"]].merge(stats, on="latent", how="left", validate="one_to_one")
    return [
        {
            "modelId": ids.model_id,
            "layer": ids.source_id,
            "index": str(int(row.latent)),
            "sourceSetName": ids.set_name,
            "creatorId": ids.creator_id,
            "maxActApprox": _finite(row.max),
            "frac_nonzero": _finite(row.frequency),
        }
        for row in rows.sort_values("latent").itertuples()
    ]


def _finite(value) -> float:
    """A float for a column that allows no NaN (a latent that never fired has no max)."""
    value = float(value)
    return value if math.isfinite(value) else 0.0


def activation_records(ids: NeuronpediaIds, examples: pd.DataFrame, corpus: str) -> list[dict]:
    """One Activation record per activating window (train and test), strongest first within a latent."""
    windows = examples[examples["activating"]].sort_values(
        ["latent", "max_act", "example_id"], ascending=[True, False, True]
    )
    records = []
    for row in windows.itertuples():
        values = [float(v) for v in row.acts]
        top = max(values)
        records.append(
            {
                "id": _record_id(ids.model_id, ids.source_id, row.latent, "window", row.example_id),
                "modelId": ids.model_id,
                "layer": ids.source_id,
                "index": str(int(row.latent)),
                "tokens": [str(t) for t in row.token_strs],
                "values": values,
                "maxValue": top,
                "maxValueTokenIndex": values.index(top),
                "minValue": min(values),
                "creatorId": ids.creator_id,
                "dataSource": corpus,
                "dataIndex": f"{int(row.seq)}:{int(row.start)}",
            }
        )
    return records


def explanation_records(ids: NeuronpediaIds, explainer: Mapping, table: pd.DataFrame) -> list[dict]:
    """One Explanation record per latent the explainer explained (status ok); the explainer's model is the
    explanationModelName, the explainer the typeName."""
    records = []
    for row in table[(table["status"] == "ok") & table["explanation"].notna()].itertuples():
        note = f"interpflow explainer {explainer['name']} ({explainer['kind']})"
        records.append(
            {
                "id": explanation_id(ids, int(row.latent), explainer["name"]),
                "modelId": ids.model_id,
                "layer": ids.source_id,
                "index": str(int(row.latent)),
                "description": str(row.explanation),
                "authorId": ids.creator_id,
                "typeName": type_name(explainer["name"]),
                "explanationModelName": _model_name(row, explainer),
                "notes": note,
            }
        )
    return records


def explanation_id(ids: NeuronpediaIds, latent: int, explainer: str) -> str:
    return _record_id(ids.model_id, ids.source_id, latent, "explanation", explainer)


def type_name(name: str) -> str:
    """Our names in Neuronpedia's shared type tables, kept apart from theirs (e.g. 'eleuther_fuzz')."""
    return f"interpflow_{name}"


def _model_name(row, explainer: Mapping) -> str:
    """The LLM that wrote an explanation; a baseline (no LLM: its model column holds its kind) by our name,
    so that no generic name such as 'random' lands in Neuronpedia's shared table of models."""
    model = getattr(row, "model", None)
    if not isinstance(model, str) or model in ("", explainer["kind"], "random", "top-tokens"):
        return type_name(explainer["name"])
    return model


def score_records(
    ids: NeuronpediaIds, score: Mapping, metrics: pd.DataFrame, explained: set[str]
) -> list[dict]:
    """One ExplanationScore record per latent the scorer scored ok, of an exported explanation; the
    value is the scorer's headline score, jsonDetails its other metrics."""
    records = []
    for row in metrics[(metrics["status"] == "ok") & metrics["score"].notna()].to_dict("records"):
        target = explanation_id(ids, int(row["latent"]), score["explainer"])
        if target not in explained or not math.isfinite(row["score"]):
            continue
        details = {k: v for k, v in row.items() if k not in ("latent", "status") and _plain(v)}
        records.append(
            {
                "id": _record_id(target, "score", score["scorer"]),
                "initiatedByUserId": ids.creator_id,
                "value": float(row["score"]),
                "explanationId": target,
                "explanationScoreTypeName": type_name(score["scorer"]),
                "explanationScoreModelName": score_model_name(score),
                "jsonDetails": json.dumps(details),
            }
        )
    return records


def score_model_name(score: Mapping) -> str:
    return score.get("model") or type_name(score["scorer"])


def _plain(value) -> bool:
    """A metric value that JSON can hold (no NaN)."""
    if isinstance(value, str | bool | int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def config_records(ids: NeuronpediaIds, shards: Sequence[Mapping], explanations, scores) -> dict:
    """The rows of Neuronpedia's type tables that our explanations and scores name (foreign keys)."""
    by = {"creatorName": ids.creator_name}
    named = {r["typeName"] for r in explanations}  # the explainers whose explanations are exported
    explainers = {e["name"]: e["kind"] for sh in shards for e in sh["explainers"]}
    explainers = {name: kind for name, kind in explainers.items() if type_name(name) in named}
    scorers = {s["scorer"]: s for shard in shards for s in shard["scores"]}
    models = sorted({r["explanationModelName"] for r in explanations})
    score_models = sorted({r["explanationScoreModelName"] for r in scores})
    return {
        "explanation_type": [
            {
                "name": type_name(name),
                "displayName": f"interpflow {name}",
                **by,
                "creatorId": ids.creator_id,
                "description": f"interpflow explainer '{name}' (kind {kind})",
            }
            for name, kind in sorted(explainers.items())
        ],
        "explanation_model_type": [
            {"name": name, "displayName": name, "description": "wrote interpflow explanations", **by}
            for name in models
        ],
        "explanation_score_type": [
            {
                "name": type_name(name),
                "displayName": f"interpflow {name}",
                **by,
                "creatorId": ids.creator_id,
                "description": f"interpflow scorer '{name}' (kind {s['kind']}): its headline score",
                "scoreDescription": "see jsonDetails for the metric and the scorer's other metrics",
            }
            for name, s in sorted(scorers.items())
        ],
        "explanation_score_model": [
            {"name": name, "displayName": name, "description": "the judge of interpflow scores", **by}
            for name in score_models
        ],
    }


def _batched(records: Iterable[dict], batch_of: dict[str, int], key) -> dict[int, list[dict]]:
    batches: dict[int, list[dict]] = {}
    for record in records:
        batches.setdefault(batch_of[key(record)], []).append(record)
    return batches


def _write_jsonl(path: Path, records: Iterable[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records).encode()
    with atomic_path(path) as tmp:
        # mtime=0: the same records give the same bytes, run after run
        tmp.write_bytes(gzip.compress(text, compresslevel=6, mtime=0) if path.name.endswith(".gz") else text)


def _read_unit(shards: Sequence[Mapping], ids: NeuronpediaIds) -> dict[str, list[dict]]:
    """Every batch kind's records of a unit's shards, in latent order."""
    out = {kind: [] for kind in BATCHES}
    for shard in shards:
        corpus = shard["unit"]["corpus"]
        out["features"] += feature_records(ids, read_parquet(shard["selected"]), read_parquet(shard["stats"]))
        out["activations"] += activation_records(ids, read_parquet(shard["examples"]), corpus)
        for explainer in shard["explainers"]:
            if explainer["kind"] == "random":  # another latent's text: published, it would mislabel this one
                continue
            table = read_parquet(explainer["explanations"])
            out["explanations"] += explanation_records(ids, explainer, table)
    explained = {r["id"] for r in out["explanations"]}
    for shard in shards:
        for score in shard["scores"]:
            out["explanation_scores"] += score_records(ids, score, read_parquet(score["metrics"]), explained)
    for kind in ("activations", "explanations"):
        out[kind].sort(key=lambda r: int(r["index"]))  # stable: keeps each latent's own order
    out["features"].sort(key=lambda r: int(r["index"]))
    return out


def export_neuronpedia(
    shards: Sequence[Mapping],
    out_dir: str | Path,
    *,
    model_id: str | None = None,
    set_name: str | None = None,
    release: str = "interpflow",
    creator_id: str = DEFAULT_CREATOR_ID,
    creator_name: str = "interpflow",
    features_per_batch: int = 128,
    layers: int = 0,
    neurons_per_layer: int = 0,
) -> dict[str, int]:
    """Write one unit's Neuronpedia import tree under `out_dir` and validate it; returns record counts.

    `shards`: one mapping per shard of the unit, as the browser's shard builder gets them: `unit`
    ({corpus, model, hookpoint, dictionary, sampler, shard}), `examples`, `selected`, `stats` (paths),
    `explainers` ([{name, kind, explanations}]) and `scores` ([{explainer, scorer, kind, metrics}, optional
    `model`: the judge's name]). Exported: each selected latent (a feature), its activating windows, the
    explanations with status ok and their ok scores. `layers` and `neurons_per_layer` fill the Model record
    (Neuronpedia requires them; 0 when unknown, as their own converter writes)."""
    if features_per_batch < 1:
        raise ValueError(f"features_per_batch is {features_per_batch}; it must be at least 1")
    units = {tuple(sorted((k, v) for k, v in s["unit"].items() if k != "shard")) for s in shards}
    if len(units) != 1:
        raise ValueError(f"export_neuronpedia exports one unit at a time; got {len(units)} units")
    unit = shards[0]["unit"]
    ids = ids_for(unit, model_id, set_name, release, creator_id, creator_name)
    records = _read_unit(shards, ids)
    batch_of = {r["index"]: i // features_per_batch for i, r in enumerate(records["features"])}
    of_explanation = {r["id"]: r["index"] for r in records["explanations"]}
    out_dir = Path(out_dir)
    folder = out_dir / ids.model_id / ids.source_id
    for kind in BATCHES:
        for stale in (folder / kind).glob("batch-*.jsonl.gz"):  # a previous export's, never a mix of both
            stale.unlink()
        key = (lambda r: of_explanation[r["explanationId"]]) if kind == "explanation_scores" else by_index
        for i, batch in _batched(records[kind], batch_of, key).items():
            _write_jsonl(folder / kind / f"batch-{i}.jsonl.gz", batch)
    for name, record in metadata_records(ids, unit, layers, neurons_per_layer).items():
        _write_jsonl(folder / f"{name}.jsonl", [record])
    config = config_records(ids, shards, records["explanations"], records["explanation_scores"])
    for name in CONFIG:
        path = out_dir / "config" / f"{name}.jsonl"
        if config[name]:
            _write_jsonl(path, config[name])
        else:
            path.unlink(missing_ok=True)
    counts = validate_records(out_dir)
    log.info("Neuronpedia export of %s/%s in %s: %s", ids.model_id, ids.source_id, out_dir, counts)
    return counts


__all__ = [
    "DEFAULT_CREATOR_ID",
    "NeuronpediaIds",
    "export_neuronpedia",
    "ids_for",
    "validate_records",
]
