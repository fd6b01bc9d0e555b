"""Retrieval evaluation on a question set (DESIGN's JSON-lines format) or a BEIR folder.

Metrics are per paper: recall@1/5/10/100, MRR@10 and nDCG@10 with binary relevance, overall and per question type.
Questions without gold papers (unanswerable) are counted but not scored here: they test the answer step.
"""

import json
import math
import re
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.corpus import normalise_title
from rag.errors import BadInput
from rag.ingest import ingest
from rag.retrieve import PaperRetriever
from rag.settings import Settings

if TYPE_CHECKING:
    from rag.evidence import EvidenceFinder
    from rag.llm import ChatModel

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


QUESTION_TYPES = ("topic", "fact", "method", "compare", "unanswerable")


def load_question_set(path: Path, known_titles: Iterable[str] | None = None) -> list[Question]:
    """A question set in DESIGN's format, validated: every error names the file and line.

    Checks: JSON with an id and a question, unique ids, a known type, gold titles for answerable questions and
    none for unanswerable ones, key facts as strings — and, given the corpus titles, every gold title in it.
    """
    known = {normalise_title(title) for title in known_titles} if known_titles is not None else None
    questions: list[Question] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
                question = Question(
                    id=str(record["id"]),
                    text=str(record["question"]),
                    type=record.get("type", "topic"),
                    gold=frozenset(normalise_title(title) for title in record.get("gold_titles", [])),
                    key_facts=tuple(record.get("key_facts", [])),
                )
            except (ValueError, KeyError, TypeError, AttributeError):
                raise BadInput(f"{where}: not a question-set line (needs id, question)") from None
            if question.id in seen:
                raise BadInput(f"{where}: duplicate id {question.id!r}")
            if question.type not in QUESTION_TYPES:
                raise BadInput(f"{where}: type {question.type!r} is not one of {', '.join(QUESTION_TYPES)}")
            if (question.type == "unanswerable") == bool(question.gold):
                need = "no gold_titles" if question.type == "unanswerable" else "gold_titles"
                raise BadInput(f"{where}: a {question.type} question needs {need}")
            if not all(isinstance(fact, str) and fact for fact in question.key_facts):
                raise BadInput(f"{where}: key_facts must be non-empty strings")
            if known is not None and (unknown := sorted(question.gold - known)):
                raise BadInput(f"{where}: gold title not in the corpus: {unknown[0]!r}")
            seen.add(question.id)
            questions.append(question)
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
    scored = [question for question in questions if question.gold]
    if not scored:
        raise BadInput("no question has gold papers to score")
    for mode in modes:
        ranked_lists, latencies = [], []
        for question in scored:
            started = time.perf_counter()
            hits = retriever.search(question.text, max(k, DEPTH), mode)  # type: ignore[arg-type]
            latencies.append(time.perf_counter() - started)
            ranked_lists.append([hit.paper_id if by_id else normalise_title(hit.title) for hit in hits])
        report[mode] = retrieval_summary(scored, ranked_lists, latencies, k)
        report[mode]["unscored"] = len(questions) - len(scored)
    return report


def retrieval_summary(
    questions: list[Question], ranked_lists: list[list[str]], latencies_s: list[float], k: int = 10
) -> dict[str, Any]:
    """Mean metrics over questions with gold papers, per question type, and latency percentiles."""
    rows = [(q, paper_metrics(ranked, q.gold, k)) for q, ranked in zip(questions, ranked_lists, strict=True)]
    by_type: dict[str, list[dict[str, float]]] = defaultdict(list)
    for question, scores in rows:
        by_type[question.type].append(scores)
    return {
        **_mean([scores for _, scores in rows]),
        "questions": len(rows),
        "latency_p50_ms": round(1000 * statistics.median(latencies_s), 1),
        "latency_p95_ms": round(1000 * percentile(latencies_s, 95), 1),
        "by_type": {kind: _mean(group) | {"questions": len(group)} for kind, group in sorted(by_type.items())},
    }


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile, interpolated between closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


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

    @classmethod
    def from_record(cls, question: Question, done: dict[str, Any]) -> "AnswerRecord":
        return cls(question, done["answer"], done["evidence_s"], done["first_token_s"], done["total_s"])


def answer_one(question: Question, finder: "EvidenceFinder", model: "ChatModel | None", settings: Settings) -> dict:
    """One question answered as a user gets it, with the evidence, first-token and total times."""
    from rag.answer import Answer, answer_stream

    started = time.perf_counter()
    evidence = finder.find(question.text)
    evidence_s = time.perf_counter() - started
    first: float | None = None
    answer: dict[str, Any] = {}

    def attribute(claim: str) -> int | None:
        return finder.supporting_source(claim, evidence)

    for item in answer_stream(evidence, model, settings.llm.max_answer_tokens, attribute):
        if isinstance(item, Answer):
            answer = item.as_json()
        elif isinstance(item, str) and first is None:  # the first verified text (drafts are not the answer)
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    return {"answer": answer, "evidence_s": evidence_s, "first_token_s": first, "total_s": total}


