import copy
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import example_row

from interpflow import explain, prompts
from interpflow.estimate import cli, synthetic
from interpflow.estimate.cli import load_config, main
from interpflow.estimate.counts import COLUMNS, estimate_run, n_latents, write_estimate
from interpflow.estimate.display import compare, format_estimate
from interpflow.estimate.synthetic import estimate_tokens
from interpflow.scoring import judge
from interpflow.store import read_parquet

GPT = "openai/gpt-4o-mini"
LOCAL = "local/qwen2.5-coder-1.5b-instruct"
VLLM = "hosted_vllm/my-judge"

# width 100 in shards of 40 (40 + 40 + 20 latents), 3 latents per shard: 9 latents per subject
TINY = {
    "corpora": {"c": {"source": "text", "path": "corpus.txt", "n_sequences": 10, "ctx_len": 64}},
    "models": {"m": {"source": "smollm2-135m-pypi"}},
    "dictionaries": {
        "d": {"kind": "topk-sae", "width": 100, "k": 4, "epochs": 2},
        "r": {"kind": "random-sae", "width": 100, "k": 4},
    },
    "latent_store": {"shard_size": 40},
    "samplers": {
        "s": {"example_ctx_len": 16, "n_train": 10, "n_test": 8, "n_nonactivating": 8, "latents": {"n": 3}}
    },
    "explainers": {
        "api": {"llm": {"model": GPT, "max_tokens": 50}},
        "top": {"kind": "top-tokens"},
        "rnd": {"kind": "random", "source": "api"},
    },
    "scorers": {
        "det": {"kind": "detection", "llm": {"model": GPT, "max_tokens": 10}, "examples_per_prompt": 5},
        "det-local": {
            "kind": "detection",
            "llm": {"model": LOCAL, "max_tokens": 10},
            "examples_per_prompt": 5,
        },
        "det-vllm": {"kind": "detection", "llm": {"model": VLLM, "api_base": "http://gpu:8000/v1"}},
        "fuzz": {
            "kind": "fuzzing",
            "llm": {"model": GPT},
            "examples_per_prompt": 2,
            "max_activating": 3,
            "max_nonactivating": 2,
        },
        "sim": {
            "kind": "simulation",
            "llm": {"model": GPT, "max_tokens": 1000},
            "examples_per_prompt": 2,
            "max_activating": 2,
            "max_nonactivating": 1,
        },
        "emb": {"kind": "embedding"},
    },  # fmt: skip
    "runs": [
        {
            "corpus": "c",
            "model": "m",
            "hookpoints": ["resid_post.1"],
            "dictionaries": ["d"],
            "sampler": "s",
            "explainers": ["api"],
            "scorers": ["det", "det-local", "det-vllm", "fuzz", "sim", "emb"],
        },
        {
            "corpus": "c",
            "model": "m",
            "hookpoints": ["resid_post.1"],
            "dictionaries": ["d", "r"],
            "sampler": "s",
            "explainers": ["top", "rnd"],
            "scorers": ["det"],
        },
    ],  # fmt: skip
}
TEXT = (
    "The river flows north through the valley and past the old town, where a stone bridge from the "
    "fourteenth century still carries traffic. In 1998 the council opened a museum of local history in the "
    "former mill; it holds tools, letters and photographs given by families of the district. Farmers grow "
    "wheat, barley and potatoes on the plain, while the hills to the east are covered by beech forest. "
    "The town hosts a market every Saturday and a music festival each August, which draws visitors from "
    "the whole region and from abroad."
)


def write_config(tmp_path, config: dict):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """TINY validated with the schema's defaults filled, as the workflow sees it."""
    return load_config([write_config(tmp_path_factory.mktemp("cfg"), TINY)])


@pytest.fixture(scope="module")
def est(tiny) -> pd.DataFrame:
    return estimate_run(tiny)


