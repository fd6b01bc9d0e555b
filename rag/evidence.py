"""Evidence first: which retrieved papers answer the question, and the abstract sentences that bear on it.

Retrieval ranks papers; it cannot say whether any of them answers. The gate here decides, with thresholds calibrated
on the dev set by ``eval/calibrate_gate.py``. A paper's relevance is how much of the question it covers, term by term
(``rag.relevance``). The question is answerable when some candidate's relevance clears ``gate_threshold``; then the
papers admitted are those within ``gate_margin`` of the best whose fused retrieval score is within
``gate_min_retrieval`` of the top one — or whose relevance alone is a strong match (``gate_strong_match``). Nothing
admitted means the corpus does not cover the question. The sentences quoted are each paper's closest to the question
by cosine.
"""

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rag.embedding import LocalMiniLMEmbedding, local_embedder
from rag.relevance import TermWeights, coverage
from rag.retrieve import Filters, Hit, PaperRetriever
from rag.settings import AnswerSettings, Settings
from rag.text import count_tokens, split_sentences


@dataclass
class Source:
    """A numbered source: what the answer may cite as [n]."""

    n: int
    paper_id: str
    title: str
    score: float  # relevance: how much of the question the paper covers (rag.relevance)
    sentences: list[str] = field(default_factory=list)
    url: str | None = None
    abstract: str = ""  # the whole text, for a reader who wants to check the quote in context

    def as_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass
class Evidence:
    question: str
    sources: list[Source]  # admitted papers, numbered from 1
    nearest: list[Source]  # when nothing is admitted: the closest papers, shown as "closest, not answering"
    others: list[Source] = field(default_factory=list)  # retrieved, not admitted: shown apart, never cited
    unknown_words: list[str] = field(default_factory=list)  # question words no paper uses (a lacking topic, a typo)

    @property
    def refused(self) -> bool:
        return not self.sources


# Sentences that address a model rather than state a finding: never evidence, never shown to the model.
INSTRUCTION_LIKE = re.compile(
    r"\b(ignore|disregard|forget)\b.{0,40}\b(instructions?|prompts?|rules|above|previous)\b"
    r"|\b(system prompt|you are now|reply only with|respond only with|as an ai)\b",
    re.IGNORECASE,
)


Scored = tuple[Hit, float, list[tuple[str, float]]]  # a hit, its relevance, its sentences with cosines


def admit(candidates: Sequence[tuple[float, float]], config: AnswerSettings) -> list[int]:
    """The gate: the positions of the candidates admitted as sources, in the order given, at most ``max_sources``.

    Each candidate is (relevance, fused retrieval score). Nothing is admitted unless the best relevance clears
    ``gate_threshold``; then a candidate within ``gate_margin`` of the best is admitted when its retrieval score is
    within ``gate_min_retrieval`` of the top one or its relevance alone is a strong match. One function, so that
    ``eval/calibrate_gate.py`` tunes exactly the gate that answers use.
    """
    best = max((relevance for relevance, _ in candidates), default=0.0)
    if best < config.gate_threshold:
        return []
    top = max(score for _, score in candidates)
    admitted = [
        i
        for i, (relevance, score) in enumerate(candidates)
        if relevance >= best - config.gate_margin
        and (score >= config.gate_min_retrieval * top or relevance >= config.gate_strong_match)
    ]
    return admitted[: config.max_sources]


def quote_within_budget(ranked_per_source: list[list[tuple[str, float]]], budget_tokens: int) -> list[list[str]]:
    """The sentences to quote from each source: every source's best one, then the most relevant of the rest
    across all sources while they fit the token budget (prompt length sets the model's wait).

    Key facts often sit in a source's second or third best sentence, so a fixed count per source starves a
    one-paper answer and bloats a five-paper one; a shared budget spends the tokens where the cosines are.
    """
    chosen: list[list[str]] = [[ranked[0][0]] if ranked else [] for ranked in ranked_per_source]
    used = sum(count_tokens(sentences[0]) for sentences in chosen if sentences)
    rest = sorted(
        ((cosine, i, sentence) for i, ranked in enumerate(ranked_per_source) for sentence, cosine in ranked[1:]),
        key=lambda item: -item[0],
    )
    for _, i, sentence in rest:
        cost = count_tokens(sentence)
        if used + cost <= budget_tokens:
            chosen[i].append(sentence)
            used += cost
    return chosen


