"""Broken inputs, one row each: the clear message (naming the config key or the file) or the explicit status
each must give, and nothing already computed lost (files that existed before are byte-identical after, and
no temporary file is left behind).

Stage functions are called directly on a real miniature pipeline (a 30-layer toy Llama with a word-level
tokenizer, a text corpus, a random SAE); config rows run `snakemake -n` on a copy of the workflow.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, copy_workflow

CORPUS = """The cat sat on the mat and the dog sat on the log.

A red fox ran over the hill while the old owl slept in the tall oak tree.

Rain fell on the town and the river rose over the stone bridge by the mill.

The king sent a letter to the queen who lived in a castle by the sea."""
CTX, N_SEQ, D_MODEL, N_LAYERS = 16, 4, 16, 30
SAMPLER = dict(example_ctx_len=8, n_train=2, n_test=1, n_nonactivating=2, n_quantiles=1, min_activations=1)
PREVIOUS = b"output of an earlier good run\n"
SAE_CFG = {"kind": "topk-sae", "name": "sae8", "width": 8, "k": 2}
STORE = {"shard_size": 4, "device": "cpu"}


def toy_model(folder: Path) -> Path:
    """A random 30-layer Llama and a word-level tokenizer for CORPUS, saved as a local model folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = sorted(set(CORPUS.replace(".", " .").split()))
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=D_MODEL,
        intermediate_size=32,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Every stage's output of a miniature run, made by the package's own step functions."""
    from interpflow.activations import cache_activations
    from interpflow.baselines import run_top_tokens
    from interpflow.corpus import build_tokens
    from interpflow.dictionaries.prepare import prepare_dictionary
    from interpflow.latents import encode_dictionary
    from interpflow.models import prepare_model
    from interpflow.sae.model import TopKSAE
    from interpflow.sampling.step import run_sampling

    root = tmp_path_factory.mktemp("world")
    w = {"root": root, "model": toy_model(root / "toy"), "corpus": root / "corpus.txt"}
    w["corpus"].write_text(CORPUS)
    w["spec"], w["vocab"] = root / "models/toy/model.json", root / "models/toy/vocab.parquet"
    prepare_model({"source": "hf", "path": str(w["model"])}, w["spec"], w["vocab"])
    w["tokens"] = root / "wiki/toy/tokens.h5"
    corpus_cfg = {
        "source": "text",
        "path": str(w["corpus"]),
        "text_field": "text",
        "n_sequences": N_SEQ,
        "ctx_len": CTX,
        "seed": 0,
    }
    build_tokens(corpus_cfg, w["spec"], w["tokens"])
    w["acts"] = root / "wiki/toy/resid_post.3/activations.h5"
    cache_activations(w["tokens"], w["spec"], {"device": "cpu"}, ["resid_post.3"], [w["acts"]])
    w["sae"] = root / "wiki/toy/resid_post.3/sae8/sae"
    TopKSAE(D_MODEL, 8, 2).save(w["sae"], {"model": "toy", "hookpoint": "resid_post.3"})
    w["dictionary"] = root / "wiki/toy/resid_post.3/sae8/dictionary"
    prepare_dictionary(SAE_CFG, "resid_post.3", w["acts"], w["dictionary"], source=w["sae"] / "cfg.json")
    w["latents"] = root / "wiki/toy/resid_post.3/sae8/latents"
    encode_dictionary(w["acts"], w["dictionary"], 8, STORE, w["latents"])
    w["shard"] = w["latents"] / "shard-0.h5"
    w["examples"] = root / "wiki/toy/resid_post.3/sae8/small/examples/shard-0.parquet"
    w["selected"] = w["examples"].parent / "latents-0.parquet"
    run_sampling(w["tokens"], w["shard"], w["vocab"], SAMPLER, w["examples"], w["selected"])
    w["explanations"] = w["examples"].parents[1] / "top-tokens/explanations-0.parquet"
    run_top_tokens(w["examples"], w["selected"], {"kind": "top-tokens"}, w["explanations"])
    assert (pd.read_parquet(w["explanations"])["status"] == "ok").any()  # the damaged files held real data
    w["hashes"] = snapshot(root)
    return w


def truncated(path: Path) -> None:
    """Cut a file in half, as a crash in the middle of a non-atomic write would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def corrupted(path: Path) -> None:
    """Overwrite a file's first and last 64 bytes (HDF5 superblock, Parquet magic and footer) with junk."""
    data = bytearray(path.read_bytes())
    data[:64] = data[-64:] = b"\xa5" * 64
    path.write_bytes(bytes(data))


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


