"""`interpflow serve`: search by meaning over embedded explanations, search by text on a real model, the JSON
API's errors, and the static files it serves."""

import numpy as np
import pandas as pd
import pytest
import torch

from interpflow.browser.infer import top_latents
from interpflow.browser.search import SearchIndex, embed_entries
from interpflow.browser.serve import create_app
from interpflow.planted import PROPERTIES

UNIT = "wiki/m/resid_post.1/planted/s"


def write_unit(browser, explanations: dict[int, str | None], scores: dict[int, float] | None = None):
    """One shard's entries.parquet and embeddings.npy, as the shard builder writes them."""
    shard = browser / "units" / UNIT / "shard-0"
    shard.mkdir(parents=True)
    latents = sorted(explanations)
    entries = pd.DataFrame(
        {
            "unit": UNIT,
            "latent": latents,
            "explainer": "oracle",
            "explainer_kind": "file",
            "explanation": [explanations[i] for i in latents],
            "url": [f"units/{UNIT}/shard-0/latent-{i}.html" for i in latents],
            "score.detection": [(scores or {}).get(i, np.nan) for i in latents],
        }
    )
    entries.to_parquet(shard / "entries.parquet")
    embed_entries(entries, shard / "embeddings.npy")
    (browser / "index.html").write_text("<html>index</html>")
    return entries


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The planted benchmark's properties as latents 0-7, their oracle descriptions as explanations, and one
    latent with no explanation (a failed explainer call): it must never be returned or misalign the rows."""
    results = tmp_path_factory.mktemp("results")
    explanations = {i: p.description for i, p in enumerate(PROPERTIES.values())} | {8: None}
    names = {i: name for i, name in enumerate(PROPERTIES)}
    write_unit(results / "browser", explanations, scores={0: 0.9, 1: 0.6})
    return results, names


def test_searching_numbers_returns_the_digit_latent_first(planted):
    results, names = planted
    index = SearchIndex(results / "browser")
    assert len(index.entries) == 8 and len(index.vectors) == 8  # the unexplained latent is not indexed
    hits = index.query("numbers", k=3)
    assert names[hits[0]["latent"]] == "digit"
    assert hits[0]["similarity"] > hits[1]["similarity"]
    assert hits[0]["scores"] == {"detection": 0.9} and hits[0]["url"].endswith("latent-0.html")
    assert names[index.query("parenthesis", k=1)[0]["latent"]] == "bracket"


def test_random_baseline_explanations_are_not_searched(tmp_path):
    """A random explanation is another latent's text: search must point at the latent it describes."""
    texts = {0: "dates and years", 1: "dates and years", 2: "the word and"}
    entries = write_unit(tmp_path / "browser", texts)
    entries["explainer_kind"] = ["file", "random", "file"]
    entries.to_parquet(tmp_path / "browser/units" / UNIT / "shard-0/entries.parquet")
    hits = SearchIndex(tmp_path / "browser").query("years", k=5)
    assert [h["latent"] for h in hits] == [0, 2]
    index = SearchIndex(tmp_path / "browser")
    assert index.query("years", unit="other/unit") == []
    assert [h["latent"] for h in index.query("years", explainer="oracle")] == [0, 2]


def test_a_relative_results_folder_is_served(planted, monkeypatch):
    results, _ = planted
    monkeypatch.chdir(results.parent)
    assert create_app(results.name).test_client().get("/index.html").data == b"<html>index</html>"


def test_server_search_api_and_its_errors(planted):
    results, names = planted
    client = create_app(results).test_client()
    body = client.get("/api/search?q=numbers&k=2").get_json()
    assert [names[r["latent"]] for r in body["results"]][0] == "digit" and len(body["results"]) == 2
    bad = client.get("/api/search?q=numbers&k=0")
    assert bad.status_code == 400 and "k:" in bad.get_json()["error"]
    empty = client.get("/api/search?q=%20")
    assert empty.status_code == 400 and "q:" in empty.get_json()["error"]
    assert client.get("/api/units").get_json() == {"units": [UNIT]}
    assert client.get("/").data == b"<html>index</html>"
    assert client.get("/api/nothing").status_code == 404


def test_serving_a_run_without_a_browser_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"browser/index.html is missing"):
        create_app(tmp_path)


def test_infer_on_an_unknown_unit_names_it(planted):
    results, _ = planted
    response = create_app(results).test_client().post("/api/infer", json={"text": "hi", "unit": "a/b/c/d/e"})
    assert response.status_code == 400 and "'a/b/c/d/e' is not a unit" in response.get_json()["error"]


def test_top_latents_per_token_and_over_the_text():
    dense = torch.tensor([[0.0, 2.0, 1.0, 0.0], [3.0, 0.0, 0.5, 0.0]])  # [T=2, width=4]
    per_token, overall = top_latents(dense, per_token=2, overall=3)
    assert per_token == [[(1, 2.0), (2, 1.0)], [(0, 3.0), (2, 0.5)]]
    assert overall == [(0, 3.0), (1, 2.0), (2, 1.0)]  # latent 3 never fires: not listed
