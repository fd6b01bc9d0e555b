"""The gate: what a question asks for, how much each retrieved paper bears on it, and whether the corpus answers it.

Retrieval ranks papers; it cannot say which of them a reader would call relevant, nor whether any is. Three decisions
live here, each from signals the pipeline already computes:

- **Intent**, from the question's wording: a list of papers, a number, a name or an explanation; and for a comparison
  its two sides, which are retrieved as sub-queries of their own.
- **Relevance**, learned: a logistic regression over a candidate's signals (term coverage of the question by its title,
  its best sentence and its whole abstract, the best sentence's cosine, the rerank and fused scores, its rank, its
  gaps to the best candidate and how far it stands out of the ranking's head) gives the probability that the paper
  bears on the question; the question's intent chooses the thresholds it is read against.
  It is trained by ``eval/train_gate.py`` on the dev set, SciFact's train split and PubMedQA's dev split (never on the
  held-out set), cross-validated by question, and shipped as a small JSON file (``rag/assets/gate.json``).
- **Admission and refusal**: papers above ``gate_cite`` are sources; on a "which papers" or comparison question the
  papers above ``gate_related`` are listed apart, uncited ("possibly related"); the corpus is said not to cover the
  question only when no candidate reaches ``gate_cover``; a best paper below ``gate_cite`` is answered from, marked as
  a weak match. A question asking for a number or a name is answered only when an admitted sentence states one
  *for the asked attribute* (its words around the number, or a name the question does not already hold).
"""

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np

from rag.settings import AnswerSettings
from rag.terms import name_keys, stated_numbers, unit_word
from rag.text import STOPWORDS

MODEL_FILE = Path(__file__).parent / "assets" / "gate.json"

Kind = Literal["papers", "quantity", "name", "explanation"]

