"""The README's generated numbers (interpflow.readme): built from summary tables, spliced between markers."""

import numpy as np
import pandas as pd
import pytest

from interpflow.readme import BEGIN, END, paired_table, paired_verdict, update_readme
from interpflow.store import write_parquet


def comparisons():
    row = dict(comparison="paired", metric="score", explainer_a="qwen", explainer_kind_b="random", n_pairs=12,
               median_a=0.61, median_b=0.5, median_difference=0.1, ci_low=0.02, ci_high=0.2,
               p_value=0.0123)  # fmt: skip
    return pd.DataFrame([
        row | dict(scorer="fuzzing", kind="fuzzing"),
        row | dict(scorer="detection", kind="detection", ci_low=np.nan, p_value=0.0004),
        row | dict(scorer="detection", kind="detection", explainer_kind_b="top-tokens"),  # not the floor
        row | dict(scorer="detection", kind="detection", metric="auroc"),  # not the headline
    ])  # fmt: skip


def aggregates():
    base = dict(latents=16, ok=14, skipped=1, failed=1, median=0.6, ci_low=0.5, ci_high=0.7, explainer="qwen")
    return pd.DataFrame([
        base | dict(scorer="detection", kind="detection", metric="score"),
        base | dict(scorer="intervention", kind="intervention", metric="score", median=0.3),
        base | dict(scorer="intervention", kind="intervention", metric="score_random_direction", median=0.1),
        base | dict(scorer="intervention", kind="intervention", metric="score_shuffled", median=0.05),
    ])  # fmt: skip


def test_paired_table_hand_written():
    lines = paired_table(comparisons()).splitlines()
    assert len(lines) == 4  # header, rule, detection then fuzzing (the paper's order), nothing else
    assert lines[2] == "| detection | qwen | 12 | 0.61 | 0.50 | 0.10 | n/a | 4.0e-04 |"
    assert lines[3] == "| fuzzing | qwen | 12 | 0.61 | 0.50 | 0.10 | [0.02, 0.20] | 0.012 |"


def test_paired_verdict_names_only_intervals_that_exclude_zero():
    table = comparisons()  # fuzzing [0.02, 0.20]: above; detection's interval is missing (NaN): no claim
    assert paired_verdict(table) == "The paired interval excludes 0, above the floor: fuzzing (qwen)."
    table.loc[0, ["ci_low", "ci_high"]] = [-0.3, -0.1]
    assert paired_verdict(table) == "The paired interval excludes 0, below the floor: fuzzing (qwen)."
    table.loc[0, "ci_low"] = -0.3
    table.loc[0, "ci_high"] = 0.1
    assert paired_verdict(table).startswith("No paired interval excludes 0")


def test_update_readme_replaces_only_the_block(tmp_path):
    write_parquet(comparisons(), tmp_path / "comparisons.parquet")
    write_parquet(aggregates(), tmp_path / "aggregates.parquet")
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{BEGIN}\nstale 0.44\n{END}\nafter\n")
    update_readme(readme, tmp_path)
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n" + BEGIN) and text.endswith(END + "\nafter\n")
    assert "stale" not in text and "| detection | qwen | 16 | 14 | 1 | 1 | 0.60 | [0.50, 0.70] |" in text
    assert "| qwen | 0.30 | 0.10 | 0.05 |" in text  # intervention beside its floors
    update_readme(readme, tmp_path)
    assert readme.read_text() == text  # idempotent
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="needs one"):
        update_readme(readme, tmp_path)


def test_timing_table_from_step_logs(tmp_path):
    import os

    from interpflow.readme import timing_table

    logs = tmp_path / "logs"
    steps = [
        ("models/gemma.log", 46.0),
        ("wiki/gemma/h/d/s/qwen/explain-0.log", 60.0),
        ("wiki/gemma/h/d/s/qwen/explain-1.log", 30.0),
        ("wiki/gemma/h/d/s/qwen/detection/score-0.log", 90.0),
        ("browser/wiki/gemma/h/d/s/shard-0.log", 12.0),
        ("browser/index.log", 6.0),
    ]
    for i, (rel, seconds) in enumerate(steps):
        (logs / rel).parent.mkdir(parents=True, exist_ok=True)
        (logs / rel).write_text(f"INFO something\nINFO interpflow: step took {seconds} s\n")
        os.utime(logs / rel, (1000 + i, 1000 + i))  # the order the jobs ran in
    (logs / "empty.log").write_text("no timing here\n")
    assert timing_table(logs).splitlines()[2:] == [
        "| subject model conversion | 1 | 0.8 |",
        "| explain: qwen | 2 | 1.5 |",
        "| score: detection | 1 | 1.5 |",
        "| browser | 2 | 0.3 |",
        "| total | 6 | 4.1 |",
    ]


def test_the_validity_table_is_spliced_from_the_benchmark_json(tmp_path):
    import json

    from interpflow.readme import VALIDITY_BEGIN, VALIDITY_END, update_validity

    rows = [
        dict(
            measure="oracle, fuzzing AUROC (median)",
            value=0.8361,
            target=">= 0.85",
            met=False,
            note="8 of 8 latents ok",
        ),
        dict(measure="named", value="2 of 8", target=">= 4 of 5", met=False),
        dict(measure="calibration gain", value=0.031, target="none (measured)", met=None),
    ]
    about = {"config": "/somewhere/config/validity.yaml", "planted": [{}] * 16, "rows": rows}
    (tmp_path / "validity.json").write_text(json.dumps(about))
    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN}\n{END}\nmid\n{VALIDITY_BEGIN}\nold 0.74\n{VALIDITY_END}\nend\n")
    update_validity(readme, tmp_path / "validity.json")
    text = readme.read_text()
    assert "old 0.74" not in text and text.startswith(f"{BEGIN}\n{END}\nmid\n")  # the rest untouched
    assert text.endswith(VALIDITY_END + "\nend\n")
    assert "| oracle, fuzzing AUROC (median) | 0.836 | >= 0.85 | **not met** |" in text
    assert "| named | 2 of 8 | >= 4 of 5 | **not met** |" in text
    assert "| calibration gain | 0.031 | none (measured) |  |" in text  # no verdict without a target
    assert "`config/validity.yaml` (16 latents" in text and "- oracle, fuzzing AUROC (median): 8 of 8" in text


