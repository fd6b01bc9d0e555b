"""How much of the question a paper covers, term by term: the signal the gate's relevance model leans on most.

A pooled sentence embedding blurs a question's aspects into one vector, so a paper on the broad topic that misses the
one term that matters ("protein", "NLP") scores as well as one that covers them all; on the dev set that cosine could
not tell unanswerable questions apart. Here every question token is matched to its closest token of the paper
(contextual MiniLM token vectors, cosine) and the matches are averaged with each wordpiece's IDF in the collection
(counted when the keyword index is built): rare pieces decide, stopwords count for nothing, and a piece the corpus
never uses weighs most. This is BERTScore recall with IDF weights (Zhang et al., ICLR 2020) on the bundled
embedder's token states — no extra model, no extra forward pass. The gate (rag/gate.py) reads it by title, by best
sentence and by whole abstract, beside the pooled cosine.
"""

import re

import numpy as np

from rag.embedding import TokenStates
from rag.keyword_index import KeywordIndex
from rag.text import STOPWORDS

_WORD = re.compile(r"(?u)\b\w\w+\b")  # how bm25s splits text into words


class TermWeights:
    """IDF of the question's wordpieces in one collection; pieces of stopwords and punctuation weigh nothing."""

    def __init__(self, keywords: KeywordIndex) -> None:
        documents = keywords.documents
        self._idf = np.log((documents + 1) / (keywords.piece_frequencies.astype(np.float64) + 1))
        self._stopwords = {word.lower() for word in STOPWORDS}
        self._vocabulary: dict[str, int] = keywords.retriever.bm25.vocab_dict
        self._stemmer = keywords.retriever.stemmer

    def unknown_words(self, question: str) -> list[str]:
        """The question's content words that no row of the collection uses (BM25's words, stemmed): the topic the
        corpus lacks, or a typo. A refusal names them, so a misspelling is easy to spot."""
        unknown = []
        for word in dict.fromkeys(_WORD.findall(question)):
            lower = word.lower()
            if lower in self._stopwords:
                continue
            if (self._stemmer.stemWord(lower) if self._stemmer is not None else lower) not in self._vocabulary:
                unknown.append(word)
        return unknown

    def per_token(self, question: TokenStates) -> np.ndarray:
        return np.array(
            [
                0.0 if not word.isalnum() or word.lower() in self._stopwords else float(self._idf[piece])
                for piece, word in zip(question.ids, question.words, strict=True)
            ],
            dtype=np.float32,
        )


def coverage(question: TokenStates, weights: np.ndarray, paper: list[TokenStates]) -> float:
    """IDF-weighted mean, over the question's tokens, of each one's best cosine with a token of the paper's texts."""
    total = float(weights.sum())
    tokens = [states.vectors for states in paper if len(states.ids)]
    if total <= 0 or not tokens:
        return 0.0
    best = (question.vectors @ np.concatenate(tokens).T).max(axis=1)
    return float(best @ weights / total)
