"""Runners: each question's record (a ranking, an answer, a verdict), computed once and cached honestly.

A part of an eval (one retriever, one answer mode) keeps its records in ``<cache>/<part>.jsonl``, appended as each
is computed, so an interrupted run resumes where it stopped. The file's first line holds the part's fingerprint:
the settings that shape its records, the prompts, the code that computes them (:func:`code_version`), the index
they were computed over (:func:`index_version`) and the library versions. A file with another fingerprint starts
afresh; a record whose question digest (text, gold, type, key facts) differs from the question asked now is
recomputed. results.json carries the fingerprint of every part.
"""

import hashlib
import json
import platform
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel
from tqdm import tqdm

from rag.errors import BadInput
from rag.eval.datasets import Question
from rag.eval.metrics import (
    DEPTH,
    YES_NO_MAYBE,
    AnswerRecord,
    percentile,
    retrieval_summary,
    score_answers,
    yes_no_maybe_scores,
)
from rag.readers import normalise_title
from rag.settings import Settings

if TYPE_CHECKING:
    from rag.chat_models import ChatModel
    from rag.evidence import EvidenceFinder
    from rag.retrieve import PaperRetriever

RAG_DIR = Path(__file__).resolve().parent.parent
# Files under rag/ that cannot change a record: they score records afresh on every run, choose what to compute, or
# present the figures.
NOT_SHAPING = ("cli.py", "eval/metrics.py", "eval/report.py", "eval/suites.py")
PACKAGES = ("chromadb", "llama-index-core", "llama_cpp_python", "openai", "bm25s", "onnxruntime", "tokenizers")


def fingerprint(*parts: Any) -> str:
    def plain(value: Any) -> Any:
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else str(value)

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=plain).encode()).hexdigest()[:16]


@cache
def code_version() -> str:
    """A digest of every file under rag/ that can shape a record (code, bundled corpus, tokenizer)."""
    digest = hashlib.sha256()
    for path in sorted(RAG_DIR.rglob("*")):
        relative = path.relative_to(RAG_DIR).as_posix()
        if path.is_file() and "__pycache__" not in relative and relative not in NOT_SHAPING:
            digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def index_version(retriever: "PaperRetriever") -> str:
    """The index a record was computed over: the published version's content fingerprint (which paper versions it
    holds), its tokenizer and the embedder. Content, not the version folder's id, so the same rows give the same key
    on every machine, and an abstract changed in place gives another."""
    collection = retriever.collection
    version = collection.version
    return f"{retriever.settings.collection}:{version.fingerprint}:{version.tokenizer}:{collection.embedder.model_name}"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


class Cache:
    """Per-question records of one part of an eval, appended as they come; valid only under one fingerprint."""

    def __init__(self, path: Path, key: str, fresh: bool) -> None:
        self.path, self.key = path, key
        self.records: dict[str, dict[str, Any]] = {}
        if path.is_file() and not fresh:
            lines = path.read_text(encoding="utf-8").splitlines()
            if lines and json.loads(lines[0]).get("fingerprint") == key:
                for line in lines[1:]:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        break  # a line cut short by an interruption: redo from there
                    self.records[record["id"]] = record  # a later line for the same id supersedes the earlier
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:  # rewrite: drops stale parts and any torn last line
            handle.write(json.dumps({"fingerprint": key}) + "\n")
            handle.writelines(json.dumps(record) + "\n" for record in self.records.values())

    def fill(self, questions: list[Question], label: str, compute: Callable[[Question], dict[str, Any]]) -> None:
        """Compute the record of every question that has none, or one made for another wording, gold or type."""
        todo = [q for q in questions if self.records.get(q.id, {}).get("question") != q.digest]
        with self.path.open("a", encoding="utf-8") as handle:
            for question in tqdm(todo, desc=label, unit="q", disable=not todo):
                record = {"id": question.id, "question": question.digest} | compute(question)
                handle.write(json.dumps(record) + "\n")
                handle.flush()
                self.records[question.id] = record

    def of(self, questions: list[Question]) -> list[dict[str, Any]]:
        return [self.records[q.id] for q in questions]


def retrieve_one(retriever: "PaperRetriever", question: Question, mode: str, depth: int, by_id: bool) -> dict:
    """One question's ranked keys (document ids for BEIR, normalised titles otherwise) and its search time.

    The top ``retrieval.top_k`` are exactly what a search returns (fusion normalises over what it retrieved, so a
    deeper search fuses differently); deeper ranks, for recall@100, continue with the same retriever's deep list.
    """
    top_k = retriever.settings.retrieval.top_k
    started = time.perf_counter()
    hits = retriever.search(question.text, top_k, mode)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    if depth > top_k:
        deeper = "hybrid" if mode == "rerank" else mode
        seen = {hit.paper_id for hit in hits}
        hits += [hit for hit in retriever.search(question.text, depth, deeper) if hit.paper_id not in seen]  # type: ignore[arg-type]
    ranked = [hit.paper_id if by_id else normalise_title(hit.title) for hit in hits[:depth]]
    return {"ranked": ranked, "latency_s": elapsed}


