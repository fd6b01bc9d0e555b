"""Process-wide settings that stop the stack from reaching the network.

tiktoken downloads its BPE files on first use, huggingface_hub and gradio phone home, and Chroma and onnxruntime send
telemetry (onnxruntime's Linux wheel uploads usage events to a Microsoft collector from a background thread, and a
process waits for that upload when it exits: seconds, where DNS or the collector does not answer).
All of that is switched off here, once, before any of those libraries is imported.
"""

import os
from importlib.util import find_spec
from pathlib import Path


def _llama_index_tiktoken_cache() -> Path | None:
    """The tiktoken BPE files that llama-index-core ships (cl100k_base, o200k_base)."""
    spec = find_spec("llama_index.core")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "_static" / "tiktoken_cache"
    return folder if folder.is_dir() else None


def make_offline() -> None:
    """Set the environment so no library downloads or reports anything. Existing values win."""
    cache = _llama_index_tiktoken_cache()
    if cache is not None:
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(cache))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
