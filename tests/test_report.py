"""The eval harness: metrics on hand-computed cases, question-set validation, a complete and resumable report, and
a cache that serves a record only for the question, settings, prompts, code and index it was computed with."""

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from rag.answer import Sentence
from rag.cli import cli
from rag.errors import BadInput
from rag.eval.datasets import Question, load_question_set
from rag.eval.metrics import (
    AnswerRecord,
    citation_support,
    paper_metrics,
    percentile,
    score_answers,
    yes_no_maybe_scores,
)
from rag.eval.runners import Cache
from rag.eval.suites import evaluate_answers, evaluate_retrieval, run_suite
from rag.readers import BUNDLED_CORPUS, read_corpus
from rag.settings import PROJECT_DIR
from tests.conftest import make_settings, write_jsonl

DEV = PROJECT_DIR / "eval" / "datasets" / "dev.jsonl"


def test_metrics_of_an_empty_ranking_and_of_more_gold_than_k() -> None:
    assert set(paper_metrics([], {"a"}).values()) == {0.0}
    scores = paper_metrics(["a", "b"], {"a", "b", "c", "d"}, k=2)  # ideal DCG counts only k gold papers
    assert scores["ndcg@2"] == pytest.approx(1.0) and scores["recall@1"] == 0.25 and scores["mrr@2"] == 1.0


def test_percentile_interpolates_and_handles_ties() -> None:
    assert percentile([5.0, 5.0, 5.0, 5.0], 95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5  # unsorted input; the median of an even count
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)