def sentences_of(text: str) -> list[str]:
    """The abstract's sentences that can serve as evidence (instructions planted in an abstract are dropped)."""
    return [
        sentence for sentence in split_sentences(text) if len(sentence) > 15 and not INSTRUCTION_LIKE.search(sentence)
    ]


class EvidenceFinder:
    """Retrieval, then the relevance gate, then sentence selection, all with models loaded once."""

    def __init__(self, settings: Settings, retriever: PaperRetriever | None = None) -> None:
        self.settings = settings
        self.retriever = retriever or PaperRetriever(settings)
        embedder = self.retriever.embedder
        # The gate is calibrated on the bundled embedder's token vectors; a remote embedder has other scales.
        self.gate_embedder = embedder if isinstance(embedder, LocalMiniLMEmbedding) else local_embedder(settings)
        self.term_weights = TermWeights(self.retriever.keywords)

    def score(self, question: str, hits: list[Hit]) -> list[Scored]:
        """Each hit with its relevance (term coverage of the question by its title and sentences) and its sentences
        ranked by cosine with the question, best first; one forward pass serves both."""
        per_paper = [sentences_of(hit.text) or [hit.text] for hit in hits]
        flat = [text for hit, sentences in zip(hits, per_paper, strict=True) for text in (hit.title, *sentences)]
        vectors, tokens = self.gate_embedder.encode_with_tokens([question, *flat])
        similarities = vectors[1:] @ vectors[0]
        weights = self.term_weights.per_token(tokens[0])
        scored, start = [], 0
        for hit, sentences in zip(hits, per_paper, strict=True):
            end = start + 1 + len(sentences)
            sims = similarities[start + 1 : end]
            order = np.argsort(-sims)
            ranked = [(sentences[i], float(sims[i])) for i in order]
            scored.append((hit, coverage(tokens[0], weights, tokens[1 + start : 1 + end]), ranked))
            start = end
        return scored

    def supporting_source(self, sentence: str, evidence: Evidence) -> int | None:
        """The source whose title or quoted sentences best match a claim, if the match is close enough."""
        texts = [(source.n, text) for source in evidence.sources for text in (source.title, *source.sentences)]
        if not texts:
            return None
        vectors = self.gate_embedder.encode([sentence, *(text for _, text in texts)])
        similarities = vectors[1:] @ vectors[0]
        best = int(np.argmax(similarities))
        return texts[best][0] if similarities[best] >= self.settings.answer.support_threshold else None

    def find(self, question: str, filters: Filters | None = None, candidates: int | None = None) -> Evidence:
        """The evidence for a question; ``candidates`` overrides how many papers retrieval hands the gate."""
        config = self.settings.answer
        hits = self.retriever.search(question, candidates or config.candidates, "hybrid", filters)
        scored = self.score(question, hits)  # in retrieval order
        chosen = admit([(relevance, hit.score) for hit, relevance, _ in scored], config)
        admitted = [scored[i] for i in chosen]

        def source(n: int, item: Scored, sentences: list[str]) -> Source:
            hit, similarity, _ = item
            url = hit.metadata.get("url")
            return Source(n, hit.paper_id, hit.title, round(similarity, 4), sentences, url, hit.text)

        if admitted:
            quoted = quote_within_budget([ranked for _, _, ranked in admitted], config.evidence_tokens)
            sources = [source(n, *pair) for n, pair in enumerate(zip(admitted, quoted, strict=True), 1)]
            others = [source(0, item, [item[2][0][0]]) for i, item in enumerate(scored) if i not in chosen]
            return Evidence(question, sources, [], others)
        nearest = sorted(scored, key=lambda item: item[1], reverse=True)[: config.nearest_papers]
        closest = [source(n, item, [item[2][0][0]]) for n, item in enumerate(nearest, 1)]
        return Evidence(question, [], closest, unknown_words=self.term_weights.unknown_words(question))