def row(df: pd.DataFrame, stage: str, **keys) -> pd.Series:
    sel = df[(df["stage"] == stage) & np.logical_and.reduce([df[k] == v for k, v in keys.items()])]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def test_estimate_tokens_hand_counted():
    assert estimate_tokens("The cat sat.") == 4  # "The", " cat", " sat", "."
    assert estimate_tokens(" kilometres") == 2  # 11 characters: two pieces of at most 8
    assert estimate_tokens("2011") == 4  # digits one by one
    assert estimate_tokens("[1, 0, 1, 0, 1]") == 15  # brackets, 5 digits, 4 commas, 4 spaces
    assert estimate_tokens("") == 0
    msgs = [{"role": "system", "content": "The cat sat."}, {"role": "user", "content": "2011"}]
    assert synthetic.message_tokens(msgs) == (4 + 4) + (4 + 4) + 3  # contents, per-message and reply overhead


def test_columns_and_dtypes(est):
    assert list(est.columns) == list(COLUMNS)
    assert est.dtypes.astype(str).to_dict() == {c: t for c, t in COLUMNS.items()}


def test_latents_per_shard_and_all(tiny):
    assert n_latents(tiny, "d", "s") == 9  # 3 in each of 3 shards
    cfg = copy.deepcopy(tiny)
    cfg["samplers"]["s"]["latents"]["n"] = 25
    assert n_latents(cfg, "d", "s") == 25 + 25 + 20  # the last shard holds only 20
    cfg["samplers"]["s"]["latents"]["n"] = None
    assert n_latents(cfg, "d", "s") == 100
    cfg["dictionaries"]["d"]["shard_size"] = 30  # a dictionary's own shard size wins
    cfg["samplers"]["s"]["latents"]["n"] = 25
    assert n_latents(cfg, "d", "s") == 25 * 3 + 10


def test_calls_and_output_tokens_hand_computed(est):
    ex = row(est, "explain", dictionary="d", explainer="api")
    assert (ex["latents"], ex["llm_calls"], ex["output_tokens_max"]) == (9, 9, 9 * 50)
    det = row(est, "score", dictionary="d", explainer="api", scorer="det")
    # 8 activating + 8 non-activating windows, 5 per prompt: prompts of 5, 5, 5, 1 windows
    assert det["llm_calls"] == 9 * math.ceil(16 / 5)
    # replies "[1, 0, 1, 0, 1]" (15 tokens, cut to max_tokens 10) three times and "[1]" (3) once
    assert det["output_tokens"] == 9 * (10 + 10 + 10 + 3)
    assert det["output_tokens_max"] == 9 * 4 * 10
    fuzz = row(est, "score", explainer="api", scorer="fuzz")
    assert fuzz["llm_calls"] == 9 * math.ceil((3 + 2) / 2)  # capped to 3 + 2 windows, 2 per prompt
    sim = row(est, "score", explainer="api", scorer="sim")
    assert sim["llm_calls"] == 9 * 2  # 2 + 1 windows, 2 per prompt
    # a reply line per 16-token window: "k: " (3) + items "i=0" (9 x 3 + 7 x 4) + 15 spaces = 73; newline
    assert sim["output_tokens"] == 9 * ((73 + 1 + 73) + 73)
    # max_tokens is the simulator's reply budget for 2 windows of 16 tokens (simulation.reply_budget)
    assert sim["output_tokens_max"] == 9 * 2 * (int(1.1 * 2 * (9 * 4 + 7 * 5 + 4)) + 8)


