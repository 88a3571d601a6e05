"""`interpflow serve results/`: the browser's static site plus what a static page cannot do offline: search by
meaning (the query embedded locally), search by text (the subject model and dictionary run on the text) and
blinded human rating, with ratings kept in results/ratings/ across restarts."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import pandas as pd
from flask import Flask, abort, jsonify, request, send_from_directory

from interpflow.browser.infer import TextSearch
from interpflow.browser.search import SearchIndex

log = logging.getLogger(__name__)


class Run:
    """What the server reads of one run's results folder; search and text models load on first use."""

    def __init__(self, results: str | Path, ratings_dir: str | Path | None = None, device: str = "auto"):
        self.results = Path(results).resolve()  # Flask resolves relative folders against its package
        self.browser = self.results / "browser"
        if not (self.browser / "index.html").exists():
            raise FileNotFoundError(f"{self.browser / 'index.html'} is missing: build the browser first "
                                    "(snakemake browser, part of `make run`)")  # fmt: skip
        self.ratings_dir = Path(ratings_dir) if ratings_dir else self.results / "ratings"
        self.device = device

    @functools.cached_property
    def search(self) -> SearchIndex:
        return SearchIndex(self.browser)

    @functools.cached_property
    def entries(self) -> pd.DataFrame:
        tables = [pd.read_parquet(p) for p in sorted(self.browser.glob("units/**/entries.parquet"))]
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["unit"])

    @functools.cached_property
    def text_search(self) -> TextSearch:
        return TextSearch(self.results, self.entries, self.device)

    @functools.cached_property
    def pool(self):
        from interpflow.browser.ratings import RatingPool

        return RatingPool(self.entries, self.results)

    def agreement(self) -> dict:
        from interpflow.browser.agreement import agreement_records

        return agreement_records(self.ratings_dir, self.results / "summary" / "latents.parquet")


def _error(status: int, message: str):
    response = jsonify({"error": message})
    response.status_code = status
    return response


def create_app(results: str | Path, ratings_dir: str | Path | None = None, device: str = "auto") -> Flask:
    """The Flask app serving one run: static files under /, JSON under /api/ (interpflow.browser docs)."""
    run = Run(results, ratings_dir, device)
    app = Flask(__name__, static_folder=None)
    app.config["RUN"] = run
    app.register_error_handler(ValueError, lambda exc: _error(400, str(exc)))
    app.register_error_handler(FileNotFoundError, lambda exc: _error(404, str(exc)))
    _search_routes(app, run)
    _rating_routes(app, run)
    _static_routes(app, run)
    return app


def _search_routes(app: Flask, run: Run) -> None:
    @app.get("/api/units")
    def units():
        return jsonify({"units": sorted(run.entries["unit"].unique().tolist())})

    @app.get("/api/search")
    def search():
        k = request.args.get("k", "20")
        if not k.isdigit() or not 0 < int(k) <= 1000:
            raise ValueError(f"k: '{k}' is not a count from 1 to 1000")
        query, unit, explainer = (request.args.get(key) for key in ("q", "unit", "explainer"))
        return jsonify({"query": query, "results": run.search.query(query or "", int(k), unit, explainer)})

    @app.post("/api/infer")
    def infer():
        body = request.get_json(silent=True) or {}
        return jsonify(run.text_search.run(body.get("text", ""), body.get("unit") or None))


def _rating_routes(app: Flask, run: Run) -> None:
    @app.get("/api/rate/next")
    def next_task():
        task = run.pool.next_task(request.args.get("rater", ""), run.ratings_dir)
        return jsonify(task if task is not None else {"done": True})

    @app.post("/api/rate")
    def rate():
        from interpflow.browser.ratings import record_rating

        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ValueError("body: expected a JSON object with rater, task, answers and rating")
        record_rating(run.ratings_dir, body.get("rater"), body.get("task"), body.get("answers"),
                      body.get("rating"), run.pool)  # fmt: skip
        return jsonify({"ok": True})

    @app.get("/api/agreement")
    def agreement():
        return jsonify(run.agreement())


def _static_routes(app: Flask, run: Run) -> None:
    @app.get("/")
    def index():
        return send_from_directory(run.browser, "index.html")

    @app.get("/<path:path>")
    def static_file(path):
        top, _, rest = path.partition("/")
        if top in ("summary", "paper") and rest:
            return send_from_directory(run.results / top, rest)
        if path.startswith("api/"):
            abort(404)
        return send_from_directory(run.browser, path)


def serve(results: str | Path, host: str = "127.0.0.1", port: int = 8000, device: str = "auto") -> None:
    """Serve a run until interrupted (Werkzeug's threaded server: a user or a few raters on a lab machine)."""
    app = create_app(results, device=device)
    log.info("serving %s at http://%s:%d/", Path(results).resolve(), host, port)
    app.run(host=host, port=port, threaded=True, use_reloader=False)
