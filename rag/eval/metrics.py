"""Eval metrics as functions of plain data — ranked keys, gold sets, answers as JSON — with no I/O.

Retrieval metrics use binary relevance and trec_eval's definitions (tests/test_evaluate.py checks them against
``pytrec_eval``): recall@k is the share of the gold papers in the top k; MRR@k is 1 / the rank of the first gold
paper in the top k (0 without one); nDCG@k is the top k's DCG (gain 1 / log2(rank + 1) per gold paper) over that of
an ideal ranking. Answer metrics follow DESIGN's question-set section: citation precision (cited papers that are
gold), citation recall (gold papers cited), key-fact recall (case-insensitive containment), refusal accuracy
(refused ⇔ unanswerable); PubMedQA is scored by accuracy and macro-F1 over yes / no / maybe.
"""

import math
import re
import statistics
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.eval.datasets import Question
from rag.text import CITATION

if TYPE_CHECKING:
    from rag.answer import Sentence

RECALL_AT = (1, 5, 10, 100)
DEPTH = max(RECALL_AT)  # how deep each ranked list is recorded
CURVE_AT = (1, 2, 3, 5, 10, 20, 50, 100)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linearly interpolated between closest ranks: the one helper for p50 and p95."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def recall_at(ranked: Sequence[str], gold: Collection[str], k: int) -> float:
    return len(set(ranked[:k]).intersection(gold)) / len(gold)


def reciprocal_rank(ranked: Sequence[str], gold: Collection[str], k: int) -> float:
    first = next((rank for rank, key in enumerate(ranked[:k], start=1) if key in gold), None)
    return 1 / first if first else 0.0


def ndcg_at(ranked: Sequence[str], gold: Collection[str], k: int) -> float:
    dcg = sum(1 / math.log2(rank + 1) for rank, key in enumerate(ranked[:k], start=1) if key in gold)
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(gold), k) + 1))
    return dcg / ideal


def paper_metrics(ranked: Sequence[str], gold: Collection[str], k: int = 10) -> dict[str, float]:
    """Recall at each of RECALL_AT, MRR@k and nDCG@k of one ranked list of keys against its gold set."""
    scores = {f"recall@{n}": recall_at(ranked, gold, n) for n in RECALL_AT}
    return scores | {f"mrr@{k}": reciprocal_rank(ranked, gold, k), f"ndcg@{k}": ndcg_at(ranked, gold, k)}


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.fmean(row[key] for row in rows), 4) for key in rows[0]}


def retrieval_summary(
    questions: list[Question], ranked_lists: list[list[str]], latencies_s: list[float], k: int = 10
) -> dict[str, Any]:
    """Mean metrics over questions with gold papers, per question type, the recall curve and latency percentiles."""
    rows = [(q, paper_metrics(ranked, q.gold, k)) for q, ranked in zip(questions, ranked_lists, strict=True)]
    by_type: dict[str, list[dict[str, float]]] = defaultdict(list)
    for question, scores in rows:
        by_type[question.type].append(scores)
    pairs = list(zip(ranked_lists, questions, strict=True))
    return {
        **mean_metrics([scores for _, scores in rows]),
        "questions": len(rows),
        "latency_p50_ms": round(1000 * percentile(latencies_s, 50), 1),
        "latency_p95_ms": round(1000 * percentile(latencies_s, 95), 1),
        "by_type": {kind: mean_metrics(group) | {"questions": len(group)} for kind, group in sorted(by_type.items())},
        "curve": {str(n): round(statistics.fmean(recall_at(r, q.gold, n) for r, q in pairs), 4) for n in CURVE_AT},
    }


def citation_precision(cited: Collection[str], gold: Collection[str]) -> float | None:
    """Cited papers that are gold, over all cited; None when nothing is cited or nothing is gold."""
    return len(set(cited).intersection(gold)) / len(cited) if cited and gold else None


def citation_recall(cited: Collection[str], gold: Collection[str]) -> float | None:
    """Gold papers cited, over all gold; None for a question without gold papers."""
    return len(set(cited).intersection(gold)) / len(gold) if gold else None


def key_fact_recall(text: str, key_facts: Sequence[str]) -> float | None:
    """Key facts the answer's text contains (case-insensitive); None for a question without key facts."""
    lowered = text.lower()
    return sum(fact.lower() in lowered for fact in key_facts) / len(key_facts) if key_facts else None


def refusal_correct(refused: bool, answerable: bool) -> bool:
    return refused != answerable