class ScriptedClient:
    """An LLM client for steps that must not need one: any call fails the test."""

    model = "scripted"

    def complete_many(self, requests, desc=""):
        raise AssertionError(f"unexpected LLM call ({len(requests)} requests, {desc})")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def copy_in(world: dict, tmp: Path, *keys: str) -> dict[str, Path]:
    """Copies of some of the world's files under tmp (same relative paths), to damage without harm."""
    out = {}
    for key in keys:
        src = world[key]
        dest = tmp / src.relative_to(world["root"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest)
        out[key] = dest
    return out


# A case builds its inputs under tmp and returns (call, expected exception type, substrings its message must
# hold, output paths the call would write). Those outputs are seeded with an earlier run's bytes first.
Case = Callable[[dict, Path], tuple[Callable[[], object], type, list[str], list[Path]]]


def sampling_call(f: dict, tmp: Path) -> tuple[Callable[[], object], list[Path]]:
    """run_sampling on the copied files, writing under tmp/out; and its outputs."""
    from interpflow.sampling.step import run_sampling

    ex, sel = tmp / "out/examples.parquet", tmp / "out/latents.parquet"
    return partial(run_sampling, f["tokens"], f["shard"], f["vocab"], SAMPLER, ex, sel), [ex, sel]


def model_gguf_missing(w, tmp):
    """A GGUF model whose path does not exist."""
    from interpflow.models import prepare_model

    spec, vocab = tmp / "m/model.json", tmp / "m/vocab.parquet"
    call = partial(prepare_model, {"source": "gguf", "path": str(tmp / "nope.gguf")}, spec, vocab)
    return call, FileNotFoundError, ["models.*.path", "nope.gguf"], [spec, vocab]


def model_gguf_truncated(w, tmp):
    """A GGUF file cut off in its tensors (an interrupted download): named, not a numpy reshape error."""
    from interpflow.models import locate_gguf, prepare_model

    whole = locate_gguf({"source": "smollm2-135m-pypi"}, tmp)
    cut = tmp / "cut.gguf"
    cut.write_bytes(whole.read_bytes()[:3_000_000])
    spec, vocab = tmp / "m/model.json", tmp / "m/vocab.parquet"
    call = partial(prepare_model, {"source": "gguf", "path": str(cut)}, spec, vocab)
    return call, ValueError, ["models.*.path", "cut.gguf", "cannot be read as a GGUF model"], [spec, vocab]


def model_folder_missing(w, tmp):
    """A transformers model folder that does not exist."""
    from interpflow.models import prepare_model

    spec, vocab = tmp / "m/model.json", tmp / "m/vocab.parquet"
    call = partial(prepare_model, {"source": "hf", "path": str(tmp / "no/such/model")}, spec, vocab)
    return call, FileNotFoundError, ["no/such/model"], [spec, vocab]


def model_spec_missing(w, tmp):
    """Activations asked of a model whose prepare_model output is gone."""
    from interpflow.activations import cache_activations

    f, out = copy_in(w, tmp, "tokens"), tmp / "out/activations.h5"
    missing = tmp / "models/gone/model.json"
    call = partial(cache_activations, f["tokens"], missing, {"device": "cpu"}, ["resid_post.3"], [out])
    return call, FileNotFoundError, [str(missing), "prepare_model"], [out]


def damaged_sampling_input(name: str, damage):
    """Sampling with one of its inputs (tokens.h5 or the latent shard) damaged."""

    def case(w, tmp):
        f = copy_in(w, tmp, "tokens", "shard", "vocab")
        damage(f[name])
        call, outs = sampling_call(f, tmp)
        return call, ValueError, [str(f[name])], outs

    return case


def damaged_tokens_activations(w, tmp):
    """Activations from a truncated tokens.h5."""
    from interpflow.activations import cache_activations

    f, out = copy_in(w, tmp, "tokens"), tmp / "out/activations.h5"
    truncated(f["tokens"])
    call = partial(cache_activations, f["tokens"], w["spec"], {"device": "cpu"}, ["resid_post.3"], [out])
    return call, ValueError, [str(f["tokens"])], [out]


def damaged_activations_sae(w, tmp):
    """SAE training on a truncated activations.h5."""
    from interpflow.sae.step import train_sae_from_h5

    f = copy_in(w, tmp, "acts")
    truncated(f["acts"])
    out = tmp / "out/sae"
    call = partial(train_sae_from_h5, f["acts"], {"width": 8, "k": 2}, out, device="cpu")
    return call, ValueError, [str(f["acts"])], [out / "sae.safetensors", out / "cfg.json"]


def damaged_activations_encode(w, tmp):
    """Latent encoding of a corrupted activations.h5."""
    from interpflow.latents import encode_dictionary

    f = copy_in(w, tmp, "acts", "dictionary")
    corrupted(f["acts"])
    out = tmp / "out/latents"
    call = partial(encode_dictionary, f["acts"], f["dictionary"], 8, STORE, out)
    return call, ValueError, [str(f["acts"])], [out / "shard-0.h5", out / "stats-0.parquet"]


def damaged_activations_dictionary(w, tmp):
    """A dictionary prepared against a truncated activations.h5."""
    from interpflow.dictionaries.prepare import prepare_dictionary

    f = copy_in(w, tmp, "acts", "sae")
    truncated(f["acts"])
    out = tmp / "out/dictionary"
    call = partial(prepare_dictionary, SAE_CFG, "resid_post.3", f["acts"], out, source=f["sae"] / "cfg.json")
    return call, ValueError, [str(f["acts"])], [out / "dictionary.json", out / "dictionary.safetensors"]


def damaged_vocab(w, tmp):
    """Sampling with a corrupted vocab.parquet."""
    f = copy_in(w, tmp, "tokens", "shard", "vocab")
    corrupted(f["vocab"])
    call, outs = sampling_call(f, tmp)
    return call, ValueError, [str(f["vocab"])], outs


def damaged_examples_explain(damage):
    """Explaining from a damaged examples table."""

    def case(w, tmp):
        from interpflow.explain import run_explain

        f, out = copy_in(w, tmp, "examples", "selected"), tmp / "out/explanations.parquet"
        damage(f["examples"])
        call = partial(
            run_explain, f["examples"], f["selected"], {}, out, cache_dir=None, client=ScriptedClient()
        )
        return call, ValueError, [str(f["examples"])], [out]

    return case


def damaged_examples_score(w, tmp):
    """Judging with a corrupted examples table."""
    from interpflow.scoring.judge import run_score

    f = copy_in(w, tmp, "examples", "explanations")
    corrupted(f["examples"])
    pred, met = tmp / "out/predictions.parquet", tmp / "out/metrics.parquet"
    cfg = {"kind": "detection", "name": "detection"}
    call = partial(
        run_score, f["examples"], f["explanations"], cfg, pred, met, cache_dir=None, client=ScriptedClient()
    )
    return call, ValueError, [str(f["examples"])], [pred, met]


def damaged_explanations_embedding(w, tmp):
    """Embedding scores of a truncated explanations table."""
    from interpflow.scoring.embedding import run_embedding

    f = copy_in(w, tmp, "examples", "explanations")
    truncated(f["explanations"])
    pred, met = tmp / "out/predictions.parquet", tmp / "out/metrics.parquet"
    call = partial(
        run_embedding, f["examples"], f["explanations"], {"kind": "embedding"}, pred, met, model=object()
    )
    return call, ValueError, [str(f["explanations"])], [pred, met]


def corpus_case(text: str, needles: list[str], source: str = "text"):
    """Tokens of a corpus file holding `text`."""

    def case(w, tmp):
        from interpflow.corpus import build_tokens

        path = tmp / f"c.{source}"
        path.write_text(text)
        cfg = {
            "source": source,
            "path": str(path),
            "text_field": "text",
            "n_sequences": 4,
            "ctx_len": 64,
            "seed": 0,
        }
        out = tmp / "out/tokens.h5"
        return partial(build_tokens, cfg, w["spec"], out), ValueError, [str(path), *needles], [out]

    return case


def sae_case(d_in: int, width: int, needles: list[str]):
    """A saved SAE (d_in inputs, 8 latents) prepared for the toy model's resid_post.3 (16 wide) as a
    dictionary whose config says `width` latents."""

    def case(w, tmp):
        from interpflow.dictionaries.prepare import prepare_dictionary
        from interpflow.sae.model import TopKSAE

        f = copy_in(w, tmp, "acts")
        TopKSAE(d_in, 8, 2).save(tmp / "sae")
        out = tmp / "out/dictionary"
        cfg = dict(SAE_CFG, width=width)
        call = partial(prepare_dictionary, cfg, "resid_post.3", f["acts"], out, source=tmp / "sae/cfg.json")
        return call, ValueError, needles, [out / "dictionary.json", out / "dictionary.safetensors"]

    return case


def hookpoint_case(hookpoint: str, needles: list[str]):
    """Activations of the 30-layer toy model at `hookpoint`."""

    def case(w, tmp):
        from interpflow.activations import cache_activations

        f, out = copy_in(w, tmp, "tokens"), tmp / f"out/{hookpoint}/activations.h5"
        call = partial(cache_activations, f["tokens"], w["spec"], {"device": "cpu"}, [hookpoint], [out])
        return call, ValueError, needles, [out]

    return case


def api_key_missing_fails_early(w, tmp):
    """An API explainer run without OPENAI_API_KEY."""
    from interpflow.explain import run_explain

    f, out = copy_in(w, tmp, "examples", "selected"), tmp / "out/explanations.parquet"
    # port 9 (discard) on loopback: nothing listens, and nothing should be sent anyway
    cfg = {"llm": {"model": "openai/fake-judge", "api_base": "http://127.0.0.1:9/v1", "max_retries": 0}}
    call = partial(run_explain, f["examples"], f["selected"], cfg, out, cache_dir=tmp / "cache")
    return call, ValueError, ["OPENAI_API_KEY"], [out]


FUNCTION_CASES = [
    pytest.param(model_gguf_missing, id="model-gguf-path-missing"),
    pytest.param(model_gguf_truncated, id="model-gguf-truncated"),
    pytest.param(model_folder_missing, id="model-folder-missing"),
    pytest.param(model_spec_missing, id="model-spec-missing"),
    pytest.param(damaged_sampling_input("tokens", truncated), id="tokens.h5-truncated-sampling"),
    pytest.param(damaged_sampling_input("tokens", corrupted), id="tokens.h5-corrupted-sampling"),
    pytest.param(
        damaged_tokens_activations,
        id="tokens.h5-truncated-activations",
    ),
    pytest.param(
        damaged_activations_sae,
        id="activations.h5-truncated-train-sae",
    ),
    pytest.param(
        damaged_activations_dictionary,
        id="activations.h5-truncated-prepare-dictionary",
    ),
    pytest.param(
        damaged_activations_encode,
        id="activations.h5-corrupted-encode",
    ),
    pytest.param(damaged_sampling_input("shard", truncated), id="latent-shard-truncated"),
    pytest.param(damaged_sampling_input("shard", corrupted), id="latent-shard-corrupted"),
    pytest.param(damaged_vocab, id="vocab.parquet-corrupted"),
    pytest.param(damaged_examples_explain(truncated), id="examples.parquet-truncated-explain"),
    pytest.param(damaged_examples_explain(corrupted), id="examples.parquet-corrupted-explain"),
    pytest.param(damaged_examples_score, id="examples.parquet-corrupted-score"),
    pytest.param(damaged_explanations_embedding, id="explanations.parquet-truncated-embedding"),
    pytest.param(corpus_case("", ["no documents"]), id="corpus-empty"),
    pytest.param(
        corpus_case("The cat sat.", ["fewer tokens than one context", "ctx_len=64"]),
        id="corpus-shorter-than-one-context",
    ),
    pytest.param(
        corpus_case('{"text": "a"}\n{"text": "b"\n', ["line 2"], "jsonl"), id="corpus-jsonl-broken-line"
    ),
    pytest.param(
        sae_case(D_MODEL, 16, ["dictionaries.sae8.width is 16", "8 latents"]), id="sae-width-vs-config"
    ),
    pytest.param(
        sae_case(12, 8, ["dictionaries.sae8", "width 12", "width 16"]), id="sae-d_in-vs-activations"
    ),
    pytest.param(
        hookpoint_case("resid_post.99", ["resid_post.99", "30 layers"]), id="hookpoint-layer-missing"
    ),
    pytest.param(hookpoint_case("resid_pre.3", ["resid_pre.3"]), id="hookpoint-unknown-kind"),
    pytest.param(
        api_key_missing_fails_early,
        id="api-key-missing-fails-early",
    ),
]


@pytest.mark.parametrize("case", FUNCTION_CASES)
def test_bad_input_is_named_and_nothing_is_lost(case: Case, world, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    call, error, needles, outputs = case(world, tmp_path)
    for out in outputs:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(PREVIOUS)
    before = snapshot(tmp_path)
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in the message: {message}"
    after = snapshot(tmp_path)
    assert {k: after.get(k) for k in before} == before  # earlier outputs and inputs untouched
    assert not [k for k in after if k.endswith(".tmp")]  # no temporary file left behind
    assert snapshot(world["root"]) == world["hashes"]  # the cases damaged only their own copies


def write_shard(path: Path, latent_start: int, latent_end: int) -> None:
    """A latent shard (README schema) in which no latent ever fires."""
    with h5py.File(path, "w") as f:
        f.create_dataset("offsets", data=np.zeros(latent_end - latent_start + 1, np.int64))
        f.create_dataset("positions", data=np.zeros(0, np.uint32))
        f.create_dataset("values", data=np.zeros(0, np.float16))
        f.attrs.update(
            latent_start=latent_start,
            latent_end=latent_end,
            n_seq=N_SEQ,
            ctx_len=CTX,
            n_tokens=N_SEQ * (CTX - 1),
        )


def test_latents_that_never_fire_get_explicit_statuses_downstream(world, tmp_path):
    """Sampling marks them skipped ('never fires'); explaining and scoring make no LLM call and say why."""
    from interpflow.explain import run_explain
    from interpflow.sampling.step import run_sampling
    from interpflow.scoring.judge import run_score

    write_shard(tmp_path / "shard-0.h5", 0, 4)
    ex, sel = tmp_path / "examples.parquet", tmp_path / "latents.parquet"
    run_sampling(world["tokens"], tmp_path / "shard-0.h5", world["vocab"], SAMPLER, ex, sel)
    latents = pd.read_parquet(sel)
    assert latents["latent"].tolist() == [0, 1, 2, 3]
    assert (latents["status"] == "skipped").all() and (latents["reason"] == "never fires").all()
    assert len(pd.read_parquet(ex)) == 0
    expl = tmp_path / "explanations.parquet"
    run_explain(ex, sel, {}, expl, cache_dir=None, client=ScriptedClient())
    explanations = pd.read_parquet(expl)
    assert (explanations["status"] == "skipped").all() and (explanations["error"] == "never fires").all()
    pred, met = tmp_path / "predictions.parquet", tmp_path / "metrics.parquet"
    cfg = {"kind": "detection", "name": "detection"}
    run_score(ex, expl, cfg, pred, met, cache_dir=None, client=ScriptedClient())
    metrics = pd.read_parquet(met)
    assert metrics["latent"].tolist() == [0, 1, 2, 3]
    assert (metrics["status"] == "no_explanation: skipped").all() and metrics["score"].isna().all()
    assert len(pd.read_parquet(pred)) == 0


# --- config rows: snakemake validates the config before planning anything --------------------------------


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory) -> Path:
    """A copy of the workflow with the tiny config and one earlier output that a bad config must not touch."""
    work = copy_workflow(tmp_path_factory.mktemp("workflow"))
    shutil.copy(REPO / "tests/data/tiny.yaml", work / "config/config.yaml")
    (work / "results/summary").mkdir(parents=True)
    (work / "results/summary/latents.parquet").write_bytes(PREVIOUS)
    return work


def dry_run(work: Path, config: dict) -> subprocess.CompletedProcess:
    """`snakemake -n` with this config written over config/config.yaml (restored afterwards)."""
    path = work / "config/config.yaml"
    original = path.read_text()
    path.write_text(yaml.safe_dump(config))
    try:
        return subprocess.run(
            [sys.executable, "-m", "snakemake", "-n", "--cores", "1"],
            cwd=work,
            capture_output=True,
            text=True,
        )
    finally:
        path.write_text(original)


def set_key(config: dict, dotted: str, value) -> None:
    """Set config[a][b]... = value for a dotted path (integers index lists); None value deletes the key."""
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is None:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value


CONFIG_CASES = [
    pytest.param("samplers.small.n_trian", 3, ["n_trian"], id="unknown-sampler-key"),
    pytest.param("scorer", {}, ["'scorer' was unexpected"], id="unknown-top-level-key"),
    pytest.param(
        "corpora.wiki.ctx_len", "long", ["ctx_len", "'long' is not of type 'integer'"], id="wrong-type"
    ),
    pytest.param("explainers.qwen.llm.max_concurrency", "many", ["max_concurrency"], id="wrong-type-in-llm"),
    pytest.param("dictionaries.topk-128.width", 0, ["width"], id="width-zero"),
    pytest.param("scorers.detection.kind", "detecton", ["detecton"], id="unknown-scorer-kind"),
    pytest.param("runs.0.hookpoints", ["resid_pre.3"], ["resid_pre.3"], id="unknown-hookpoint-kind"),
    pytest.param(
        "runs.0.scorers",
        ["nope"],
        ["runs[0].scorers: 'nope' is not defined under 'scorers'"],
        id="undefined-scorer",
    ),
    pytest.param("models.smollm2", {"source": "gguf"}, ["models.smollm2.path"], id="model-path-missing"),
    pytest.param("runs", None, ["'runs' is a required property"], id="runs-missing"),
    pytest.param(
        "explainers.qwen.select", {"by": "detection"},
        ["explainers.qwen.select (with sampler 'small'): needs max_examples < samplers.small.n_train",
         "needs samplers.small.n_train_nonactivating >= 1"], id="best-of-without-held-out-windows",
    ),  # fmt: skip
    pytest.param(
        "samplers.small.latents",
        {"n": 1000},
        ["samplers.small.latents.n: 1000 is more than the 64 latents"],
        id="latents-n-above-a-shard",
    ),
]


@pytest.mark.parametrize("dotted, value, needles", CONFIG_CASES)
def test_bad_config_is_named_before_any_job(workflow_copy, dotted, value, needles):
    config = yaml.safe_load((REPO / "tests/data/tiny.yaml").read_text())
    set_key(config, dotted, value)
    before = snapshot(workflow_copy / "results")
    result = dry_run(workflow_copy, config)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text[-3000:]}"
    assert "rule " not in result.stdout  # nothing was planned
    assert "Traceback" not in text and "Failed validating" not in text  # no schema dump
    assert len(text.splitlines()) <= 12, text  # a line per problem, not the schema
    assert snapshot(workflow_copy / "results") == before


def test_documented_hard_negatives_top_k_is_accepted(workflow_copy):
    """A key the README documents passes validation (the schema once lacked hard_negatives.top_k)."""
    config = yaml.safe_load((REPO / "tests/data/tiny.yaml").read_text())
    config["samplers"]["small"]["hard_negatives"] = {"method": "lexical", "n": 2, "top_k": 3}
    result = dry_run(workflow_copy, config)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
