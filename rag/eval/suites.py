"""What an eval measures: named suites (`rag eval run SUITE`) and a question set or BEIR folder given as a PATH
(`rag eval retrieval|answers PATH`), both prepared alike and measured by the same runners and cache.

A named suite writes its report folder: ``report.md``, ``results.json`` (every figure, the settings, the
fingerprint of every part, versions, git commit) and plots; its records are cached under ``<out>/cache``. A PATH's
records are cached under ``<data_dir>/eval-cache``, one folder per collection, path and split.
"""

import hashlib
import json
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import BadInput
from rag.eval.datasets import Question, load_beir, load_question_set, load_yes_no_maybe
from rag.eval.runners import code_version, index_version, run_answers, run_retrieval, versions
from rag.ingest import ingest
from rag.readers import BUNDLED_CORPUS, read_corpus
from rag.settings import PROJECT_DIR, Settings

RETRIEVERS = ["bm25", "dense", "hybrid", "rerank"]


@dataclass(frozen=True)
class Suite:
    """What a suite measures."""

    description: str
    questions: str  # a question-set file (relative to the project) or a benchmark folder under eval.benchmarks_dir
    beir: bool = False
    retrieval: bool = True  # score the retrievers side by side
    answers: bool = False  # score grounded answers (citations, key facts, refusals)
    yes_no_maybe: bool = False  # PubMedQA: answer yes/no/maybe, score accuracy and macro-F1
    published: dict[str, dict[str, float]] = field(default_factory=dict)


SUITES = {
    "dev": Suite(
        "The dev question set over the bundled corpus: retrievers side by side, then grounded answers per mode.",
        "eval/datasets/dev.jsonl",
        answers=True,
    ),
    "heldout": Suite(
        "The held-out question set over the bundled corpus (near-miss questions included): written before any "
        "tuning and never tuned on, so its figures are the headline. Retrievers side by side, then grounded answers "
        "per mode.",
        "eval/datasets/heldout.jsonl",
        answers=True,
    ),
    "scifact": Suite(
        "BEIR SciFact test claims over 5,183 abstracts: retrieval against published figures.",
        "scifact",
        beir=True,
        published={
            "bm25": {"ndcg@10": 0.665},  # BEIR paper (Thakur et al., 2021), BM25; 0.679 in later BEIR runs
            "dense": {"ndcg@10": 0.645},  # all-MiniLM-L6-v2 (sentence-transformers / MTEB)
        },
    ),
    "pubmedqa": Suite(
        "PubMedQA PQA-L test: retrieve over its 1,000 abstracts, answer yes/no/maybe, against published figures.",
        "pubmedqa",
        beir=True,
        yes_no_maybe=True,
        published={
            "majority (yes)": {"accuracy": 0.552, "macro_f1": 0.237},  # 276/500 yes; F1 of yes (0.711) / 3
            "BioBERT (paper's best)": {"accuracy": 0.681},
            "single human": {"accuracy": 0.780},
        },
    ),
}


@dataclass
class Prepared:
    """A suite's corpus ingested and its questions loaded: what the runners need."""

    settings: Settings
    questions: list[Question]
    by_id: bool  # BEIR documents match by id; question sets by normalised title
    labels: dict[str, str] = field(default_factory=dict)  # yes/no/maybe gold answers (PubMedQA), both splits
    calibration: list[Question] = field(default_factory=list)  # PubMedQA's dev split: what the verdicts' biases fit


def spread(questions: list[Question], limit: int | None) -> list[Question]:
    """The first ``limit`` questions in a fixed pseudo-random order (by a digest of the id): PubMedQA's test file is
    sorted by answer, so its first 100 questions are all "yes"."""
    return sorted(questions, key=lambda question: hashlib.sha256(question.id.encode()).hexdigest())[:limit]


def prepare(name: str, suite: Suite, settings: Settings, limit: int | None) -> Prepared:
    """Ingest a named suite's corpus (a no-op when it is in) and load its questions, validated."""
    if suite.beir:
        folder = settings.benchmarks_path / suite.questions
        if not folder.is_dir():
            raise BadInput(f"{folder}: benchmark folder missing (set eval.benchmarks_dir)")
        settings = settings.model_copy(update={"collection": f"beir-{name}"})
        ingest(folder, "beir", settings)
        if suite.yes_no_maybe:  # the dev split too, with the same limit: the biases are fitted on it
            labels = load_yes_no_maybe(folder) | load_yes_no_maybe(folder, "dev")
            test, dev = (spread(load_beir(folder, split), limit) for split in ("test", "dev"))
            return Prepared(settings, test, True, labels, dev)
        return Prepared(settings, load_beir(folder, "test")[:limit], True)
    ingest(BUNDLED_CORPUS, "seed", settings)
    titles = {paper.title for paper in read_corpus(BUNDLED_CORPUS)}
    return Prepared(settings, load_question_set(PROJECT_DIR / suite.questions, titles)[:limit], False)


