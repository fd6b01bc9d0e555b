"""The eval harness behind `rag eval run SUITE`: named suites, cached per-question results, a report folder.

A suite names its questions and corpus, the retrievers to put side by side and the answer step to score. Every
per-question result is appended to ``<out>/cache/<part>.jsonl`` as soon as it exists, under a fingerprint of the
settings that shape it, so an interrupted run resumes where it stopped and a changed setting starts that part afresh.
The folder gets ``report.md`` (tables), ``results.json`` (every figure, the settings, versions, git commit) and PNG
plots: recall@k per retriever, nDCG@10 per question type, latency histograms, answer metrics per answer mode.
"""

import hashlib
import json
import platform
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import matplotlib
from tqdm import tqdm

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from rag.corpus import BUNDLED_CORPUS, read_corpus
from rag.errors import BadInput
from rag.evaluate import (
    DEPTH,
    AnswerRecord,
    Question,
    answer_one,
    decide_yes_no_maybe,
    load_beir,
    load_question_set,
    retrieval_summary,
    score_answers,
    yes_no_maybe_scores,
)
from rag.ingest import ingest
from rag.settings import PROJECT_DIR, Settings

RETRIEVERS = ["bm25", "dense", "hybrid"]
CURVE_AT = (1, 2, 3, 5, 10, 20, 50, 100)


@dataclass(frozen=True)
class Suite:
    """What a named suite measures."""

    description: str
    questions: str  # a question-set file (relative to the project) or a benchmark folder under eval.benchmarks_dir
    beir: bool = False
    answers: bool = False  # score grounded answers (citations, key facts, refusals)
    yes_no_maybe: bool = False  # PubMedQA: answer yes/no/maybe, score accuracy and macro-F1
    published: dict[str, dict[str, float]] = field(default_factory=dict)


SUITES = {
    "dev": Suite(
        "The dev question set over the bundled corpus: retrievers side by side, then grounded answers per mode.",
        "eval/datasets/dev.jsonl",
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
            "majority (yes)": {"accuracy": 0.552},
            "BioBERT (paper's best)": {"accuracy": 0.681},
            "single human": {"accuracy": 0.780},
        },
    ),
}


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Cache:
    """Per-question results of one part of a suite, appended as they come; valid only under one fingerprint."""

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
                    self.records[record["id"]] = record
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:  # rewrite: drops stale parts and any torn last line
            handle.write(json.dumps({"fingerprint": key}) + "\n")
            handle.writelines(json.dumps(record) + "\n" for record in self.records.values())

    def fill(self, questions: list[Question], label: str, compute: Callable[[Question], dict[str, Any]]) -> None:
        todo = [q for q in questions if q.id not in self.records]
        with self.path.open("a", encoding="utf-8") as handle:
            for question in tqdm(todo, desc=label, unit="q", disable=not todo):
                record = {"id": question.id} | compute(question)
                handle.write(json.dumps(record) + "\n")
                handle.flush()
                self.records[question.id] = record


@dataclass
class Prepared:
    settings: Settings
    questions: list[Question]
    by_id: bool  # BEIR documents match by id; question sets by normalised title
    labels: dict[str, str] = field(default_factory=dict)  # yes/no/maybe gold answers (PubMedQA)


def prepare(name: str, suite: Suite, settings: Settings, limit: int | None) -> Prepared:
    """Ingest the suite's corpus (a no-op when it is in) and load its questions, validated."""
    if suite.beir:
        folder = settings.benchmarks_path / suite.questions
        if not folder.is_dir():
            raise BadInput(f"{folder}: benchmark folder missing (set eval.benchmarks_dir)")
        settings = settings.model_copy(update={"collection": f"beir-{name}"})
        ingest(folder, "beir", settings)
        questions = load_beir(folder, "test")
        labels = {}
        if suite.yes_no_maybe:
            for line in (folder / "qa_test.jsonl").read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                labels[str(record["id"])] = record["answer"]
        return Prepared(settings, questions[:limit], True, labels)
    ingest(BUNDLED_CORPUS, "seed", settings)
    titles = {paper.title for paper in read_corpus(BUNDLED_CORPUS)}
    return Prepared(settings, load_question_set(PROJECT_DIR / suite.questions, titles)[:limit], False)