def test_hard_negatives_and_contrastive_follow_the_builders(tiny):
    cfg = copy.deepcopy(tiny)
    cfg["samplers"]["s"] |= {"hard_negatives": {"method": "lexical", "n": 4}, "n_train_nonactivating": 3}
    cfg["scorers"]["det"]["negatives"] = "both"  # 8 activating + 8 random + 4 hard windows
    cfg["explainers"]["api"] |= {"prompt": "contrastive", "max_examples": 5}
    df = estimate_run(cfg)
    assert row(df, "score", dictionary="d", explainer="api", scorer="det")["llm_calls"] == 9 * math.ceil(
        20 / 5
    )
    ex = synthetic.synthetic_examples(cfg["samplers"]["s"])
    assert ex.groupby(["split", "negative"]).size().to_dict() == {
        ("train", ""): 10,
        ("train", "random"): 3,
        ("test", ""): 8,
        ("test", "random"): 8,
        ("test", "hard"): 4,
    }
    client = synthetic._Recorder("Explanation: x")
    explain.explain_latents(ex, pd.DataFrame({"latent": [0], "status": ["ok"], "reason": [""]}),
                            cfg["explainers"]["api"], client)  # fmt: skip
    user = client.requests[0][1]["content"]
    assert user.count("Example ") == 5  # max_examples thins the 10 activating train windows
    assert user.count("Counterexample ") == 3  # contrastive: the non-activating train windows follow
    plain = row(estimate_run(tiny), "explain", dictionary="d", explainer="api")["input_tokens"]
    assert row(df, "explain", dictionary="d", explainer="api")["input_tokens"] < plain  # 5 examples, not 10


def test_explain_rows_once_per_subject_and_random_source(est):
    explains = est[est["stage"] == "explain"]
    # run 2 asks for rnd on dictionary r: its source api must explain r too, though no run lists (r, api)
    assert sorted(zip(explains["dictionary"], explains["explainer"], strict=True)) == sorted(
        [("d", "api"), ("d", "top"), ("d", "rnd"), ("r", "top"), ("r", "rnd"), ("r", "api")]
    )
    assert row(est, "explain", dictionary="d", explainer="api")["note"] == ""
    src = row(est, "explain", dictionary="r", explainer="api")
    assert src["llm_calls"] == 9 and src["note"] == "source of the random baseline rnd"
    assert row(est, "explain", dictionary="d", explainer="top")["llm_calls"] == 0


def test_dollars_from_litellm_prices(est):
    import litellm

    price = litellm.model_cost["gpt-4o-mini"]
    pin, pout = price["input_cost_per_token"], price["output_cost_per_token"]
    for r in est[est["engine"] == GPT].itertuples():
        assert r.input_tokens > 0
        assert r.usd == pytest.approx(r.input_tokens * pin + r.output_tokens * pout, rel=1e-9)
        assert r.usd_max == pytest.approx(r.input_tokens * pin + r.output_tokens_max * pout, rel=1e-9)


def test_local_free_unknown_nan_and_given_prices(tiny, est):
    local = row(est, "score", explainer="api", scorer="det-local")
    assert local["input_tokens"] > 0 and local["usd"] == 0.0 and local["usd_max"] == 0.0
    unknown = row(est, "score", explainer="api", scorer="det-vllm")
    assert unknown["input_tokens"] > 0 and np.isnan(unknown["usd"]) and np.isnan(unknown["usd_max"])
    assert f"no price for {VLLM}" in unknown["note"]
    priced = estimate_run(
        tiny, model_specs={VLLM: {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}}
    )
    r = row(priced, "score", explainer="api", scorer="det-vllm")
    assert r["usd"] == pytest.approx(r["input_tokens"] * 1e-6 + r["output_tokens"] * 2e-6) and r["note"] == ""
    assert (row(est, "activations")["usd"], row(est, "score", explainer="api", scorer="emb")["usd"]) == (0, 0)


def test_token_counter_override(tiny):
    one = estimate_run(tiny, count_tokens=lambda text: 1)
    det = row(one, "score", dictionary="d", explainer="api", scorer="det")
    assert det["input_tokens"] == 36 * (2 * (1 + 4) + 3)  # system + user message of 1 token each, overheads
    assert det["output_tokens"] == 36  # each reply counts 1 token
    per_model = estimate_run(tiny, model_specs={GPT: {"count_tokens": lambda text: 1}})
    assert row(per_model, "score", dictionary="d", explainer="api", scorer="det")["input_tokens"] == 36 * 13
    assert row(per_model, "score", explainer="api", scorer="det-local")["input_tokens"] > 36 * 13


