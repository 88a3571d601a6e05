"""Tests of the LLM boundary with stub litellm providers (no real model, no network)."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from interpflow.llm.backend import _litellm
from interpflow.llm.client import MAX_EMPTY_RETRIES, LLMClient
from interpflow.llm.errors import _retry_after, is_retryable, scrub

litellm = _litellm()
from litellm.llms.custom_llm import CustomLLMError  # noqa: E402
from litellm.types.utils import ChoiceLogprobs, Choices, Message, PromptTokensDetailsWrapper, Usage  # noqa: E402

SENTINEL = "sk-sentinel-4f1c9b7e0a"
MODEL = "stub/echo"


class Stub(litellm.CustomLLM):
    """A provider that echoes the last message, fails on demand, and records what it saw."""

    def __init__(self, failures=(), delay=0.0, reply=None, logprobs=True):
        super().__init__()
        self.failures, self.delay, self.reply, self.logprobs = list(failures), delay, reply, logprobs
        self.calls, self.in_flight, self.max_in_flight, self.params = 0, 0, 0, []

    async def acompletion(self, *args, messages, optional_params, model_response, **kw):
        self.calls += 1
        self.params.append(dict(optional_params))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            content = messages[-1]["content"]
            await asyncio.sleep(self.delay(content) if callable(self.delay) else self.delay)
            if self.failures:
                raise self.failures.pop(0)
            text = f"echo: {content}" if self.reply is None else self.reply
            lp = None
            if optional_params.get("logprobs") and self.logprobs:
                top = [{"token": "echo", "logprob": -0.1}, {"token": "no", "logprob": -2.5}]
                lp = ChoiceLogprobs(content=[{"token": "echo", "logprob": -0.1, "top_logprobs": top}])
            msg = Message(content=text, role="assistant")
            model_response.choices = [Choices(finish_reason="stop", index=0, message=msg, logprobs=lp)]
            details = PromptTokensDetailsWrapper(cached_tokens=4)  # as OpenAI reports a cached prefix
            usage = Usage(
                prompt_tokens=7, completion_tokens=3, total_tokens=10, prompt_tokens_details=details
            )
            setattr(model_response, "usage", usage)  # noqa: B010
            return model_response
        finally:
            self.in_flight -= 1


@pytest.fixture
def stub(monkeypatch):
    """Register a fresh Stub as litellm provider `stub` for one test."""

    def make(**kw) -> Stub:
        s = Stub(**kw)
        monkeypatch.setattr(litellm, "custom_provider_map", [{"provider": "stub", "custom_handler": s}])
        return s

    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    return make


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def client(tmp_path=None, **kw) -> LLMClient:
    return LLMClient(MODEL, cache_dir=tmp_path, retry_base_s=0.001, **kw)


def test_cache_hit_skips_the_provider(stub, tmp_path):
    s = stub()
    c = client(tmp_path)
    first, second = c.complete_many([ask("hi")]), c.complete_many([ask("hi")])
    assert s.calls == 1
    assert (first[0].status, first[0].text, first[0].cached) == ("ok", "echo: hi", False)
    assert (second[0].text, second[0].cached) == ("echo: hi", True)
    assert (second[0].prompt_tokens, second[0].completion_tokens) == (7, 3)
    assert first[0].cached_tokens == second[0].cached_tokens == 4
    key = c.cache_key(ask("hi"))
    entry = json.loads((tmp_path / key[:2] / f"{key}.json").read_text())
    assert entry["text"] == "echo: hi" and entry["status"] == "ok"


def test_cache_key_depends_on_the_request(tmp_path):
    c = client(tmp_path)
    assert c.cache_key(ask("a")) == client(tmp_path).cache_key(ask("a"))
    assert c.cache_key(ask("a")) != c.cache_key(ask("b"))
    assert c.cache_key(ask("a")) != client(tmp_path, temperature=0.7).cache_key(ask("a"))
    assert c.cache_key(ask("a")) != client(tmp_path, logprobs=True).cache_key(ask("a"))
    assert c.cache_key(ask("a")) != client(tmp_path, max_tokens=5).cache_key(ask("a"))
    # where and how the model is reached does not change its answer (issue 15): the cache serves it
    moved = client(tmp_path, api_base="http://elsewhere:8000/v1", timeout_s=3, max_retries=0,
                   max_concurrency=9)  # fmt: skip
    assert moved.cache_key(ask("a")) == c.cache_key(ask("a"))


def test_corrupt_cache_entry_is_ignored_and_rewritten(stub, tmp_path):
    s = stub()
    c = client(tmp_path)
    key = c.cache_key(ask("hi"))
    path = tmp_path / key[:2] / f"{key}.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert c.complete_many([ask("hi")])[0].cached is False
    assert s.calls == 1 and json.loads(path.read_text())["text"] == "echo: hi"


def test_retries_transient_errors_then_succeeds(stub):
    s = stub(failures=[CustomLLMError(429, "slow down"), CustomLLMError(503, "overloaded")])
    [out] = client(max_retries=5).complete_many([ask("x")])
    assert s.calls == 3
    assert (out.status, out.text, out.error) == ("ok", "echo: x", "")


def test_retries_end_in_an_error_status(stub, tmp_path):
    s = stub(failures=[CustomLLMError(500, "boom")] * 4)
    [out] = client(tmp_path, max_retries=2).complete_many([ask("x")])
    assert s.calls == 3
    assert out.status == "error" and out.text is None and "boom" in out.error
    assert not list(tmp_path.rglob("*.json"))  # failures are not cached


def test_permanent_error_is_not_retried_and_hides_the_key(stub, tmp_path):
    s = stub(failures=[CustomLLMError(401, f"invalid key {os.environ['OPENAI_API_KEY']}")])
    [out] = client(tmp_path, max_retries=5).complete_many([ask("x")])
    assert s.calls == 1
    assert out.status == "error" and "AuthenticationError" in out.error and "invalid key" in out.error
    assert SENTINEL not in out.error
    [ok] = client(tmp_path).complete_many([ask("y")])
    assert ok.status == "ok"
    files = list(tmp_path.rglob("*.json"))
    assert len(files) == 1 and SENTINEL not in files[0].read_text()


def test_empty_reply_is_an_error(stub, tmp_path):
    s = stub(reply="  ")
    c = client(tmp_path)
    assert c.complete_many([ask("x")])[0].error == "empty reply"
    assert c.complete_many([ask("x")])[0].status == "error"
    assert s.calls == 2 * (1 + MAX_EMPTY_RETRIES)  # asked again a bounded number of times, never cached
    assert client(tmp_path, max_retries=0).complete_many([ask("z")])[0].error == "empty reply"
    assert s.calls == 2 * (1 + MAX_EMPTY_RETRIES) + 1  # max_retries bounds it too


def test_concurrency_is_bounded_and_order_kept(stub):
    s = stub(delay=lambda text: 0.002 * (20 - int(text)))  # later requests finish first
    out = client(max_concurrency=3).complete_many([ask(str(i)) for i in range(12)])
    assert [o.text for o in out] == [f"echo: {i}" for i in range(12)]
    assert s.max_in_flight == 3


def test_logprobs_are_parsed_and_include_the_chosen_token(stub):
    stub()
    [out] = client(logprobs=True, top_logprobs=2).complete_many([ask("x")])
    assert out.logprobs is not None and len(out.logprobs) == 1
    tok = out.logprobs[0]
    assert (tok.token, tok.logprob, tok.top) == ("echo", -0.1, {"echo": -0.1, "no": -2.5})


def test_logprobs_rejected_means_one_retry_without_them(stub):
    s = stub(failures=[CustomLLMError(400, "logprobs are not supported by this model")])
    [out] = client(logprobs=True).complete_many([ask("x")])
    assert s.calls == 2 and out.status == "ok" and out.logprobs is None
    assert s.params[0]["logprobs"] is True and "logprobs" not in s.params[1]


def test_litellm_mock_response_and_cost(tmp_path):
    c = LLMClient("gpt-4o-mini", cache_dir=tmp_path, extra={"mock_response": "yes"})
    first, second = c.complete_many([ask("x"), ask("x")])[0], c.complete_many([ask("x")])[0]
    assert (first.status, first.text) == ("ok", "yes")
    assert first.cost_usd is not None and first.cost_usd > 0
    assert second.cached and second.cost_usd == first.cost_usd


def test_retry_after_and_retryable_classes():
    rate = litellm.RateLimitError("slow", llm_provider="openai", model="m", headers={"retry-after": "2.5"})
    assert _retry_after(rate) == 2.5
    assert _retry_after(ValueError("x")) is None
    assert is_retryable(rate) and is_retryable(litellm.Timeout("t", model="m", llm_provider="openai"))
    assert not is_retryable(litellm.AuthenticationError("no", llm_provider="openai", model="m"))
    assert not is_retryable(litellm.BadRequestError("bad", model="m", llm_provider="openai"))


def test_scrub_hides_keys_and_tokens(monkeypatch):
    monkeypatch.setenv("SOME_API_KEY", "abcd1234")
    monkeypatch.setenv("HF_TOKEN", "hf_zzzz")
    assert scrub("keys abcd1234 and hf_zzzz") == "keys *** and ***"


def test_config_and_local_errors(tmp_path):
    with pytest.raises(ValueError, match="local_gguf"):
        LLMClient("local/qwen2.5-coder-1.5b-instruct")
    with pytest.raises(ValueError, match="unknown keys"):
        LLMClient.from_config({"model": MODEL, "temprature": 0.0})
    c = LLMClient.from_config({"model": MODEL, "max_tokens": 9}, cache_dir=tmp_path)
    assert (c.max_tokens, c.cache_dir) == (9, tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        LLMClient("local/none", local_gguf=tmp_path / "missing.gguf")