@dataclass
class AnswerRecord:
    """One answered question, as plain data: the answer as `rag ask --json` prints it, the model's verified
    sentences, and the evidence, first-text and total times."""

    question: Question
    answer: dict[str, Any]
    sentences: list["Sentence"]
    evidence_s: float
    first_token_s: float | None
    total_s: float


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def _p50(values: list[float], digits: int = 2) -> float | None:
    return round(percentile(values, 50), digits) if values else None


def score_answers(records: list[AnswerRecord]) -> dict[str, Any]:
    """Citation precision/recall, key-fact recall, refusal accuracy, grounding and latency medians."""
    from rag.corpus import normalise_title

    precision, recall, facts = [], [], []
    for record in records:
        gold, answer = record.question.gold, record.answer
        cited = {normalise_title(c["title"]) for c in answer["citations"]}
        if gold:
            precision.append(citation_precision(cited, gold))
            recall.append(citation_recall(cited, gold))
            facts.append(key_fact_recall(answer["answer"], record.question.key_facts))
    answered = [r for r in records if not r.answer["refused"]]
    return {
        "questions": len(records),
        "citation_precision": _mean([p for p in precision if p is not None]),
        "citation_recall": _mean([r for r in recall if r is not None]),
        "key_fact_recall": _mean([f for f in facts if f is not None]),
        "refusal_accuracy": _mean([refusal_correct(r.answer["refused"], bool(r.question.gold)) for r in records]),
        "evidence_s_p50": _p50([r.evidence_s for r in records]),
        "first_token_s_p50": _p50([r.first_token_s for r in answered if r.first_token_s is not None]),
        "answer_s_p50": _p50([r.total_s for r in answered]),
        "prompt_tokens_p50": _p50([r.answer["prompt_tokens"] for r in answered if r.answer["prompt_tokens"]]),
        "notices": sum(bool(r.answer["notice"]) for r in records),
        # how many answers kept some of the model's own text after verification (evidence-only answers keep none)
        "synthesis_rate": _mean([bool(r.sentences) for r in answered]),
        "unsupported_sentences": sum(len(r.answer["unsupported"]) for r in records),
        **citation_support(records),
    }


_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def content_words(text: str) -> set[str]:
    from rag.keyword_index import STOPWORDS

    return {word for word in _WORD.findall(CITATION.sub(" ", text.lower())) if word not in STOPWORDS and len(word) > 1}


def citation_support(records: list[AnswerRecord]) -> dict[str, float | None]:
    """How well the model's verified sentences are grounded (evidence-only answers have none).

    ``cited_sentence_share``: verified sentences over all the model wrote (the dropped unsupported ones included).
    ``support_p50`` / ``support_mean``: for each verified sentence, the share of its content words found in the
    title and quoted sentences of the sources it cites — a lexical lower bound on support (a paraphrase scores low).
    """
    cited_sentences = dropped = 0
    support = []
    for record in records:
        if not record.sentences:
            continue
        sources = {s["n"]: s for s in record.answer["sources"]}
        dropped += len(record.answer["unsupported"])
        for sentence in record.sentences:
            numbers = [n for n in sentence.cited if n in sources]
            words = content_words(sentence.text)
            if not numbers or not words:
                continue
            cited_sentences += 1
            quoted = (content_words(sources[n]["title"] + " " + " ".join(sources[n]["evidence"])) for n in numbers)
            support.append(len(words & set().union(*quoted)) / len(words))
    written = cited_sentences + dropped
    return {
        "cited_sentence_share": round(cited_sentences / written, 4) if written else None,
        "support_p50": _p50(support, 4),
        "support_mean": _mean(support),
    }


YES_NO_MAYBE = ("yes", "no", "maybe")


def yes_no_maybe_scores(gold: list[str], predicted: list[str]) -> dict[str, Any]:
    """Accuracy and macro-F1 over the three classes (PubMedQA's official metrics)."""
    pairs = list(zip(gold, predicted, strict=True))
    f1s = []
    for label in YES_NO_MAYBE:
        tp = sum(g == p == label for g, p in pairs)
        fp = sum(p == label != g for g, p in pairs)
        fn = sum(g == label != p for g, p in pairs)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {
        "questions": len(gold),
        "accuracy": round(sum(g == p for g, p in pairs) / len(gold), 4),
        "macro_f1": round(statistics.fmean(f1s), 4),
        "predicted": {label: predicted.count(label) for label in YES_NO_MAYBE},
    }
