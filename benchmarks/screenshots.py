"""The README's screenshots of the browser, taken from a finished run in Debian's headless Chromium:
the index, one latent page (the best-scored LLM explanation) and a search served by `interpflow serve`.

Usage: python benchmarks/screenshots.py [results] [docs]  (after `make dev chromium`: it drives Playwright)
"""

import sys
import threading
from pathlib import Path

import pandas as pd
from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

from interpflow.browser.serve import create_app

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


def best_page(browser_dir: Path) -> str:
    """The page of the LLM explanation with the highest detection score (the most readable example)."""
    entries = pd.concat(pd.read_parquet(p) for p in browser_dir.glob("units/**/entries.parquet"))
    llm = entries[entries["explainer_kind"] == "llm"].sort_values("score.detection", ascending=False)
    return llm["url"].iloc[0]


def main(results: Path, docs: Path, query: str = "numbers") -> None:
    docs.mkdir(parents=True, exist_ok=True)
    server = make_server("127.0.0.1", 0, create_app(results, device="cpu"), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = chromium.new_page(viewport={"width": 1400, "height": 900})
        page.goto((results / "browser/index.html").resolve().as_uri())
        page.wait_for_selector("tr.latent-row")
        page.screenshot(path=docs / "browser-index.png")
        page.goto((results / "browser" / best_page(results / "browser")).resolve().as_uri())
        page.screenshot(path=docs / "browser-latent.png", full_page=False)
        page.goto(f"{base}/search.html")
        page.fill("#q", query)
        page.click("#search-submit")
        page.wait_for_selector("#results li")
        page.screenshot(path=docs / "browser-search.png")
        chromium.close()
    server.shutdown()


if __name__ == "__main__":
    args = sys.argv[1:]
    main(Path(args[0] if args else "results"), Path(args[1] if len(args) > 1 else "docs"))