def scored_questions(questions: list[Question]) -> list[Question]:
    """The questions retrieval can be scored on: those with gold papers (unanswerable ones test the answer step)."""
    scored = [question for question in questions if question.gold]
    if not scored:
        raise BadInput("no question has gold papers to score")
    return scored


def score_retrievers(
    retriever: "PaperRetriever", questions: list[Question], modes: list[str], k: int, by_id: bool
) -> dict[str, Any]:
    """Each mode's metrics, computed afresh and kept nowhere (for tuning loops that change settings in place)."""
    scored = scored_questions(questions)
    report = {}
    for mode in modes:
        records = [retrieve_one(retriever, q, mode, max(k, DEPTH), by_id) for q in scored]
        report[mode] = retrieval_summary(scored, [r["ranked"] for r in records], [r["latency_s"] for r in records], k)
    return report


def run_retrieval(
    retriever: "PaperRetriever",
    questions: list[Question],
    by_id: bool,
    cache_dir: Path,
    fresh: bool,
    modes: list[str],
    k: int = 10,
) -> dict[str, Any]:
    """Each retriever's metrics over the questions with gold papers, from cached records where they are current."""
    settings = retriever.settings
    scored = scored_questions(questions)
    depth = max(k, DEPTH)
    shaping = (settings.retrieval, settings.embedding, settings.openai.embedding_model, settings.chunking)
    report = {}
    for mode in modes:
        key = fingerprint(
            "retrieval", mode, depth, by_id, *shaping, code_version(), index_version(retriever), versions()
        )
        cache = Cache(cache_dir / f"retrieval-{mode}.jsonl", key, fresh)
        cache.fill(scored, f"retrieval {mode}", partial(retrieve_one, retriever, mode=mode, depth=depth, by_id=by_id))
        records = cache.of(scored)
        latencies = [r["latency_s"] for r in records]
        report[mode] = retrieval_summary(scored, [r["ranked"] for r in records], latencies, k) | {
            "unscored": len(questions) - len(scored),
            "latencies_ms": [round(1000 * latency, 2) for latency in latencies],
            "fingerprint": key,
        }
    return report


def answer_one(question: Question, finder: "EvidenceFinder", model: "ChatModel | None", settings: Settings) -> dict:
    """One question answered as a user gets it: the answer, the model's verified sentences, and the evidence,
    first-text (the first verified sentence or evidence-only text) and total times."""
    from rag.answer import Answer, Fallback, Final, Sentence, answer_stream

    started = time.perf_counter()
    evidence = finder.find(question.text)
    evidence_s = time.perf_counter() - started
    first: float | None = None
    answer: Answer | None = None
    for event in answer_stream(evidence, model, settings, finder.support):
        match event:
            case Sentence() | Fallback() if first is None:
                first = time.perf_counter() - started
            case Final(done):
                answer = done
    assert answer is not None, "an answer stream always ends with its Final event"
    return {
        "answer": answer.as_json(),
        "sentences": [{"text": s.text, "cited": list(s.cited)} for s in answer.sentences],
        "evidence_s": evidence_s,
        "first_token_s": first,
        "total_s": time.perf_counter() - started,
    }


def answer_record(question: Question, record: dict[str, Any]) -> AnswerRecord:
    from rag.answer import Sentence

    sentences = [Sentence(s["text"], tuple(s["cited"])) for s in record["sentences"]]
    times = record["evidence_s"], record["first_token_s"], record["total_s"]
    return AnswerRecord(question, record["answer"], sentences, *times)


def verdict_messages(question: Question, finder: "EvidenceFinder", settings: Settings) -> tuple[str | None, list]:
    """The judge's prompt: the top retrieved study's best sentences (in the abstract's order, within
    ``eval.verdict_evidence_tokens``) and the question. Retrieval's first paper, not the answer gate's sources: a
    verdict needs one study's findings, and PubMedQA's question is its own abstract's title (hybrid recall@1 0.98)."""
    from rag.evidence import quote_within_budget

    hits = finder.retriever.search(question.text, 1, "hybrid")
    scored = finder.score(question.text, hits)
    quoted = quote_within_budget([scored[0].ranked], settings.eval.verdict_evidence_tokens)[0] if scored else []
    findings = " ".join(ranked.sentence.text for ranked in quoted) or "(none found)"
    messages = [
        {"role": "system", "content": settings.eval.verdict_prompt},
        {"role": "user", "content": f"Findings: {findings}\n\nQuestion: {question.text}\nAnswer yes, no or maybe:"},
    ]
    return (hits[0].paper_id if hits else None), messages