_PAPERS = re.compile(
    r"^\s*(which|what|list|name|find|are there|is there|any)\b.{0,40}?\b"
    r"(papers?|works?(?! best)|studies|articles|publications|research)\b"
    r"|\bpapers? (on|about|that|which|discussing|studying|proposing)\b",
    re.IGNORECASE,
)
_QUANTITY = re.compile(
    r"\b(how (many|much|long|large|big|fast|often|quickly|well|small)|by how|what (percentage|fraction|share|proportion"
    r"|number|amount|size|speed-?up|ratio|rate|accuracy|score|f1|bleu|perplexity|throughput|latency|cost|budget)"
    r"|what (\S+ ){0,3}(accuracy|throughput|latency|perplexity|speed-?up|score|f1|bleu|rate|size|count|cost|budget"
    r"|memory|temperature|hyper-?parameters?|epochs|steps|dimensions?|dimensionality|length|ratio|percentage|level"
    r"|range|exponents?|error rate)"
    r"|(at|to|by) what (rate|factor|extent)|what (is|was|are|were) the (\w+ )?(accuracy|score|f1|bleu|perplexity"
    r"|throughput|latency|cost|budget|size|number|speed-?up|rate|percentage|count))\b",
    re.IGNORECASE,
)
# "In X, which ...", "On which ...", "Under what ..."
_LEAD = r"^\s*(?:(?:in|for|according to|on|at|under|when|among)\b[^?]*?,\s*)?(?:(?:on|in|under|with|from|for|by)\s+)?"
_NAME = re.compile(
    _LEAD + r"(which|what) (\w+ ){0,2}(dataset|datasets|benchmark|benchmarks|optimizer|hardware|gpus?|tpus?|licen[cs]e"
    r"|language|languages|model|models|library|framework|tokenizer|architecture|backbone|programming language"
    r"|graphics card|card|chip|accelerator)"
    r"\b(?! (papers?|works?|studies)\b)",
    re.IGNORECASE,
)
# what the asked-for fact is called, for "The corpus does not state <it>": the words after the question's head
_ASKED = re.compile(
    r"\b(?:how (?:many|much)|what|which)\s+(?:(?:is|was|are|were)\s+(?:the\s+)?)?((?:[\w-]+\s+){0,3}?[\w-]+)"
    r"(?=\s+(?:does|did|do|is|was|are|were|has|have|had|of|for|on|in|to|when|with|used|reported|needed|reach|than"
    r"|and|per|at|from|by)\b|[?.,;]|$)",
    re.IGNORECASE,
)
_COMPARE = re.compile(
    r"\b(compare|comparing|contrast|differ|differs|difference|differences|versus|vs\.?|both (papers|studies|works|of)"
    r"|two (papers|studies|works|methods|approaches)|each of the two|do they agree)\b",
    re.IGNORECASE,
)
# A comparison's two sides, as written: "Compare A with B", "A versus B", "How does A differ from B", "one A, the
# other B". Each pattern's two groups are the sides.
_SIDES = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"^\s*(?:compare|contrast)\s+(.+?)\s*,?\s+(?:against|versus|vs\.?)\s+(.+)$",
        r"^\s*(?:compare|contrast)\s+(.+?)\s*,?\s+with\s+(.+)$",
        r"^\s*(?:compare|contrast)\s+(.+?)\s*,?\s+to\s+(.+)$",
        r"\bhow (?:does|do|did|is|are)\s+(.+?)\s+(?:differ|different)\s+from\s+(.+)$",
        r"\bhow (?:do|did)\s+(.+)\s+and\s+(.+?)\s+differ\b",
        r"^(.+?)\s+(?:versus|vs\.?)\s+(.+)$",
        r"\bone\s+(.+?)\s*[,;]?\s+(?:and|while|whereas|but)\s+the other\s+(.+)$",
        r"\bone\s+(.+?)\s*,\s+the other\s+(.+)$",
    )
)
_GENERIC = {"much", "many", "long", "large", "big", "fast", "often", "quickly", "well", "small", "number", "amount"}
_STOP = frozenset(word.lower() for word in STOPWORDS) | _GENERIC
# Attributes a number's unit already names: "24 GB" is a memory figure, "1 ms" a latency, "3x" a speed-up. Each class
# pairs the words an asked attribute may use with the units (or "%"/"x") that state it.
_UNIT_CLASSES = (
    ({"memory", "gigabyte", "megabyte", "byte", "ram", "vram", "footprint"}, {"gb", "mb", "kb", "tb", "gib", "mib"}),
    (
        {"latency", "time", "duration", "day", "hour", "minute", "week", "month", "year", "quickly", "long", "fast"},
        {"ms", "millisecond", "second", "sec", "minute", "min", "hour", "day", "week", "month", "year"},
    ),
    ({"compute", "computation", "flop", "flops", "cost"}, {"flop", "flops", "petaflop", "gpu-hour", "pflop", "tflop"}),
    ({"percentage", "percent", "share", "fraction", "proportion", "accuracy", "reduction"}, {"%"}),
    ({"faster", "speedup", "speed-up", "slower", "factor", "fold", "less", "more", "fewer", "time"}, {"x"}),
)
# "Two papers ...", "Both studies ...", "Compare the three methods ...": how many papers the question is about
_COUNT = re.compile(
    r"\b(two|both|three|four|five)\s+(?:of\s+(?:these|the|them)\s+)?(?:\w+\s+)?(papers|studies|works|methods"
    r"|approaches|articles|reports|analyses|models)\b|\bboth of (?:these|them)\b",
    re.IGNORECASE,
)
_COUNTS = {"two": 2, "both": 2, "three": 3, "four": 4, "five": 5}
_HOW_LONG = re.compile(r"\bhow (long|quickly|fast|often)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Intent:
    """What a question asks for, and what it calls the asked-for thing ("learning rate", "GPUs"; "" when unclear).

    ``sides`` are a comparison's two parts, retrieved on their own so that each side's paper is found even when the
    other side's words dominate the whole question."""

    kind: Kind
    phrase: str
    compares: bool = False
    sides: tuple[str, ...] = ()
    duration: bool = False  # "how long", "how quickly": a time is asked for, whatever the phrase
    expects: int = 0  # how many papers the question says it is about ("two studies", "both papers"); 0: not said

    @property
    def wants_fact(self) -> bool:
        """A number or a name: something a sentence either states or does not."""
        return self.kind in ("quantity", "name")

    @property
    def wants_list(self) -> bool:
        """Every paper that bears on it, not only the closest: a "which papers" question or a comparison."""
        return self.kind == "papers" or self.compares

    @property
    def attribute(self) -> frozenset[str]:
        """The asked attribute's content words, as number contexts hold them ("learning rate" → learning, rate)."""
        words = {unit_word(word) for word in re.findall(r"[\w-]+", self.phrase) if word.lower() not in _STOP}
        return frozenset(words | ({"time"} if self.duration else set()))


def intent(question: str) -> Intent:
    """The kind of answer a question asks for, what it calls the asked-for thing, and a comparison's sides."""
    kind: Kind
    if _PAPERS.search(question):
        kind = "papers"
    elif _QUANTITY.search(question):
        kind = "quantity"
    elif _NAME.search(question):
        kind = "name"
    else:
        kind = "explanation"
    match = _ASKED.search(question)
    compares = kind in ("papers", "explanation") and bool(
        _COMPARE.search(question)
    )  # "how much faster than" asks a fact
    phrase = match.group(1).strip() if match else ""
    sides_ = sides(question) if compares else ()
    return Intent(kind, phrase, compares, sides_, bool(_HOW_LONG.search(question)), expected_papers(question))


def expected_papers(question: str) -> int:
    """How many papers a question says it is about: "Two studies ...", "Both papers ..." (0 when it does not say)."""
    if match := _COUNT.search(question):
        return _COUNTS.get((match.group(1) or "both").lower(), 2)
    return 0


def sides(question: str) -> tuple[str, ...]:
    """A comparison's two sides as sub-queries, or none when the wording does not split (each side at least three
    words: "Compare A with B" splits, "How do the two differ?" does not)."""
    for pattern in _SIDES:
        if match := pattern.search(question.strip().rstrip("?.")):
            first, second = (part.split(". ")[0].strip(" ,;:") for part in match.groups())
            parts = (first.split(": ")[-1], second)  # "Compare two ways of X: A versus B" → A, B
            if all(len(part.split()) >= 3 for part in parts):
                return parts
    return ()


@dataclass(frozen=True)
class Signals:
    """What the pipeline knows of one candidate paper for one question: everything the relevance model reads."""

    rank: int  # 1-based, in retrieval (rerank) order
    fused: float  # fused dense + BM25 score
    rerank: float  # the rerank stage's score (the fused score when it did not run)
    relevance: float  # term coverage of the question by the title and every sentence
    title: float  # ... by the title alone
    sentence: float  # ... by the title and the best single sentence
    cosine: float  # best pooled cosine of a sentence (or the title) with the question


FEATURES = (
    "relevance", "title", "sentence", "cosine", "rerank", "fused_ratio", "log_rank", "relevance_gap", "sentence_gap",
    "cosine_gap", "rerank_gap", "relevance_z", "sentence_z", "rerank_z", "relevance_over_second",
)  # fmt: skip
REFERENCE = 8  # the first papers of the ranking, which every pool holds: what a candidate's z-scores are taken against


def features(candidates: Sequence[Signals]) -> np.ndarray:
    """One row per candidate, in ``FEATURES`` order. Relative features read the best candidate and the first
    ``REFERENCE`` ones (how far a paper stands out of the ranking's head), so a pool may grow without moving them.

    The question's intent is not a feature: whether a paper bears on a question does not depend on whether it asks
    for a list, and a model told so learns that list questions are always answerable (every dev one is) and admits
    papers to a "which papers" question on a topic the corpus lacks. Intent sets the thresholds instead."""
    if not candidates:
        return np.zeros((0, len(FEATURES)))
    columns = {
        name: np.array([getattr(c, name) for c in candidates], dtype=np.float64)
        for name in ("rank", "fused", "rerank", "relevance", "title", "sentence", "cosine")
    }

    def z(values: np.ndarray) -> np.ndarray:
        head = values[np.argsort(columns["rank"], kind="stable")[:REFERENCE]]
        return (values - head.mean()) / (head.std() + 1e-3)

    relevance = columns["relevance"]
    second = np.sort(relevance)[-2] if len(relevance) > 1 else relevance[0]
    return np.column_stack(
        [
            relevance, columns["title"], columns["sentence"], columns["cosine"], columns["rerank"],
            columns["fused"] / (columns["fused"].max() or 1.0), np.log(columns["rank"]), relevance.max() - relevance,
            columns["sentence"].max() - columns["sentence"], columns["cosine"].max() - columns["cosine"],
            columns["rerank"].max() - columns["rerank"], z(relevance), z(columns["sentence"]), z(columns["rerank"]),
            relevance - second,
        ]
    )  # fmt: skip


@dataclass(frozen=True)
class RelevanceModel:
    """The trained logistic regression: standardised features → probability that a paper bears on the question."""

    version: str
    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        if not len(rows):
            return np.zeros(0)
        z = ((rows - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def to_json(self) -> dict[str, object]:
        return {
            "version": self.version, "features": list(self.features), "mean": self.mean.tolist(),
            "scale": self.scale.tolist(), "coef": self.coef.tolist(), "intercept": self.intercept,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, object]) -> "RelevanceModel":
        names = tuple(str(name) for name in data["features"])  # type: ignore[attr-defined]
        if names != FEATURES:
            raise ValueError(f"the gate model was trained on other features ({', '.join(names)}): retrain it")
        return cls(
            str(data["version"]), names, np.array(data["mean"]), np.array(data["scale"]), np.array(data["coef"]),
            float(data["intercept"]),  # type: ignore[arg-type]
        )  # fmt: skip


@cache
def bundled_model() -> RelevanceModel:
    """The model ``eval/train_gate.py`` wrote, read once."""
    return RelevanceModel.from_json(json.loads(MODEL_FILE.read_text()))


def side_merged(main: np.ndarray, sides: Sequence[tuple[Sequence[int], np.ndarray]]) -> np.ndarray:
    """Each candidate's probability of bearing on a comparison: against the whole question, or against one of its
    sides where that is higher (``sides``: the candidates' positions and their probabilities against that side)."""
    merged = main.copy()
    for positions, side in sides:
        for position, p in zip(positions, side, strict=True):
            merged[position] = max(merged[position], p)
    return merged


@dataclass(frozen=True)
class Decision:
    """The gate's verdict on a candidate pool: positions (in the order given) of the sources, of the possibly related
    papers listed uncited, and whether any candidate bears on the question at all."""

    cited: list[int]
    related: list[int]
    covered: bool
    weak: bool  # the best candidate is answered from but may not answer: said so with the answer


def decide(probabilities: Sequence[float], coverage: float, wanted: Intent, config: AnswerSettings) -> Decision:
    """Admission and refusal from the relevance probabilities and ``coverage``, the best candidate's term coverage of
    the question: below ``gate_cover``, or below ``gate_min_coverage``, nothing bears on the question. The model's
    probabilities weigh how a paper stands against the others, so a ranking's head on an absent topic can reach
    ``gate_cover``; the absolute coverage keeps "the best sourdough recipe" refused. Thresholds are chosen on the dev
    set's cross-validated predictions by ``eval/train_gate.py``."""
    if not len(probabilities) or max(probabilities) < config.gate_cover or coverage < config.gate_min_coverage:
        return Decision([], [], False, False)
    order = sorted(range(len(probabilities)), key=lambda i: -probabilities[i])
    limit = config.max_topic_sources if wanted.wants_list else config.max_sources
    cite = config.gate_list_cite if wanted.wants_list else config.gate_cite
    cited = [i for i in order if probabilities[i] >= cite][:limit]
    weak = not cited  # the best paper is under the citing bar: answered from, as the closest
    cited = cited or order[:1]
    if wanted.expects:  # "two studies": the likeliest two if each may bear on it; more only as a single answer would
        head = [i for i in order[: wanted.expects] if probabilities[i] >= config.gate_related] or order[:1]
        cited = head + [i for i in order[wanted.expects :] if probabilities[i] >= config.gate_cite][: limit - len(head)]
    related = (
        [i for i in order if i not in cited and probabilities[i] >= config.gate_related][: config.max_related]
        if wanted.wants_list
        else []
    )
    return Decision(sorted(cited), related, True, weak)


def states_asked(wanted: Intent, question: str, sentence: str) -> bool:
    """Whether a sentence states the number or name asked for, not merely some number or name: a number whose own
    words, or unit, match the asked attribute ("24 GB" states a memory, "3x" a speed-up), or, for an attribute the
    question does not name, any number the question does not already hold; a name the question does not hold."""
    if wanted.kind == "name":
        return bool(name_keys(sentence) - name_keys(question))
    asked_numbers = {(n.value, n.symbol) for n in stated_numbers(question)}
    numbers = [n for n in stated_numbers(sentence) if (n.value, n.symbol) not in asked_numbers]
    attribute = wanted.attribute
    if not attribute:
        return bool(numbers)
    units = {unit for words, units in _UNIT_CLASSES if attribute & words for unit in units}
    return any(attribute & number.context or units & (number.context | {number.symbol}) for number in numbers)
