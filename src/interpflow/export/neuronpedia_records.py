"""The shapes of Neuronpedia's import records, and a validator for an export tree.

Derived from Neuronpedia's own source, github.com/hijohnnylin/neuronpedia at commit
ebb8426fc550ad5d1f76d52c271a624af3c08a57 (Aug 2026):

- `apps/webapp/prisma/schema.prisma`: models `SourceRelease`, `Model`, `SourceSet`, `Source`, `Neuron`,
  `Activation`, `Explanation`, `ExplanationScore`, `ExplanationType`, `ExplanationModelType`,
  `ExplanationScoreType`, `ExplanationScoreModel` (field names, types, optionality, defaults);
- `apps/webapp/prisma/migrations/000000000000_squashed_migrations/migration.sql`: which columns are
  NOT NULL without a database default. Prisma's `@default(cuid())` is applied by the Prisma client, not by
  Postgres, so the `id` of Activation, Explanation and ExplanationScore must be in the record;
- `apps/webapp/app/api/admin/import/route.ts` and `apps/webapp/lib/db/import.ts`: the layout the importer
  reads (`v1/{modelId}/{sourceId}/{release,model,sourceset,source}.jsonl`, then every `.jsonl.gz` under
  `features/`, `activations/`, `explanations/`; config rows from `v1/config/*.jsonl`). Metadata lines go
  through Prisma `create` (an unknown key is an error); batch lines through
  `INSERT ... SELECT ... FROM jsonb_to_recordset(...) ON CONFLICT DO NOTHING` with the columns named by the
  batch's *first* line, so every line of a batch must carry the same keys;
- `utils/neuronpedia-utils/neuronpedia_utils/db_models/*.py` and `export-data.py`: the same records as
  their own exporter writes them, batches of features with the activations and explanations of the same
  features.

Each shape lists three groups of columns: `required` (present and non-null: NOT NULL, no default),
`defaulted` (may be absent, never null: NOT NULL with a default) and `nullable` (may be absent or null).
`ExplanationScore` has a table but no place in Neuronpedia's importer; we write its rows under
`explanation_scores/` for loading by hand (see the README).
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

VISIBILITY = ("PUBLIC", "UNLISTED", "PRIVATE")  # enum Visibility in schema.prisma
MODEL_ID_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")  # Model.id's zod rule, after its lower-casing


@dataclass(frozen=True)
class Shape:
    """One Neuronpedia table as its import records must look: column name -> kind, in three groups."""

    table: str
    required: dict[str, str]
    """Present and non-null (NOT NULL without a default)."""
    defaulted: dict[str, str]
    """May be absent; never null (NOT NULL with a default)."""
    nullable: dict[str, str]
    """May be absent or null."""

    def kind(self, name: str) -> str | None:
        return self.required.get(name) or self.defaulted.get(name) or self.nullable.get(name)


def _cols(spec: str) -> dict[str, str]:
    return dict(item.split(":") for item in spec.split())


def _shape(table: str, required: str, defaulted: str = "", nullable: str = "") -> Shape:
    return Shape(table, _cols(required), _cols(defaulted), _cols(nullable))


SHAPES = {
    "release": _shape(
        "SourceRelease",
        "name:str description:str creatorName:str creatorId:str",
        "visibility:visibility isNewUi:bool featured:bool urls:str[] defaultUmapSourceIds:str[]",
        "descriptionShort:str creatorEmail:str creatorNameShort:str defaultSourceSetName:str "
        "defaultSourceId:str",
    ),
    "model": _shape(
        "Model",
        "id:model_id creatorId:str layers:uint neuronsPerLayer:uint owner:nonempty",
        "displayNameShort:str displayName:str thinking:bool visibility:visibility inferenceEnabled:bool "
        "instruct:bool",
        "tlensId:str openRouterId:str dimension:int defaultSourceSetName:str defaultSourceId:str website:str",
    ),
    "sourceset": _shape(
        "SourceSet",
        "modelId:str name:str description:str creatorName:str creatorId:str",
        "hasDashboards:bool allowInferenceSearch:bool visibility:visibility type:str urls:str[] "
        "defaultRange:int defaultShowBreaks:bool showDfa:bool showCorrelated:bool showHeadAttribution:bool "
        "showUmap:bool",
        "creatorEmail:str releaseName:str",
    ),
    "source": _shape(
        "Source",
        "id:str modelId:str setName:str creatorId:str",
        "hasDashboards:bool inferenceEnabled:bool visibility:visibility hasUmap:bool hasUmapLogSparsity:bool "
        "hasUmapClusters:bool",
        "saelensRelease:str saelensSaeId:str hfRepoId:str hfFolderId:str num_prompts:int "
        "num_tokens_in_prompt:int dataset:str notes:str",
    ),
    "features": _shape(
        "Neuron",
        "modelId:str layer:str index:str",
        "hasVector:bool vector:float[] topkCosSimIndices:int[] topkCosSimValues:float[] neg_str:str[] "
        "neg_values:float[] pos_str:str[] pos_values:float[] frac_nonzero:float",
        "sourceSetName:str creatorId:str maxActApprox:float vectorLabel:str vectorDefaultSteerStrength:float "
        "hookName:str",
    ),
    "activations": _shape(
        "Activation",
        "id:str tokens:str[] index:str layer:str modelId:str maxValue:float maxValueTokenIndex:uint "
        "minValue:float values:float[] creatorId:str",
        "dfaValues:float[] lossValues:float[]",
        "dataIndex:str dataSource:str dfaTargetIndex:int dfaMaxValue:float logitContributions:str "
        "binMin:float binMax:float binContains:float qualifyingTokenIndex:int",
    ),
    "explanations": _shape(
        "Explanation",
        "id:str modelId:str layer:str index:str description:nonempty authorId:str",
        "scoreV1:float",
        "typeName:str explanationModelName:str notes:str triggeredByUserId:str scoreV2:float",
    ),
    "explanation_scores": _shape(
        "ExplanationScore",
        "id:str initiatedByUserId:str value:float explanationId:str explanationScoreTypeName:str "
        "explanationScoreModelName:str",
        "jsonDetails:str",
    ),
    "explanation_type": _shape(
        "ExplanationType",
        "name:str displayName:str description:str creatorName:str creatorId:str",
        "featured:bool isAttention:bool",
        "settings:str url:str",
    ),
    "explanation_model_type": _shape(
        "ExplanationModelType",
        "name:str displayName:str description:str creatorName:str",
        "featured:bool",
        "openRouterModelId:str url:str",
    ),
    "explanation_score_type": _shape(
        "ExplanationScoreType",
        "name:str displayName:str description:str creatorName:str creatorId:str",
        "featured:bool isAttention:bool",
        "scoreDescription:str scorerModel:str settings:str url:str",
    ),
    "explanation_score_model": _shape(
        "ExplanationScoreModel",
        "name:str displayName:str description:str creatorName:str",
        "featured:bool",
        "openRouterModelId:str url:str",
    ),
}
METADATA = ("release", "model", "sourceset", "source")  # {name}.jsonl in the source folder
BATCHES = ("features", "activations", "explanations", "explanation_scores")  # {name}/batch-{i}.jsonl.gz
CONFIG = ("explanation_type", "explanation_model_type", "explanation_score_type", "explanation_score_model")


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_SCALARS = {
    "str": lambda v: isinstance(v, str),
    "nonempty": lambda v: isinstance(v, str) and v.strip() != "",
    "model_id": lambda v: isinstance(v, str) and 0 < len(v) <= 128 and set(v) <= MODEL_ID_CHARS,
    "visibility": lambda v: v in VISIBILITY,
    "bool": lambda v: isinstance(v, bool),
    "int": _is_int,
    "uint": lambda v: _is_int(v) and v >= 0,
    "float": _is_number,
}


def matches(kind: str, value) -> bool:
    """Whether a non-null JSON value has a column kind ('str', 'float[]', ...)."""
    if kind.endswith("[]"):
        return isinstance(value, list) and all(_SCALARS[kind[:-2]](item) for item in value)
    return _SCALARS[kind](value)


def record_problem(shape: Shape, record: dict) -> tuple[str, str] | None:
    """(field, problem) for the first way `record` breaks `shape`, or None when it fits."""
    for name in record:
        if shape.kind(name) is None:
            return name, f"not a column of {shape.table}"
    for name in shape.required:
        if name not in record:
            return name, f"missing (required by {shape.table})"
    for name, value in record.items():
        if value is None:
            if name not in shape.nullable:
                return name, f"null, but {shape.table}.{name} is NOT NULL"
        elif not matches(shape.kind(name), value):
            return name, f"{value!r:.80} is not of kind {shape.kind(name)}"
    return None


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number from 1, record) of a .jsonl or .jsonl.gz file, naming the file and line on bad JSON."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line, parse_constant=_no_constant)
            except ValueError as exc:
                raise ValueError(f"{path}, line {number}: not a JSON record ({exc})") from exc
            if not isinstance(record, dict):
                raise ValueError(f"{path}, line {number}: not a JSON object")
            yield number, record


def fail(path: Path, line: int, field: str, problem: str):
    raise ValueError(f"{path}, line {line}, field '{field}': {problem}")


def check_file(path: Path, shape_name: str) -> list[tuple[int, dict]]:
    """Every record of one file, each checked against its shape; all with the first record's keys
    (the importer takes a batch's columns from its first line) and the file not empty."""
    shape = SHAPES[shape_name]
    records = list(read_jsonl(path))
    if not records:
        raise ValueError(f"{path}: no records (Neuronpedia's importer fails on an empty file)")
    first_keys = set(records[0][1])
    for line, record in records:
        problem = record_problem(shape, record)
        if problem:
            fail(path, line, *problem)
        if set(record) != first_keys:
            field = sorted(set(record) ^ first_keys)[0]
            fail(path, line, field, "keys differ from the file's first line, whose columns the importer uses")
    return records


def _expect(path: Path, line: int, record: dict, field: str, allowed, what: str) -> None:
    value = record.get(field)
    if value not in allowed:
        fail(path, line, field, f"{value!r} does not match {what}")


def _single(folder: Path, name: str) -> dict:
    path = folder / f"{name}.jsonl"
    if not path.is_file():
        raise ValueError(f"{path}: missing (Neuronpedia's importer reads it)")
    records = check_file(path, name)
    if len(records) != 1:
        fail(path, records[1][0], "-", f"{len(records)} records, expected one")
    return records[0][1]


def _batches(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    paths = sorted(folder.iterdir(), key=lambda p: (len(p.name), p.name))
    for path in paths:
        stem = path.name.removesuffix(".jsonl.gz")
        if not (path.name.endswith(".jsonl.gz") and stem.startswith("batch-") and stem[6:].isdigit()):
            raise ValueError(f"{path}: not a batch-<n>.jsonl.gz file")
    return paths


def _config_names(out_dir: Path) -> dict[str, set[str]]:
    names = {}
    for name in CONFIG:
        path = out_dir / "config" / f"{name}.jsonl"
        records = check_file(path, name) if path.is_file() else []
        names[name] = {record["name"] for _, record in records}
    return names


def _check_metadata(folder: Path) -> dict[str, dict]:
    meta = {name: _single(folder, name) for name in METADATA}
    model_id, source_id = folder.parent.name, folder.name
    checks = [
        ("model", "id", model_id, f"the folder name {model_id!r}"),
        ("source", "id", source_id, f"the folder name {source_id!r}"),
        ("source", "modelId", model_id, "the model id"),
        ("sourceset", "modelId", model_id, "the model id"),
        ("source", "setName", meta["sourceset"]["name"], "sourceset.jsonl's name"),
    ]
    if meta["sourceset"].get("releaseName") is not None:
        checks.append(("sourceset", "releaseName", meta["release"]["name"], "release.jsonl's name"))
    for name, field, expected, what in checks:
        _expect(folder / f"{name}.jsonl", 1, meta[name], field, {expected}, what)
    return meta


def _check_activation_values(path: Path, line: int, record: dict) -> None:
    values = record["values"]
    if len(values) != len(record["tokens"]) or not values:
        fail(path, line, "values", f"{len(values)} values for {len(record['tokens'])} tokens")
    index = record["maxValueTokenIndex"]
    if record["maxValue"] != max(values) or index >= len(values) or values[index] != max(values):
        fail(path, line, "maxValue", "maxValue / maxValueTokenIndex do not point at the largest value")
    if record["minValue"] != min(values):
        fail(path, line, "minValue", "is not the smallest value")


def _check_source(folder: Path, config: dict[str, set[str]], seen_ids: set[str]) -> dict[str, int]:
    meta = _check_metadata(folder)
    model_id, source_id = meta["model"]["id"], meta["source"]["id"]
    indices: set[str] = set()
    explanation_ids: set[str] = set()
    counts = dict.fromkeys(BATCHES, 0)
    # The order matters: activations and explanations refer to features, scores to explanations.
    for kind in BATCHES:
        for path in _batches(folder / kind):
            for line, record in check_file(path, kind):
                counts[kind] += 1
                if kind != "explanation_scores":
                    _expect(path, line, record, "modelId", {model_id}, "the model id")
                    _expect(path, line, record, "layer", {source_id}, "the source id")
                if kind == "features":
                    if record["index"] in indices:
                        fail(path, line, "index", f"feature {record['index']} exported twice")
                    indices.add(record["index"])
                    if record.get("sourceSetName") is not None:
                        _expect(path, line, record, "sourceSetName", {meta["sourceset"]["name"]}, "the set")
                    continue
                if kind in ("activations", "explanations"):
                    _expect(path, line, record, "index", indices, "an exported feature")
                else:
                    _expect(path, line, record, "explanationId", explanation_ids, "an exported explanation")
                if record["id"] in seen_ids:
                    fail(path, line, "id", f"{record['id']!r} used twice (ids are primary keys)")
                seen_ids.add(record["id"])
                if kind == "activations":
                    _check_activation_values(path, line, record)
                elif kind == "explanations":
                    explanation_ids.add(record["id"])
                    _check_names(path, line, record, config, EXPLANATION_NAMES)
                else:
                    _check_names(path, line, record, config, SCORE_NAMES)
    if not indices:
        raise ValueError(f"{folder / 'features'}: no feature records")
    return counts


EXPLANATION_NAMES = {"typeName": "explanation_type", "explanationModelName": "explanation_model_type"}
SCORE_NAMES = {
    "explanationScoreTypeName": "explanation_score_type",
    "explanationScoreModelName": "explanation_score_model",
}


def _check_names(path: Path, line: int, record: dict, config: dict[str, set[str]], fields: dict) -> None:
    """Names that are foreign keys into the config tables must be rows of config/<table>.jsonl."""
    for field, table in fields.items():
        if record.get(field) is not None:
            _expect(path, line, record, field, config[table], f"a name in config/{table}.jsonl")


def validate_records(out_dir: str | Path) -> dict[str, int]:
    """Check an export tree (`config/`, `{modelId}/{sourceId}/`) against Neuronpedia's record shapes.

    Checks every record's keys and value kinds, that ids agree between files (model, source, set, release;
    each activation and explanation of an exported feature; each score of an exported explanation; type and
    model names present in `config/`) and that primary keys are unique. Raises ValueError naming the file,
    line and field of the first problem; returns the number of records of each batch kind."""
    out_dir = Path(out_dir)
    config = _config_names(out_dir)
    folders = sorted(p.parent for p in out_dir.glob("*/*/source.jsonl") if p.parts[-3] != "config")
    if not folders:
        raise ValueError(f"{out_dir}: no {{modelId}}/{{sourceId}}/source.jsonl to validate")
    totals = dict.fromkeys(BATCHES, 0)
    seen_ids: set[str] = set()
    for folder in folders:
        for kind, count in _check_source(folder, config, seen_ids).items():
            totals[kind] += count
    return totals