def run_retrieval(prepared: Prepared, out: Path, fresh: bool) -> dict[str, Any]:
    from rag.corpus import normalise_title
    from rag.retrieve import PaperRetriever

    settings = prepared.settings
    retriever = PaperRetriever(settings)
    scored = [q for q in prepared.questions if q.gold]
    report = {}
    for mode in RETRIEVERS:
        key = fingerprint(mode, settings.collection, settings.retrieval, settings.embedding, settings.chunking)
        cache = Cache(out / "cache" / f"retrieval-{mode}.jsonl", key, fresh)

        def search(question: Question, mode: str = mode) -> dict[str, Any]:
            started = time.perf_counter()
            hits = retriever.search(question.text, DEPTH, mode)  # type: ignore[arg-type]
            elapsed = time.perf_counter() - started
            ranked = [hit.paper_id if prepared.by_id else normalise_title(hit.title) for hit in hits]
            return {"ranked": ranked, "latency_s": elapsed}

        cache.fill(scored, f"retrieval {mode}", search)
        records = [cache.records[q.id] for q in scored]
        report[mode] = retrieval_summary(scored, [r["ranked"] for r in records], [r["latency_s"] for r in records])
        report[mode]["curve"] = {
            str(k): round(statistics.fmean(len(q.gold.intersection(r["ranked"][:k])) / len(q.gold)
                                           for q, r in zip(scored, records, strict=True)), 4)
            for k in CURVE_AT
        }  # fmt: skip
        report[mode]["latencies_ms"] = [round(1000 * r["latency_s"], 2) for r in records]
    return report


def _models(settings: Settings, providers: list[str]) -> Iterator[tuple[str, Settings]]:
    for provider in providers:
        yield provider, settings.model_copy(update={"llm": settings.llm.model_copy(update={"provider": provider})})


def run_answers(prepared: Prepared, out: Path, fresh: bool, providers: list[str]) -> dict[str, Any]:
    from rag.evidence import EvidenceFinder
    from rag.llm import LLMUnavailable, build_chat_model

    finder = EvidenceFinder(prepared.settings)
    report: dict[str, dict[str, Any]] = {}
    for provider, settings in _models(prepared.settings, providers):
        try:
            model = build_chat_model(settings)
        except LLMUnavailable as error:
            report[provider] = {"skipped": str(error)}
            continue
        model_name = model.name if model else None
        key = fingerprint(provider, model_name, settings.collection, settings.retrieval, settings.answer, settings.llm)
        cache = Cache(out / "cache" / f"answers-{provider}.jsonl", key, fresh)
        answer = decide_yes_no_maybe if prepared.labels else answer_one
        cache.fill(
            prepared.questions, f"answers {provider}", partial(answer, finder=finder, model=model, settings=settings)
        )
        done = [cache.records[q.id] for q in prepared.questions]
        if prepared.labels:
            gold = [prepared.labels[q.id] for q in prepared.questions]
            report[provider] = yes_no_maybe_scores(gold, [r["prediction"] for r in done]) | {
                "model": model_name,
                "latency_s_p50": round(statistics.median(r["total_s"] for r in done), 2),
                "prompt_tokens_p50": statistics.median(r["prompt_tokens"] for r in done) if model else None,
            }
            continue
        records = [AnswerRecord.from_record(q, r) for q, r in zip(prepared.questions, done, strict=True)]
        report[provider] = score_answers(records) | {"model": model_name}
        report[provider]["latencies_s"] = {
            "evidence": [r.evidence_s for r in records],
            "first_token": [r.first_token_s for r in records if r.first_token_s is not None],
            "total": [r.total_s for r in records],
        }
    return report


