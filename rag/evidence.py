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
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from rag.asked import asked
from rag.relevance import coverage
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
    sentences: list[str] = field(default_factory=list)  # the quoted sentences, in the abstract's order
    url: str | None = None
    abstract: str = ""  # the whole abstract: what a claim citing this source is checked against
    authors: tuple[str, ...] = ()
    year: int | None = None
    positions: list[int] = field(default_factory=list)  # where each quoted sentence sits among the abstract's
    best: str = ""  # the sentence closest to the question
    venue: str | None = None
    doi: str | None = None
    kind: str | None = None  # BibTeX entry type, when the paper came from a reference manager

    @property
    def quote(self) -> str:
        """The quoted sentences as a reader checks them: in the abstract's order, with "…" where sentences are skipped
        (when their places are known)."""
        parts: list[str] = []
        for i, sentence in enumerate(self.sentences):
            if i and self.positions and self.positions[i] != self.positions[i - 1] + 1:
                parts.append("…")
            parts.append(sentence)
        return " ".join(parts)

    @property
    def checkable_text(self) -> str:
        """Title and whole abstract: everything the paper says, so everything a citation of it may rest on."""
        return f"{self.title}. {self.abstract}"

    def as_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass
class Evidence:
    question: str
    sources: list[Source]  # admitted papers, numbered from 1
    nearest: list[Source]  # when nothing is admitted: the closest papers, shown as "closest, not answering"
    others: list[Source] = field(default_factory=list)  # retrieved, not admitted: shown apart, never cited
    unknown_words: list[str] = field(default_factory=list)  # question words no paper uses (a lacking topic, a typo)
    not_stated: str | None = None  # the asked-for fact that the on-topic papers (``nearest``) do not state
    notice: str | None = None  # retrieval could not rank as configured (a reranker server down): said with the answer
    lists_papers: bool = False  # the question asks which papers: the answer lists every source, one line each

    @property
    def refused(self) -> bool:
        return not self.sources

    @property
    def refusal(self) -> Literal["not_covered", "not_stated"] | None:
        """Why there is no answer: the corpus lacks the topic, or its papers on the topic lack the asked fact."""
        if self.sources:
            return None
        return "not_stated" if self.not_stated is not None else "not_covered"


