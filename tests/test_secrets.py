"""The API key reaches the server and nothing else: after a fake-API run (in which the server quotes the key
back in error messages, as some providers do) and its report, no file of the work dir holds it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading

import pandas as pd
import pytest
import yaml
from conftest import copy_workflow, fake_api_config
from fault_server import FaultServer, prompt_kind

pytestmark = pytest.mark.slow


def quote_key_back(server: FaultServer) -> list[str]:
    """Make a running server record each request's Authorization header and answer the first explainer
    request with a 401 and the first judge request with a 500, both quoting the key; returns the headers."""
    seen, quoted, lock = [], set(), threading.Lock()

    class Handler(server._httpd.RequestHandlerClass):
        def _serve(self, body: dict, fault: str) -> None:
            auth, kind = self.headers.get("Authorization", ""), prompt_kind(body)
            with lock:
                seen.append(auth)
                first = kind not in quoted
                quoted.add(kind)
            if first and kind in ("explainer", "judge"):
                status = 401 if kind == "explainer" else 500  # not retried; retried once (and logged)
                message = f"Incorrect API key provided: {auth.removeprefix('Bearer ')}"
                error = {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}
                return self._send(status, json.dumps({"error": error}).encode())  # OpenAI's 401 body
            return super()._serve(body, fault)

    server._httpd.RequestHandlerClass = Handler
    return seen


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A complete fake-API run and its report, with a fresh sentinel key in OPENAI_API_KEY."""
    work = copy_workflow(tmp_path_factory.mktemp("secrets"))
    token = secrets.token_hex(16)
    key = f"sk-SENTINEL-{token}"
    env = os.environ | {"OPENAI_API_KEY": key}
    with FaultServer() as server:
        headers = quote_key_back(server)
        (work / "config/config.yaml").write_text(yaml.safe_dump(fake_api_config(server.url)))
        outputs = []
        for args in ([], ["--report", "results/report.html"]):
            cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
            result = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
            assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
            outputs.append(result.stdout + result.stderr)
        return work, key, token, headers, len(server.requests), "\n".join(outputs)


def test_the_key_reaches_the_server(finished):
    _, key, _, headers, n_requests, _ = finished
    assert n_requests > 0 and len(headers) == n_requests
    assert set(headers) == {f"Bearer {key}"}


def test_no_file_holds_the_key(finished):
    work, _, token, _, _, terminal = finished
    files = [p for p in work.rglob("*") if p.is_file()]
    assert (work / "results/report.html").is_file() and any("llm-cache" in p.parts for p in files)
    assert any(p.suffix == ".log" and ".snakemake" in p.parts for p in files)  # snakemake's own run logs
    # the random part alone: a key masked in the middle or cut short would still be found
    leaked = [str(p.relative_to(work)) for p in files if token.encode() in p.read_bytes()]
    assert not leaked, f"the API key is in {leaked}"
    assert token not in terminal


def test_quoted_keys_were_scrubbed_where_they_were_recorded(finished):
    """The server's error messages (which quoted the key) did reach the tables and logs, scrubbed."""
    work = finished[0]
    explanations = pd.concat(pd.read_parquet(p) for p in (work / "results").rglob("explanations-*.parquet"))
    refused = explanations[explanations["status"] == "llm_error"]
    assert len(refused) == 1 and "Incorrect API key provided: ***" in refused["error"].iloc[0]
    logs = "".join(p.read_text(errors="replace") for p in (work / "logs").rglob("*.log"))
    assert logs.count("Incorrect API key provided: ***") >= 2  # the 401, and the 500 before its retry
