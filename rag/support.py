"""Claim-level support: does the source a sentence cites say what the sentence says?

A valid ``[n]`` proves only that source n exists. A small model writes a perplexity, a parameter count or another
system's name under it, so every sentence it writes is checked against the whole title and abstract of the sources
it cites, in two ways:

- **Terms.** Every number (with its unit or %) and every name (a token with capitals or digits: GPT-4, H100,
  WikiText-103) must occur in a cited source (``rag.terms``, which the gate's "is the asked fact stated" shares).
- **Content.** The sentence's content words must be covered by the sources: IDF-weighted token matching of the claim
  against the title and every abstract sentence (``rag.relevance.coverage`` with the claim in the question's role:
  BERTScore precision of the claim against the source). A faithful paraphrase scores high; a sentence about another
  paper's method scores low even when it shares the topic's words.

A sentence its cited sources fail is re-attributed to the one source that passes with the best coverage, or left
with no citation. ``answer.support_threshold`` is the coverage bar, measured by ``eval/measure_support.py``
(eval/results/support.md).
"""

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from rag.embedding import LocalMiniLMEmbedding, TokenStates
from rag.papers import Source, evidence_sentences, pieces
from rag.relevance import TermWeights, coverage
from rag.terms import missing_terms
from rag.text import strip_citations


@dataclass(frozen=True)
class Support:
    """The verdict on one sentence: the sources that support it (none: unsupported), the terms the sources it was
    checked against lack, and how much of its content they cover."""

    cited: tuple[int, ...]
    missing: tuple[str, ...]
    coverage: float

    @property
    def supported(self) -> bool:
        return bool(self.cited)


class SupportChecker:
    """Checks sentences against sources, with each source's token states kept for the next sentence (an answer's
    sentences cite the same few sources): one forward pass per sentence, a second only to re-attribute one."""

    CACHED_SOURCES = 64

    def __init__(self, embedder: LocalMiniLMEmbedding, term_weights: TermWeights, threshold: float) -> None:
        self.embedder = embedder
        self.term_weights = term_weights
        self.threshold = threshold
        self._states: OrderedDict[str, list[TokenStates]] = OrderedDict()

    def check(self, sentence: str, cited: Sequence[int], sources: Sequence[Source]) -> Support:
        """Whether the cited sources (jointly) support the sentence; if not, the single source that does, best
        coverage first; if none does, no citation. An uncited sentence is checked against every source."""
        claim = strip_citations(sentence)
        by_n = {source.n: source for source in sources}
        cited = tuple(n for n in dict.fromkeys(cited) if n in by_n)
        given_sources = [by_n[n] for n in cited]
        others = [source for source in sources if source.n not in cited]
        (claim_states,) = self._encode([claim], given_sources or others)
        weights = self.term_weights.per_token(claim_states)

        def judge(chosen: Sequence[Source]) -> Support:
            missing = missing_terms(claim, [source.checkable_text for source in chosen])
            pieces = [piece for source in chosen for piece in self._states[source.checkable_text]]
            return Support(tuple(s.n for s in chosen), tuple(missing), coverage(claim_states, weights, pieces))

        def passes(support: Support) -> bool:
            return not support.missing and support.coverage >= self.threshold

        if given_sources:
            given = judge(given_sources)
            if passes(given):
                return given
            self._encode([], others)
        verdicts = [judge([source]) for source in others]
        if passing := [support for support in verdicts if passes(support)]:
            return max(passing, key=lambda support: support.coverage)
        if given_sources:
            return Support((), given.missing, given.coverage)
        best = max((support.coverage for support in verdicts), default=0.0)
        return Support((), tuple(missing_terms(claim, [source.checkable_text for source in sources])), best)

    def remember(self, source: Source, states: list[TokenStates]) -> None:
        """Keep a source's token states (title, then each of its :func:`pieces`) that the gate computed."""
        self._states[source.checkable_text] = states
        self._states.move_to_end(source.checkable_text)
        self._forget_beyond(self.CACHED_SOURCES)

    def _encode(self, texts: list[str], sources: Sequence[Source]) -> list[TokenStates]:
        """The texts' token states, and the sources' kept for judging (:func:`pieces`); one forward
        pass for the texts and the sources not kept yet."""
        needed = list(dict.fromkeys(source.checkable_text for source in sources))
        fresh = {source.checkable_text: source for source in sources if source.checkable_text not in self._states}
        groups = [pieces(source.title, evidence_sentences(source.paper)) for source in fresh.values()]
        flat = [*texts, *(piece for group in groups for piece in group)]
        states = self.embedder.encode_with_tokens(flat)[1] if flat else []
        start = len(texts)
        for text, group in zip(fresh, groups, strict=True):
            self._states[text] = states[start : start + len(group)]
            start += len(group)
        for text in needed:
            self._states.move_to_end(text)
        self._forget_beyond(max(self.CACHED_SOURCES, len(needed)))
        return states[: len(texts)]

    def _forget_beyond(self, kept: int) -> None:
        while len(self._states) > kept:
            self._states.popitem(last=False)
