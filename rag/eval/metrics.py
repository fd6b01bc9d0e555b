"""Eval metrics as functions of plain data — ranked keys, gold sets, answers as JSON — with no I/O.

Retrieval metrics use binary relevance and trec_eval's definitions (tests/test_evaluate.py checks them against
``pytrec_eval``): recall@k is the share of the gold papers in the top k; MRR@k is 1 / the rank of the first gold
paper in the top k (0 without one); nDCG@k is the top k's DCG (gain 1 / log2(rank + 1) per gold paper) over that of
an ideal ranking. Answer metrics follow DESIGN's question-set section: citation precision (cited papers that are
gold), citation recall (gold papers cited), key-fact recall (case-insensitive containment), refusal accuracy
(refused ⇔ unanswerable); PubMedQA is scored by accuracy and macro-F1 over yes / no / maybe.

Answers are scored three ways, because the evidence block appended to every answer cites each admitted paper and
carries its key facts, so the answer as a whole cannot tell one model from another (or from none): *evidence* (the
admitted sources and their quoted sentences: the gate), *answer* (the text and citations the user sees) and
*synthesis* (the model's own verified sentences only: the citations it wrote, the key facts in its words, what was
dropped as unsupported, and numbers or names no cited source contains).
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
from rag.readers import normalise_title
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


def _mean(values: Sequence[float | None]) -> float | None:
    """The mean of the values that apply (None: the metric does not apply to that question)."""
    kept = [value for value in values if value is not None]
    return round(statistics.fmean(kept), 4) if kept else None


def _p50(values: list[float], digits: int = 2) -> float | None:
    return round(percentile(values, 50), digits) if values else None


GROUPS = ("evidence", "answer", "synthesis")
CITATION_METRICS = ("citation_precision", "citation_recall", "key_fact_recall")
Scores = dict[str, float | None]


def titles(entries: Sequence[dict[str, Any]]) -> set[str]:
    return {normalise_title(entry["title"]) for entry in entries}


def quoted_text(sources: Sequence[dict[str, Any]]) -> str:
    """What the evidence block shows of each admitted source: its title and quoted sentences."""
    return " ".join(f"{s['title']}. {' '.join(s['evidence'])}" for s in sources)


def written_citations(sentences: Sequence["Sentence"], sources: Sequence[dict[str, Any]]) -> set[str]:
    """The titles the model's own verified sentences cite ([n] mapped through the answer's sources)."""
    by_n = {source["n"]: source["title"] for source in sources}
    return {normalise_title(by_n[n]) for sentence in sentences for n in sentence.cited if n in by_n}


def unsupported_terms(sentences: Sequence["Sentence"], sources: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each synthesis sentence with the numbers and names that none of the sources it cites contains (title and
    full abstract): an invented figure under a valid [n]. Sentences with none are left out."""
    from rag.terms import missing_terms

    by_n = {source["n"]: source for source in sources}
    found = []
    for sentence in sentences:
        cited = [by_n[n] for n in sentence.cited if n in by_n]
        texts = [f"{source['title']}. {source['abstract']}" for source in cited]
        if missing := missing_terms(sentence.text, texts):
            found.append({"sentence": sentence.text, "cited": list(sentence.cited), "missing": missing})
    return found


def model_asked(record: AnswerRecord) -> bool:
    """The model was prompted for this answer (a refusal or an evidence-only mode prompts none)."""
    return bool(record.answer["prompt_tokens"])


def question_scores(record: AnswerRecord) -> dict[str, Scores]:
    """One answer's metrics per group; None where a metric does not apply (no gold papers, no key facts, no
    citation to judge, or — for the synthesis — no model asked)."""
    question, answer = record.question, record.answer
    gold, facts = question.gold, question.key_facts
    answerable = bool(gold)
    refusal = float(refusal_correct(answer["refused"], answerable))

    def citations(cited: set[str], text: str) -> Scores:
        if not answerable:
            return dict.fromkeys(CITATION_METRICS)
        return {
            "citation_precision": citation_precision(cited, gold),
            "citation_recall": citation_recall(cited, gold),
            "key_fact_recall": key_fact_recall(text, facts),
        }

    sources = answer["sources"]
    synthesis = " ".join(sentence.text for sentence in record.sentences)
    return {
        "evidence": citations(titles(sources), quoted_text(sources)) | {"refusal_accuracy": refusal},
        "answer": citations(titles(answer["citations"]), answer["answer"]) | {"refusal_accuracy": refusal},
        "synthesis": citations(written_citations(record.sentences, sources), synthesis)
        if model_asked(record)
        else dict.fromkeys(CITATION_METRICS),
    }