def prepare_path(path: Path, settings: Settings, split: str, explicit_collection: bool) -> Prepared:
    """A question set (scored on the configured collection) or a BEIR folder (ingested first, idempotently, into
    its own collection unless one is named)."""
    if not path.exists():
        raise BadInput(f"{path}: no such file or folder")
    if not path.is_dir():
        return Prepared(settings, load_question_set(path), False)
    if not explicit_collection:
        settings = settings.model_copy(update={"collection": f"beir-{path.resolve().name}"})
    questions = load_beir(path, split)
    ingest(path, "beir", settings)
    return Prepared(settings, questions, True)


def measure(
    prepared: Prepared,
    suite: Suite,
    cache_dir: Path,
    fresh: bool,
    providers: list[str],
    modes: list[str] = RETRIEVERS,
    k: int = 10,
) -> dict[str, Any]:
    """The suite's parts — retrievers side by side, then answers per mode — each from the cache where current."""
    from rag.evidence import EvidenceFinder
    from rag.retrieve import PaperRetriever

    retriever = PaperRetriever(prepared.settings)
    results: dict[str, Any] = {"code_version": code_version(), "index_version": index_version(retriever)}
    if suite.retrieval:
        results["retrieval"] = run_retrieval(retriever, prepared.questions, prepared.by_id, cache_dir, fresh, modes, k)
    if suite.answers or suite.yes_no_maybe:
        finder = EvidenceFinder(prepared.settings, retriever.collection)
        labels = prepared.labels if suite.yes_no_maybe else None
        results["answers"] = run_answers(
            finder, prepared.questions, cache_dir, fresh, providers, labels, prepared.calibration
        )
    return results


def git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=PROJECT_DIR, capture_output=True, text=True)
    return (done.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")) or None


def run_suite(
    name: str, settings: Settings, out: Path, providers: list[str], limit: int | None = None, fresh: bool = False
) -> dict[str, Any]:
    """Run a named suite end to end and write its report folder; returns results.json's content."""
    from rag.eval.report import write_report

    if name not in SUITES:
        raise BadInput(f"unknown suite {name!r}: choose one of {', '.join(SUITES)}")
    suite = SUITES[name]
    started = time.perf_counter()
    prepared = prepare(name, suite, settings, limit)
    results: dict[str, Any] = {
        "suite": name,
        "description": suite.description,
        "questions": len(prepared.questions),
        "by_type": dict(sorted(Counter(q.type for q in prepared.questions).items())),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": git_commit(),
        "versions": versions(),
        "settings": json.loads(prepared.settings.model_dump_json()),
        "published": suite.published,
        **measure(prepared, suite, out / "cache", fresh, providers),
    }
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    write_report(results, out)
    return results


def _path_cache(prepared: Prepared, path: Path, split: str) -> Path:
    where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    return prepared.settings.data_path / "eval-cache" / f"{prepared.settings.collection}-{path.name}-{split}-{where}"


def evaluate_retrieval(
    path: Path,
    settings: Settings,
    modes: list[str],
    k: int = 10,
    split: str = "test",
    explicit_collection: bool = False,
    fresh: bool = False,
) -> dict[str, Any]:
    """`rag eval retrieval PATH`: each retriever's metrics on a question set or a BEIR folder."""
    prepared = prepare_path(path, settings, split, explicit_collection)
    suite = Suite(str(path), str(path), beir=prepared.by_id)
    parts = measure(prepared, suite, _path_cache(prepared, path, split), fresh, [], modes, k)
    return parts["retrieval"]


def evaluate_answers(
    path: Path, settings: Settings, providers: list[str], limit: int | None = None, fresh: bool = False
) -> dict[str, Any]:
    """`rag eval answers PATH`: each answer mode's scores on a question set, over the configured collection."""
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    prepared = prepare_path(path, settings, "test", True)
    prepared.questions = prepared.questions[:limit]
    suite = Suite(str(path), str(path), retrieval=False, answers=True)
    return measure(prepared, suite, _path_cache(prepared, path, "test"), fresh, providers)["answers"]
