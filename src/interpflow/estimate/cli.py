"""Command line: print what a run of the given config files will cost before anything is sent.

Reads the config as the workflow does (files merged in order, --set overrides, the schema's defaults, the
workflow's checks) and prints the estimate; optionally writes it, or compares it with a finished run's costs.

Usage: python -m interpflow.estimate config/config.yaml [more.yaml ...] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from interpflow.config import SCHEMA, check_config, validate_schema
from interpflow.estimate.counts import estimate_run
from interpflow.estimate.display import compare, format_estimate


def _assign(config: dict, item: str) -> None:
    """Apply one --set key.path=value (value read as YAML) to `config` in place.

    Names may hold dots ("qwen-1.5b"): at each level the longest existing key wins; list items by index.
    """
    import yaml

    key, eq, raw = item.partition("=")
    if not eq or not key:
        raise ValueError(f"--set expects key.path=value, got {item!r}")
    node, parts = config, key.split(".")
    while True:
        if isinstance(node, list):
            j, k = 1, int(parts[0])
        else:
            j = next((j for j in range(len(parts), 0, -1) if ".".join(parts[:j]) in node), 1)
            k = ".".join(parts[:j])
        parts = parts[j:]
        if not parts:
            node[k] = yaml.safe_load(raw)
            return
        node = node[k] if isinstance(node, list) else node.setdefault(k, {})


def load_config(paths: Sequence[str | os.PathLike], sets: Sequence[str] = (), schema=SCHEMA) -> dict:
    """Merge config files (later over earlier, as --configfile does), apply sets, validate, fill defaults."""
    import yaml
    from snakemake.utils import update_config

    config: dict = {}
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        update_config(config, yaml.safe_load(Path(path).read_text()) or {})
    for item in sets:
        _assign(config, item)
    if not Path(schema).is_file():
        raise FileNotFoundError(f"config schema not found: {schema} (pass --schema)")
    validate_schema(config, schema)  # fills the schema's defaults, as the Snakefile does
    check_config(config)
    return config


def load_specs(path: str | os.PathLike) -> dict[str, dict]:
    """Model specs from YAML (engine -> spec); a spec's `tokenizer` (tokenizer.json on disk) counts tokens."""
    import yaml

    specs = yaml.safe_load(Path(path).read_text()) or {}
    for spec in specs.values():
        if spec.get("tokenizer"):
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(spec.pop("tokenizer")))
            spec["count_tokens"] = lambda text, tok=tok: len(tok.encode(text, add_special_tokens=False).ids)
    return specs


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print a config's estimate (optionally write it, or compare it with a run's costs)."""
    parser = argparse.ArgumentParser(prog="python -m interpflow.estimate", description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="+", help="config YAML files, later ones merged over earlier ones")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. samplers.default.n_test=100"
    )
    parser.add_argument("--schema", default=SCHEMA, help="the config's JSON schema (YAML)")
    parser.add_argument("--specs", help="YAML: engine -> prices, throughput, tokenizer (see estimate_run)")
    parser.add_argument("--out", help="also write the table to this Parquet file")
    parser.add_argument("--costs", help="a finished run's results/summary/costs.parquet to compare with")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    config = load_config(args.configs, args.set, args.schema)
    df = estimate_run(config, model_specs=load_specs(args.specs) if args.specs else None)
    if args.out:
        from interpflow.store import write_parquet

        write_parquet(df, args.out)
    text = format_estimate(df, config.get("budget"))
    if args.costs:
        from interpflow.store import read_parquet

        with pd.option_context("display.width", 250, "display.max_columns", 30):
            text += "\n\nestimate vs actual:\n" + compare(df, read_parquet(args.costs)).to_string(index=False)
    sys.stdout.write(text + "\n")
    return 0
