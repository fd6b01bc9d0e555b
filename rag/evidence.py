"""Evidence first: which retrieved papers answer the question, and the abstract sentences that bear on it.

Retrieval ranks papers; it cannot say whether any of them answers. The gate here decides, with thresholds calibrated
on the dev set by ``eval/calibrate_gate.py``: the question is answerable when some candidate's best cosine (bundled
MiniLM, question vs title or an abstract sentence) clears ``gate_threshold``; then the papers admitted are those whose
cosine is within ``gate_margin`` of the best and whose fused retrieval score is within ``gate_min_retrieval`` of the
top one — or whose cosine alone is a strong match (``gate_strong_match``). Nothing admitted means the corpus does
not cover the question.
"""

import re
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

import numpy as np
from llama_index.core.node_parser.text.utils import split_by_sentence_tokenizer

from rag.models import LocalMiniLMEmbedding
from rag.retrieve import Filters, Hit, PaperRetriever
from rag.settings import Settings


@dataclass
class Source:
    """A numbered source: what the answer may cite as [n]."""

    n: int
    paper_id: str
    title: str
    score: float  # cosine of the question and the paper's best sentence
    sentences: list[str] = field(default_factory=list)
    url: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass
class Evidence:
    question: str
    sources: list[Source]  # admitted papers, numbered from 1
    nearest: list[Source]  # when nothing is admitted: the closest papers, shown as "closest, not answering"

    @property
    def refused(self) -> bool:
        return not self.sources


# Sentences that address a model rather than state a finding: never evidence, never shown to the model.
INSTRUCTION_LIKE = re.compile(
    r"\b(ignore|disregard|forget)\b.{0,40}\b(instructions?|prompts?|rules|above|previous)\b"
    r"|\b(system prompt|you are now|reply only with|respond only with|as an ai)\b",
    re.IGNORECASE,
)


@cache
def _sentence_splitter() -> Any:
    return split_by_sentence_tokenizer()  # NLTK punkt, bundled with llama-index-core


def sentences_of(text: str) -> list[str]:
    """The abstract's sentences that can serve as evidence (instructions planted in an abstract are dropped)."""
    sentences = (sentence.strip() for sentence in _sentence_splitter()(text))
    return [sentence for sentence in sentences if len(sentence) > 15 and not INSTRUCTION_LIKE.search(sentence)]


class EvidenceFinder:
    """Retrieval, then the relevance gate, then sentence selection, all with models loaded once."""

    def __init__(self, settings: Settings, retriever: PaperRetriever | None = None) -> None:
        self.settings = settings
        self.retriever = retriever or PaperRetriever(settings)
        embedder = self.retriever.embedder
        # The gate is calibrated on the bundled embedder's cosines; a remote embedder has other scales.
        self.gate_embedder = embedder if isinstance(embedder, LocalMiniLMEmbedding) else LocalMiniLMEmbedding()

    def score(self, question: str, hits: list[Hit]) -> list[tuple[Hit, float, list[str]]]:
        """Each hit with its relevance and its sentences, most relevant first.

        Relevance is the best cosine over the title and every abstract sentence: a title often names the topic
        that no single sentence repeats. Only sentences are quoted as evidence.
        """
        per_paper = [sentences_of(hit.text) or [hit.text] for hit in hits]
        flat = [text for hit, sentences in zip(hits, per_paper, strict=True) for text in (hit.title, *sentences)]
        vectors = self.gate_embedder.encode([question, *flat])
        similarities = vectors[1:] @ vectors[0]
        scored, start = [], 0
        for hit, sentences in zip(hits, per_paper, strict=True):
            title_sim, sims = similarities[start], similarities[start + 1 : start + 1 + len(sentences)]
            start += 1 + len(sentences)
            order = np.argsort(-sims)
            scored.append((hit, float(max(title_sim, sims[order[0]])), [sentences[i] for i in order]))
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

    def find(self, question: str, filters: Filters | None = None) -> Evidence:
        config = self.settings.answer
        hits = self.retriever.search(question, config.candidates, "hybrid", filters)
        scored = self.score(question, hits)  # in retrieval order
        best = max((similarity for _, similarity, _ in scored), default=0.0)
        top_score = hits[0].score if hits else 0.0
        admitted = [
            item
            for item in scored
            if best >= config.gate_threshold
            and item[1] >= best - config.gate_margin
            and (item[0].score >= config.gate_min_retrieval * top_score or item[1] >= config.gate_strong_match)
        ][: config.max_sources]
        keep = config.sentences_per_source

        def source(n: int, item: tuple[Hit, float, list[str]]) -> Source:
            hit, similarity, sentences = item
            return Source(n, hit.paper_id, hit.title, round(similarity, 4), sentences[:keep], hit.metadata.get("url"))

        if admitted:
            return Evidence(question, [source(n, item) for n, item in enumerate(admitted, 1)], [])
        nearest = sorted(scored, key=lambda item: item[1], reverse=True)[:3]
        return Evidence(question, [], [source(n, item) for n, item in enumerate(nearest, 1)])