def test_forward_and_training_tokens(tiny, est):
    act = row(est, "activations")
    assert (act["forward_tokens"], act["engine"]) == (10 * 64, "m")
    sae = est[est["stage"] == "sae"]
    assert sae["dictionary"].tolist() == ["d"]  # a random SAE is not trained
    assert sae["train_tokens"].iloc[0] == 10 * 63 * 2  # non-BOS tokens x epochs
    cfg = copy.deepcopy(tiny)
    cfg["dictionaries"]["d"]["max_tokens"] = 1000
    assert row(estimate_run(cfg), "sae")["train_tokens"] == 1000
    emb = row(est, "score", explainer="api", scorer="emb")
    one_latent = 16 * 16 + estimate_tokens(" " + synthetic.synthetic_explanation())  # 16 windows + the query
    assert (emb["llm_calls"], emb["forward_tokens"]) == (0, 9 * one_latent)


def test_seconds_from_throughput(tiny, est):
    assert est["seconds"].isna().all()
    specs = {GPT: {"input_tokens_per_s": 1000, "output_tokens_per_s": 100}, "m": {"forward_tokens_per_s": 64}}
    timed = estimate_run(tiny, model_specs=specs)
    det = row(timed, "score", dictionary="d", explainer="api", scorer="det")
    assert det["seconds"] == pytest.approx((det["input_tokens"] / 1000 + det["output_tokens"] / 100) / 4)
    assert row(timed, "activations")["seconds"] == pytest.approx(640 / 64)
    assert np.isnan(row(timed, "score", explainer="api", scorer="det-local")["seconds"])


def test_detection_estimate_near_real_prompt_sizes(tiny, est):
    """Real prompts from realistic examples (English words as tokens), counted as characters / 4."""
    words = [w if i == 0 else " " + w for i, w in enumerate(TEXT.split())]
    rng = np.random.default_rng(0)
    rows = []
    for i in range(26):  # 10 train, 8 activating and 8 non-activating test windows of 16 tokens
        start = int(rng.integers(0, len(words) - 16))
        on = i < 18
        acts = np.zeros(16)
        if on:
            acts[rng.choice(16, size=2, replace=False)] = rng.uniform(1, 5, size=2)
        split = "train" if i < 10 else "test"
        rows.append(
            example_row(0, i, split, on, words[start : start + 16], acts)
            | {"negative": "" if on else "random"}
        )
    examples = pd.DataFrame(rows)
    chars4 = lambda msgs: sum(len(m["content"]) / 4 + 4 for m in msgs) + 3  # noqa: E731
    expl = pd.DataFrame({"latent": [0], "explanation": ["Place names and dates in texts about towns."],
                         "status": ["ok"]})  # fmt: skip
    requests, _, _ = judge.build_prompts(examples, expl, tiny["scorers"]["det"])
    real = sum(chars4(r) for r in requests)
    det = row(est, "score", dictionary="d", explainer="api", scorer="det")
    assert 0.7 < det["input_tokens"] / det["latents"] / real < 1.4  # measured 1.09
    client = synthetic._Recorder("Explanation: x")
    latents = pd.DataFrame({"latent": [0], "status": ["ok"], "reason": [""]})
    explain.explain_latents(examples, latents, tiny["explainers"]["api"], client)
    ex = row(est, "explain", dictionary="d", explainer="api")
    assert 0.7 < ex["input_tokens"] / ex["latents"] / chars4(client.requests[0]) < 1.4  # measured 1.08
    assert client.requests[0][0]["content"] == prompts.explainer_system()


