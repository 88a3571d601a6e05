"""The README's measured numbers, written from a run's summary tables so they can never go stale.

    python -m interpflow.readme [results/summary] [README.md] [logs]

replaces the text between the README's `<!-- results:begin -->` and `<!-- results:end -->` markers with
tables built from `comparisons.parquet` and `aggregates.parquet`: per scorer, the LLM explainer against the
random floor, paired on latents, what every explainer reached, and the time per stage from the step logs.
`make validity` writes the planted benchmark's table between `<!-- validity:begin -->` and
`<!-- validity:end -->` the same way (update_validity, from benchmarks/validity.json).
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pandas as pd

from interpflow.store import atomic_path, read_parquet

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
VALIDITY_BEGIN, VALIDITY_END = "<!-- validity:begin -->", "<!-- validity:end -->"
PAPER_BEGIN, PAPER_END = "<!-- paper:begin -->", "<!-- paper:end -->"
SWEEP_BEGIN, SWEEP_END = "<!-- sae-sweep:begin -->", "<!-- sae-sweep:end -->"
BENCH_BEGIN, BENCH_END = "<!-- bench:begin -->", "<!-- bench:end -->"
SCORER_ORDER = ("detection", "fuzzing", "simulation", "embedding", "surprisal", "intervention")


def _num(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _interval(lo: float, hi: float) -> str:
    return "n/a" if math.isnan(lo) or math.isnan(hi) else f"[{lo:.2f}, {hi:.2f}]"


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    rank = {k: i for i, k in enumerate(SCORER_ORDER)}
    return frame.sort_values("kind", key=lambda s: s.map(lambda k: rank.get(k, len(rank))), kind="stable")


def _markdown(header: list[str], rows: list[list]) -> str:
    """A Markdown table: the header, the rule, one line per row of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def _paired_with_random(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The paired comparisons of each explainer's headline score against the random floor, in order."""
    rows = comparisons[(comparisons["comparison"] == "paired") & (comparisons["metric"] == "score")]
    return _ordered(rows[rows["explainer_kind_b"] == "random"])


def paired_table(comparisons: pd.DataFrame) -> str:
    """Markdown: per scorer, LLM median, random median, the paired median difference, its interval, p."""
    rows = _paired_with_random(comparisons)
    header = ["scorer", "explainer", "pairs", "explainer median", "random median", "median difference",
              "95% interval", "Wilcoxon p"]  # fmt: skip
    cells = [
        [r.scorer, r.explainer_a, r.n_pairs, _num(r.median_a), _num(r.median_b), _num(r.median_difference),
         _interval(r.ci_low, r.ci_high), _p(r.p_value)]
        for r in rows.itertuples(index=False)
    ]  # fmt: skip
    return _markdown(header, cells)


def paired_verdict(comparisons: pd.DataFrame) -> str:
    """One sentence: where the paired interval against the random floor excludes 0, or that it never does."""
    rows = list(_paired_with_random(comparisons).itertuples(index=False))
    parts = [
        f"{side} the floor: " + ", ".join(f"{r.scorer} ({r.explainer_a})" for r in rows if test(r))
        for side, test in (("above", lambda r: r.ci_low > 0), ("below", lambda r: r.ci_high < 0))
        if any(test(r) for r in rows)
    ]
    if not parts:
        return "No paired interval excludes 0: no scorer separates the explanations from the random floor."
    return "The paired interval excludes 0, " + "; ".join(parts) + "."


def medians_table(aggregates: pd.DataFrame) -> str:
    """Markdown: per scorer and explainer, latents ok / skipped / failed and the median with its interval."""
    rows = _ordered(aggregates[aggregates["metric"] == "score"])
    header = ["scorer", "explainer", "latents", "ok", "skipped", "failed", "median", "95% interval"]
    cells = [[r.scorer, r.explainer, r.latents, r.ok, r.skipped, r.failed, _num(r.median),
              _interval(r.ci_low, r.ci_high)] for r in rows.itertuples(index=False)]  # fmt: skip
    return _markdown(header, cells)


def floors_table(aggregates: pd.DataFrame) -> str:
    """Markdown: the intervention score beside its two built-in floors (medians), where intervention ran."""
    rows = aggregates[aggregates["kind"] == "intervention"]
    wanted = ("score", "score_random_direction", "score_shuffled")
    med = rows[rows["metric"].isin(wanted)].pivot_table(index="explainer", columns="metric", values="median")
    if med.empty:
        return ""
    header = ["intervention", "explanation, steered", "random direction", "shuffled explanation"]
    cells = [[name, *(_num(r.get(m, float("nan"))) for m in wanted)] for name, r in med.iterrows()]
    return _markdown(header, cells)


_TOOK = re.compile(r"step took ([0-9.]+) s")


def _stage(log: Path, logs_dir: Path) -> str:
    """A step log's stage: its file's stem without the shard number ("explain"), the scorer's folder for
    score logs ("score: detection"), a name for the logs of a top folder (the browser's pages, ...)."""
    rel = log.relative_to(logs_dir)
    stem = re.sub(r"-\d+$", "", log.stem)
    top = {"models": "subject model conversion", "llm": "local LLM assembly", "browser": "browser",
           "export": "exports (Neuronpedia, table)", "paper.log": "paper's tables"}  # fmt: skip
    if rel.parts[0] in top:
        return top[rel.parts[0]]
    if stem == "score":
        return f"score: {log.parent.name}"
    if stem == "explain":
        return f"explain: {log.parent.name}"
    return "examples" if log.parent.name == "examples" else stem


def stage_seconds(logs_dir: str | Path) -> pd.DataFrame:
    """Per stage: jobs and the seconds their steps took (the last "step took" line of each step log)."""
    logs_dir, rows = Path(logs_dir), []
    for log in sorted(logs_dir.rglob("*.log"), key=lambda p: p.stat().st_mtime):  # in the order they ran
        took = _TOOK.findall(log.read_text(encoding="utf-8", errors="replace"))
        if took:
            rows.append((_stage(log, logs_dir), float(took[-1])))
    frame = pd.DataFrame(rows, columns=["stage", "seconds"])
    return frame.groupby("stage", sort=False).agg(jobs=("seconds", "size"), seconds=("seconds", "sum"))


def timing_table(logs_dir: str | Path) -> str:
    """Markdown: per stage, jobs and minutes; and the total (the steps' own time, run one after another)."""
    t = stage_seconds(logs_dir)
    cells = [[r.stage, r.jobs, f"{r.seconds / 60:.1f}"] for r in t.reset_index().itertuples()]
    cells.append(["total", int(t["jobs"].sum()), f"{t['seconds'].sum() / 60:.1f}"])
    return _markdown(["stage", "jobs", "minutes"], cells)


def results_block(summary_dir: str | Path, logs_dir: str | Path | None = None) -> str:
    """The README's generated block (without the markers)."""
    summary_dir = Path(summary_dir)
    comparisons = read_parquet(summary_dir / "comparisons.parquet")
    aggregates = read_parquet(summary_dir / "aggregates.parquet")
    parts = [
        "Paired on latents (the same windows scored under the LLM's explanation and under another latent's):",
        paired_table(comparisons),
        paired_verdict(comparisons),
        "Every explainer's median headline score, with the latents behind it:",
        medians_table(aggregates),
    ]
    if floors := floors_table(aggregates):
        parts += ["Intervention beside its floors (medians, nats per explanation token):", floors]
    if logs_dir is not None and Path(logs_dir).is_dir():
        parts += ["Time per stage, from the step logs (each job's own time):", timing_table(logs_dir)]
    return "\n\n".join(parts)


def validity_block(validity_json: str | Path) -> str:
    """The planted benchmark's table (benchmarks/validity.json, written by `make validity`) as Markdown."""
    import json

    about = json.loads(Path(validity_json).read_text(encoding="utf-8"))
    fmt = lambda v: _num(v, 3) if isinstance(v, float) else str(v)  # noqa: E731
    verdict = {True: "met", False: "**not met**", None: ""}  # None: a measurement without a target
    rows = [[r["measure"], fmt(r["value"]), r["target"], verdict[r["met"]]] for r in about["rows"]]
    notes = [f"- {r['measure']}: {r['note']}" for r in about["rows"] if r.get("note")]
    n, config = len(about["planted"]), Path(about["config"]).name
    head = f"`make validity` with `config/{config}` ({n} latents: planted probes and their controls):"
    return "\n\n".join([head, _markdown(["measure", "value", "target", "met"], rows), "\n".join(notes)])


def sae_sweep_block(sweep_json: str | Path) -> str:
    """The SAE optimizer sweep (benchmarks/sae_sweep.json, written by `make sae-sweep`) as Markdown."""
    import json

    about = json.loads(Path(sweep_json).read_text(encoding="utf-8"))
    bias_rate = lambda r: "-" if r["bias_lr_ratio"] is None else f"{r['lr'] * r['bias_lr_ratio']:.2e}"  # noqa: E731
    rows = [[r["variant"], str(r["epochs"]), f"{r['lr']:.2e}", bias_rate(r),
             _num(r["held_out_fvu"], 4), _num(r["held_out_never_fired"], 3), _num(r["dead_fraction"], 3),
             f"{r['tokens_per_s']:,.0f}"] for r in about["rows"]]  # fmt: skip
    head = (
        f"`make sae-sweep`: a {about['width']:,}-latent TopK SAE (k = {about['k']}) trained on "
        f"{about['tokens']:,} tokens x {' and '.join(map(str, about['epochs']))} epoch(s) of "
        f"`{about['activations']}`, "
        f"measured on {about['held_out']:,} held-out tokens ({about['threads']} CPU threads):"
    )
    cols = ["optimizer, rate", "epochs", "lr", "biases' lr", "held-out fvu", "never fire (held out)",
            "dead (training)", "tokens/s"]  # fmt: skip
    return f"{head}\n\n{_markdown(cols, rows)}"


def update_sae_sweep(readme: str | Path, sweep_json: str | Path) -> None:
    """Replace the README's SAE sweep block with the table of `sweep_json`; atomic."""
    note = "<!-- generated from benchmarks/sae_sweep.json by `make sae-sweep`: do not edit by hand -->"
    _replace_block(Path(readme), SWEEP_BEGIN, SWEEP_END, sae_sweep_block(sweep_json), note)


def bench_table(rows: list[dict]) -> str:
    """`make bench`'s rows (benchmarks/run.py's `row` dicts) as the Markdown table it prints."""
    verdict = {True: "met", False: "**not met**", None: "-"}  # None: measured without a target, or not run
    cells = [[r["benchmark"], r["shown"], r["target"], verdict[r["met"]], r["note"]] for r in rows]
    return _markdown(["benchmark", "measured", "target", "met", "details"], cells)


def bench_block(results_json: str | Path) -> str:
    """The benchmark table of a `make bench` run (benchmarks/results.json), with when and where it ran."""
    import json

    about = json.loads(Path(results_json).read_text(encoding="utf-8"))
    peers = ", ".join(about["peers"][k] for k in ("delphi", "sparsify") if k in (about.get("peers") or {}))
    head = (
        f"`make bench` of {about['date']} ({about['seconds'] / 60:.0f} minutes, {about['cpus']} CPU cores, "
        f"{about['sizes']['threads']} threads per task; peers: {peers or 'none'}):"
    )
    failed = [f"- {name} failed: {why}" for name, why in sorted(about.get("errors", {}).items())]
    return "\n\n".join([head, bench_table(about["rows"]), *(["\n".join(failed)] if failed else [])])


def update_bench(readme: str | Path, results_json: str | Path) -> None:
    """Replace the README's benchmark block with the table of `results_json`; atomic."""
    note = "<!-- generated from benchmarks/results.json by `make bench`: do not edit by hand -->"
    _replace_block(Path(readme), BENCH_BEGIN, BENCH_END, bench_block(results_json), note)


def paper_block(paper_dir: str | Path, seconds_file: str | Path | None = None) -> str:
    """The paper page's main table (A10, from results/paper/comparison.parquet) and what the run took."""
    from interpflow.paper import main_table_markdown

    comparison = pd.read_parquet(Path(paper_dir) / "comparison.parquet")
    took = ""
    if seconds_file and Path(seconds_file).is_file():
        took = f" The run took {float(Path(seconds_file).read_text()) / 60:.0f} minutes on this machine."
    head = f"Table A10 of `{Path(paper_dir) / 'index.html'}` (medians with 95% intervals; n latents).{took}"
    return f"{head}\n\n{main_table_markdown(comparison)}"


def update_paper(readme: str | Path, paper_dir: str | Path, seconds_file: str | Path | None = None) -> None:
    """Replace the README's paper block with the page's main table; atomic."""
    note = "<!-- generated from results/paper/comparison.parquet by `make paper`: do not edit by hand -->"
    _replace_block(Path(readme), PAPER_BEGIN, PAPER_END, paper_block(paper_dir, seconds_file), note)


def splice(text: str, begin: str, end: str, block: str, note: str, where: str) -> str:
    """`text` with what lies between its one `begin` line and its one `end` line replaced by note + block."""
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"{where} needs one {begin} line followed by one {end} line")
    head, rest = text.split(begin)
    return f"{head}{begin}\n{note}\n\n{block}\n\n{end}{rest.split(end)[1]}"


