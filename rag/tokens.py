"""Token counting for budgets: tiktoken's cl100k_base, read from the cache that ships with llama-index (offline)."""

import tiktoken

_TOKENS = tiktoken.get_encoding("cl100k_base")


def count_tokens(text: str) -> int:
    return len(_TOKENS.encode(text))