def group_means(rows: Sequence[dict[str, Scores]], group: str) -> Scores:
    return {metric: _mean([row[group][metric] for row in rows]) for metric in rows[0][group]} if rows else {}


def synthesis_scores(records: Sequence[AnswerRecord], rows: Sequence[dict[str, Scores]]) -> dict[str, Any]:
    """The model's own verified sentences: cited titles, key facts, the share dropped as unsupported, and every
    number or name no cited source contains (the target is none)."""
    asked = [record for record in records if model_asked(record)]
    verified = sum(len(record.sentences) for record in asked)
    dropped = sum(len(record.answer["unsupported"]) for record in asked)
    invented = [
        {"id": record.question.id} | found
        for record in asked
        for found in unsupported_terms(record.sentences, record.answer["sources"])
    ]
    return group_means(rows, "synthesis") | {
        "answers": len(asked),
        "sentences": verified,
        "dropped_share": round(dropped / (verified + dropped), 4) if verified + dropped else None,
        "unsupported_terms": sum(len(found["missing"]) for found in invented) if asked else None,
        "unsupported_term_sentences": invented,
    }


def refusal_scores(records: Sequence[AnswerRecord]) -> dict[str, Any]:
    """Refusal accuracy split three ways, and how near-miss questions (on-topic papers, the asked fact in no
    abstract) are declined: as "not stated", with one of the on-topic papers among the nearest."""
    near = [r for r in records if r.question.near_miss]
    plain = [r for r in records if not r.question.gold and not r.question.near_miss]
    answerable = [r for r in records if r.question.gold]

    def accuracy(group: list[AnswerRecord]) -> float | None:
        return _mean([refusal_correct(r.answer["refused"], bool(r.question.gold)) for r in group])

    return {
        "near_miss": len(near),
        "not_stated_accuracy": _mean([r.answer["refused"] and r.answer["refusal"] == "not_stated" for r in near]),
        "nearest_on_topic": _mean([bool(titles(r.answer["nearest"]) & r.question.about) for r in near]),
        "refusal_accuracy_near_miss": accuracy(near),
        "refusal_accuracy_unanswerable": accuracy(plain),
        "refusal_accuracy_answerable": accuracy(answerable),
    }


def by_type_scores(records: Sequence[AnswerRecord], rows: Sequence[dict[str, Scores]]) -> dict[str, Any]:
    """Each question type's metrics per group (unanswerable types have only refusal accuracy)."""
    kinds: dict[str, list[dict[str, Scores]]] = defaultdict(list)
    for record, row in zip(records, rows, strict=True):
        kinds[record.question.type].append(row)
    return {
        kind: {"questions": len(group), **{name: group_means(group, name) for name in GROUPS}}
        for kind, group in sorted(kinds.items())
    }


def score_answers(records: list[AnswerRecord]) -> dict[str, Any]:
    """An answer mode's scores. The top-level citation precision/recall, key-fact recall and refusal accuracy are
    the answer as the user sees it (its text and citations), the keys older reports compare; ``evidence`` scores what
    the gate admitted and quoted; ``synthesis`` only the model's own verified sentences; ``refusals`` splits refusal
    accuracy and scores near-miss questions; ``by_type`` breaks the three groups down per question type."""
    rows = [question_scores(record) for record in records]
    answered = [r for r in records if not r.answer["refused"]]
    return {
        "questions": len(records),
        **group_means(rows, "answer"),
        "evidence_s_p50": _p50([r.evidence_s for r in records]),
        "first_token_s_p50": _p50([r.first_token_s for r in answered if r.first_token_s is not None]),
        "answer_s_p50": _p50([r.total_s for r in answered]),
        "prompt_tokens_p50": _p50([r.answer["prompt_tokens"] for r in answered if r.answer["prompt_tokens"]]),
        "notices": sum(bool(r.answer["notice"]) for r in records),
        # how many answers kept some of the model's own text after verification (evidence-only answers keep none)
        "synthesis_rate": _mean([bool(r.sentences) for r in answered]),
        "unsupported_sentences": sum(len(r.answer["unsupported"]) for r in records),
        **citation_support(records),
        "evidence": group_means(rows, "evidence"),
        "synthesis": synthesis_scores(records, rows),
        "refusals": refusal_scores(records),
        "by_type": by_type_scores(records, rows),
    }


_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def content_words(text: str) -> set[str]:
    from rag.text import STOPWORDS

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
