import copy
import os
from functools import partial

import pytest
import yaml
from conftest import REPO
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from interpflow.config import SCHEMA as CONFIG_SCHEMA
from interpflow.config import (
    Untracked,
    check_config,
    known_layers,
    layer_below,
    layer_pairs,
    run_combinations,
    split_transport,
    used_config,
    wants_gpu,
    with_transport,
)
from interpflow.defaults import scorer_kinds, scorer_slice, with_defaults

SCHEMA = str(CONFIG_SCHEMA)


def load(name="config/config.yaml"):
    config = yaml.safe_load((REPO / name).read_text())
    validate(config, SCHEMA)
    return config


def test_shipped_configs_are_valid():
    for name in ["config/config.yaml", "tests/data/tiny.yaml"]:
        config = load(name)
        check_config(config)
    assert config["samplers"]["small"]["n_train_nonactivating"] == 0  # defaults are filled in
    assert config["models"]["smollm2"]["dtype"] == "auto"


def test_unknown_key_is_named():
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["samplers"]["default"]["n_trian"] = 5
    with pytest.raises(WorkflowError, match="n_trian"):
        validate(config, SCHEMA)


def test_wrong_type_is_named():
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["dictionaries"]["topk-4k"]["width"] = "big"
    with pytest.raises(WorkflowError, match="'big' is not of type 'integer'"):
        validate(config, SCHEMA)


def test_dangling_names_are_listed():
    config = load()
    config["runs"][0]["scorers"] = ["detection", "simulate"]
    config["runs"][0]["model"] = "gpt-9"
    with pytest.raises(ValueError) as err:
        check_config(config)
    assert "runs[0].model: 'gpt-9' is not defined under 'models'" in str(err.value)
    assert "runs[0].scorers: 'simulate' is not defined under 'scorers'" in str(err.value)


def test_source_specific_keys_are_required():
    config = load()
    config["corpora"]["mine"] = {"source": "jsonl", "path": None}
    config["models"]["hub"] = {"source": "hf", "path": None}
    with pytest.raises(ValueError, match=r"corpora.mine.path(.|\n)*models.hub.path"):
        check_config(config)


def test_run_combinations_expand_and_dedupe():
    config = load()
    run = copy.deepcopy(config["runs"][0])
    run["hookpoints"] = ["resid_post.3", "resid_post.9"]
    config["runs"] = [run, copy.deepcopy(run)]
    combos = list(run_combinations(config))
    assert len(combos) == 2 * 2 * 5  # 2 hookpoints x 2 explainers x 5 scorers, the repeated run adds nothing
    assert {c["hookpoint"] for c in combos} == {"resid_post.3", "resid_post.9"}


def test_kind_specific_requirements_are_named():
    config = load()
    del config["scorers"]["detection"]["llm"]
    config["explainers"]["random"]["source"] = "top-tokens"
    config["scorers"]["surprisal"]["scorer_model"] = "llama-8b"
    with pytest.raises(ValueError) as err:
        check_config(config)
    message = str(err.value)
    assert "scorers.detection.llm: required for kind 'detection'" in message
    assert "explainers.random.source: must name an LLM explainer, got 'top-tokens'" in message
    assert "scorers.surprisal.scorer_model: 'llama-8b' is not defined under 'models'" in message


def test_dictionary_kinds_need_their_keys_and_hookpoints():
    config = load("tests/data/tiny.yaml")
    config["dictionaries"]["rand"] = {"kind": "random-sae", "width": 16, "k": None}
    config["dictionaries"]["disk"] = {"kind": "pretrained", "width": 16, "format": None, "path": None}
    config["dictionaries"]["wide-k"] = {"kind": "topk-sae", "width": 16, "k": 32}
    config["runs"][0]["dictionaries"].append("neurons-top8")  # on resid_post.3: not neurons
    with pytest.raises(ValueError) as err:
        check_config(config)
    msg = str(err.value)
    for part in [
        "dictionaries.rand.k: required for kind 'random-sae'",
        "dictionaries.disk.format: required for kind 'pretrained'",
        "dictionaries.disk.path: required for kind 'pretrained'",
        "dictionaries.wide-k.k: 32 exceeds width 16",
        "runs[0]: dictionary 'neurons-top8' (neurons) reads MLP neurons (mlp_act.<layer>), "
        "not ['resid_post.3']",
    ]:
        assert part in msg


