"""The `interpflow` command. `interpflow serve results/`: the latent browser of a finished run, with search by
meaning and by text and blinded human rating, offline (interpflow.browser.serve)."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interpflow", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a run's browser with search and rating")
    serve.add_argument("results", nargs="?", default="results", help="the run's results folder (results)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--device", default="auto", help="search by text runs on: auto, cpu, cuda")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched at view time
    logging.basicConfig(level=os.environ.get("INTERPFLOW_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    from interpflow.browser.serve import serve

    try:
        serve(args.results, args.host, args.port, args.device)
    except FileNotFoundError as exc:
        sys.exit(f"interpflow serve: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
