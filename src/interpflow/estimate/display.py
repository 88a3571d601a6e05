"""An estimate for reading: the table with its totals, notes and budget lines (format_estimate), and the
estimate beside what a finished run spent (compare)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from interpflow.estimate.counts import SUBJECT


def _short(df: pd.DataFrame) -> pd.DataFrame:
    """Display columns: where (the path of names), what (explainer, scorer or engine) and the counts."""
    where = df[["corpus", "model", "hookpoint", "dictionary", "sampler"]].agg(
        lambda r: "/".join(filter(None, r)), axis=1
    )
    what = np.where(df["stage"] == "score", df["explainer"] + " > " + df["scorer"], df["explainer"])
    out = pd.DataFrame({"stage": df["stage"], "where": where, "what": what, "engine": df["engine"]})
    return out.join(df[["latents", "llm_calls", "input_tokens", "output_tokens", "output_tokens_max", "usd",
                        "usd_max", "forward_tokens", "train_tokens", "seconds"]])  # fmt: skip


def _usd(x: float) -> str:
    """Dollars for display; "?" where unknown."""
    return "?" if not np.isfinite(x) else f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


def format_estimate(df: pd.DataFrame, budget: dict | None = None) -> str:
    """A readable table of an estimate with a totals line, its notes and, given `budget`, how it compares."""
    df = df.reset_index(drop=True)
    t = _short(df)
    total = t.drop(columns=["stage", "where", "what", "engine"]).sum(min_count=1)  # unknown dollars skipped
    t.loc[len(t)] = {"stage": "total", "where": "", "what": "", "engine": "", **total}
    shown, last = t.astype(object), len(t) - 1
    for c in ("latents", "llm_calls", "input_tokens", "output_tokens", "output_tokens_max", "forward_tokens",
              "train_tokens"):  # fmt: skip
        shown[c] = t[c].map(lambda v: f"{int(v):,}")
    shown["usd"], shown["usd_max"] = t["usd"].map(_usd), t["usd_max"].map(_usd)
    shown["seconds"] = t["seconds"].map(lambda v: "?" if not np.isfinite(v) else f"{v:,.0f}")
    unknown = int(df["usd"].isna().sum())
    if unknown:  # the total holds the priced rows only
        shown.loc[last, ["usd", "usd_max"]] = [f">= {_usd(total['usd'])}", f">= {_usd(total['usd_max'])}"]
    if df["seconds"].isna().all():
        shown = shown.drop(columns="seconds")
    elif df["seconds"].isna().any():
        shown.loc[last, "seconds"] += " + ?"
    lines = [shown.to_string(index=False)]
    if unknown:
        lines.append(f"{unknown} row{'s' * (unknown != 1)} without a price: not in the dollar total")
    label = t["what"].where(t["what"] != "", t["where"])[:last]
    notes = (df["stage"] + " " + label + ": " + df["note"])[df["note"] != ""].drop_duplicates()
    lines += ["notes:", *("  " + n for n in notes)] if len(notes) else []
    return "\n".join(lines + _budget_lines(df, budget or {}))


def _budget_lines(df: pd.DataFrame, budget: dict) -> list[str]:
    """How the estimate compares with the config's `budget` (max_usd, max_tokens), one line per cap set."""
    lines = []
    tokens = int(df["input_tokens"].sum() + df["output_tokens"].sum())
    if budget.get("max_tokens") is not None:
        cap = int(budget["max_tokens"])
        lines.append(f"budget.max_tokens {cap:,}: the estimate needs {tokens:,} LLM tokens"
                     + (" (over the cap)" if tokens > cap else ""))  # fmt: skip
    if budget.get("max_usd") is not None:
        cap, usd = float(budget["max_usd"]), float(df["usd"].sum())
        most = _usd(df["usd_max"].sum())
        lines.append(f"budget.max_usd {_usd(cap)}: the estimate is {_usd(usd)} (at most {most})"
                     + (" (over the cap)" if usd > cap else ""))  # fmt: skip
    return lines


def compare(estimate: pd.DataFrame, costs: pd.DataFrame) -> pd.DataFrame:
    """The estimate beside what a finished run spent (report's costs.parquet), per subject, stage and name.

    Columns: the keys, est_latents / latents, est_input_tokens / prompt_tokens / input_ratio,
    est_output_tokens / completion_tokens / output_ratio, est_usd / cost_usd (ratios are actual / estimate).
    """
    keys = [*SUBJECT, "stage", "name"]
    need = [*keys, "latents", "prompt_tokens", "completion_tokens", "cost_usd"]
    missing = [c for c in need if c not in costs.columns]
    if missing:
        raise ValueError(f"costs table lacks columns {missing} (expected report's costs.parquet)")
    est = estimate[estimate["stage"].isin(["explain", "score"])]
    est = est.assign(name=est["scorer"].where(est["stage"] == "score", est["explainer"]))
    est = est[[*keys, "latents", "input_tokens", "output_tokens", "usd"]].add_prefix("est_")
    out = est.rename(columns={f"est_{k}": k for k in keys}).merge(costs[need], on=keys, how="outer")
    ratio = lambda a, e: (out[a] / out[e].where(out[e] > 0)).astype("float64")  # noqa: E731
    out["input_ratio"] = ratio("prompt_tokens", "est_input_tokens")
    out["output_ratio"] = ratio("completion_tokens", "est_output_tokens")
    order = [*keys, "est_latents", "latents", "est_input_tokens", "prompt_tokens", "input_ratio",
             "est_output_tokens", "completion_tokens", "output_ratio", "est_usd", "cost_usd"]  # fmt: skip
    return out[order].sort_values(keys, ignore_index=True)