# Sentences that address a model rather than state a finding: never evidence, never shown to the model.
INSTRUCTION_LIKE = re.compile(
    r"\b(ignore|disregard|forget)\b.{0,40}\b(instructions?|prompts?|rules|above|previous)\b"
    r"|\b(system prompt|you are now|reply only with|respond only with|as an ai)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Ranked:
    """One sentence of a candidate paper, scored against the question."""

    text: str
    cosine: float  # pooled cosine with the question: which sentences to quote
    position: int  # its place among the abstract's sentences: quotes are shown in the abstract's order
    coverage: float  # term coverage of the question by the title and this sentence: does it state the asked fact


@dataclass(frozen=True)
class Scored:
    hit: Hit
    relevance: float  # term coverage of the question by the title and every sentence (what the gate reads)
    ranked: list[Ranked]  # best cosine first
    abstract: str  # the whole abstract


def admit(
    candidates: Sequence[tuple[float, float]], config: AnswerSettings, limit: int | None = None, topic: bool = False
) -> list[int]:
    """The gate: the positions of the candidates admitted as sources, in the order given, at most ``limit``
    (``max_sources`` by default).

    Each candidate is (relevance, fused retrieval score). Nothing is admitted unless the best relevance clears
    ``gate_threshold``; then a candidate within ``gate_margin`` of the best is admitted when its retrieval score is
    within ``gate_min_retrieval`` of the top one or its relevance alone is a strong match. A "which papers" question
    (``topic``) wants every paper on its topic, not the one that answers best: its margin and retrieval ratio are
    ``gate_topic_margin`` and ``gate_topic_min_retrieval``. One function, so that ``eval/calibrate_gate.py`` and
    ``eval/calibrate_topics.py`` tune exactly the gate that answers use.
    """
    best = max((relevance for relevance, _ in candidates), default=0.0)
    if best < config.gate_threshold:
        return []
    top = max(score for _, score in candidates)
    floor = best - (config.gate_topic_margin if topic else config.gate_margin)
    ratio = config.gate_topic_min_retrieval if topic else config.gate_min_retrieval
    admitted = [
        i
        for i, (relevance, score) in enumerate(candidates)
        if relevance >= floor and (score >= ratio * top or relevance >= config.gate_strong_match)
    ]
    return admitted[: limit or config.max_sources]


def quote_within_budget(ranked_per_source: list[list[Ranked]], budget_tokens: int) -> list[list[Ranked]]:
    """The sentences to quote from each source, in the abstract's order: every source's best one, then the most
    relevant of the rest across all sources while they fit the token budget (prompt length sets the model's wait).

    Key facts often sit in a source's second or third best sentence, so a fixed count per source starves a
    one-paper answer and bloats a five-paper one; a shared budget spends the tokens where the cosines are.
    """
    chosen: list[list[Ranked]] = [[ranked[0]] if ranked else [] for ranked in ranked_per_source]
    used = sum(count_tokens(sentences[0].text) for sentences in chosen if sentences)
    rest = sorted(
        ((sentence, i) for i, ranked in enumerate(ranked_per_source) for sentence in ranked[1:]),
        key=lambda item: -item[0].cosine,
    )
    for sentence, i in rest:
        cost = count_tokens(sentence.text)
        if used + cost <= budget_tokens:
            chosen[i].append(sentence)
            used += cost
    return [sorted(sentences, key=lambda sentence: sentence.position) for sentences in chosen]


def sentences_of(text: str) -> list[str]:
    """The abstract's sentences that can serve as evidence (instructions planted in an abstract are dropped)."""
    return [
        sentence for sentence in split_sentences(text) if len(sentence) > 15 and not INSTRUCTION_LIKE.search(sentence)
    ]


_NUMBER = re.compile(r"\d")
_NAME = re.compile(r"(?<=\s)[A-Za-z]*[A-Z0-9][\w.-]*")  # a token with capitals or digits, not the first word


def states_a(kind: str, sentence: str) -> bool:
    """Whether a sentence can supply the kind of fact asked for: a number for a quantity, a name for a name."""
    return bool((_NUMBER if kind == "quantity" else _NAME).search(sentence))


class EvidenceFinder:
    """Retrieval, then the relevance gate, then sentence selection, all with models loaded once."""

    def __init__(self, settings: Settings, retriever: PaperRetriever | None = None) -> None:
        self.settings = settings
        self.retriever = retriever or PaperRetriever(settings)
        # The gate is calibrated on the bundled embedder's token vectors; a remote embedder has other scales.
        self.gate_embedder = self.retriever.token_encoder
        self.term_weights = self.retriever.term_weights
        from rag.support import SupportChecker  # it reads Source: imported here, not at the top

        self.support = SupportChecker(self.gate_embedder, self.term_weights, settings.answer.support_threshold)

    def score(self, question: str, hits: list[Hit]) -> list[Scored]:
        """Each hit with its relevance (term coverage of the question by its title and sentences) and its sentences
        ranked by cosine with the question, best first; one forward pass serves both."""
        abstracts = self.retriever.full_texts(hits)
        per_paper = [sentences_of(abstracts[hit.paper_id]) or [abstracts[hit.paper_id]] for hit in hits]
        flat = [text for hit, sentences in zip(hits, per_paper, strict=True) for text in (hit.title, *sentences)]
        vectors, tokens = self.gate_embedder.encode_with_tokens([question, *flat])
        similarities = vectors[1:] @ vectors[0]
        weights = self.term_weights.per_token(tokens[0])
        scored, start = [], 0
        for hit, sentences in zip(hits, per_paper, strict=True):
            end = start + 1 + len(sentences)
            title, own = tokens[1 + start], tokens[2 + start : 1 + end]
            sims = similarities[start + 1 : end]
            ranked = [
                Ranked(sentences[i], float(sims[i]), int(i), coverage(tokens[0], weights, [title, own[i]]))
                for i in np.argsort(-sims)
            ]
            relevance = coverage(tokens[0], weights, tokens[1 + start : 1 + end])
            scored.append(Scored(hit, relevance, ranked, abstracts[hit.paper_id]))
            start = end
        return scored

    def states_asked_fact(self, kind: str, admitted: list[Scored]) -> bool:
        """Whether some admitted sentence can supply the number or name asked for: it carries one, and with its
        paper's title it covers the question (``answer.stated_threshold``, calibrated on the dev set's fact and
        near-miss questions)."""
        threshold = self.settings.answer.stated_threshold
        return any(
            states_a(kind, sentence.text) and sentence.coverage >= threshold
            for item in admitted
            for sentence in item.ranked
        )

    def find(self, question: str, filters: Filters | None = None, candidates: int | None = None) -> Evidence:
        """The evidence for a question; ``candidates`` overrides how many papers retrieval hands the gate.

        A question asking for papers lists every paper that passes the gate: while papers near the end of the
        candidate pool still pass, the pool grows by another ``answer.candidates``, up to ``answer.max_topic_sources``
        admitted. A question asking for a number or a name that no admitted sentence supplies is answered "not
        stated", naming the papers on its topic.
        """
        config = self.settings.answer
        wanted = asked(question)
        step = candidates or config.candidates
        limit = config.max_topic_sources if wanted.kind == "papers" else config.max_sources
        pool, scored = step, []
        known: dict[str, Scored] = {}  # paper id → its scores, kept while the pool grows
        while True:
            ranking = self.retriever.rank(question, pool, "rerank", filters)
            hits = ranking.hits
            fresh = [hit for hit in hits if hit.paper_id not in known]
            known |= {item.hit.paper_id: item for item in self.score(question, fresh)} if fresh else {}
            scored = [replace(known[hit.paper_id], hit=hit) for hit in hits]  # in retrieval order, today's scores
            chosen = admit(
                [(item.relevance, item.hit.score) for item in scored], config, limit, wanted.kind == "papers"
            )
            if not (
                wanted.kind == "papers"
                and len(hits) == pool
                and len(chosen) < limit
                and chosen
                and chosen[-1] >= pool - step // 2
            ):
                break
            pool += step
        admitted = [scored[i] for i in chosen]

        def source(n: int, item: Scored, quoted: list[Ranked]) -> Source:
            meta = item.hit.metadata
            authors = tuple(a for a in str(meta.get("authors", "")).split("; ") if a)
            year = int(meta["year"]) if "year" in meta else None
            return Source(
                n, item.hit.paper_id, item.hit.title, round(item.relevance, 4), [r.text for r in quoted],
                meta.get("url"), item.abstract, authors, year, [r.position for r in quoted], item.ranked[0].text,
                venue=meta.get("venue"), doi=meta.get("doi"), kind=meta.get("kind"),
            )  # fmt: skip

        if admitted and wanted.wants_fact and not self.states_asked_fact(wanted.kind, admitted):
            on_topic = [source(n, item, item.ranked[:1]) for n, item in enumerate(admitted[: config.nearest_papers], 1)]
            return Evidence(
                question, [], on_topic, not_stated=wanted.phrase or "figure asked for", notice=ranking.notice
            )
        if admitted:
            quoted = quote_within_budget([item.ranked for item in admitted], config.evidence_tokens)
            sources = [source(n, *pair) for n, pair in enumerate(zip(admitted, quoted, strict=True), 1)]
            others = [source(0, item, item.ranked[:1]) for i, item in enumerate(scored) if i not in chosen]
            return Evidence(question, sources, [], others, lists_papers=wanted.kind == "papers", notice=ranking.notice)
        nearest = sorted(scored, key=lambda item: item.relevance, reverse=True)[: config.nearest_papers]
        closest = [source(n, item, item.ranked[:1]) for n, item in enumerate(nearest, 1)]
        unknown = self.term_weights.unknown_words(question)
        return Evidence(question, [], closest, unknown_words=unknown, notice=ranking.notice)
