"""Retrieval evaluation on a question set (DESIGN's JSON-lines format) or a BEIR folder.

Metrics are per paper: recall@1/5/10/100, MRR@10 and nDCG@10 with binary relevance, overall and per question type.
Questions without gold papers (unanswerable) are counted but not scored here: they test the answer step.
"""

import json
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.corpus import normalise_title
from rag.errors import BadInput
from rag.ingest import ingest
from rag.retrieve import PaperRetriever
from rag.settings import Settings

RECALL_AT = (1, 5, 10, 100)
DEPTH = max(RECALL_AT)


@dataclass
class Question:
    id: str
    text: str
    type: str
    gold: frozenset[str]  # normalised titles (question sets) or document ids (BEIR)
    key_facts: tuple[str, ...] = ()


def paper_metrics(ranked: list[str], gold: Iterable[str], k: int = 10) -> dict[str, float]:
    """Recall at each cut-off, MRR@k and nDCG@k of one ranked list of keys against its gold set."""
    gold = set(gold)
    scores = {f"recall@{n}": len(gold.intersection(ranked[:n])) / len(gold) for n in RECALL_AT}
    first = next((rank for rank, key in enumerate(ranked[:k], start=1) if key in gold), None)
    scores[f"mrr@{k}"] = 1 / first if first else 0.0
    dcg = sum(1 / math.log2(rank + 1) for rank, key in enumerate(ranked[:k], start=1) if key in gold)
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(gold), k) + 1))
    scores[f"ndcg@{k}"] = dcg / ideal
    return scores


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.fmean(row[key] for row in rows), 4) for key in rows[0]}


def load_question_set(path: Path) -> list[Question]:
    questions = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                questions.append(
                    Question(
                        id=str(record["id"]),
                        text=record["question"],
                        type=record.get("type", "other"),
                        gold=frozenset(normalise_title(title) for title in record.get("gold_titles", [])),
                        key_facts=tuple(record.get("key_facts", [])),
                    )
                )
            except (ValueError, KeyError, TypeError):
                raise BadInput(f"{path}:{number}: not a question-set line (needs id, question)") from None
    if not questions:
        raise BadInput(f"{path}: no questions")
    return questions


