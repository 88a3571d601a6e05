"""The one LLM boundary: every LLM call of interpflow goes through litellm, cached and retried.

Modules, each importing only those above it:

- `types`: Completion and TokenLogprob, what a request gives back
- `backend`: litellm, imported offline and quiet
- `errors`: key-free error texts, Retry-After, which errors are retried
- `budget`: checking the budget setting, and the spend ledger processes share through a folder
- `cache`: the on-disk reply cache, one JSON file per request key
- `local_parts`: the local GGUF models shipped as PyPI part-packages, and assembling one
- `local_model`: LocalChatModel, a GGUF chat model run in-process by llama.cpp
- `local_provider`: the litellm provider `local/<name>` that serves LocalChatModels
- `client`: LLMClient (cache, retries, concurrency bound, budget; loads a local model on first use),
  check_credentials, raise_on_outage

This file imports nothing: a rule reruns when a file of its script's import closure changes (code_of),
so importing one submodule must not pull in the others.
"""