def test_hookpoint_sites_are_checked_by_the_schema():
    config = yaml.safe_load((REPO / "tests/data/tiny.yaml").read_text())
    config["runs"][0]["hookpoints"] = ["mlp_out.2", "attn_out.2", "mlp_in.2", "mlp_act.2"]
    validate(config, SCHEMA)
    config["runs"][0]["hookpoints"] = ["mlp.2"]
    with pytest.raises(WorkflowError, match="mlp.2"):
        validate(config, SCHEMA)


def test_layer_pairs_and_the_layer_below():
    config = load("tests/data/tiny.yaml")
    pairs = layer_pairs(config)
    assert sorted((p["dictionary"], p["hookpoint_a"], p["hookpoint_b"], p["distance"]) for p in pairs) == [
        ("random-128", "resid_post.2", "resid_post.3", 1),
        ("topk-128", "resid_post.2", "resid_post.3", 1),
    ]
    config["runs"][2]["hookpoints"] = ["resid_post.5", "mlp_out.2", "resid_post.2", "resid_post.3"]
    pairs = {(p["hookpoint_a"], p["hookpoint_b"]) for p in layer_pairs(config)}
    assert pairs == {
        ("resid_post.2", "resid_post.3"),
        ("resid_post.2", "resid_post.5"),
        ("resid_post.3", "resid_post.5"),
    }
    config["cross_layer"]["max_distance"] = 2
    assert ("resid_post.2", "resid_post.5") not in {
        (p["hookpoint_a"], p["hookpoint_b"]) for p in layer_pairs(config)
    }
    below = partial(layer_below, config, "wiki", "smollm2", "partners", "topk-128")
    assert below("resid_post.5") == "resid_post.3" and below("resid_post.2") is None
    assert below("mlp_out.2") is None  # no lower layer of its site
    config["cross_layer"]["enabled"] = False
    assert layer_pairs(config) == []


def test_gpu_is_declared_only_for_cuda_devices():
    assert wants_gpu("cuda") == wants_gpu("cuda:1") == 1 and wants_gpu("cpu") == 0
    assert wants_gpu("auto") == int(os.path.exists("/dev/nvidiactl"))
    # on a cluster (auto_gpu: node) every auto job asks for a GPU and uses its node's; cpu never asks
    assert wants_gpu("auto", "node") == 1 and wants_gpu("cpu", "node") == 0


def test_transport_settings_are_split_off_untracked_and_put_back():
    entry = {"kind": "detection", "llm": {"model": "openai/gpt-4o-mini", "api_base": "http://h:1/v1",
                                          "timeout_s": 30, "max_retries": 2, "max_tokens": 10}}  # fmt: skip
    answers, transport = split_transport(entry)
    assert answers == {"kind": "detection", "llm": {"model": "openai/gpt-4o-mini", "max_tokens": 10}}
    assert transport.value == {"api_base": "http://h:1/v1", "timeout_s": 30, "max_retries": 2}
    assert not isinstance(transport, (dict, list, str))  # Snakemake records params of builtin types only
    assert with_transport(answers, transport) == entry and entry["llm"]["api_base"] == "http://h:1/v1"
    assert split_transport({"kind": "embedding"}) == ({"kind": "embedding"}, Untracked({}))
    assert with_transport({"kind": "embedding"}, Untracked({"timeout_s": 1})) == {"kind": "embedding"}


def test_a_scorer_job_gets_only_the_keys_its_kind_reads():
    kinds = ["detection", "fuzzing", "simulation", "embedding", "surprisal", "intervention"]
    config = load()
    config["scorers"] = {k: {"kind": k} for k in kinds}
    config["scorers"]["detection"]["llm"] = config["scorers"]["fuzzing"]["llm"] = {"model": "local/x"}
    validate(config, SCHEMA)  # fills every key's default into every entry
    assert "calibrate" in config["scorers"]["intervention"] and "target_kl" in config["scorers"]["detection"]
    sliced = {k: scorer_slice(config["scorers"][k]) for k in kinds}
    assert sliced["detection"]["calibrate"] is False and sliced["detection"]["llm"]["model"] == "local/x"
    assert not {"target_kl", "n_shots", "model", "neutral"} & set(sliced["detection"])
    assert sliced["intervention"]["target_kl"] == 1.0 and sliced["intervention"]["scorer_model"] is None
    unread = {"calibrate", "llm", "examples_per_prompt", "negatives", "batch_size"}
    assert not unread & set(sliced["intervention"])
    assert set(sliced["embedding"]) == {"kind", "max_latents", "seed", "max_activating", "max_nonactivating",
                                        "negatives", "model", "batch_size", "query_prefix", "document_prefix",
                                        "device"}  # fmt: skip
    for entry in sliced.values():  # what every kind reads stays; slicing again changes nothing
        assert {"kind", "seed", "max_latents"} <= set(entry) and entry == scorer_slice(entry)
    assert all(ks <= set(kinds) for ks in scorer_kinds().values())  # x-kinds names only real kinds


