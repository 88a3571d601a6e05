"""litellm, through which every LLM request goes: imported offline and quiet."""

from __future__ import annotations

import logging
import os


def _litellm():
    """Import litellm offline (its cost map otherwise comes from the internet) and quiet."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True  # it prints help banners to stdout on every error otherwise
    # its two INFO lines per request are kept out of the step's log unless the user asks for DEBUG
    root = logging.getLogger().getEffectiveLevel()
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(name).setLevel(root if root <= logging.DEBUG else max(logging.WARNING, root))
    return litellm