def word_verdict(model: "ChatModel", messages: list) -> tuple[str, str | None]:
    """The verdict as a word the model writes: the judge for models that give no log-probabilities."""
    reply = "".join(model.stream(messages, 4))
    verdict = re.search(r"\b(yes|no|maybe)\b", reply, re.IGNORECASE)
    return (verdict.group(1).lower(), None) if verdict else ("maybe", f"unparsed: {reply[:40]!r}")


def decide_yes_no_maybe(
    question: Question, finder: "EvidenceFinder", model: "ChatModel | None", settings: Settings
) -> dict[str, Any]:
    """PubMedQA's answer step: the top study's findings judged yes / no / maybe by the log-probabilities of the
    three words as the reply's first token (kept in the record for the dev-split calibration); a model that gives none
    writes the word instead, and the record's note says so.

    Without a model the prediction is the majority class, "yes": the published majority baseline, reproduced.
    """
    from rag.chat_models import LLMUnavailable, LogprobsUnavailable, ScoresOptions
    from rag.text import count_tokens

    if model is None:
        return {"prediction": "yes", "logprobs": None, "judge": "majority", "evidence_id": None, "total_s": 0.0,
                "prompt_tokens": 0, "note": None}  # fmt: skip
    started = time.perf_counter()
    evidence_id, messages = verdict_messages(question, finder, settings)
    logprobs: dict[str, float] | None = None
    note: str | None = None
    try:
        if not isinstance(model, ScoresOptions):
            raise LogprobsUnavailable(f"{model.name} cannot score options")
        logprobs = model.option_logprobs(messages, YES_NO_MAYBE)
        prediction, judge = max(YES_NO_MAYBE, key=logprobs.__getitem__), "logprobs"
    except LogprobsUnavailable as error:
        try:
            (prediction, unparsed), judge = word_verdict(model, messages), "word"
            note = f"word judge: {error}" + (f"; {unparsed}" if unparsed else "")
        except LLMUnavailable as failure:
            prediction, judge, note = "maybe", "failed", f"model failed: {failure}"
    except LLMUnavailable as error:
        prediction, judge, note = "maybe", "failed", f"model failed: {error}"
    return {
        "prediction": prediction,
        "logprobs": logprobs,
        "judge": judge,
        "evidence_id": evidence_id,
        "total_s": time.perf_counter() - started,
        "prompt_tokens": sum(count_tokens(m["content"]) for m in messages),
        "note": note,
    }


@dataclass(frozen=True)
class Calibration:
    """How a judge's option log-probabilities become verdicts: scaled, then shifted per class."""

    scale: float
    biases: dict[str, float]

    def verdict(self, logprobs: dict[str, float]) -> str:
        return max(YES_NO_MAYBE, key=lambda label: self.scale * logprobs[label] + self.biases[label])

    def as_json(self) -> dict[str, Any]:
        return {"scale": round(self.scale, 4), "biases": {k: round(v, 4) for k, v in self.biases.items()}}


UNCALIBRATED = Calibration(1.0, dict.fromkeys(YES_NO_MAYBE, 0.0))


def fit_calibration(logprobs: list[dict[str, float]], gold: list[str]) -> Calibration:
    """Per-class additive biases ("yes" stays 0) and one shared scale, fitted on a calibration split by maximum
    likelihood (a softmax over the scaled, shifted log-probabilities); the verdict is then the likeliest class.

    Likelihood rather than a search for the best dev accuracy or macro-F1: such a search chases the split's noise
    when the judge's signal is weak, and loses to the majority class on questions it was not fitted on (measured by
    cross-validation within the dev split: eval/results/pubmedqa_calibration.md). The scale matters as much as the
    biases: a small model's log-probabilities are overconfident, and a scale near 0 keeps the majority class
    wherever the evidence is weak, so the verdicts fall back to the trivial baseline instead of below it.
    """
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    scores = np.array([[row[label] for label in YES_NO_MAYBE] for row in logprobs], dtype=np.float64)
    truth = np.array([YES_NO_MAYBE.index(label) for label in gold])

    def loss(params: np.ndarray) -> float:
        shifted = params[0] * scores + np.array([0.0, params[1], params[2]])
        return float(-log_softmax(shifted, axis=1)[np.arange(len(truth)), truth].mean())

    # bounded: a negative scale would invert the judge, and a class absent from the split would push its bias away
    fitted = minimize(loss, np.array([1.0, 0.0, 0.0]), method="L-BFGS-B", bounds=[(0, 10), (-20, 20), (-20, 20)]).x
    return Calibration(float(fitted[0]), {"yes": 0.0, "no": float(fitted[1]), "maybe": float(fitted[2])})


