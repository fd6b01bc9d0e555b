"""Offline research assistant over paper abstracts.

Importing the package first makes the process offline-safe (see :mod:`rag.offline`), so every entry point
— CLI, UI, tests — gets the same environment before tiktoken, huggingface or gradio are imported.
"""

from rag.offline import make_offline

make_offline()

__version__ = "0.1.0"