def test_yes_no_maybe_accuracy_and_macro_f1() -> None:
    scores = yes_no_maybe_scores(["yes", "yes", "no", "maybe"], ["yes", "no", "no", "yes"])
    assert scores["accuracy"] == 0.5
    # F1: yes 2·1/(2+1+1)=0.5, no 2·1/(2+1+0)=0.667, maybe 0 (never predicted) → mean 0.3889
    assert scores["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3, abs=1e-4)
    assert scores["predicted"] == {"yes": 2, "no": 2, "maybe": 0}


def record(
    qid: str, gold: set[str], answer: dict[str, object], facts: tuple[str, ...] = (), sentences: Sequence[Sentence] = ()
) -> AnswerRecord:
    question = Question(qid, "q", "topic" if gold else "unanswerable", frozenset(gold), facts)
    return AnswerRecord(question, answer, list(sentences), 0.4, None, 0.4)


def answer(cited: list[str], text: str = "", refused: bool = False) -> dict[str, object]:
    sources = [{"n": n, "title": t, "paper_id": t, "evidence": [f"{t} uses sparse attention."]}
               for n, t in enumerate(cited, 1)]  # fmt: skip
    return {"answer": text, "citations": sources, "sources": sources, "refused": refused, "notice": None,
            "prompt_tokens": 0, "unsupported": []}  # fmt: skip


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
    assert scores["synthesis_rate"] == 0.0  # no answer kept a sentence of the model's own


def test_support_is_the_share_of_a_sentence_found_in_what_it_cites() -> None:
    # the sentences as the answer stream verified them: structure, not text to re-parse
    sentences = [Sentence("Paper uses sparse attention [1].", (1,)), Sentence("It invents quantum gravity [1].", (1,))]
    done = record("1", {"a"}, answer(["a"]) | {"unsupported": ["An uncited claim."]}, sentences=sentences)
    support = citation_support([done])
    # sentence 1: {uses, sparse, attention} ("paper" is a scholarly stopword) all quoted: 1; sentence 2: none: 0
    assert support["support_mean"] == pytest.approx(0.5)
    assert support["cited_sentence_share"] == pytest.approx(2 / 3, abs=1e-4)
    assert citation_support([record("2", {"a"}, answer(["a"]))])["support_p50"] is None  # evidence-only: no synthesis
    assert score_answers([done])["synthesis_rate"] == 1.0


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
    settings = make_settings(data, api_key="sk-eval-secret")
    out = tmp_path / "report"
    results = run_suite("dev", settings, out, ["none"], limit=5)
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
    assert saved["questions"] == 5 and saved["git_commit"] and saved["versions"]["chromadb"]
    assert set(saved["retrieval"]) == {"bm25", "dense", "hybrid", "rerank"} and "none" in saved["answers"]
    assert saved["settings"]["api_key"] == "**********"  # secrets are written masked
    assert "sk-eval-secret" not in (out / "results.json").read_text() + (out / "report.md").read_text()
    report = (out / "report.md").read_text()
    assert "| hybrid |" in report and "citation_precision" in report and "![recall_at_k](recall_at_k.png)" in report
    # results.json names the fingerprint each part was computed under: the one its cache file holds
    cache = out / "cache" / "answers-none.jsonl"
    header = json.loads(cache.read_text().splitlines()[0])
    assert saved["answers"]["none"]["fingerprint"] == header["fingerprint"]
    assert saved["code_version"] and saved["index_version"]
    # an interrupted run: the last cached answer is torn mid-line; the rerun redoes only what is missing
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    again = run_suite("dev", settings, out, ["none"], limit=5)
    assert again["answers"]["none"]["citation_precision"] == results["answers"]["none"]["citation_precision"]
    assert len(cache.read_text().splitlines()) == len(lines)
    # a changed setting invalidates the cache for the parts it shapes
    rankings = (out / "cache" / "retrieval-hybrid.jsonl").read_text()
    fewer = {"max_sources": 1, "max_topic_sources": 1}
    changed = settings.model_copy(update={"answer": settings.answer.model_copy(update=fewer)})
    run_suite("dev", changed, out, ["none"], limit=5)
    assert all(len(json.loads(line)["answer"]["sources"]) <= 1 for line in cache.read_text().splitlines()[1:])
    assert (out / "cache" / "retrieval-hybrid.jsonl").read_text() == rankings  # the gate does not shape rankings


def questions(*texts: str) -> list[Question]:
    return [Question(str(i), text, "topic", frozenset({"t"})) for i, text in enumerate(texts)]


def test_the_cache_serves_a_record_only_for_the_question_and_fingerprint_it_was_made_for(tmp_path: Path) -> None:
    asked: list[str] = []

    def compute(question: Question) -> dict[str, object]:
        asked.append(question.text)
        return {"echo": question.text}

    path = tmp_path / "part.jsonl"
    Cache(path, "key-1", fresh=False).fill(questions("first", "second"), "test", compute)
    cache = Cache(path, "key-1", fresh=False)
    reworded = questions("first", "second, reworded")
    cache.fill(reworded, "test", compute)
    assert asked == ["first", "second", "second, reworded"]  # the unchanged question was served from the cache
    assert [r["echo"] for r in cache.of(reworded)] == ["first", "second, reworded"]
    regold = [Question("0", "first", "topic", frozenset({"another gold title"}))]
    Cache(path, "key-1", fresh=False).fill(regold, "test", compute)
    assert asked[-1] == "first" and len(asked) == 4  # the same words with other gold papers are another question
    Cache(path, "key-2", fresh=False).fill(regold, "test", compute)
    assert len(asked) == 5  # another fingerprint: nothing is served
    Cache(path, "key-2", fresh=True).fill(regold, "test", compute)
    assert len(asked) == 6  # --fresh


def test_a_reworded_question_in_a_cached_eval_is_recomputed(bundled_data: Path, tmp_path: Path) -> None:
    data = shutil.copytree(bundled_data, tmp_path / "data")  # the eval cache is written beside the store
    settings, env = make_settings(data), {"RAG_DATA_DIR": str(data)}
    dev = [json.loads(line) for line in DEV.read_text().splitlines()[:3]]
    path = write_jsonl(tmp_path / "three.jsonl", dev)
    first = evaluate_answers(path, settings, ["none"])
    retrieval = evaluate_retrieval(path, settings, ["bm25"])
    cache_dir = next((data / "eval-cache").glob("*three.jsonl*"))
    before = (cache_dir / "answers-none.jsonl").read_text().splitlines()
    ranked_before = (cache_dir / "retrieval-bm25.jsonl").read_text().splitlines()
    # the second question asks about something else entirely, keeping its id and gold titles
    reworded = "Which papers measure the migration routes of monarch butterflies across North America?"
    write_jsonl(path, [dev[0], dev[1] | {"question": reworded}, dev[2]])
    done = CliRunner().invoke(cli, ["eval", "answers", str(path), "--provider", "none", "--json"], env=env)
    assert done.exit_code == 0, done.output
    again = json.loads(done.stdout.splitlines()[-1])  # the command runs the same records through the same cache
    evaluate_retrieval(path, settings, ["bm25"])
    after = (cache_dir / "answers-none.jsonl").read_text().splitlines()
    ranked_after = (cache_dir / "retrieval-bm25.jsonl").read_text().splitlines()
    assert after[0] == before[0]  # same settings, prompts, code and index: the same fingerprint
    records = {json.loads(line)["id"]: line for line in after[1:]}
    old = {json.loads(line)["id"]: line for line in before[1:]}
    assert records[dev[0]["id"]] == old[dev[0]["id"]] and records[dev[2]["id"]] == old[dev[2]["id"]]  # served
    redone = json.loads(records[dev[1]["id"]])
    assert json.loads(old[dev[1]["id"]])["answer"]["refused"] is False
    assert redone["answer"]["refused"] is True  # asked anew: the corpus has nothing on butterflies
    assert again["none"]["refusal_accuracy"] < first["none"]["refusal_accuracy"]  # the figure follows the record
    assert again["none"]["provider"] == "none" and again["none"]["fingerprint"] == json.loads(after[0])["fingerprint"]
    assert retrieval["bm25"]["fingerprint"] == json.loads(ranked_after[0])["fingerprint"]
    table = CliRunner().invoke(cli, ["eval", "answers", str(path), "--provider", "none"], env=env)
    assert "| none | — |" in table.stdout and "citation_precision" in table.stdout
    # a changed prompt is another fingerprint, though no answer without a model reads it: nothing is served
    prompts = settings.prompts.model_copy(update={"answer": settings.prompts.answer + " Be brief."})
    evaluate_answers(path, settings.model_copy(update={"prompts": prompts}), ["none"], limit=1)
    header, *kept = (cache_dir / "answers-none.jsonl").read_text().splitlines()
    assert header != after[0] and len(kept) == 1 and kept[0] != records[dev[0]["id"]]
    assert len(ranked_after) == len(ranked_before) + 1  # one ranking appended, the others kept


def test_beir_suites_need_their_benchmark_folder(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", eval={"benchmarks_dir": str(tmp_path / "nowhere"), "reports_dir": "x"})
    with pytest.raises(BadInput, match="benchmark folder missing"):
        run_suite("scifact", settings, tmp_path / "out", ["none"])


def test_the_code_version_follows_the_code_that_shapes_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rag.eval import runners

    copy = shutil.copytree(runners.RAG_DIR, tmp_path / "rag", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(runners, "RAG_DIR", copy)
    digest = runners.code_version.__wrapped__
    before = digest()
    (copy / "cli.py").write_text((copy / "cli.py").read_text() + "\n# help text only\n")
    assert digest() == before  # presenting figures differently cannot change a record
    (copy / "gate.py").write_text((copy / "gate.py").read_text().replace("config.gate_cover", "config.gate_cite", 1))
    assert digest() != before  # new gate code: every record computed with the old one is stale
    changed = digest()
    (copy / "assets" / "gate.json").write_text((copy / "assets" / "gate.json").read_text().replace("1", "2", 1))
    assert digest() != changed  # a retrained gate model too


def paper(n: int, title: str, abstract: str, quoted: str) -> dict[str, object]:
    return {"n": n, "paper_id": title, "title": title, "abstract": abstract, "evidence": [quoted]}


def graded(
    qid: str,
    kind: str,
    gold: set[str],
    facts: tuple[str, ...],
    sources: list[dict[str, object]],
    cited: list[int],
    text: str,
    sentences: Sequence[Sentence] = (),
    unsupported: Sequence[str] = (),
) -> AnswerRecord:
    by_n = {source["n"]: source for source in sources}
    answer = {
        "answer": text,
        "citations": [by_n[n] for n in cited],
        "sources": sources,
        "refused": not sources,
        "refusal": None if sources else "not_covered",
        "nearest": [],
        "notice": None,
        "prompt_tokens": 300 if sentences or unsupported else 0,  # only an answer the model wrote prompted it
        "unsupported": list(unsupported),
    }
    return AnswerRecord(Question(qid, "q", kind, frozenset(gold), facts), answer, list(sentences), 0.3, 1.0, 2.0)


def test_evidence_answer_and_synthesis_are_scored_apart_so_the_model_shows() -> None:
    sources = [
        paper(1, "a", "We add sparse attention and reach 87.5% accuracy on WikiText-103.", "We add sparse attention."),
        paper(2, "b", "A kernel that runs in linear time on an H100.", "A kernel that runs fast."),
        paper(3, "x", "Unrelated work on 42 languages.", "Unrelated work."),
    ]
    written = [Sentence("a adds sparse attention for 87.5% on WikiText-103 [1].", (1,))]
    topic = graded(
        "t", "topic", {"a", "b", "c"}, ("sparse attention", "linear time"), sources, [1, 2, 3],
        "a adds sparse attention [1]. Quotes: linear time [2] ...", written, ["An uncited claim."],
    )  # fmt: skip
    evidence_only = graded("f", "fact", {"c"}, ("dropout",), [paper(1, "c", "Dropout.", "dropout")], [1], "dropout")
    scores = score_answers([topic, evidence_only])
    # evidence: the admitted titles and what was quoted of them ("linear time" is in b's abstract, not its quote)
    assert scores["evidence"]["citation_precision"] == pytest.approx((2 / 3 + 1) / 2, abs=1e-4)
    assert scores["evidence"]["citation_recall"] == pytest.approx((2 / 3 + 1) / 2, abs=1e-4)
    assert scores["evidence"]["key_fact_recall"] == pytest.approx((1 / 2 + 1) / 2, abs=1e-4)
    # answer: the text the user reads carries both facts of the topic question
    assert scores["key_fact_recall"] == pytest.approx((1 + 1) / 2, abs=1e-4)
    assert scores["citation_recall"] == pytest.approx((2 / 3 + 1) / 2, abs=1e-4)
    # synthesis: only the model's sentence, only in the answer that prompted it; it cites a alone
    synthesis = scores["synthesis"]
    assert synthesis["answers"] == 1 and synthesis["sentences"] == 1
    assert synthesis["citation_precision"] == 1.0 and synthesis["citation_recall"] == pytest.approx(1 / 3, abs=1e-4)
    assert synthesis["key_fact_recall"] == 0.5
    assert synthesis["dropped_share"] == 0.5  # one verified, one dropped
    assert synthesis["unsupported_terms"] == 0  # 87.5% and WikiText-103 are both in the abstract of a


def test_a_number_or_name_from_a_source_the_sentence_does_not_cite_is_counted() -> None:
    sources = [
        paper(1, "a", "We add sparse attention to transformers.", "We add sparse attention."),
        paper(2, "b", "Our model reaches 87.5% accuracy on WikiText-103.", "87.5% on WikiText-103."),
    ]
    # b's figures under a's number: every [n] is valid, but a's abstract states neither
    borrowed = Sentence("Sparse attention reaches 87.5% accuracy on WikiText-103 [1].", (1,))
    honest = Sentence("Our model reaches 87.5% accuracy on WikiText-103 [2].", (2,))
    done = graded("t", "fact", {"a"}, (), sources, [1, 2], "", [borrowed, honest])
    synthesis = score_answers([done])["synthesis"]
    (found,) = synthesis["unsupported_term_sentences"]
    assert found["id"] == "t" and found["sentence"] == borrowed.text and found["cited"] == [1]
    assert any("87.5" in term for term in found["missing"]) and any("wikitext" in t.lower() for t in found["missing"])
    assert synthesis["unsupported_terms"] == len(found["missing"]) >= 2


def refused(qid: str, near_miss: bool, refusal: str | None, nearest: list[str], about: set[str]) -> AnswerRecord:
    answer = {"answer": "The corpus does not state it.", "citations": [], "sources": [], "refused": refusal is not None,
              "refusal": refusal, "nearest": [{"title": t} for t in nearest], "notice": None, "prompt_tokens": 0,
              "unsupported": []}  # fmt: skip
    question = Question(qid, "q", "unanswerable", frozenset(), near_miss=near_miss, about=frozenset(about))
    return AnswerRecord(question, answer, [], 0.3, None, 0.3)


def test_near_miss_questions_count_only_when_declined_as_not_stated() -> None:
    records = [
        refused("n1", True, "not_stated", ["Other", "On  Topic"], {"on topic"}),  # right, on-topic paper named
        refused("n2", True, "not_covered", ["Other"], {"on topic"}),  # declined, but as "not covered"
        refused("n3", True, None, [], {"on topic"}),  # answered: wrong
        refused("u1", False, "not_covered", [], set()),  # plain unanswerable, declined
        graded("a1", "fact", {"a"}, (), [paper(1, "a", "x", "x")], [1], "x"),  # answerable, answered
        graded("a2", "fact", {"a"}, (), [], [], ""),  # answerable, refused: wrong
    ]
    scores = score_answers(records)
    refusals = scores["refusals"]
    assert refusals["near_miss"] == 3
    assert refusals["not_stated_accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    assert refusals["nearest_on_topic"] == pytest.approx(1 / 3, abs=1e-4)  # titles are matched normalised
    assert refusals["refusal_accuracy_near_miss"] == pytest.approx(2 / 3, abs=1e-4)
    assert refusals["refusal_accuracy_unanswerable"] == 1.0
    assert refusals["refusal_accuracy_answerable"] == 0.5
    assert scores["refusal_accuracy"] == pytest.approx(4 / 6, abs=1e-4)


def test_scores_are_broken_down_per_question_type() -> None:
    records = [
        graded("t1", "topic", {"a", "b"}, (), [paper(1, "a", "x", "x")], [1], "x"),
        graded("t2", "topic", {"c", "d"}, (), [paper(1, "c", "x", "x"), paper(2, "d", "y", "y")], [1, 2], "x"),
        graded("f1", "fact", {"e"}, ("fact",), [paper(1, "e", "x", "x")], [1], "no"),
        refused("u1", False, "not_covered", [], set()),
    ]
    by_type = score_answers(records)["by_type"]
    assert set(by_type) == {"topic", "fact", "unanswerable"}
    assert by_type["topic"]["questions"] == 2
    assert by_type["topic"]["answer"]["citation_recall"] == pytest.approx((1 / 2 + 1) / 2, abs=1e-4)
    assert by_type["topic"]["evidence"]["citation_recall"] == pytest.approx((1 / 2 + 1) / 2, abs=1e-4)
    assert by_type["fact"]["answer"]["citation_recall"] == 1.0 and by_type["fact"]["answer"]["key_fact_recall"] == 0
    assert by_type["unanswerable"]["answer"]["citation_recall"] is None
    assert by_type["unanswerable"]["answer"]["refusal_accuracy"] == 1.0
    assert by_type["topic"]["synthesis"]["citation_recall"] is None  # no model was asked


def test_the_answer_report_renders_each_group_the_near_miss_line_and_plots(tmp_path: Path) -> None:
    from rag.eval.report import answer_plots, format_answers

    sources = [paper(1, "a", "Sparse attention.", "Sparse attention.")]
    invented = Sentence("Sparse attention cuts cost by 73% on TPUv9 [1].", (1,))
    records = [
        graded("t1", "topic", {"a", "b"}, ("sparse",), sources, [1], "Sparse attention [1].", [invented]),
        refused("n1", True, "not_stated", ["a"], {"a"}),
    ]
    report = {"local": score_answers(records) | {"model": "tiny"}, "openai": {"skipped": "no server"}}
    text = format_answers(report)
    for heading in ("### Evidence", "### Answer", "### Synthesis", "### Per question type"):
        assert heading in text
    assert "| local | topic | 1 | 0.5 |" in text  # evidence recall of the topic question: a of a, b
    assert '- local: near-miss questions (1) answered "not stated" 1,' in text
    assert "`t1`" in text and "TPUv9" in text  # the invented name is listed with its question
    assert "openai: skipped (no server)" in text
    written = answer_plots("unit", {"local": report["local"]}, tmp_path)
    assert {path.name for path in written} == {"citation_recall_by_type.png", "refusals.png"}
    assert all(path.stat().st_size > 5000 for path in written)
