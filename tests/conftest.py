import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from interpflow.llm.types import Completion

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smollm2_spec(tmp_path_factory) -> Path:
    """SmolLM2-135M (from its PyPI package) converted once per session; returns its model.json."""
    from interpflow.models import prepare_model

    out = tmp_path_factory.mktemp("smollm2")
    prepare_model({"source": "smollm2-135m-pypi"}, out / "model.json", out / "vocab.parquet")
    return out / "model.json"


def local_gguf(name: str, tmp_path_factory) -> Path:
    """A local model's GGUF, reused from a run of this checkout or assembled into the session's tmp."""
    from interpflow.llm.local_parts import assemble_local_model

    done = REPO / f"results/llm/{name}.gguf"
    if done.is_file():
        return done
    return assemble_local_model(name, tmp_path_factory.mktemp("llm") / f"{name}.gguf")


@pytest.fixture(scope="session")
def qwen_gguf(tmp_path_factory) -> Path:
    """The default local explainer/judge GGUF (Qwen2.5-Coder-1.5B), assembled once per session."""
    return local_gguf("qwen2.5-coder-1.5b-instruct", tmp_path_factory)


@pytest.fixture(scope="session")
def small_gguf(tmp_path_factory) -> Path:
    """Qwen2.5-Coder-0.5B's GGUF: about 3x faster, for runs that test the plumbing, not the judging."""
    return local_gguf("qwen2.5-coder-0.5b-instruct", tmp_path_factory)


def completion(text: str | None, **fields):
    """A real interpflow.llm.types.Completion for scripted clients, other fields given harmless defaults."""
    defaults = dict(status="ok", error="", prompt_tokens=100, completion_tokens=10, cost_usd=None,
                    latency_s=0.1, cached=False, logprobs=None)  # fmt: skip
    return Completion(text=text, **(defaults | fields))


def example_row(latent, example_id, split, activating, tokens, acts, seq=None) -> dict:
    """One row of the README's examples/shard schema (seq defaults to the example id)."""
    acts = np.asarray(acts, dtype=np.float32)
    return dict(
        latent=latent, example_id=example_id, split=split, activating=activating,
        seq=example_id if seq is None else seq, start=0, tokens=np.arange(len(tokens), dtype=np.int32),
        token_strs=list(tokens), acts=acts, max_act=float(acts.max(initial=0)),
        quantile=0 if activating else -1,
    )  # fmt: skip


DIGIT_SENTENCES = (
    "In 1984 he left for 12 years", "Room 42 is on floor 3", "The score was 21 to 17 at half time",
    "About 350 people came in 2019", "Chapter 7 starts on page 88", "She ran 5 km in 23 minutes",
)  # fmt: skip
WORD_SENTENCES = (
    "The cat sat on the mat", "We went home after the film", "Rain fell over the quiet town",
    "He wrote a letter to his aunt", "The river runs through the valley", "They sang songs by the fire",
)  # fmt: skip


def planted_digit_windows(latent: int, split: str = "test"):
    """Test windows of a planted latent that fires (4.0) on digit tokens: 6 digit-rich sentences (activating)
    and 6 without digits, split into digit and word tokens; the truth is known by construction."""
    import pandas as pd

    rows = []
    for i, text in enumerate(DIGIT_SENTENCES + WORD_SENTENCES):
        toks = re.findall(r" ?\d| ?[A-Za-z]+", text)
        acts = [4.0 if t.strip().isdigit() else 0.0 for t in toks]
        rows.append(example_row(latent, i, split, i < len(DIGIT_SENTENCES), toks, acts))
    return pd.DataFrame(rows)


def copy_workflow(dest: Path) -> Path:
    """A copy of the workflow (Snakefile, rules, scripts, schemas, package sources) to run in isolation."""
    for name in ["Snakefile", "rules", "workflow", "envs", "profiles", "src", "config"]:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    return dest


def fake_api_config(api_base: str) -> dict:
    """tests/data/fake_api.yaml with every LLM pointed at `api_base`."""
    config = yaml.safe_load((REPO / "tests/data/fake_api.yaml").read_text())
    for section in ("explainers", "scorers"):
        for entry in config[section].values():
            if "llm" in entry:
                entry["llm"]["api_base"] = api_base
    return config


class TableEncoder:
    """Stub encoder: column 0 of x carries the flat row index; outputs come from fixed tables."""

    def __init__(self, idx: np.ndarray, vals: np.ndarray, width: int):
        import torch

        self.idx, self.vals, self.width = torch.from_numpy(idx), torch.from_numpy(vals), width

    def encode(self, x):
        rows = x[:, 0].long()
        return self.vals[rows], self.idx[rows]
