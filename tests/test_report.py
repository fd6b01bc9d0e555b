"""The eval harness: metrics on hand-computed cases, question-set validation, and a complete, resumable report."""

import json
import shutil
from pathlib import Path

import pytest

from rag.corpus import BUNDLED_CORPUS, read_corpus
from rag.errors import BadInput
from rag.evaluate import (
    AnswerRecord,
    Question,
    citation_support,
    load_question_set,
    paper_metrics,
    percentile,
    score_answers,
    yes_no_maybe_scores,
)
from rag.report import run_suite
from rag.settings import PROJECT_DIR
from tests.conftest import make_settings

DEV = PROJECT_DIR / "eval" / "datasets" / "dev.jsonl"


def test_metrics_of_an_empty_ranking_and_of_more_gold_than_k() -> None:
    assert set(paper_metrics([], {"a"}).values()) == {0.0}
    scores = paper_metrics(["a", "b"], {"a", "b", "c", "d"}, k=2)  # ideal DCG counts only k gold papers
    assert scores["ndcg@2"] == pytest.approx(1.0) and scores["recall@1"] == 0.25 and scores["mrr@2"] == 1.0


def test_percentile_interpolates_and_handles_ties() -> None:
    assert percentile([5.0, 5.0, 5.0, 5.0], 95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)


def test_yes_no_maybe_accuracy_and_macro_f1() -> None:
    scores = yes_no_maybe_scores(["yes", "yes", "no", "maybe"], ["yes", "no", "no", "yes"])
    assert scores["accuracy"] == 0.5
    # F1: yes 2·1/(2+1+1)=0.5, no 2·1/(2+1+0)=0.667, maybe 0 (never predicted) → mean 0.3889
    assert scores["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3, abs=1e-4)
    assert scores["predicted"] == {"yes": 2, "no": 2, "maybe": 0}


def record(qid: str, gold: set[str], answer: dict[str, object], facts: tuple[str, ...] = ()) -> AnswerRecord:
    question = Question(qid, "q", "topic" if gold else "unanswerable", frozenset(gold), facts)
    return AnswerRecord(question, answer, 0.4, None, 0.4)


def answer(cited: list[str], text: str = "", refused: bool = False, synthesis: str = "") -> dict[str, object]:
    sources = [{"n": n, "title": t, "paper_id": t, "evidence": [f"{t} uses sparse attention."]}
               for n, t in enumerate(cited, 1)]  # fmt: skip
    return {"answer": text, "citations": sources, "sources": sources, "refused": refused, "notice": None,
            "prompt_tokens": 0, "unsupported": [], "synthesis": synthesis}  # fmt: skip


def test_answer_scores_on_hand_computed_answers_including_unanswerable_ones() -> None:
    records = [
        record("1", {"a", "b"}, answer(["a", "x"], "Fact one and fact two."), ("fact one", "fact three")),
        record("2", {"c"}, answer(["c"], "nothing"), ("fact four",)),
        record("3", set(), answer([], refused=True)),  # correctly refused
        record("4", set(), answer(["y"])),  # should have refused
    ]
    scores = score_answers(records)
    assert scores["citation_precision"] == pytest.approx((1 / 2 + 1) / 2)  # unanswerable items do not count
    assert scores["citation_recall"] == pytest.approx((1 / 2 + 1) / 2)
    assert scores["key_fact_recall"] == pytest.approx((1 / 2 + 0) / 2)
    assert scores["refusal_accuracy"] == pytest.approx(3 / 4)


def test_support_is_the_share_of_a_sentence_found_in_what_it_cites() -> None:
    synthesis = "Paper uses sparse attention [1]. It also invents quantum gravity [1]."
    done = record("1", {"a"}, answer(["a"], synthesis=synthesis) | {"unsupported": ["An uncited claim."]})
    support = citation_support([done])
    # sentence 1: {uses, sparse, attention} ("paper" is a scholarly stopword) all quoted: 1; sentence 2: none: 0
    assert support["support_mean"] == pytest.approx(0.5)
    assert support["cited_sentence_share"] == pytest.approx(2 / 3, abs=1e-4)
    assert citation_support([record("2", {"a"}, answer(["a"]))])["support_p50"] is None  # evidence-only: no synthesis


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ('{"id": "1", "question": "q", "type": "topic", "gold_titles": ["t"]}\n' * 2, "duplicate id"),
        ('{"id": "1", "question": "q", "type": "vibes", "gold_titles": ["t"]}\n', "type 'vibes'"),
        ('{"id": "1", "question": "q", "type": "unanswerable", "gold_titles": ["t"]}\n', "needs no gold_titles"),
        ('{"id": "1", "question": "q", "type": "fact", "gold_titles": []}\n', "needs gold_titles"),
        ('{"id": "1", "question": "q", "type": "fact", "gold_titles": ["No Such Paper"]}\n', "not in the corpus"),
        ('{"id": "1", "question": "q", "type": "fact", "gold_titles": ["t"], "key_facts": [""]}\n', "key_facts"),
        ("not json\n", "not a question-set line"),
    ],
)
def test_question_sets_are_validated_on_load(tmp_path: Path, line: str, error: str) -> None:
    path = tmp_path / "questions.jsonl"
    path.write_text(line)
    with pytest.raises(BadInput, match=error) as raised:
        load_question_set(path, known_titles=["t"])
    assert str(path) in str(raised.value)


def test_the_dev_set_is_valid_against_the_bundled_corpus() -> None:
    questions = load_question_set(DEV, {paper.title for paper in read_corpus(BUNDLED_CORPUS)})
    assert len(questions) >= 80 and {q.type for q in questions} >= {"topic", "fact", "method", "compare"}


def test_a_suite_writes_a_complete_report_and_resumes_from_its_cache(bundled_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(bundled_data, data)
    settings = make_settings(data)
    out = tmp_path / "report"
    results = run_suite("dev", settings, out, ["none"], limit=8)
    names = {path.name for path in out.iterdir()}
    assert {
        "report.md",
        "results.json",
        "recall_at_k.png",
        "by_type.png",
        "retrieval_latency.png",
        "answers.png",
    } <= names
    saved = json.loads((out / "results.json").read_text())
    assert saved["questions"] == 8 and saved["git_commit"] and saved["versions"]["chromadb"]
    assert set(saved["retrieval"]) == {"bm25", "dense", "hybrid"} and "none" in saved["answers"]
    assert saved["settings"]["api_key"] != settings.api_key.get_secret_value() or not settings.api_key
    report = (out / "report.md").read_text()
    assert "| hybrid |" in report and "citation_precision" in report and "![recall_at_k](recall_at_k.png)" in report
    # an interrupted run: the last cached answer is torn mid-line; the rerun redoes only what is missing
    cache = out / "cache" / "answers-none.jsonl"
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    again = run_suite("dev", settings, out, ["none"], limit=8)
    assert again["answers"]["none"]["citation_precision"] == results["answers"]["none"]["citation_precision"]
    assert len(cache.read_text().splitlines()) == len(lines)
    # a changed setting invalidates the cache for the parts it shapes
    changed = settings.model_copy(update={"answer": settings.answer.model_copy(update={"max_sources": 1})})
    run_suite("dev", changed, out, ["none"], limit=8)
    assert all(len(json.loads(line)["answer"]["sources"]) <= 1 for line in cache.read_text().splitlines()[1:])


def test_beir_suites_need_their_benchmark_folder(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", eval={"benchmarks_dir": str(tmp_path / "nowhere"), "reports_dir": "x"})
    with pytest.raises(BadInput, match="benchmark folder missing"):
        run_suite("scifact", settings, tmp_path / "out", ["none"])
