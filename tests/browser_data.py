"""A hand-made two-latent shard of a run (every input the browser's shard builder reads), shared by the site
and the end-to-end browser tests."""

from pathlib import Path

import h5py
import numpy as np
import pandas as pd

UNIT = dict(corpus="c", model="m", hookpoint="h", dictionary="d", sampler="s", shard=0)
UNIT_ID = "c/m/h/d/s"
ROOT = "../" * 7  # units/ + five unit parts + shard-0/
VOCAB = {2: "<bos>", 10: " cat", 11: " dog", 12: "<b>", 13: "\n"}
# Store of latents [0, 4): latent 1 fires at flat 1, 3, 5, 10 (ctx_len 4: tokens cat, cat, dog, cat);
# latent 2 (skipped) never fires; latents 0 and 3 surround it to check the offsets are used.
POSITIONS = {0: [2], 1: [1, 3, 5, 10], 2: [], 3: [7]}
VALUES = {0: [9.0], 1: [0.5, 1.0, 0.25, 2.0], 2: [], 3: [9.0]}
TOKENS = [[2, 10, 11, 10], [2, 11, 12, 10], [2, 10, 10, 13]]


def window(latent, example_id, split, activating, strs, acts, quantile, negative=""):
    acts = np.asarray(acts, dtype=np.float32)
    return dict(latent=latent, example_id=example_id, split=split, activating=activating, negative=negative,
                seq=example_id, start=0, tokens=np.arange(len(strs), dtype=np.int32), token_strs=strs,
                acts=acts, max_act=float(acts.max()), quantile=quantile)  # fmt: skip


def write_store(path):
    offsets = np.cumsum([0] + [len(POSITIONS[i]) for i in range(4)])
    with h5py.File(path, "w") as f:
        f["offsets"] = offsets.astype(np.int64)
        f["positions"] = np.concatenate([POSITIONS[i] for i in range(4)]).astype(np.uint32)
        f["values"] = np.concatenate([VALUES[i] for i in range(4)]).astype(np.float16)
        f.attrs.update(latent_start=0, latent_end=4, n_seq=3, ctx_len=4, n_tokens=12)
    with h5py.File(path.parent / "tokens.h5", "w") as f:
        f["tokens"] = np.array(TOKENS, dtype=np.int32)


def write_scorer(tmp, explainer, scorer, metrics, predictions):
    metrics_path, pred_path = tmp / f"{explainer}-{scorer}-m.parquet", tmp / f"{explainer}-{scorer}-p.parquet"
    pd.DataFrame(metrics).assign(scorer=scorer, kind=scorer).to_parquet(metrics_path)
    predictions.to_parquet(pred_path)
    return {"explainer": explainer, "scorer": scorer, "kind": scorer, "metrics": str(metrics_path),
            "predictions": str(pred_path)}  # fmt: skip


def judge_predictions(rows):
    df = pd.DataFrame(rows, columns=["latent", "example_id", "activating", "prediction", "p_yes"])
    df["prediction"] = df["prediction"].astype("boolean")
    return df.assign(status="ok", error="")


def write_shard_inputs(tmp_path: Path) -> dict:
    """Inputs of one shard (the builder's `files`): latent 1 explained and scored, latent 2 skipped with no
    activations."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_store(tmp_path / "store.h5")
    pd.DataFrame({"token_id": list(VOCAB), "text": list(VOCAB.values())}).to_parquet(
        tmp_path / "vocab.parquet"
    )
    pd.DataFrame({"latent": [1, 2], "count": [4, 0], "frequency": [4 / 9, 0.0], "max": [2.0, np.nan],
                  "mean": [0.9375, np.nan]}).to_parquet(tmp_path / "stats.parquet")  # fmt: skip
    pd.DataFrame({"latent": [1, 2], "n_activations": [4, 0], "n_activating_windows": [2, 0],
                  "status": ["ok", "skipped"], "reason": ["", "0 activations < min_activations 3"]}
                 ).to_parquet(tmp_path / "selected.parquet")  # fmt: skip
    pd.DataFrame([
        window(1, 0, "train", True, [" cat", " dog", " cat"], [2.0, 0.0, 0.5], 9),
        window(1, 1, "test", True, [" cat", "<b>", "\n"], [0.25, 0.0, 1.0], 3),
        window(1, 2, "test", False, [" dog", " dog"], [0.0, 0.0], -1, "hard"),
        window(1, 3, "test", False, [" fish", " dog"], [0.0, 0.0], -1, "random"),
    ]).to_parquet(tmp_path / "examples.parquet")  # fmt: skip
    explainers = []
    for name, kind, text in [("llm", "llm", "cats"), ("random", "random", "from elsewhere")]:
        pd.DataFrame({"latent": [1, 2], "explanation": [text, None], "status": ["ok", "skipped"],
                      "error": ["", "too few"]}).to_parquet(tmp_path / f"{name}.parquet")  # fmt: skip
        explainers.append({"name": name, "kind": kind, "subject": f"SAE {name}",
                           "explanations": str(tmp_path / f"{name}.parquet")})  # fmt: skip
    unscored = {"latent": 2, "status": "no_explanation: skipped", "score": np.nan}
    scores = [
        write_scorer(tmp_path, "llm", "detection", [{"latent": 1, "status": "ok", "score": 0.75}, unscored],
                     judge_predictions([(1, 1, True, True, 0.9), (1, 2, False, True, 0.6),
                                        (1, 3, False, False, 0.2)])),
        write_scorer(tmp_path, "random", "detection", [{"latent": 1, "status": "ok", "score": 0.5}, unscored],
                     judge_predictions([(1, 1, True, False, 0.4)])),
        write_scorer(tmp_path, "llm", "simulation",
                     [{"latent": 1, "status": "not_sampled", "score": np.nan}, unscored],
                     pd.DataFrame({"latent": [], "example_id": []})),
    ]  # fmt: skip
    pd.DataFrame({"latent_a": [1, 0], "latent_b": [6, 3], "cosine": [0.8, 0.5]}).to_parquet(
        tmp_path / "m.parquet"
    )
    return {
        "unit": UNIT, "examples": str(tmp_path / "examples.parquet"),
        "selected": str(tmp_path / "selected.parquet"),
        "stats": str(tmp_path / "stats.parquet"), "store": str(tmp_path / "store.h5"),
        "tokens": str(tmp_path / "tokens.h5"), "vocab": str(tmp_path / "vocab.parquet"),
        "explainers": explainers, "scores": scores,
        "partners": [{"matches": str(tmp_path / "m.parquet"), "side": "a", "other_hookpoint": "h5",
                      "other_unit": "c/m/h5/d/s"}],
    }  # fmt: skip
