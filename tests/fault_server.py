"""An OpenAI-compatible chat-completions server for tests, with scripted faults and a concurrency cap.

Bound to 127.0.0.1 on a free port, served from a background thread. Use it as a context manager:

    with FaultServer() as server:
        client = LLMClient("openai/fake", api_base=server.url)
        server.inject("500", "429")            # the next two requests fail, in that order
        server.fail_when(contains("cat"), "500")  # every request mentioning "cat" fails, retries too

Faults: "500" (server error), "429" (rate limit with a Retry-After header of `retry_after_s`), "hang"
(answers only after `hang_s`, past a short client timeout), "drop" (closes the connection without a
response), "malformed" (a 200 whose body is not JSON), "empty" (a 200 with empty content), "wrong_length"
(a reply of the right form with the wrong count: one label or one value too many, an over-long explanation).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("500", "429", "hang", "drop", "malformed", "empty", "wrong_length")
Responder = Callable[[dict], str]
Predicate = Callable[[dict], bool]

# the fixed openings of interpflow's system prompts (prompts.py, simulation.py) tell the prompt kinds apart
_EXPLAINER = "You are analysing one latent"
_JUDGE = "You check explanations of latents"
_SIMULATOR = "You predict where a latent"
_TOKEN = re.compile(r"\d+|\s+|\w+|[^\w\s]")  # digits alone, so every label and value is its own token


def _digest(*parts: str) -> int:
    """A stable integer from text (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()[:8], "big")


def _messages(body: dict) -> tuple[str, str]:
    """(system text, last user text) of a chat request."""
    msgs = body.get("messages") or []
    system = next((str(m.get("content") or "") for m in msgs if m.get("role") == "system"), "")
    user = next((str(m.get("content") or "") for m in reversed(msgs) if m.get("role") == "user"), "")
    return system, user


def prompt_kind(body: dict) -> str:
    """The prompt kind ("explainer", "judge", "simulator" or "other"), from the system message."""
    system, _ = _messages(body)
    for kind, head in (("explainer", _EXPLAINER), ("judge", _JUDGE), ("simulator", _SIMULATOR)):
        if system.startswith(head):
            return kind
    return "other"


def judge_count(user: str) -> int:
    """How many labels a detection/fuzzing prompt asks for ("Give 5 labels")."""
    m = re.search(r"Give (\d+) labels?", user)
    return int(m.group(1)) if m else 1


def simulation_counts(user: str) -> list[int]:
    """Token counts of a simulation prompt's excerpts ("Excerpt 2 (7 tokens)")."""
    return [int(n) for n in re.findall(r"^Excerpt \d+ \((\d+) tokens?\)", user, re.M)]


def _explanation(user: str) -> str:
    """A plausible one-sentence explanation: the most frequent marked text of the excerpts."""
    marked = Counter(m.strip() for m in re.findall(r"<<(.*?)>>", user) if m.strip())
    word = marked.most_common(1)[0][0] if marked else "common words"
    return f'The token "{word}" and words that play the same role in the sentence.'


def default_responder(body: dict) -> str:
    """A deterministic, well-formed reply to any of interpflow's prompts (explainer, judge, simulator)."""
    kind, (_, user) = prompt_kind(body), _messages(body)
    if kind == "explainer":
        return f"Explanation: {_explanation(user)}"
    if kind == "judge":
        excerpts = re.findall(r"^\d+\. (.*)$", user, re.M)
        n = judge_count(user)
        excerpts = (excerpts + [""] * n)[:n]
        return "[" + ", ".join(str(_digest(user, str(k), e) % 2) for k, e in enumerate(excerpts)) + "]"
    if kind == "simulator":
        lines = []
        for k, n in enumerate(simulation_counts(user), start=1):
            vals = [_digest(user, str(k), str(i)) % 11 if _digest(str(k), str(i)) % 3 == 0 else 0
                    for i in range(1, n + 1)]  # fmt: skip
            lines.append(f"{k}: " + " ".join(f"{i}={v}" for i, v in enumerate(vals, start=1)))
        return "\n".join(lines)
    return "OK."


