"""Tests of the local llama.cpp provider with the real Qwen2.5-Coder-1.5B GGUF (slow)."""

from __future__ import annotations

import hashlib
import importlib
import math

import pytest

from interpflow.llm.client import LLMClient
from interpflow.llm.local_parts import LOCAL_MODELS, _parts, assemble_local_model

NAME = "qwen2.5-coder-1.5b-instruct"


@pytest.fixture(scope="session")
def client(qwen_gguf, tmp_path_factory):
    """A greedy local client with logprobs and a disk cache, loaded once."""
    cache = tmp_path_factory.mktemp("llm-cache")
    with LLMClient(
        f"local/{NAME}", local_gguf=qwen_gguf, cache_dir=cache, logprobs=True, top_logprobs=5,
        max_tokens=16, n_ctx=2048, n_threads=2,
    ) as c:  # fmt: skip
        yield c


def ask(text: str, system: str | None = None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]


def test_assemble_concatenates_in_order_and_checks(tmp_path, monkeypatch):
    chunks = [b"part-one|", b"part-two|", b"three"]
    for i, chunk in enumerate(chunks, 1):  # tiny stand-ins for the part wheels
        (tmp_path / f"fakepart{i}" / "data").mkdir(parents=True)
        (tmp_path / f"fakepart{i}" / "__init__.py").write_text("raise ImportError('never import me')")
        (tmp_path / f"fakepart{i}" / "data" / f"p{i}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    whole = b"".join(chunks)
    good = _parts("fakepart", "fake-part", 3, "1.0", hashlib.sha256(whole).hexdigest(), len(whole))
    monkeypatch.setitem(LOCAL_MODELS, "fake", good)
    out = assemble_local_model("fake", tmp_path / "out" / "fake.gguf")
    assert out.read_bytes() == whole
    monkeypatch.setitem(LOCAL_MODELS, "bad", _parts("fakepart", "fake-part", 3, "1.0", "0" * 64, None))
    with pytest.raises(ValueError, match="sha256"):
        assemble_local_model("bad", tmp_path / "out" / "bad.gguf")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["fake.gguf"]  # nothing half-written
    monkeypatch.setitem(LOCAL_MODELS, "gap", _parts("fakepart", "fake-part", 4, "1.0", "0" * 64, None))
    with pytest.raises(FileNotFoundError, match=r"pip install fake-part4==1\.0$"):
        assemble_local_model("gap", tmp_path / "out" / "gap.gguf")
    with pytest.raises(ValueError, match="unknown local model"):
        assemble_local_model("nope", tmp_path / "x.gguf")


@pytest.mark.slow
def test_greedy_answer_and_logprobs(client):
    [out] = client.complete_many([ask("What is 2+3? Answer with one digit.")])
    assert out.status == "ok" and "5" in out.text, out
    assert out.cost_usd == 0.0 and out.prompt_tokens > 10
    assert out.logprobs is not None and len(out.logprobs) == out.completion_tokens >= 1
    assert "".join(t.token for t in out.logprobs).strip() == out.text.strip()
    for tok in out.logprobs:
        assert tok.token in tok.top and tok.logprob <= 0
        assert math.isclose(tok.logprob, max(tok.top.values()), abs_tol=1e-9)  # greedy picks the argmax
        assert sum(math.exp(v) for v in tok.top.values()) <= 1 + 1e-9
    assert out.logprobs[0].top["5"] > math.log(0.5)


@pytest.mark.slow
def test_identical_call_is_cached(client):
    first = client.complete_many([ask("Name one primary colour. One word.")])[0]
    n = client.local_model.n_prompt_evaluated
    second = client.complete_many([ask("Name one primary colour. One word.")])[0]
    assert (first.cached, second.cached) == (False, True)
    assert (second.text, second.prompt_tokens, second.completion_tokens) == (
        first.text, first.prompt_tokens, first.completion_tokens,
    )  # fmt: skip
    assert client.local_model.n_prompt_evaluated == n


@pytest.mark.slow
def test_shared_prefix_is_not_evaluated_again(client):
    system = "You judge whether a text matches a description. " + " ".join(
        f"Rule {i}: read the whole text carefully before answering." for i in range(8)
    )
    a, b = (
        ask("Text: the cat sat. Does it mention an animal?", system),
        ask("Text: 2 + 2. Is it maths?", system),
    )
    model = client.local_model
    pa, pb = model.prompt_tokens(a), model.prompt_tokens(b)
    common = next(i for i, (x, y) in enumerate(zip(pa, pb, strict=False)) if x != y)
    assert common > 80
    n0 = model.n_prompt_evaluated
    client.complete_many([a])
    n1 = model.n_prompt_evaluated
    [out] = client.complete_many([b])
    n2 = model.n_prompt_evaluated
    assert n1 - n0 > common  # the system prompt was new
    assert n2 - n1 == len(pb) - common  # only the differing suffix was evaluated
    assert out.cached_tokens == common and out.prompt_tokens == len(pb)  # reported as a cached prefix


@pytest.mark.slow
def test_prompt_longer_than_context_is_an_error(client):
    [out] = client.complete_many([ask("word " * 3000)])
    assert out.status == "error" and "context window" in out.error and out.text is None


@pytest.mark.slow
def test_stop_string_and_seeded_sampling(client):
    model = client.local_model
    count = ask("Count from 1 to 9, separated by commas, nothing else.")
    greedy = model.chat(count, max_tokens=8)
    assert greedy.text.startswith("1,2,3") and greedy.finish_reason == "length"
    stopped = model.chat(count, max_tokens=8, stop=["3"])
    assert (stopped.text, stopped.finish_reason) == ("1,2,", "stop")
    poem = ask("Write one unusual word.")
    draws = [model.chat(poem, max_tokens=4, temperature=1.5, seed=s).text for s in (1, 1, 2, 3)]
    assert draws[0] == draws[1]  # same seed, same draw
    assert len(set(draws)) > 1