def evaluate_answers(path: Path, settings: Settings, limit: int | None = None) -> dict[str, Any]:
    """Answer every question in a question set and score citations, refusals and key facts, with timings."""
    from rag.evidence import EvidenceFinder
    from rag.llm import build_chat_model

    questions = load_question_set(path)[:limit]
    finder = EvidenceFinder(settings)
    model = build_chat_model(settings)
    records = []
    for question in questions:
        done = answer_one(question, finder, model, settings)
        records.append(AnswerRecord.from_record(question, done))
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
        **citation_support(answered),
    }


_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_CITE = re.compile(r"\[(\d+)\]")


def content_words(text: str) -> set[str]:
    from rag.keyword_index import STOPWORDS

    return {word for word in _WORD.findall(_CITE.sub(" ", text.lower())) if word not in STOPWORDS and len(word) > 1}


def citation_support(records: list[AnswerRecord]) -> dict[str, float | None]:
    """How well the model's sentences are grounded, over answers with a synthesis (evidence-only ones have none).

    ``cited_sentence_share``: sentences with a valid citation over all the model wrote (dropped ones included).
    ``support_p50`` / ``support_mean``: for each cited sentence, the share of its content words found in the title
    and quoted sentences of the sources it cites — a lexical lower bound on support (a paraphrase scores low).
    """
    cited_sentences = dropped = 0
    support = []
    for record in records:
        synthesis = record.answer.get("synthesis") or ""
        if not synthesis:
            continue
        sources = {s["n"]: s for s in record.answer["sources"]}
        dropped += len(record.answer["unsupported"])
        for sentence in re.split(r"(?<=[.!?])\s+", synthesis):
            numbers = [int(n) for n in _CITE.findall(sentence) if int(n) in sources]
            words = content_words(sentence)
            if not numbers or not words:
                continue
            cited_sentences += 1
            evidence = set().union(*(content_words(sources[n]["title"] + " " + " ".join(sources[n]["evidence"]))
                                     for n in numbers))  # fmt: skip
            support.append(len(words & evidence) / len(words))
    written = cited_sentences + dropped
    return {
        "cited_sentence_share": round(cited_sentences / written, 4) if written else None,
        "support_p50": round(statistics.median(support), 4) if support else None,
        "support_mean": round(statistics.fmean(support), 4) if support else None,
    }


YES_NO_MAYBE_PROMPT = (
    "You judge research questions from the findings of one study, quoted as data. Reply with one word: "
    "yes, no or maybe (maybe when the findings are mixed or do not settle it)."
)
_VERDICT = re.compile(r"\b(yes|no|maybe)\b", re.IGNORECASE)


def decide_yes_no_maybe(
    question: Question, finder: "EvidenceFinder", model: "ChatModel | None", settings: Settings
) -> dict[str, Any]:
    """PubMedQA's answer step: the question's evidence (retrieved, gated, quoted) judged yes / no / maybe.

    Without a model the prediction is the majority class, "yes": the published majority baseline, reproduced.
    """
    from rag.llm import LLMUnavailable
    from rag.tokens import count_tokens

    if model is None:
        return {"prediction": "yes", "total_s": 0.0, "prompt_tokens": 0, "note": "majority"}
    started = time.perf_counter()
    evidence = finder.find(question.text)
    sources = evidence.sources or evidence.nearest[:1]  # a refusal still leaves the closest study to judge
    quoted = "\n".join(f"[{s.n}] {s.title} {' '.join(s.sentences)}" for s in sources[:2])
    messages = [
        {"role": "system", "content": YES_NO_MAYBE_PROMPT},
        {"role": "user", "content": f"Findings:\n{quoted}\n\nQuestion: {question.text}\nAnswer (yes, no or maybe):"},
    ]
    try:
        reply = "".join(model.stream(messages, 4))
        match = _VERDICT.search(reply)
        prediction, note = (match.group(1).lower(), None) if match else ("maybe", f"unparsed: {reply[:40]!r}")
    except LLMUnavailable as error:
        prediction, note = "maybe", f"model failed: {error}"
    prompt_tokens = sum(count_tokens(m["content"]) for m in messages)
    return {"prediction": prediction, "total_s": time.perf_counter() - started, "prompt_tokens": prompt_tokens,
            "note": note}  # fmt: skip


def yes_no_maybe_scores(gold: list[str], predicted: list[str]) -> dict[str, Any]:
    """Accuracy and macro-F1 over the three classes (PubMedQA's official metrics)."""
    classes = ("yes", "no", "maybe")
    f1s = []
    for label in classes:
        tp = sum(g == p == label for g, p in zip(gold, predicted, strict=True))
        fp = sum(p == label != g for g, p in zip(gold, predicted, strict=True))
        fn = sum(g == label != p for g, p in zip(gold, predicted, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {
        "questions": len(gold),
        "accuracy": round(sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold), 4),
        "macro_f1": round(statistics.fmean(f1s), 4),
        "predicted": {label: predicted.count(label) for label in classes},
    }