def wrong_length(body: dict, responder: Responder) -> str:
    """A reply of the right form but the wrong count: one label/value too many, or an over-long sentence."""
    kind, (_, user) = prompt_kind(body), _messages(body)
    if kind == "judge":
        return "[" + ", ".join(["1"] * (judge_count(user) + 1)) + "]"
    if kind == "simulator":
        return "\n".join(f"{k}: " + " ".join(f"{i}=0" for i in range(1, n + 2))
                         for k, n in enumerate(simulation_counts(user), start=1))  # fmt: skip
    return "Explanation: " + "a very long explanation " * 20


def contains(text: str) -> Predicate:
    """A predicate true for requests whose messages contain `text`."""
    return lambda body: any(text in str(m.get("content") or "") for m in body.get("messages") or [])


def _logprobs(text: str, top_n: int) -> dict:
    """OpenAI-style logprobs of `text`: one entry per token, digits' alternatives are the other digits."""
    entry = lambda tok, lp: {"token": tok, "logprob": lp, "bytes": list(tok.encode())}  # noqa: E731
    content = []
    for k, tok in enumerate(_TOKEN.findall(text)):
        if tok.isdigit():
            # a confident choice with a spread over the other small numbers: P(1) vs P(0) stays informative
            alts = [tok] + [str(v) for v in range(11) if str(v) != tok]
            lps = [-0.1 - 0.05 * (_digest(text, str(k)) % 10)] + [-2.5 - 0.3 * j for j in range(10)]
        else:
            alts, lps = [tok], [-0.01]
        top = [entry(a, lp) for a, lp in zip(alts, lps, strict=True)][:top_n]
        content.append(entry(tok, lps[0]) | {"top_logprobs": top})
    return {"content": content}


