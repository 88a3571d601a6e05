"""`make validity`: the planted-latent benchmark of issue 13, through the real workflow.

1. builds the default run's tokens, vocabulary and activations (snakemake, config/validity.yaml shares the
   default corpus and model), 2. fits the planted dictionary on them (interpflow.planted: probes of token
   properties plus random-direction controls of the same sparsity), 3. runs the workflow on
   config/validity.yaml up to each (explainer, scorer)'s per-latent metrics (not the summary, which is the
   default run's), 4. reads those public outputs and prints one table (measure | value | target | met)
   that it also writes to benchmarks/validity.json. A target not met says so, with the counts behind it.

Usage: python benchmarks/validity.py [--config config/validity.yaml] [--cores 2] [--no-run]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "validity.json"
JUDGES = ("detection", "fuzzing")  # the scorers with the AUROC targets
CORRELATION = ("simulation", "intervention")  # headline scores whose chance level is 0, not 0.5


def say(*lines: str) -> None:
    """Write lines to stdout (an entry point's output, not logging)."""
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def snakemake(config: Path, targets: list[str], cores: int) -> None:
    """Run the workflow up to `targets` (raises on failure; its output streams to the terminal)."""
    cmd = [str(Path(sys.executable).with_name("snakemake")), "--configfile", str(config), "--cores",
           str(cores), "--rerun-incomplete", *targets]  # fmt: skip
    say("+ " + " ".join(cmd))
    subprocess.run(cmd, cwd=REPO, check=True)


class Layout:
    """Where the validity run's inputs and outputs are, from its config (the first run, one hookpoint)."""

    def __init__(self, cfg: dict):
        run = cfg["runs"][0]
        self.cfg, self.run = cfg, run
        self.hookpoint = run["hookpoints"][0]
        self.dictionary = run["dictionaries"][0]
        self.base = f"results/{run['corpus']}/{run['model']}"
        d = cfg["dictionaries"][self.dictionary]
        self.planted = REPO / d["path"].format(hookpoint=self.hookpoint, layer=self.hookpoint.split(".")[1])
        shard = d.get("shard_size") or cfg.get("latent_store", {}).get("shard_size", 4096)
        self.shards = range(math.ceil(d["width"] / shard))
        kinds = {n: cfg["explainers"][n].get("kind", "llm") for n in run["explainers"]}
        self.explainer = {k: n for n, k in reversed(kinds.items())}  # kind -> its (first) explainer
        self.scorers = {n: cfg["scorers"][n]["kind"] for n in run["scorers"]}

    def upstream(self) -> list[str]:
        return [f"{self.base}/tokens.h5", f"{self.base}/{self.hookpoint}/activations.h5",
                f"results/models/{self.run['model']}/vocab.parquet"]  # fmt: skip

    def folder(self, explainer: str) -> str:
        return f"{self.base}/{self.hookpoint}/{self.dictionary}/{self.run['sampler']}/{explainer}"

    def metrics(self, explainer: str, scorer: str) -> list[str]:
        return [f"{self.folder(explainer)}/{scorer}/metrics-{s}.parquet" for s in self.shards]

    def predictions(self, explainer: str, scorer: str) -> list[str]:
        return [f"{self.folder(explainer)}/{scorer}/predictions-{s}.parquet" for s in self.shards]

    def explanations(self, explainer: str) -> list[str]:
        return [f"{self.folder(explainer)}/explanations-{s}.parquet" for s in self.shards]

    def unit(self) -> str:
        corpus_model = self.base.removeprefix("results/")
        return f"{corpus_model}/{self.hookpoint}/{self.dictionary}/{self.run['sampler']}"

    def pages(self) -> list[str]:
        """The browser's shard folders of the planted dictionary (not its index: results/browser/index.html
        belongs to the default run, which shares this results folder)."""
        return [f"results/browser/units/{self.unit()}/shard-{s}" for s in self.shards]

    def targets(self) -> list[str]:
        metrics = [m for e in self.run["explainers"] for s in self.run["scorers"] for m in self.metrics(e, s)]
        return metrics + self.pages()


def build_planted(lay: Layout, config: Path, cores: int) -> pd.DataFrame:
    """The planted dictionary, fitted again whenever the activations are newer than it."""
    from interpflow.planted import REPORT_FILE, build_planted

    snakemake(config, lay.upstream(), cores)
    tokens, acts, vocab = (REPO / p for p in lay.upstream())
    report = lay.planted / REPORT_FILE
    if not report.is_file() or report.stat().st_mtime < acts.stat().st_mtime:
        model = lay.run["model"]
        return build_planted(acts, tokens, vocab, lay.planted, hookpoint=lay.hookpoint, model_name=model)
    return pd.DataFrame(json.loads(report.read_text())["latents"])


def read_scores(lay: Layout, explainer: str, scorer: str) -> pd.Series:
    """Per-latent value of one (explainer, scorer): AUROC where the scorer gives one, else its score;
    NaN where the latent was not scored `ok` (its status is kept in attrs, for the notes)."""
    m = pd.concat([pd.read_parquet(REPO / p) for p in lay.metrics(explainer, scorer)], ignore_index=True)
    col = "auroc" if "auroc" in m and m["auroc"].notna().any() else "score"
    value = m[col].where(m["status"] == "ok").astype(float)
    out = pd.Series(value.to_numpy(), index=m["latent"].to_numpy(), name=col)
    out.attrs["status"] = dict(zip(m["latent"].tolist(), m["status"].tolist(), strict=True))
    return out


def raw_auroc(lay: Layout, explainer: str, scorer: str) -> pd.Series:
    """Per-latent AUROC of the judge's own P(yes), without the neutral calibration the headline may use
    (attrs["calibrated"]: whether it did, i.e. the predictions hold p_yes_neutral)."""
    from interpflow.scoring.common import auroc  # NaN for a latent whose windows lack a class

    p = pd.concat([pd.read_parquet(REPO / f) for f in lay.predictions(explainer, scorer)], ignore_index=True)
    p = p[p["status"] == "ok"]
    out = {int(lat): auroc(g["activating"], g["p_yes"]) for lat, g in p.groupby("latent")
           if g["p_yes"].notna().all()}  # fmt: skip
    raw = pd.Series(out, name="auroc", dtype=float)
    raw.attrs["calibrated"] = bool(p.get("p_yes_neutral", pd.Series(dtype=float)).notna().any())
    return raw


def _calibration_rows(lay: Layout, s: dict, judges: list[str], who: list[str], ip: np.ndarray) -> list[dict]:
    """What calibrating P(yes) against the neutral question did, on the same judgments: the calibrated
    headline AUROC against the raw P(yes)'s, paired on the planted latents (the oracle should gain, the
    random explanation should move towards 0.5). Informational: no target; none where `calibrate` is off."""
    rows = []
    for n in judges:
        for e in who:
            raw = raw_auroc(lay, e, n)
            if not raw.attrs["calibrated"]:
                continue
            d, p, k = paired(s[e, n], raw, ip, ip)
            what = (f"calibration: {e} explanation on planted latents, {n} AUROC calibrated minus raw P(yes) "
                    f"(paired median difference, Wilcoxon p = {p:.3g}, n = {k})")  # fmt: skip
            note = f"medians: calibrated {median(s[e, n], ip):.3f}, raw P(yes) {median(raw, ip):.3f}"
            rows.append(row(what, d, "none (measured)", None, note))
    return rows


def chance(scores: pd.Series, kind: str) -> float:
    return 0.0 if scores.name == "score" and kind in CORRELATION else 0.5


def _note(s: pd.Series, latents: np.ndarray) -> str:
    ok = int(s.reindex(latents).notna().sum())
    status = pd.Series([s.attrs["status"].get(int(lat), "missing") for lat in latents])
    bad = status[status != "ok"].value_counts().to_dict()
    return f"{ok} of {len(latents)} latents ok" + (f"; other statuses {bad}" if bad else "")


def row(measure: str, value, target: str, met: bool | None, note: str = "") -> dict:
    """One row of the table; `met` None for a measurement without a target."""
    met = None if met is None else bool(met)
    return dict(measure=measure, value=value, target=target, met=met, note=note)


def median(s: pd.Series, latents: np.ndarray) -> float:
    v = s.reindex(latents).dropna()
    return float(v.median()) if len(v) else float("nan")


def paired(a: pd.Series, b: pd.Series, ia: np.ndarray, ib: np.ndarray) -> tuple[float, float, int]:
    """Median of a[ia] - b[ib] over the pairs both scored, and the one-sided Wilcoxon p (a > b)."""
    from scipy.stats import wilcoxon

    x, y = a.reindex(ia).to_numpy(), b.reindex(ib).to_numpy()
    keep = ~(np.isnan(x) | np.isnan(y))
    d = x[keep] - y[keep]
    if len(d) == 0 or not np.any(d):
        return float(np.median(d)) if len(d) else float("nan"), float("nan"), len(d)
    return float(np.median(d)), float(wilcoxon(d, alternative="greater").pvalue), len(d)


def _judge_rows(s: dict, judges: list[str], oracle: str, llm: str, ip: np.ndarray) -> list[dict]:
    """Median detection/fuzzing AUROC of the oracle (>= 0.85) and LLM (>= 0.75) explanations, planted."""
    rows = []
    for who, bar in ((oracle, 0.85), (llm, 0.75)):
        for n in judges:
            v = median(s[who, n], ip)
            what = f"{who} explanation on planted latents, {n} AUROC (median)"
            rows.append(row(what, v, f">= {bar}", v >= bar, _note(s[who, n], ip)))
    return rows


def _naming_row(lay: Layout, llm: str, pl: pd.DataFrame) -> dict:
    """How many LLM explanations of planted latents name their property (interpflow.planted's regexes)."""
    from interpflow.planted import names_property

    texts = pd.concat([pd.read_parquet(REPO / p) for p in lay.explanations(llm)]).set_index("latent")
    pairs = [(texts["explanation"].get(lat), prop) for lat, prop in pl[["latent", "property"]].values]
    named = sum(names_property(text, prop) for text, prop in pairs)
    said = "; ".join(f"{prop}: {text!r}" for text, prop in pairs)
    what = f"{llm} explanations naming their planted property"
    return row(what, f"{named} of {len(pairs)}", ">= 4 of 5", named >= 0.8 * len(pairs), said)


def _search_row(lay: Layout, llm: str, pl: pd.DataFrame) -> dict:
    """Issue 11: the browser's search by meaning, over the LLM's explanations of the planted dictionary,
    ranks the digit latent first for the query "numbers"."""
    from interpflow.browser.search import SearchIndex

    digit = int(pl.loc[pl["property"] == "digit", "latent"].iloc[0])
    hits = SearchIndex(REPO / "results/browser").query("numbers", k=3, unit=lay.unit(), explainer=llm)
    first = hits[0]["latent"] if hits else None
    said = "; ".join(f"latent {h['latent']} ({h['similarity']:.3f}): {h['explanation']!r}" for h in hits)
    return row(f'search "numbers" over {llm} explanations: first latent', first, f"{digit} (digit)",
               first == digit, said)  # fmt: skip


def _paired_row(what: str, a: pd.Series, b: pd.Series, ia, ib, target: str, bar: float) -> dict:
    """A paired comparison: median difference a - b, met when it is >= bar and Wilcoxon p < 0.05."""
    d, p, k = paired(a, b, ia, ib)
    return row(f"{what}: paired median difference (Wilcoxon p = {p:.3g}, n = {k})", d, target,
               d >= bar and p < 0.05)  # fmt: skip


def measure(lay: Layout, planted: pd.DataFrame) -> list[dict]:
    """Issue 13's table from the run's per-latent metrics and explanations."""
    is_planted = planted["is_planted"].astype(bool)
    pl, ctrl = planted[is_planted].sort_values("latent"), planted[~is_planted].sort_values("latent")
    ip, ic = pl["latent"].to_numpy(), ctrl["latent"].to_numpy()  # control i+P is matched to planted i
    llm, oracle, rand = (lay.explainer[k] for k in ("llm", "file", "random"))
    judges = [n for n, k in lay.scorers.items() if k in JUDGES]
    s = {(e, n): read_scores(lay, e, n) for e in (llm, oracle, rand) for n in lay.scorers}
    rows = [*_judge_rows(s, judges, oracle, llm, ip), _naming_row(lay, llm, pl), _search_row(lay, llm, pl)]
    for n, kind in lay.scorers.items():
        v, c = median(s[rand, n], ip), chance(s[rand, n], kind)
        what = f"{rand} explanation on planted latents, {n} {s[rand, n].name} (median)"
        rows.append(row(what, v, f"{c} +/- 0.05", abs(v - c) <= 0.05, _note(s[rand, n], ip)))
    for n in judges:
        what = f"planted vs random directions, {llm} explanation, {n} AUROC"
        rows.append(_paired_row(what, s[llm, n], s[llm, n], ip, ic, "> 0, p < 0.05", 1e-12))
    for n in (n for n, k in lay.scorers.items() if k == "simulation"):
        what = f"{n}: {oracle} vs {rand} explanation on planted latents"
        r = _paired_row(what, s[oracle, n], s[rand, n], ip, ip, ">= 0.2, p < 0.05", 0.2)
        r["note"] = f"medians: {oracle} {median(s[oracle, n], ip):.3f}, {rand} {median(s[rand, n], ip):.3f}"
        rows.append(r)
    return rows + _calibration_rows(lay, s, judges, [oracle, rand], ip)


def show(rows: list[dict]) -> None:
    """Print the table (markdown), then every note."""
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    say("", "| measure | value | target | met |", "|---|---|---|---|")
    for r in rows:
        met = "" if r["met"] is None else "met" if r["met"] else "NOT MET"
        say(f"| {r['measure']} | {fmt(r['value'])} | {r['target']} | {met} |")
    say(*(f"- {r['measure']}: {r['note']}" for r in rows if r["note"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "config/validity.yaml")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--no-run", action="store_true", help="only read the outputs of an earlier run")
    args = ap.parse_args()
    lay = Layout(yaml.safe_load(args.config.read_text()))
    missing = {"llm", "file", "random"} - set(lay.explainer)
    if missing:
        raise SystemExit(f"{args.config}: needs explainers of kinds llm, file and random; lacks {missing}")
    if args.no_run:
        planted = pd.DataFrame(json.loads((lay.planted / "planted.json").read_text())["latents"])
    else:
        planted = build_planted(lay, args.config, args.cores)
        snakemake(args.config, lay.targets(), args.cores)
    say(planted.to_string(index=False))
    rows = measure(lay, planted)
    show(rows)
    config = args.config.resolve()
    shown = config.relative_to(REPO) if config.is_relative_to(REPO) else config
    about = dict(config=str(shown), planted=planted.to_dict("records"), rows=rows)
    OUT.write_text(json.dumps(about, indent=2, default=float) + "\n")
    from interpflow.readme import update_validity

    update_validity(REPO / "README.md", OUT)  # the README's table, from the JSON just written
    say(f"\nwritten: {OUT} and the README's planted-benchmark table")
    return 0


if __name__ == "__main__":
    sys.exit(main())