def load_beir(folder: Path, split: str) -> list[Question]:
    """Queries with at least one relevant document in the split's qrels."""
    suffix = "" if split == "test" else f"_{split}"
    queries_file, qrels_file = folder / f"queries{suffix}.jsonl", folder / f"qrels{suffix}.tsv"
    for required in (folder / "corpus.jsonl", queries_file, qrels_file):
        if not required.is_file():
            raise BadInput(f"{required}: missing (a BEIR folder needs corpus.jsonl, queries, qrels)")
    gold: dict[str, set[str]] = defaultdict(set)
    for number, line in enumerate(qrels_file.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t")
        if len(parts) < 2 or (number == 1 and not parts[-1].strip().lstrip("-").isdigit()):
            continue  # blank line or a "query-id corpus-id score" header
        if len(parts) < 3 or int(parts[2]) > 0:
            gold[parts[0].strip()].add(parts[1].strip())
    questions = []
    for line in queries_file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            qid = str(record.get("_id", record.get("id")))
            if qid in gold:
                questions.append(Question(qid, record["text"], "beir", frozenset(gold[qid])))
    return questions


def evaluate_retrieval(
    path: Path,
    modes: list[str],
    k: int,
    settings: Settings,
    split: str = "test",
    explicit_collection: bool = False,
) -> dict[str, Any]:
    """Score each retriever on the same questions; a BEIR folder is ingested first (idempotently)."""
    if not path.exists():
        raise BadInput(f"{path}: no such file or folder")
    beir = path.is_dir()
    if beir:
        if not explicit_collection:
            settings = settings.model_copy(update={"collection": f"beir-{path.resolve().name}"})
        questions = load_beir(path, split)
        ingest(path, "beir", settings)
    else:
        questions = load_question_set(path)
    return score_retrievers(PaperRetriever(settings), questions, modes, k, by_id=beir)


def score_retrievers(
    retriever: PaperRetriever, questions: list[Question], modes: list[str], k: int, by_id: bool
) -> dict[str, Any]:
    """Metrics of each mode on the questions with gold papers; papers match by id (BEIR) or normalised title."""
    report: dict[str, Any] = {}
    for mode in modes:
        rows: list[tuple[Question, dict[str, float]]] = []
        latencies = []
        for question in questions:
            if not question.gold:
                continue
            started = time.perf_counter()
            hits = retriever.search(question.text, max(k, DEPTH), mode)  # type: ignore[arg-type]
            latencies.append(time.perf_counter() - started)
            ranked = [hit.paper_id if by_id else normalise_title(hit.title) for hit in hits]
            rows.append((question, paper_metrics(ranked, question.gold, k)))
        if not rows:
            raise BadInput("no question has gold papers to score")
        by_type: dict[str, list[dict[str, float]]] = defaultdict(list)
        for question, scores in rows:
            by_type[question.type].append(scores)
        report[mode] = {
            **_mean([scores for _, scores in rows]),
            "questions": len(rows),
            "unscored": len(questions) - len(rows),
            "latency_p50_ms": round(1000 * statistics.median(latencies), 1),
            "by_type": {kind: _mean(group) | {"questions": len(group)} for kind, group in sorted(by_type.items())},
        }
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table, one row per retriever and per retriever × question type."""
    metrics = [key for key in next(iter(report.values())) if "@" in key]
    lines = ["| retriever | type | n | " + " | ".join(metrics) + " | p50 ms |"]
    lines.append("|" + "---|" * (len(metrics) + 4))
    for mode, result in report.items():
        rows = [("all", result), *result["by_type"].items()]
        for kind, scores in rows:
            values = " | ".join(f"{scores[m]:.3f}" for m in metrics)
            latency = result["latency_p50_ms"] if kind == "all" else ""
            lines.append(f"| {mode} | {kind} | {scores['questions']} | {values} | {latency} |")
    return "\n".join(lines)


@dataclass
class AnswerRecord:
    question: Question
    answer: dict[str, Any]
    evidence_s: float
    first_token_s: float | None
    total_s: float


def evaluate_answers(path: Path, settings: Settings, limit: int | None = None) -> dict[str, Any]:
    """Answer every question in a question set and score citations, refusals and key facts, with timings."""
    from rag.answer import Answer, answer_stream
    from rag.evidence import Evidence, EvidenceFinder
    from rag.llm import build_chat_model

    questions = load_question_set(path)[:limit]
    finder = EvidenceFinder(settings)
    model = build_chat_model(settings)
    records = []
    for question in questions:
        started = time.perf_counter()
        evidence = finder.find(question.text)
        evidence_s = time.perf_counter() - started
        first: float | None = None

        def attribute(claim: str, evidence: Evidence = evidence) -> int | None:
            return finder.supporting_source(claim, evidence)

        for item in answer_stream(evidence, model, settings.llm.max_answer_tokens, attribute):
            if isinstance(item, Answer):
                answer = item.as_json()
            elif first is None:
                first = time.perf_counter() - started
        records.append(AnswerRecord(question, answer, evidence_s, first, time.perf_counter() - started))
    return score_answers(records) | {"provider": settings.llm.provider, "model": model.name if model else None}


def score_answers(records: list[AnswerRecord]) -> dict[str, Any]:
    """Citation precision/recall, key-fact recall, refusal accuracy, and latency medians."""
    precision, recall, facts, refusal = [], [], [], []
    for record in records:
        gold, answer = record.question.gold, record.answer
        refusal.append(float(answer["refused"] == (not gold)))
        cited = {normalise_title(c["title"]) for c in answer["citations"]}
        if gold and cited:
            precision.append(len(cited & gold) / len(cited))
        if gold:
            recall.append(len(cited & gold) / len(gold))
            text = answer["answer"].lower()
            if record.question.key_facts:
                key_facts = record.question.key_facts
                facts.append(sum(fact.lower() in text for fact in key_facts) / len(key_facts))

    def median(values: list[float]) -> float | None:
        return round(statistics.median(values), 2) if values else None

    answered = [r for r in records if not r.answer["refused"]]
    return {
        "questions": len(records),
        "citation_precision": round(statistics.fmean(precision), 4) if precision else None,
        "citation_recall": round(statistics.fmean(recall), 4) if recall else None,
        "key_fact_recall": round(statistics.fmean(facts), 4) if facts else None,
        "refusal_accuracy": round(statistics.fmean(refusal), 4),
        "evidence_s_p50": median([r.evidence_s for r in records]),
        "first_token_s_p50": median([r.first_token_s for r in answered if r.first_token_s is not None]),
        "answer_s_p50": median([r.total_s for r in answered]),
        "prompt_tokens_p50": median([r.answer["prompt_tokens"] for r in answered if r.answer["prompt_tokens"]]),
        "notices": sum(bool(r.answer["notice"]) for r in records),
        # how much of the model's own text survived verification (evidence-only answers count as none)
        "synthesis_rate": round(
            statistics.fmean(bool(r.answer["prompt_tokens"]) and not r.answer["notice"] for r in answered), 4
        )
        if answered
        else None,
        "unsupported_sentences": sum(len(r.answer["unsupported"]) for r in records),
    }
