"""Evidence first: which retrieved papers answer the question, and the abstract sentences that bear on it.

Retrieval ranks papers; the gate (``rag.gate``) decides which of them bear on the question, from the signals scored
here: each candidate's term coverage of the question by its title, its sentences and its whole abstract, its best
sentence's cosine, and its retrieval scores. A comparison's sides are retrieved as sub-queries too, so each side's
paper is a candidate. The sentences quoted are each admitted paper's closest to the question by cosine.
"""

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from rag import gate
from rag.embedding import TokenStates
from rag.gate import Intent, Signals
from rag.library import Collection
from rag.papers import Hit, Paper, Passage, Source, evidence_sentences, pieces
from rag.relevance import coverage
from rag.retrieve import Filters, PaperRetriever
from rag.settings import Settings
from rag.support import SupportChecker
from rag.text import count_tokens


@dataclass
class Evidence:
    question: str
    sources: list[Source]  # numbered from 1: the admitted papers, or with "not stated" the on-topic papers it names
    nearest: list[Source]  # with a refusal: the closest papers ("not covered") or the on-topic ones ("not stated")
    others: list[Source] = field(default_factory=list)  # retrieved, neither admitted nor related: never cited
    unknown_words: list[str] = field(default_factory=list)  # question words no paper uses (a lacking topic, a typo)
    not_stated: str | None = None  # the asked-for fact that the on-topic papers do not state
    notice: str | None = None  # retrieval could not rank as configured (a reranker server down): said with the answer
    lists_papers: bool = False  # the question asks which papers: the answer lists every source, one line each
    related: list[Source] = field(default_factory=list)  # a list question's further candidates: shown uncited
    weak: bool = False  # the one source is the closest paper, which may not answer the question
    collection: str | None = None  # where the sources are: the PDFs a source card links to are this collection's

    @property
    def refused(self) -> bool:
        return not self.sources or self.not_stated is not None

    @property
    def refusal(self) -> Literal["not_covered", "not_stated"] | None:
        """Why there is no answer: the corpus lacks the topic, or its papers on the topic lack the asked fact."""
        if not self.refused:
            return None
        return "not_stated" if self.not_stated is not None else "not_covered"


@dataclass(frozen=True)
class Ranked:
    """One sentence of a candidate paper, scored against the question."""

    sentence: Passage  # the sentence, with its page and section
    cosine: float  # pooled cosine with the question: which sentences to quote
    position: int  # its place among the paper's sentences: quotes are shown in the paper's order
    coverage: float  # term coverage of the question by the title and this sentence: does it state the asked fact


@dataclass(frozen=True)
class Scored:
    hit: Hit
    relevance: float  # term coverage of the question by the title and every sentence
    title: float  # term coverage of the question by the title alone
    ranked: list[Ranked]  # best cosine first
    paper: Paper  # with the passages read: the abstract and the body passages retrieval found
    states: list[TokenStates]  # token states of the title and each evidence sentence: the claim checker reuses them

    @property
    def signals(self) -> Signals:
        """What the gate's relevance model reads of this candidate."""
        hit = self.hit
        return Signals(
            hit.rank, hit.score, hit.score if hit.rerank_score is None else hit.rerank_score, self.relevance,
            self.title, max((r.coverage for r in self.ranked), default=0.0),
            max((r.cosine for r in self.ranked), default=0.0),
        )  # fmt: skip


def quote_within_budget(ranked_per_source: list[list[Ranked]], budget_tokens: int) -> list[list[Ranked]]:
    """The sentences to quote from each source, in the abstract's order: every source's best one, then the most
    relevant of the rest across all sources while they fit the token budget (prompt length sets the model's wait).

    Key facts often sit in a source's second or third best sentence, so a fixed count per source starves a
    one-paper answer and bloats a five-paper one; a shared budget spends the tokens where the cosines are.
    """
    chosen: list[list[Ranked]] = [[ranked[0]] if ranked else [] for ranked in ranked_per_source]
    used = sum(count_tokens(sentences[0].sentence.text) for sentences in chosen if sentences)
    rest = sorted(
        ((sentence, i) for i, ranked in enumerate(ranked_per_source) for sentence in ranked[1:]),
        key=lambda item: -item[0].cosine,
    )
    for sentence, i in rest:
        cost = count_tokens(sentence.sentence.text)
        if used + cost <= budget_tokens:
            chosen[i].append(sentence)
            used += cost
    return [sorted(sentences, key=lambda sentence: sentence.position) for sentences in chosen]