def test_the_paper_table_and_its_time_are_spliced_from_the_page(tmp_path):
    from interpflow.readme import PAPER_BEGIN, PAPER_END, update_paper

    cell = dict(table="A10", row="random explanation", low=0.31, high=0.62, n=15, source="Table A10")
    pd.DataFrame(
        [dict(cell, metric="fuzzing", ours=0.547, paper=0.51),
         dict(cell, metric="detection", ours=0.5625, paper=0.51),
         dict(cell, table="A3", row="10", metric="fuzzing", ours=0.6, paper=0.73)]  # fmt: skip
    ).to_parquet(tmp_path / "comparison.parquet")
    (tmp_path / "seconds.txt").write_text("7260\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"top\n{PAPER_BEGIN}\nstale\n{PAPER_END}\nend\n")
    update_paper(readme, tmp_path, tmp_path / "seconds.txt")
    text = readme.read_text()
    assert "stale" not in text and text.startswith("top\n") and text.endswith(f"{PAPER_END}\nend\n")
    assert "| random explanation | 0.547 [0.310, 0.620] | 0.510 | 0.562 [0.310, 0.620] | 0.510 | 15 |" in text
    assert "took 121 minutes" in text and "| 10 |" not in text  # only Table A10


def spliced_from_json(tmp_path, about: dict, begin: str, end: str, update) -> str:
    """The README text after `update(readme, json)` replaced a stale block between begin and end."""
    import json

    (tmp_path / "about.json").write_text(json.dumps(about))
    readme = tmp_path / "README.md"
    readme.write_text(f"top\n{begin}\n| stale | 5.44x |\n{end}\nend\n")
    update(readme, tmp_path / "about.json")
    text = readme.read_text()
    assert "stale" not in text and text.startswith("top\n") and text.endswith(f"{end}\nend\n")
    return text

def test_the_sae_sweep_table_is_spliced_from_its_json(tmp_path):

    from interpflow.readme import SWEEP_BEGIN, SWEEP_END, update_sae_sweep

    row = dict(variant="adam, 5x", epochs=1, optimizer="adam", lr=0.002, bias_lr_ratio=None, tokens=204800,
               held_out_fvu=0.03041, held_out_never_fired=0.0278, dead_fraction=0.0066,
               tokens_per_s=1716.4)  # fmt: skip
    signum = row | dict(variant="signum", optimizer="signum", epochs=3, lr=0.01, bias_lr_ratio=0.001)
    about = dict(activations="a.h5", tokens=204800, epochs=[1, 3], width=4096, k=32, held_out=40960,
                 threads=2, rows=[row, signum])  # fmt: skip
    text = spliced_from_json(tmp_path, about, SWEEP_BEGIN, SWEEP_END, update_sae_sweep)
    assert "| adam, 5x | 1 | 2.00e-03 | - | 0.0304 | 0.028 | 0.007 | 1,716 |" in text
    assert "| signum | 3 | 1.00e-02 | 1.00e-05 | 0.0304 |" in text  # the biases' rate: lr x bias_lr_ratio
    assert "4,096-latent TopK SAE (k = 32) trained on 204,800 tokens x 1 and 3 epoch(s)" in text


def test_the_bench_table_is_spliced_from_its_results(tmp_path):
    """The README's benchmark table is `make bench`'s rows as run.py records them, never typed."""

    from interpflow.readme import BENCH_BEGIN, BENCH_END, update_bench

    rows = [
        dict(benchmark="SAE training vs sparsify", value=1.07, shown="1.07x", target=">= 1x", met=True,
             note="2,400 vs 2,250 tokens/s"),
        dict(benchmark="example construction vs delphi", value=8.2, shown="8.20x", target=">= 10x", met=False,
             note="700 vs 85 latents/s"),
        dict(benchmark="LLM concurrency", value=None, shown="n/a", target=">= 0.9", met=None,
             note="not available: no server"),
    ]  # fmt: skip
    about = dict(date="2026-12-07 17:00:00", seconds=1500.0, cpus=2, sizes={"threads": 2},
                 peers={"delphi": "eai-delphi==0.1.3", "sparsify": "eai-sparsify==1.3.3", "deps": ["x"]},
                 rows=rows, errors={"dryrun": "boom"})  # fmt: skip
    text = spliced_from_json(tmp_path, about, BENCH_BEGIN, BENCH_END, update_bench)
    assert "| SAE training vs sparsify | 1.07x | >= 1x | met | 2,400 vs 2,250 tokens/s |" in text
    assert "| example construction vs delphi | 8.20x | >= 10x | **not met** | 700 vs 85 latents/s |" in text
    assert "| LLM concurrency | n/a | >= 0.9 | - | not available: no server |" in text
    assert "2026-12-07 17:00:00 (25 minutes, 2 CPU cores" in text and "eai-sparsify==1.3.3)" in text
    assert "- dryrun failed: boom" in text