def calibrated(record: dict[str, Any], calibration: Calibration) -> str:
    """A record's verdict under a calibration (a word verdict stays as it was written)."""
    return calibration.verdict(record["logprobs"]) if record.get("logprobs") else str(record["prediction"])


def verdict_report(
    questions: list[Question], done: list[dict[str, Any]], dev: list[Question], dev_done: list[dict[str, Any]],
    labels: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    """Test scores with the calibration fitted on the dev split (the headline) and without it, the dev figures, and
    how each verdict was reached."""
    scored = [(labels[q.id], r) for q, r in zip(dev, dev_done, strict=True) if r.get("logprobs")]
    fitted = fit_calibration([r["logprobs"] for _, r in scored], [g for g, _ in scored]) if scored else None

    def scores(split: list[Question], records: list[dict[str, Any]], calibrate: bool) -> dict[str, Any]:
        predicted = [calibrated(r, fitted or UNCALIBRATED) if calibrate else r["prediction"] for r in records]
        return yes_no_maybe_scores([labels[q.id] for q in split], predicted)

    everything = [*dev_done, *done]
    notes = Counter(r["note"].split(";")[0] for r in everything if r.get("note"))
    own = [r["evidence_id"] in q.gold for q, r in zip(questions, done, strict=True) if r.get("evidence_id")]
    gold = Counter(labels[q.id] for q in questions)
    return scores(questions, done, True) | {
        "gold": {label: gold[label] for label in YES_NO_MAYBE},
        "uncalibrated": scores(questions, done, False),
        "dev": {
            "questions": len(dev),
            "calibrated": scores(dev, dev_done, True),
            "uncalibrated": scores(dev, dev_done, False),
        },
        "calibration": fitted.as_json() if fitted else None,
        "judges": dict(Counter(r["judge"] for r in everything)),
        "notes": [f"{count} × {note}" for note, count in notes.most_common()],
        "evidence_own_abstract": round(sum(own) / len(own), 4) if own else None,
    }


def run_answers(
    finder: "EvidenceFinder",
    questions: list[Question],
    cache_dir: Path,
    fresh: bool,
    providers: list[str],
    labels: dict[str, str] | None = None,
    calibration: list[Question] | None = None,
) -> dict[str, Any]:
    """Each answer mode's scores: grounded answers, or yes / no / maybe verdicts when ``labels`` holds the gold
    (of ``questions`` and of the ``calibration`` split, whose records fit the verdicts' calibration)."""
    from rag.chat_models import LLMUnavailable, build_chat_model

    settings = finder.settings
    report: dict[str, dict[str, Any]] = {}
    for provider in providers:
        mode = settings.model_copy(update={"llm": settings.llm.model_copy(update={"provider": provider})})
        try:
            model = build_chat_model(mode)
        except LLMUnavailable as error:
            report[provider] = {"skipped": str(error)}
            continue
        name = model.name if model else None
        shaping: tuple[Any, ...] = (mode.llm, mode.openai, mode.retrieval, mode.embedding, mode.chunking, mode.answer,
                                     mode.prompts)  # fmt: skip
        if labels:
            shaping += (mode.eval.verdict_prompt, mode.eval.verdict_evidence_tokens)
        step = decide_yes_no_maybe if labels else answer_one
        key = fingerprint(step.__name__, name, *shaping, code_version(), index_version(finder.retriever), versions())
        compute = partial(step, finder=finder, model=model, settings=mode)
        dev, dev_done = calibration or [], []
        if labels:  # the dev split first: the calibration is fitted on it before test is scored
            dev_cache = Cache(cache_dir / f"answers-{provider}-dev.jsonl", key, fresh)
            dev_cache.fill(dev, f"answers {provider} (dev)", compute)
            dev_done = dev_cache.of(dev)
        cache = Cache(cache_dir / f"answers-{provider}.jsonl", key, fresh)
        cache.fill(questions, f"answers {provider}", compute)
        done = cache.of(questions)
        if labels:
            report[provider] = verdict_report(questions, done, dev, dev_done, labels)
            report[provider] |= {
                "model": name,
                "latency_s_p50": round(percentile([r["total_s"] for r in done], 50), 2),
                "prompt_tokens_p50": percentile([r["prompt_tokens"] for r in done], 50) if model else None,
            }
        else:
            records = [answer_record(q, r) for q, r in zip(questions, done, strict=True)]
            report[provider] = score_answers(records) | {"model": name}
            report[provider]["latencies_s"] = {
                "evidence": [r.evidence_s for r in records],
                "first_token": [r.first_token_s for r in records if r.first_token_s is not None],
                "total": [r.total_s for r in records],
            }
        report[provider]["fingerprint"] = key
    return report