def chat_response(body: dict, text: str) -> dict:
    """An OpenAI chat.completion body holding `text`, with usage and (if asked) logprobs."""
    prompt_chars = sum(len(str(m.get("content") or "")) for m in body.get("messages") or [])
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    choice["logprobs"] = _logprobs(text, int(body.get("top_logprobs") or 0)) if body.get("logprobs") else None
    n_out = len(_TOKEN.findall(text))
    return {
        "id": f"chatcmpl-{_digest(text) % 10**12}", "object": "chat.completion", "created": int(time.time()),
        "model": str(body.get("model", "fake")), "choices": [choice],
        "usage": {"prompt_tokens": max(1, prompt_chars // 4), "completion_tokens": n_out,
                  "total_tokens": max(1, prompt_chars // 4) + n_out},
    }  # fmt: skip


class FaultServer:
    """An OpenAI-compatible chat server on 127.0.0.1 with injectable faults; a context manager."""

    def __init__(
        self,
        responder: Responder = default_responder,
        *,
        latency_s: float = 0.0,
        max_concurrency: int | None = None,
        faults: Iterable[str] | None = None,
        retry_after_s: float = 0.0,
        hang_s: float = 5.0,
    ):
        self.responder, self.latency_s = responder, latency_s
        self.retry_after_s, self.hang_s = retry_after_s, hang_s
        self.max_concurrency = max_concurrency
        self.requests: list[dict] = []  # bodies in arrival order (appended under the lock)
        self.served: list[str] = []  # per request: "ok" or the fault applied
        self.in_flight = self.peak_concurrency = 0
        self._lock = threading.Lock()
        self._queue: list[str] = []
        self._persistent: list[tuple[Predicate, str]] = []
        self._slots = threading.BoundedSemaphore(max_concurrency) if max_concurrency else None
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.inject(*(faults or ()))

    # ---- control ----
    def inject(self, *faults: str) -> None:
        """Queue faults for the next requests, one each, in order (persistent faults take precedence)."""
        for f in faults:
            if f not in FAULTS:
                raise ValueError(f"unknown fault {f!r}; expected one of {FAULTS}")
        with self._lock:
            self._queue.extend(faults)

    def fail_when(self, predicate: Predicate, fault: str) -> None:
        """Apply `fault` to every request (retries included) whose body satisfies `predicate`."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {FAULTS}")
        with self._lock:
            self._persistent.append((predicate, fault))

    def clear(self) -> None:
        """Drop queued and persistent faults (recorded requests stay)."""
        with self._lock:
            self._queue.clear()
            self._persistent.clear()

    def reset(self) -> None:
        """Forget recorded requests and the peak concurrency."""
        with self._lock:
            self.requests.clear()
            self.served.clear()
            self.peak_concurrency = self.in_flight

    def count(self, predicate: Predicate | None = None) -> int:
        """Requests received so far (those satisfying `predicate`, if given)."""
        with self._lock:
            return sum(1 for b in self.requests if predicate is None or predicate(b))

    @property
    def url(self) -> str:
        """The api_base to give a client: http://127.0.0.1:PORT/v1."""
        if self._httpd is None:
            raise RuntimeError("FaultServer is not running; use it as a context manager or call start()")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # ---- lifecycle ----
    def start(self) -> FaultServer:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        server = self

        class Handler(_Handler):
            owner = server

        self._closing.clear()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True  # a hanging handler must not block close()
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fault-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving; hanging handlers wake up and end."""
        self._closing.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- serving (called from handler threads) ----
    def _admit(self, body: dict) -> str:
        """Record a request and choose its fault ("ok" for none)."""
        with self._lock:
            self.requests.append(body)
            fault = next((f for p, f in self._persistent if p(body)), None)
            if fault is None and self._queue:
                fault = self._queue.pop(0)
            fault = fault or "ok"
            self.served.append(fault)
            return fault

    def _enter(self) -> None:
        """Wait for a processing slot and count the request as in flight."""
        if self._slots is not None:
            self._slots.acquire()
        with self._lock:
            self.in_flight += 1
            self.peak_concurrency = max(self.peak_concurrency, self.in_flight)

    def _leave(self) -> None:
        """Release the request's slot."""
        with self._lock:
            self.in_flight -= 1
        if self._slots is not None:
            self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    """Serves POST .../chat/completions for its owner FaultServer."""

    owner: FaultServer
    protocol_version = "HTTP/1.1"  # keep-alive, so clients reuse connections as with a real server

    def setup(self) -> None:
        """Send each write at once: Nagle's algorithm against delayed ACKs would add ~40 ms per reply."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        """Silence the per-request stderr log."""

    def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
        """Write one complete response; a client that gave up (hang) is not an error."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        """An OpenAI-style error body."""
        body = {"error": {"message": message, "type": "server_error" if status >= 500 else "rate_limit_error",
                          "code": str(status)}}  # fmt: skip
        self._send(status, json.dumps(body).encode(), headers)

    def do_GET(self) -> None:  # noqa: N802
        """Model listing, for clients that probe it."""
        self._send(200, json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]}).encode())

    def do_POST(self) -> None:  # noqa: N802
        """Answer a chat request, or apply its fault."""
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self.path.rstrip("/").endswith("chat/completions"):
            return self._error(404, f"no route {self.path}")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error(400, "request body is not JSON")
        srv = self.owner
        fault = srv._admit(body)
        srv._enter()
        try:
            if srv.latency_s:
                time.sleep(srv.latency_s)
            self._serve(body, fault)
        finally:
            srv._leave()

    def _serve(self, body: dict, fault: str) -> None:
        """Write the response that `fault` calls for."""
        srv = self.owner
        if fault == "500":
            return self._error(500, "injected server error")
        if fault == "429":
            return self._error(429, "injected rate limit", {"Retry-After": f"{srv.retry_after_s:g}"})
        if fault == "drop":
            self.close_connection = True  # no status line at all: the client sees a dropped connection
            return None
        if fault == "malformed":
            return self._send(200, b'{"id": "chatcmpl-broken", "choices": [')
        if fault == "hang":
            srv._closing.wait(srv.hang_s)
        text = {"empty": lambda: "", "wrong_length": lambda: wrong_length(body, srv.responder)}.get(
            fault, lambda: srv.responder(body)
        )()
        return self._send(200, json.dumps(chat_response(body, text)).encode())
