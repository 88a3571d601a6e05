"""The static browser: a hand-made two-latent shard rendered to pages, entries and index data pages."""

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from browser_data import ROOT, UNIT, UNIT_ID, write_shard_inputs

from interpflow.browser.collect import activation_histogram, top_tokens
from interpflow.browser.site import build_index, build_shard


@pytest.fixture
def shard_files(tmp_path):
    return write_shard_inputs(tmp_path)


@pytest.fixture
def fake_embed(monkeypatch):
    """embed_entries without a model: records what it was given, writes a [n_explained, 2] array."""
    calls = []

    def embed(entries, path):
        calls.append(entries)
        np.save(path, np.ones((int(entries["explanation"].notna().sum()), 2), dtype=np.float16))

    monkeypatch.setattr("interpflow.browser.search.embed_entries", embed)
    return calls


@pytest.fixture
def built(shard_files, fake_embed, tmp_path):
    out = tmp_path / "browser/units" / UNIT_ID / "shard-0"
    build_shard(shard_files, out)
    return out


def block(html: str, marker: str) -> str:
    """The HTML from `marker` to the end of its element's line (templates keep a window on one line)."""
    start = html.index(marker)
    return html[start : html.index("\n", html.index('class="tokens"', start))]


def spans(fragment: str) -> list[tuple[str, str]]:
    """(data-act, text) of each token span in a fragment."""
    return re.findall(r'<span class="tok" data-act="([^"]*)"[^>]*>([^<]*)</span>', fragment)


def test_token_spans_carry_exact_activations(built):
    html = (built / "latent-1.html").read_text()
    train = spans(block(html, 'data-example="0"'))
    assert train == [("2.0", " cat"), ("0.0", " dog"), ("0.5", " cat")]
    test = spans(block(html, 'data-example="1"'))
    assert [float(a) for a, _ in test] == [0.25, 0.0, 1.0] and test[2][1] == "⏎"
    assert test[1][1] == "&lt;b&gt;"  # token text is escaped
    assert 'style="--a:0.500"' in block(html, 'data-example="1"')  # 1.0 / the latent's max 2.0
    # the strongest quantile comes first; the non-activating windows name their kind
    assert html.index("quantile 9") < html.index("quantile 3")
    assert 'class="badge neg-hard">hard' in html and 'class="badge neg-random">random' in html


def test_histogram_and_top_tokens(built):
    html = (built / "latent-1.html").read_text()
    counts = [int(c) for c in re.findall(r'<rect class="bar" data-count="(\d+)"', html)]
    expected = [0] * 20
    for bin_ in (2, 5, 10, 19):  # 0.25, 0.5, 1.0, 2.0 in 20 bins of width 0.1 over [0, 2]
        expected[bin_] = 1
    assert counts == expected
    rows = re.findall(r'<tr class="top-token" data-token-id="(\d+)"><td><code>([^<]*)</code></td>'
                      r'<td class="num">(\d+)</td><td class="num">([^<]*)</td>', html)  # fmt: skip
    assert rows == [("10", " cat", "3", "1.167"), ("11", " dog", "1", "0.250")]  # cat: (0.5 + 1 + 2) / 3


def test_histogram_and_top_tokens_functions():
    edges, counts = activation_histogram(np.array([0.25, 0.5, 1.0, 2.0]), n_bins=4)
    assert edges.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0] and counts.tolist() == [1, 1, 1, 1]
    vocab = np.array(["a", "b", "c"], dtype=object)
    top = top_tokens(np.array([2, 1, 2, 1, 0]), np.array([1.0, 2.0, 3.0, 4.0, 5.0]), vocab, k=2)
    assert [(t["text"], t["count"], t["mean"]) for t in top] == [
        ("b", 2, 3.0),
        ("c", 2, 2.0),
    ]  # tie: lower id


def test_scores_floor_judge_marks_and_partners(built):
    html = (built / "latent-1.html").read_text()
    llm_row = block(html, 'data-explainer="llm"')
    assert (
        '<span class="score-value">0.750</span>' in llm_row
        and 'floor <span class="floor-value">0.500' in llm_row
    )
    judge = html[html.index('scorer-detection" data-explainer="llm"') :]
    marks = re.findall(r'<tr class="judge-row (\w+)" data-example="(\d+)">', judge)[:3]
    assert marks == [("right", "1"), ("wrong", "2"), ("right", "3")]  # yes/act, yes/not, no/not
    assert "not_sampled" in html and "No per-window results for this latent (not_sampled)" in html
    assert f'href="{ROOT}units/c/m/h5/d/s/shard-1/latent-6.html">h5 · latent 6' in html  # 6 // shard size 4
    assert "cosine 0.800" in html


def test_skipped_latent_gets_a_page_saying_why(built):
    html = (built / "latent-2.html").read_text()
    assert 'id="skipped"' in html and "0 activations &lt; min_activations 3" in html
    assert "No activations of this latent in the store" in html and "No matched latents" in html
    assert sorted(p.name for p in built.iterdir()) == [
        "embeddings.npy", "entries.parquet", "latent-1.html", "latent-2.html"]  # fmt: skip


