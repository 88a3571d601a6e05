"""The litellm provider `local/<name>`: serves LocalChatModels to litellm in-process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from interpflow.llm.local_model import Generation, LocalChatModel, PromptTooLongError, SlotScores

log = logging.getLogger(__name__)

PROVIDER = "local"


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
