"""Text primitives with one implementation each: token counts, sentences, citation markers.

Token counts use tiktoken's cl100k_base, read from the cache that ships with llama-index (offline). Sentences come
from NLTK's punkt (bundled with llama-index-core), which knows abbreviations such as "e.g." and "i.i.d.".
"""

import re
from functools import cache
from typing import Any

import tiktoken
from bm25s.stopwords import STOPWORDS_EN
from llama_index.core.node_parser.text.utils import split_by_sentence_tokenizer_internal
from llama_index.core.utils import globals_helper

_TOKENS = tiktoken.get_encoding("cl100k_base")
# "[1]", "[1, 2]" or "[1; 2]": what a model writes; verified answers carry the normalised "[1][2]".
CITATION = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
# Words that every abstract and every "which papers …" question uses: as query terms they only add noise.
SCHOLARLY_STOPWORDS = (  # noqa: SIM905 - a word list reads best as words
    "paper papers work works study studies studied propose proposed proposes approach approaches method methods "
    "discuss discusses show shows present presents research researchers result results"
).split()
STOPWORDS = [*STOPWORDS_EN, *SCHOLARLY_STOPWORDS]  # BM25's, the gate's and the token vectors'


def count_tokens(text: str) -> int:
    return len(_TOKENS.encode(text))


def cited_numbers(text: str) -> list[int]:
    """Every source number cited in the text, in order of appearance, each once."""
    numbers = (int(n) for match in CITATION.finditer(text) for n in re.split(r"\s*[,;]\s*", match.group(1)))
    return list(dict.fromkeys(numbers))


def strip_citations(text: str) -> str:
    return " ".join(CITATION.sub("", text).split())


# Abbreviations of scientific prose that end in a period mid-sentence (punkt's English model lacks them).
ABBREVIATIONS = ("e.g", "i.e", "i.i.d", "al", "cf", "vs", "fig", "figs", "eq", "eqs", "approx", "resp", "etc", "w.r.t")


@cache
def _punkt() -> Any:
    tokenizer = globals_helper.punkt_tokenizer
    tokenizer._params.abbrev_types.update(ABBREVIATIONS)
    return tokenizer


def split_sentences(text: str) -> list[str]:
    """The text's sentences, stripped; empty ones dropped."""
    pieces = split_by_sentence_tokenizer_internal(text, _punkt())
    return [sentence.strip() for sentence in pieces if sentence.strip()]


# Sentences that address a model rather than state a finding: never evidence, never shown to the model.
INSTRUCTION_LIKE = re.compile(
    r"\b(ignore|disregard|forget)\b.{0,40}\b(instructions?|prompts?|rules|above|previous)\b"
    r"|\b(system prompt|you are now|reply only with|respond only with|as an ai)\b",
    re.IGNORECASE,
)


def join_chunks(chunks: list[str]) -> str:
    """Consecutive chunks joined into the text they were cut from (each may begin with the previous one's end)."""
    text = chunks[0] if chunks else ""
    for chunk in chunks[1:]:
        overlap = next((k for k in range(min(len(text), len(chunk)), 0, -1) if text.endswith(chunk[:k])), 0)
        text += (" " if not overlap else "") + chunk[overlap:]
    return text