def test_compare_with_costs_table(est):
    keys = dict(corpus="c", model="m", hookpoint="resid_post.1", dictionary="d", sampler="s", explainer="api")
    det = row(est, "score", dictionary="d", explainer="api", scorer="det")
    costs = pd.DataFrame([
        keys | dict(stage="score", name="det", latents=8, prompt_tokens=det["input_tokens"] // 2,
                    cached_tokens=0, completion_tokens=det["output_tokens"], cost_usd=0.01),
        keys | dict(stage="score", name="gone", latents=1, prompt_tokens=5, cached_tokens=0,
                    completion_tokens=1, cost_usd=np.nan),
    ])  # fmt: skip
    out = compare(est, costs)
    got = out[out["name"] == "det"].iloc[0]
    assert (got["est_latents"], got["latents"]) == (9, 8)
    assert got["est_input_tokens"] == det["input_tokens"]
    assert got["input_ratio"] == pytest.approx((det["input_tokens"] // 2) / det["input_tokens"])
    assert got["output_ratio"] == pytest.approx(1.0)
    assert (got["est_usd"], got["cost_usd"]) == (det["usd"], 0.01)
    gone = out[out["name"] == "gone"].iloc[0]  # in the run, not in the estimate: kept, estimate NaN
    assert np.isnan(gone["est_input_tokens"]) and gone["prompt_tokens"] == 5
    # every estimated explain/score row is kept; those the run did not spend on have no actual numbers
    assert len(out) == int(est["stage"].isin(["explain", "score"]).sum()) + 1
    with pytest.raises(ValueError, match="cost_usd"):
        compare(est, costs.drop(columns="cost_usd"))


def test_format_totals_notes_and_budget(est):
    text = format_estimate(est)
    total = next(line for line in text.splitlines() if line.lstrip().startswith("total"))
    for col in ("llm_calls", "input_tokens", "output_tokens", "forward_tokens", "train_tokens"):
        assert f"{int(est[col].sum()):,}" in total
    assert "no price for hosted_vllm/my-judge" in text
    assert "1 row without a price" in text and ">= $" in total  # one scored row has an unknown price
    over = format_estimate(est, {"max_usd": 0.0, "max_tokens": 10})
    assert over.count("(over the cap)") == 2


def test_set_paths_with_dotted_names_and_lists():
    config = {"explainers": {"qwen-1.5b": {"llm": {"model": "a"}}}, "runs": [{"scorers": []}]}
    cli._assign(config, "explainers.qwen-1.5b.llm.model=openai/gpt-4o-mini")
    cli._assign(config, "runs.0.scorers=[det, fuzz]")
    cli._assign(config, "budget.max_usd=2.5")
    assert config == {
        "explainers": {"qwen-1.5b": {"llm": {"model": "openai/gpt-4o-mini"}}},
        "runs": [{"scorers": ["det", "fuzz"]}],
        "budget": {"max_usd": 2.5},
    }


def test_write_estimate_and_cli(tmp_path, tiny, est, capsys):
    write_estimate(tiny, tmp_path / "est.parquet")
    pd.testing.assert_frame_equal(read_parquet(tmp_path / "est.parquet").astype(COLUMNS), est)
    path = write_config(tmp_path, TINY)
    assert main([str(path), "--set", "samplers.s.latents.n=1", "--out", str(tmp_path / "cli.parquet")]) == 0
    out = capsys.readouterr().out
    cli = read_parquet(tmp_path / "cli.parquet")
    assert cli["llm_calls"].sum() * 3 == est["llm_calls"].sum()  # 1 latent per shard instead of 3
    total = next(line for line in out.splitlines() if line.lstrip().startswith("total"))
    assert f"{int(cli['input_tokens'].sum()):,}" in total and f"{int(cli['llm_calls'].sum()):,}" in total
    with pytest.raises(ValueError, match="key.path=value"):
        main([str(path), "--set", "samplers.s.n_test"])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        main([str(tmp_path / "nope.yaml")])


def test_best_of_adds_the_judge_calls_on_held_out_windows(tiny):
    """select: each candidate is judged on the held-out train windows, counted as the fuzzing scorer's."""
    cfg = copy.deepcopy(tiny)
    cfg["samplers"]["s"]["n_train_nonactivating"] = 3
    cfg["explainers"]["api"] |= {"max_examples": 6, "select": {}}  # {}: the defaults, two candidates
    ex = row(estimate_run(cfg), "explain", dictionary="d", explainer="api")
    # per latent: 1 explanation + 2 candidates x (4 activating held out + 3 non-activating, 5 per prompt)
    assert ex["llm_calls"] == 9 * (1 + 2 * math.ceil((4 + 3) / 5))