def update_readme(readme: str | Path, summary_dir: str | Path, logs_dir: str | Path | None = None) -> None:
    """Replace the README's generated results block with one built from `summary_dir`; atomic."""
    readme = Path(readme)
    note = f"<!-- generated by `python -m interpflow.readme {summary_dir}`: do not edit by hand -->"
    block = results_block(summary_dir, logs_dir)
    _rewrite(readme, splice(readme.read_text(encoding="utf-8"), BEGIN, END, block, note, str(readme)))


def update_validity(readme: str | Path, validity_json: str | Path) -> None:
    """Replace the README's planted-benchmark block with the table of `validity_json`; atomic."""
    note = "<!-- generated from benchmarks/validity.json by `make validity`: do not edit by hand -->"
    _replace_block(Path(readme), VALIDITY_BEGIN, VALIDITY_END, validity_block(validity_json), note)


def _replace_block(readme: Path, begin: str, end: str, block: str, note: str) -> None:
    _rewrite(readme, splice(readme.read_text(encoding="utf-8"), begin, end, block, note, str(readme)))


def _rewrite(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    args = sys.argv[1:]
    summary = args[0] if args else "results/summary"
    update_readme(args[1] if len(args) > 1 else "README.md", summary, args[2] if len(args) > 2 else "logs")