def test_with_defaults_fills_what_the_workflow_fills():
    config = load()  # validated by the workflow's own call, defaults filled in
    for section in ("corpora", "models", "dictionaries", "samplers", "explainers", "scorers"):
        for name, entry in config[section].items():
            given = yaml.safe_load((REPO / "config/config.yaml").read_text())[section][name]
            assert with_defaults(section, given) == entry, (section, name)
    assert with_defaults("latent_store") == {"shard_size": 4096, "batch_size": 4096, "device": "auto"}
    sampler = with_defaults("samplers", {"n_test": 3, "latents": {"n": 2}})
    assert sampler["n_test"] == 3 and sampler["min_activations"] == 200  # given kept, the rest filled
    assert sampler["latents"] == {"n": 2, "seed": 0, "partners": False}  # at every depth
    judge = with_defaults("scorers", {"kind": "detection", "llm": {"model": "local/x"}})
    assert judge["llm"]["top_logprobs"] == 5 and judge["calibrate"] is False  # through the llm $ref


def test_used_config_keeps_only_what_runs_use():
    config = load()
    config["explainers"]["unused"] = {"kind": "top-tokens"}
    config["models"]["spare"] = dict(config["models"]["gemma3-270m"])
    used = used_config(config)
    assert "unused" not in used["explainers"] and "spare" not in used["models"]
    assert set(used["explainers"]) == {"qwen-1.5b", "random", "top-tokens"}
    assert used["runs"] == config["runs"] and used["latent_store"] == config["latent_store"]
    config["runs"][0]["explainers"] = ["random"]  # its source is used through it
    config["runs"] = config["runs"][:1]
    assert set(used_config(config)["explainers"]) == {"qwen-1.5b", "random"}


def test_a_hookpoint_beyond_a_known_models_layers_is_named_before_any_job(tmp_path):
    config = load()
    assert known_layers(config, tmp_path) == {}  # nothing prepared yet: the job itself checks
    (tmp_path / "models/gemma3-270m").mkdir(parents=True)
    (tmp_path / "models/gemma3-270m/config.json").write_text('{"text_config": {"num_hidden_layers": 18}}')
    assert known_layers(config, tmp_path) == {"gemma3-270m": 18}
    check_config(config, {"gemma3-270m": 18})  # resid_post.9 is there
    config["runs"][1]["hookpoints"] = ["resid_post.9", "resid_post.18"]
    with pytest.raises(ValueError, match=r"runs\[1\]\.hookpoints: \['resid_post\.18'\] beyond the 18 layers "
                                         r"\(0-17\) of model 'gemma3-270m'"):  # fmt: skip
        check_config(config, known_layers(config, tmp_path))


def test_the_schema_ships_inside_the_package(tmp_path):
    """An installed interpflow (a wheel, not a clone) carries the schema that validate_schema reads."""
    import shutil
    import subprocess
    import sys
    import zipfile

    assert CONFIG_SCHEMA == REPO / "src/interpflow/config.schema.yaml" and CONFIG_SCHEMA.is_file()
    src = tmp_path / "src"  # built from a copy: pip would leave build/ in the clone
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", "dist", "."]
    subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, env=os.environ | {"PIP_NO_INDEX": "1"})
    (wheel,) = (tmp_path / "dist").glob("interpflow-*.whl")
    assert "interpflow/config.schema.yaml" in zipfile.ZipFile(wheel).namelist()


def test_keyword_defaults_of_the_cross_layer_step_agree_with_the_schema():
    import inspect

    from interpflow.crosslayer.align import cross_layer

    params, schema = inspect.signature(cross_layer).parameters, with_defaults("cross_layer")
    assert params["n_random"].default == schema["n_random"] and params["seed"].default == schema["seed"]
    assert params["max_pairs"].default == schema["max_cells"]
    assert params["corr_weight"].default == schema["corr_weight"]
    assert params["embedder"].default == schema["embedding_model"]