class EvidenceFinder:
    """Retrieval, then the gate, then sentence selection, on one loaded collection."""

    def __init__(self, settings: Settings, collection: Collection | None = None) -> None:
        self.settings = settings
        self.collection = collection or Collection.open(settings)
        self.retriever = PaperRetriever(settings, self.collection)
        # The gate is trained on the bundled embedder's token vectors; a remote embedder has other scales.
        self.gate_embedder = self.collection.token_encoder
        self.term_weights = self.collection.term_weights
        self.support = SupportChecker(self.gate_embedder, self.term_weights, settings.answer.support_threshold)

    @property
    def model(self) -> gate.RelevanceModel:
        """The bundled relevance model, read on first use (``eval/train_gate.py`` scores candidates without one)."""
        return gate.bundled_model()

    def score(self, question: str, hits: list[Hit]) -> list[Scored]:
        """Each hit with its term coverage of the question (by its title, by every sentence) and its sentences ranked
        by cosine with the question, best first; one forward pass serves all."""
        papers = self.collection.read(hits)
        per_paper = [evidence_sentences(papers[hit.paper_id]) for hit in hits]
        texts = [text for hit, sentences in zip(hits, per_paper, strict=True) for text in pieces(hit.title, sentences)]
        vectors, tokens = self.gate_embedder.encode_with_tokens([question, *texts])
        similarities = vectors[1:] @ vectors[0]
        weights = self.term_weights.per_token(tokens[0])
        scored, start = [], 1
        for hit, sentences in zip(hits, per_paper, strict=True):
            end = start + 1 + len(sentences)
            title, own = tokens[start], tokens[start + 1 : end]
            sims = similarities[start : end - 1]
            ranked = [
                Ranked(sentences[i], float(sims[i]), int(i), coverage(tokens[0], weights, [title, own[i]]))
                for i in np.argsort(-sims)
            ]
            relevance = coverage(tokens[0], weights, tokens[start:end])
            title_only = coverage(tokens[0], weights, [title])
            scored.append(Scored(hit, relevance, title_only, ranked, papers[hit.paper_id], tokens[start:end]))
            start = end
        return scored

    def candidates(
        self, question: str, wanted: Intent, pool: int, filters: Filters | None = None
    ) -> tuple[list[Scored], np.ndarray, str | None]:
        """The first ``pool`` papers retrieved for the question, scored, with the probability that each bears on it;
        for a list question the pool grows while its last papers still may (``gate_related``), up to
        ``max_topic_candidates``. A comparison's sides add their own best papers, each judged against its side."""
        config = self.settings.answer
        known: dict[str, Scored] = {}  # paper id → its scores, kept while the pool grows
        while True:
            ranking = self.retriever.rank(question, pool, "rerank", filters)
            hits = ranking.hits
            fresh = [hit for hit in hits if hit.paper_id not in known]
            known |= {item.hit.paper_id: item for item in self.score(question, fresh)} if fresh else {}
            scored = [replace(known[hit.paper_id], hit=hit) for hit in hits]  # in retrieval order, today's scores
            probabilities = self.model.probabilities(gate.features([item.signals for item in scored]))
            tail = probabilities[-max(1, len(hits) // 4) :]
            if not (
                wanted.wants_list
                and len(hits) == pool
                and pool < config.max_topic_candidates
                and len(tail)
                and tail.max() >= config.gate_related
            ):
                break
            pool = min(pool + config.candidates, config.max_topic_candidates)
        sides = []
        for side in wanted.sides:
            side_scored = self.score(side, self.retriever.rank(side, config.candidates, "rerank", filters).hits)
            side_p = self.model.probabilities(gate.features([item.signals for item in side_scored]))
            present = {item.hit.paper_id for item in scored}
            missed = [  # a side's papers the question's own ranking missed, scored against the question in one pass
                replace(item.hit, rank=len(scored) + n)
                for n, item in enumerate(
                    (item for item, p in zip(side_scored, side_p, strict=True)
                     if item.hit.paper_id not in present and p >= config.gate_related),
                    1,
                )
            ]  # fmt: skip
            scored += self.score(question, missed) if missed else []
            at = {item.hit.paper_id: i for i, item in enumerate(scored)}
            kept = [
                (at[item.hit.paper_id], p)
                for item, p in zip(side_scored, side_p, strict=True)
                if item.hit.paper_id in at
            ]
            sides.append(([i for i, _ in kept], np.array([p for _, p in kept])))
        if sides:
            main = self.model.probabilities(gate.features([item.signals for item in scored]))
            probabilities = gate.side_merged(main, sides)
        return scored, probabilities, ranking.notice

    def states_asked_fact(self, question: str, wanted: Intent, admitted: list[Scored]) -> bool:
        """Whether some admitted sentence states the number or name asked for (``gate.states_asked``) and, with its
        paper's title, covers the question (``answer.stated_threshold``, fitted by eval/train_gate.py)."""
        threshold = self.settings.answer.stated_threshold
        return any(
            sentence.coverage >= threshold and gate.states_asked(wanted, question, sentence.sentence.text)
            for item in admitted
            for sentence in item.ranked
        )

    def find(self, question: str, filters: Filters | None = None, candidates: int | None = None) -> Evidence:
        """The evidence for a question; ``candidates`` overrides how many papers retrieval hands the gate first.

        A list question ("which papers", a comparison) cites every paper the gate is confident of and lists the
        ones it may bear on as related, uncited. A question asking for a number or a name that no admitted sentence
        states is answered "not stated", citing the papers on its topic.
        """
        config = self.settings.answer
        wanted = gate.intent(question)
        pool = candidates or config.candidates
        scored, probabilities, notice = self.candidates(question, wanted, pool, filters)
        coverage = max((item.relevance for item in scored), default=0.0)
        decision = gate.decide(probabilities.tolist(), coverage, wanted, config)

        def source(n: int, i: int, quoted: list[Ranked] | None = None) -> Source:
            item = scored[i]
            quoted = item.ranked[:1] if quoted is None else quoted
            return Source(
                n, item.paper, round(float(probabilities[i]), 4), [r.sentence for r in quoted],
                [r.position for r in quoted], item.ranked[0].sentence.text,
            )  # fmt: skip

        if not decision.covered:
            nearest = sorted(range(len(scored)), key=lambda i: -probabilities[i])[: config.nearest_papers]
            unknown = self.term_weights.unknown_words(question)
            closest = [source(n, i) for n, i in enumerate(nearest, 1)]
            return Evidence(
                question, [], closest, unknown_words=unknown, notice=notice, collection=self.collection.name
            )
        admitted = [scored[i] for i in decision.cited]
        if wanted.wants_fact and not self.states_asked_fact(question, wanted, admitted):
            named = [source(n, i) for n, i in enumerate(decision.cited[: config.nearest_papers], 1)]
            phrase = wanted.phrase or "figure asked for"
            return Evidence(question, named, named, not_stated=phrase, notice=notice, collection=self.collection.name)
        quoted = quote_within_budget([item.ranked for item in admitted], config.evidence_tokens)
        sources = [source(n, i, q) for n, (i, q) in enumerate(zip(decision.cited, quoted, strict=True), 1)]
        for item, cited in zip(admitted, sources, strict=True):  # the claim checker need not encode them again
            self.support.remember(cited, item.states)
        related = [source(0, i) for i in decision.related]
        shown = set(decision.cited) | set(decision.related)
        others = [source(0, i) for i in range(len(scored)) if i not in shown]
        return Evidence(
            question, sources, [], others, lists_papers=wanted.kind == "papers", notice=notice, related=related,
            weak=decision.weak, collection=self.collection.name,
        )  # fmt: skip
