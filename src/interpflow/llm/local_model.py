"""A local GGUF chat model run in-process by llama.cpp: generation and next-token logprobs at slots."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


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
