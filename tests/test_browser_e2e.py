"""The browser in a real headless Chromium (Debian's, driven by Playwright; `make test` installs it): the
index from disk sorts, a latent page shows its tokens' exact activations, search through `interpflow serve`
finds the matching latent, and a rating given in the page is on disk after a restart and in the agreement
table."""

import contextlib
import json
import shutil
import threading
from pathlib import Path

import pandas as pd
import pytest
from browser_data import UNIT_ID, write_shard_inputs
from werkzeug.serving import make_server

from interpflow.browser.ratings import read_ratings
from interpflow.browser.serve import create_app
from interpflow.browser.site import build_index, build_shard

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling hosts this offline machine cannot reach.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A run's results folder: one shard built into a browser with real embeddings, its examples where the
    rating pool reads them, and a summary table for the agreement."""
    root = tmp_path_factory.mktemp("run")
    files = write_shard_inputs(root / "inputs")
    results = root / "results"
    (results / UNIT_ID / "examples").mkdir(parents=True)
    shutil.copy(files["examples"], results / UNIT_ID / "examples/shard-0.parquet")
    shard = results / "browser/units" / UNIT_ID / "shard-0"
    build_shard(files, shard)
    (results / "summary").mkdir()
    unit = dict(
        zip(["corpus", "model", "hookpoint", "dictionary", "sampler"], UNIT_ID.split("/"), strict=True)
    )
    pd.DataFrame(
        [
            dict(unit, explainer=e, latent=1, scorer="detection", kind="detection", status="ok", score=s)
            for e, s in [("llm", 0.75), ("random", 0.5)]
        ]  # fmt: skip
    ).to_parquet(results / "summary/latents.parquet")
    build_index([shard], results / "browser", summary_dir=results / "summary")
    return results


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


@contextlib.contextmanager
def served(results):
    """`interpflow serve` on a free port, in a thread, for the length of the block."""
    server = make_server("127.0.0.1", 0, create_app(results, device="cpu"), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


def open_page(browser, url):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    return page, errors


def test_index_from_disk_lists_and_sorts(browser, results):
    page, errors = open_page(browser, (results / "browser/index.html").as_uri())
    page.wait_for_selector("tr.latent-row")
    rows = page.locator("tr.latent-row")
    assert rows.count() == 4  # latents 1 and 2, each by the llm and the random explainer
    header = page.locator("th[data-col='score.detection']")
    header.click()
    first = page.locator("tr.latent-row").first.inner_text()
    header.click()
    flipped = page.locator("tr.latent-row").first.inner_text()
    # one direction puts the llm's 0.75 on top, the other the random floor's 0.5; empty scores stay last
    assert {("0.750" in first), ("0.750" in flipped)} == {True, False}
    assert "0.500" in first + flipped and not errors


def test_latent_page_shades_tokens_with_their_values(browser, results):
    url = (results / "browser/units" / UNIT_ID / "shard-0/latent-1.html").as_uri()
    page, errors = open_page(browser, url)
    train = page.locator("span.tok[data-act]").evaluate_all(
        "els => els.map(e => [e.textContent, e.dataset.act])"
    )
    assert [" cat", "2.0"] in train and [" dog", "0.0"] in train and [" cat", "0.5"] in train
    cat = page.locator("span.tok[data-act='2.0']").first
    assert cat.evaluate("e => getComputedStyle(e).backgroundColor") != "rgba(0, 0, 0, 0)"  # shaded
    assert not errors


def test_search_through_the_server_finds_the_latent(browser, results):
    with served(results) as base:
        page, errors = open_page(browser, f"{base}/search.html")
        page.fill("#q", "cats")
        page.click("#search-submit")
        page.wait_for_selector("#results li")
        first = page.locator("#results li").first
        assert "latent-1.html" in first.inner_html() and "cats" in first.inner_text()
        assert not errors


FORM_HIDDEN = "document.getElementById('rate-form').hidden"
EXPLANATION = "document.getElementById('rate-explanation').textContent"
SHOWN_OR_DONE = (
    f"() => !{FORM_HIDDEN} || document.getElementById('rate-status').textContent.includes('No tasks')"
)


def rate_until_done(page, rater, answer, rating) -> int:
    """Rate every task offered to `rater` in the page; the number rated."""
    page.fill("#rater", rater)
    page.click("#rater-start")
    rated = 0
    while True:
        page.wait_for_function(SHOWN_OR_DONE)
        if page.locator("#rate-form").is_hidden():
            return rated
        task = page.locator("#rate-explanation").inner_text()
        for name in set(
            page.locator(".rate-window input[type=radio]").evaluate_all("els => els.map(e => e.name)")
        ):
            page.check(f".rate-window input[name='{name}'][value='{answer}']")
        page.check(f"input[name=rating][value='{rating}']")
        page.click("#rate-submit")
        page.wait_for_function(f"() => {EXPLANATION} !== {json.dumps(task)} || {FORM_HIDDEN}")
        rated += 1


def test_a_rating_survives_a_restart_and_reaches_the_agreement_table(browser, results):
    with served(results) as base:
        page, errors = open_page(browser, f"{base}/rate.html")
        page.fill("#rater", "alice")
        page.click("#rater-start")
        page.wait_for_selector("#rate-form:not([hidden])")
        for name in set(
            page.locator(".rate-window input[type=radio]").evaluate_all("els => els.map(e => e.name)")
        ):
            page.check(f".rate-window input[name='{name}'][value='yes']")
        page.check("input[name=rating][value='4']")
        page.click("#rate-submit")
        page.wait_for_function(
            "() => document.getElementById('rate-status').textContent.startsWith('Rating as')"
        )
    first = read_ratings(results / "ratings")
    assert len(first) == 1 and first["rating"].tolist() == [4] and first["rater"].tolist() == ["alice"]
    with served(results) as base:  # a new server process's view: what alice rated is not offered again
        page, errors = open_page(browser, f"{base}/rate.html")
        assert rate_until_done(page, "alice", "no", 2) == 1
        page.wait_for_selector("#agreement table")
        agreement = page.locator("#agreement").inner_text()
        assert not errors
    ratings = read_ratings(results / "ratings")
    assert sorted(ratings["rating"]) == [2, 4] and ratings["explainer"].nunique() == 2
    assert "detection" in agreement and "cats" not in agreement  # the scorer's row; explanations stay out
    lines = (results / "ratings/alice.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["rater"] == "alice" for line in lines)
