"""The config schema (package data) and the defaults it holds: the one place a default is written.

The workflow validates the whole config against it with the defaults filled in; a stage called directly (a
test, a notebook) with a partial entry gets the same values through `with_defaults`. A module of its own, so
that editing the config checks in interpflow.config reruns no stage.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

SCHEMA = Path(__file__).with_name("config.schema.yaml")  # package data: found installed or from a clone


def read_yaml(path: str | Path) -> Any:
    """A YAML file, parsed by libyaml's C loader where PyYAML has it (10x faster: every step and every
    Snakemake start reads the schema)."""
    import yaml

    return yaml.load(Path(path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.cache
def _schema() -> dict:
    return read_yaml(SCHEMA)


def _resolved(node: dict) -> dict:
    """A schema node with its local $ref ("#/definitions/<name>") followed."""
    ref = node.get("$ref", "")
    return _schema()["definitions"][ref.rsplit("/", 1)[1]] if ref.startswith("#/definitions/") else node


def _filled(value, node: dict):
    """`value` with the defaults of `node`'s properties filled in where absent, at every depth."""
    node = _resolved(node)
    if not isinstance(value, dict) or "properties" not in node:
        return value
    out = dict(value)
    for key, sub in node["properties"].items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = _filled(out[key], sub)
    return out


def with_defaults(section: str, entry: dict | None = None) -> dict:
    """One entry of a config section (a `scorers` or `samplers` entry, or the `latent_store` block) with the
    schema's defaults filled in where a key is absent. The schema is the one place defaults live: the
    workflow validates the whole config with them filled in, and a stage called directly (a test, a
    notebook) with a partial entry gets the same values through this."""
    node = _schema()["properties"][section]
    named = node.get("$ref") == "#/definitions/name_map"
    return _filled(dict(entry or {}), node["additionalProperties"] if named else node)


@functools.cache
def scorer_kinds() -> dict[str, frozenset[str]]:
    """Scorer key -> the kinds that read it (the schema's `x-kinds`); a key without it, every kind reads."""
    props = _schema()["properties"]["scorers"]["additionalProperties"]["properties"]
    return {k: frozenset(p["x-kinds"]) for k, p in props.items() if "x-kinds" in p}


def scorer_slice(entry: dict) -> dict:
    """A validated scorer entry with only the keys its kind reads, as its jobs get it: the schema fills every
    key's default into every entry, and a key only another kind reads (calibrate, target_kl) must not rerun
    this one's jobs when it changes."""
    kinds = scorer_kinds()
    return {k: v for k, v in entry.items() if entry["kind"] in kinds.get(k, (entry["kind"],))}