def test_entries_table(built, fake_embed):
    e = pd.read_parquet(built / "entries.parquet")
    assert list(e.columns) == [
        "unit", "corpus", "model", "hookpoint", "dictionary", "sampler", "shard", "latent", "explainer",
        "explainer_kind", "subject", "status", "explanation", "count", "frequency", "max_act", "url",
        "score.detection", "status.detection", "floor.detection",
        "score.simulation", "status.simulation", "floor.simulation"]  # fmt: skip
    llm, rnd, llm2 = (e.iloc[i].to_dict() for i in (0, 1, 2))
    assert (llm["latent"], llm["explainer"], llm["explainer_kind"], llm["subject"]) == (
        1,
        "llm",
        "llm",
        "SAE llm",
    )
    assert (llm["unit"], llm["url"]) == (UNIT_ID, f"units/{UNIT_ID}/shard-0/latent-1.html")
    assert (llm["count"], llm["frequency"], llm["max_act"]) == (4, 4 / 9, 2.0)
    assert (llm["score.detection"], llm["floor.detection"], llm["status.detection"]) == (0.75, 0.5, "ok")
    assert math.isnan(llm["score.simulation"]) and llm["status.simulation"] == "not_sampled"
    assert math.isnan(llm["floor.simulation"])  # the random explainer ran no simulation
    assert rnd["score.detection"] == 0.5 and math.isnan(rnd["floor.detection"])  # not its own floor
    assert pd.isna(rnd["status.simulation"]) and math.isnan(rnd["score.simulation"])
    assert (llm2["latent"], llm2["status"]) == (2, "skipped") and pd.isna(llm2["explanation"])
    assert math.isnan(llm2["score.detection"]) and llm2["status.detection"] == "no_explanation: skipped"
    assert len(e) == 4 and fake_embed[0]["explanation"].tolist() == ["cats", "from elsewhere", None, None]
    assert np.load(built / "embeddings.npy").shape == (2, 2)


def test_failed_build_leaves_nothing(shard_files, monkeypatch, tmp_path):
    def broken(entries, path):
        raise RuntimeError("embedding model missing")

    monkeypatch.setattr("interpflow.browser.search.embed_entries", broken)
    out = tmp_path / "site/shard-0"
    with pytest.raises(RuntimeError):
        build_shard(shard_files, out)
    assert list((tmp_path / "site").iterdir()) == []


def read_data_page(path) -> dict:
    text = path.read_text()
    prefix = "window.interpflowIndexPage("
    assert text.startswith(prefix) and text.endswith(");\n")
    return json.loads(text[len(prefix) : -3])


def test_index_pages_split_and_links(shard_files, fake_embed, tmp_path):
    browser = tmp_path / "results/browser"
    dirs = []
    for hookpoint in ("h", "h2"):  # two units of two latents x two explainers: 8 rows
        unit = UNIT | {"hookpoint": hookpoint}
        dirs.append(browser / f"units/c/m/{hookpoint}/d/s/shard-0")
        build_shard(shard_files | {"unit": unit}, dirs[-1])
    summary = tmp_path / "results/summary"
    summary.mkdir()
    (summary / "scores.png").write_bytes(b"png")
    (summary / "summary.html").write_text("<html></html>")
    build_index(dirs, browser, summary_dir=summary, paper_dir=tmp_path / "results/paper", page_size=3)

    pages = sorted((browser / "data").iterdir())
    assert [p.name for p in pages] == ["index-00000.js", "index-00001.js", "index-00002.js"]
    payloads = [read_data_page(p) for p in pages]
    assert [len(p["rows"]) for p in payloads] == [3, 3, 2] and {p["n_pages"] for p in payloads} == {3}
    columns = payloads[0]["columns"]
    rows = [dict(zip(columns, r, strict=True)) for p in payloads for r in p["rows"]]
    assert [(r["hookpoint"], r["latent"], r["explainer"]) for r in rows][:3] == [
        ("h", 1, "llm"), ("h", 1, "random"), ("h", 2, "llm")]  # fmt: skip
    assert rows[0]["floor.detection"] == 0.5 and rows[1]["floor.detection"] is None  # NaN -> null
    assert rows[4]["url"] == "units/c/m/h2/d/s/shard-0/latent-1.html"

    index = (browser / "index.html").read_text()
    for col in ("latent", "explanation", "frequency", "score.detection"):
        assert f'data-col="{col}"' in index
    assert 'href="../summary/scores.png"' in index and 'href="../summary/summary.html"' in index
    assert "../paper/index.html" not in index  # no paper built
    assert "<option>h2</option>" in index and 'id="latents"' in index
    assert sorted(p.name for p in (browser / "static").iterdir()) == [
        "browser.css", "browser.js", "rate.js", "search.js"]  # fmt: skip
    assert "interpflow serve results/" in (browser / "search.html").read_text()
    rate = (browser / "rate.html").read_text()
    assert 'id="rate-form"' in rate and 'id="rate-submit"' in rate and 'name="rating" value="5"' in rate
    assert 'location.protocol === "file:"' in (browser / "static/rate.js").read_text()