def versions() -> dict[str, str]:
    names = ["chromadb", "llama-index-core", "gradio", "llama_cpp_python", "openai", "bm25s", "onnxruntime"]
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


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
    """Run a suite end to end and write its report folder; returns results.json's content."""
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
        "retrieval": run_retrieval(prepared, out, fresh),
    }
    if suite.answers or suite.yes_no_maybe:
        results["answers"] = run_answers(prepared, out, fresh, providers)
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    write_report(results, out)
    return results


RETRIEVAL_COLUMNS = ["recall@1", "recall@5", "recall@10", "recall@100", "mrr@10", "ndcg@10"]
ANSWER_COLUMNS = [
    "citation_precision",
    "citation_recall",
    "key_fact_recall",
    "refusal_accuracy",
    "cited_sentence_share",
    "support_p50",
    "evidence_s_p50",
    "first_token_s_p50",
    "answer_s_p50",
    "prompt_tokens_p50",
]


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        if value is None:
            return "—"
        return f"{value:.3g}" if isinstance(value, float) else str(value)  # 0.734, 34.5 ms, 413 tokens

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def write_report(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plots = plot(results, out)
    retrieval = results["retrieval"]
    lines = [
        f"# Eval report: {results['suite']}",
        "",
        results["description"],
        "",
        f"{results['questions']} questions ({', '.join(f'{k} {v}' for k, v in results['by_type'].items())}) · "
        f"commit `{results['git_commit']}` · {results['created']} · {results['elapsed_s']} s",
        "",
        "## Retrieval",
        "",
        *_table(
            ["retriever", *RETRIEVAL_COLUMNS, "p50 ms", "p95 ms", "published nDCG@10"],
            [
                [
                    mode,
                    *(r[c] for c in RETRIEVAL_COLUMNS),
                    r["latency_p50_ms"],
                    r["latency_p95_ms"],
                    results["published"].get(mode, {}).get("ndcg@10"),
                ]
                for mode, r in retrieval.items()
            ],
        ),
        "",
    ]
    kinds = sorted({kind for r in retrieval.values() for kind in r["by_type"]})
    if len(kinds) > 1:
        lines += ["nDCG@10 per question type:", ""]
        lines += _table(
            ["retriever", *(f"{k} ({retrieval['hybrid']['by_type'][k]['questions']})" for k in kinds)],
            [[mode, *(r["by_type"].get(k, {}).get("ndcg@10") for k in kinds)] for mode, r in retrieval.items()],
        )
        lines.append("")
    answers = results.get("answers", {})
    scored = {mode: r for mode, r in answers.items() if "skipped" not in r}
    if scored and "accuracy" in next(iter(scored.values())):
        lines += ["## Answers: yes / no / maybe", ""]
        rows = [[f"{m} ({r['model'] or 'no model'})", r["accuracy"], r["macro_f1"], r["latency_s_p50"]]
                for m, r in scored.items()]  # fmt: skip
        rows += [[f"published: {who}", f["accuracy"], None, None] for who, f in results["published"].items()]
        lines += _table(["answer mode", "accuracy", "macro-F1", "p50 s"], rows)
    elif scored:
        lines += ["## Answers", ""]
        lines += _table(["answer mode", "model", *ANSWER_COLUMNS], [
            [mode, r["model"], *(r.get(c) for c in ANSWER_COLUMNS)] for mode, r in scored.items()
        ])  # fmt: skip
        lines += [
            "",
            "Support: for each cited answer sentence, the share of its content words (lower-cased, stopwords out) "
            "found in the title and quoted sentences of the sources it cites; `support_p50` is the median over "
            "cited sentences. Cited-sentence share: answer sentences with a valid citation over all the model wrote "
            "(dropped unsupported sentences included).",
        ]
    for mode, r in answers.items():
        if "skipped" in r:
            lines.append(f"\n{mode}: skipped ({r['skipped']})")
    lines += ["", "## Plots", "", *(f"![{path.stem}]({path.name})" for path in plots), ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    """The report's figures; each is also linked from report.md."""
    written = []
    retrieval = results["retrieval"]

    figure, axis = plt.subplots(figsize=(6, 4))
    for mode, r in retrieval.items():
        axis.plot([int(k) for k in r["curve"]], list(r["curve"].values()), marker="o", label=mode)
    axis.set(xscale="log", xlabel="k (papers)", ylabel="recall@k", title=f"{results['suite']}: recall@k", ylim=(0, 1))
    axis.grid(alpha=0.3)
    axis.legend()
    written.append(_save(figure, out / "recall_at_k.png"))

    kinds = sorted({kind for r in retrieval.values() for kind in r["by_type"]})
    if kinds:
        figure, axis = plt.subplots(figsize=(7, 4))
        width = 0.8 / len(retrieval)
        for i, (mode, r) in enumerate(retrieval.items()):
            values = [r["by_type"].get(k, {}).get("ndcg@10", 0) for k in kinds]
            axis.bar([x + i * width for x in range(len(kinds))], values, width, label=mode)
        axis.set_xticks([x + width * (len(retrieval) - 1) / 2 for x in range(len(kinds))], kinds)
        axis.set(ylabel="nDCG@10", title=f"{results['suite']}: nDCG@10 per question type", ylim=(0, 1))
        axis.legend()
        written.append(_save(figure, out / "by_type.png"))

    figure, axis = plt.subplots(figsize=(6, 4))
    for mode, r in retrieval.items():
        axis.hist(r["latencies_ms"], bins=30, alpha=0.5, label=f"{mode} (p50 {r['latency_p50_ms']} ms)")
    axis.set(xlabel="search latency (ms)", ylabel="questions", title=f"{results['suite']}: retrieval latency")
    axis.legend()
    written.append(_save(figure, out / "retrieval_latency.png"))

    answers = {m: r for m, r in results.get("answers", {}).items() if "skipped" not in r}
    if answers and "latencies_s" in next(iter(answers.values())):
        figure, axes = plt.subplots(1, 2, figsize=(11, 4))
        metrics = ["citation_precision", "citation_recall", "key_fact_recall", "refusal_accuracy",
                   "cited_sentence_share"]  # fmt: skip
        width = 0.8 / len(answers)
        for i, (mode, r) in enumerate(answers.items()):
            axes[0].bar([x + i * width for x in range(len(metrics))], [r[m] or 0 for m in metrics], width, label=mode)
        axes[0].set_xticks([x + width * (len(answers) - 1) / 2 for x in range(len(metrics))],
                           [m.replace("_", "\n") for m in metrics], fontsize=8)  # fmt: skip
        axes[0].set(ylim=(0, 1), title="answer metrics per mode")
        axes[0].legend()
        for mode, r in answers.items():
            axes[1].hist(r["latencies_s"]["total"], bins=20, alpha=0.5, label=f"{mode}: whole answer")
            if r["latencies_s"]["first_token"] and r["model"]:
                axes[1].hist(r["latencies_s"]["first_token"], bins=20, alpha=0.5, label=f"{mode}: first token")
        axes[1].set(xlabel="seconds", ylabel="questions", title="answer latency")
        axes[1].legend()
        written.append(_save(figure, out / "answers.png"))
    elif answers:
        figure, axis = plt.subplots(figsize=(6, 4))
        names = [*(f"{m}\n({r['model'] or 'no model'})" for m, r in answers.items()), *results["published"]]
        values = [*(r["accuracy"] for r in answers.values()), *(f["accuracy"] for f in results["published"].values())]
        colours = ["tab:blue"] * len(answers) + ["tab:grey"] * len(results["published"])
        axis.bar(names, values, color=colours)
        axis.set(ylim=(0, 1), ylabel="accuracy", title="PubMedQA test: ours (blue) and published (grey)")
        axis.tick_params(axis="x", labelsize=8)
        written.append(_save(figure, out / "pubmedqa_accuracy.png"))
    return written


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
