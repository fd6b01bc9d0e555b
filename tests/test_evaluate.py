"""Retrieval evaluation: the metrics on hand-made rankings and against trec_eval, BEIR loading and the dev-set quality
floor."""

import json
import shutil
from itertools import islice
from pathlib import Path

import pytest
from click.testing import CliRunner

from rag.cli import cli
from rag.errors import BadInput
from rag.eval.datasets import Question, load_beir, load_question_set
from rag.eval.metrics import paper_metrics, retrieval_summary
from rag.eval.suites import evaluate_retrieval
from rag.readers import BUNDLED_CORPUS, normalise_title, read_corpus
from rag.settings import PROJECT_DIR
from tests.conftest import make_settings, write_jsonl

DEV = PROJECT_DIR / "eval" / "datasets" / "dev.jsonl"
SCIFACT = PROJECT_DIR.parent / "shared" / "benchmarks" / "scifact"


def test_metrics_on_a_hand_computed_ranking() -> None:
    scores = paper_metrics(["x", "a", "y", "b"], {"a", "b", "c"}, k=10)
    assert scores["recall@1"] == 0
    assert scores["recall@5"] == pytest.approx(2 / 3)
    assert scores["mrr@10"] == pytest.approx(1 / 2)
    ideal = 1 + 1 / 1.584962500721156 + 1 / 2  # three relevant papers at ranks 1-3
    assert scores["ndcg@10"] == pytest.approx((1 / 1.584962500721156 + 1 / 2.321928094887362) / ideal)
    assert paper_metrics(["a"], {"a"})["ndcg@10"] == 1.0


# Where each query's gold documents sit in its hand-made run (0-based ranks; None: not retrieved), so the runs cover
# a hit at rank 1, hits just inside and outside the cut-offs, a miss, and queries with several gold documents.
PLACEMENTS = [[0], [4], [5], [9], [10], [63], [None], [1, 3], [0, None], [12, 2], [7, 30, None], [99, 0, 6]]


@pytest.mark.skipif(not SCIFACT.is_dir(), reason="needs ../shared/benchmarks/scifact beside the project")
def test_retrieval_metrics_equal_trec_eval_on_scifact_queries() -> None:
    import pytrec_eval

    questions = load_beir(SCIFACT, "test")
    by_size = {n: [q for q in questions if len(q.gold) == n] for n in (1, 2, 3)}
    chosen = [by_size[len(placement)].pop() for placement in PLACEMENTS]
    with (SCIFACT / "corpus.jsonl").open() as corpus:
        documents = [json.loads(line)["id"] for line in islice(corpus, 400)]
    runs = []
    for number, (question, placement) in enumerate(zip(chosen, PLACEMENTS, strict=True)):
        ranked = [d for d in documents[number * 20 :] if d not in question.gold][:100]  # distractors
        for rank, doc in sorted((r, d) for r, d in zip(placement, sorted(question.gold), strict=True) if r is not None):
            ranked.insert(rank, doc)
        runs.append(ranked[:100])
    qrels = {q.id: dict.fromkeys(q.gold, 1) for q in chosen}

    def trec(measures: set[str], depth: int) -> dict[str, dict[str, float]]:
        run = {q.id: {d: float(depth - i) for i, d in enumerate(r[:depth])} for q, r in zip(chosen, runs, strict=True)}
        return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)

    full = trec({"recall.1,5,10,100", "ndcg_cut.2,10"}, 100)
    top10 = trec({"recip_rank"}, 10)  # MRR@10: the reciprocal rank within the first ten
    for question, ranked in zip(chosen, runs, strict=True):
        ours, theirs = paper_metrics(ranked, question.gold), full[question.id]
        for n in (1, 5, 10, 100):
            assert ours[f"recall@{n}"] == pytest.approx(theirs[f"recall_{n}"]), (question.id, n)
        assert ours["ndcg@10"] == pytest.approx(theirs["ndcg_cut_10"]), question.id
        # at k=2 a query with three gold documents has more than k: the ideal ranking counts only k of them
        assert paper_metrics(ranked, question.gold, k=2)["ndcg@2"] == pytest.approx(theirs["ndcg_cut_2"]), question.id
        assert ours["mrr@10"] == pytest.approx(top10[question.id]["recip_rank"]), question.id
    summary = retrieval_summary(chosen, runs, [0.01] * len(chosen))
    mean_ndcg = sum(full[q.id]["ndcg_cut_10"] for q in chosen) / len(chosen)
    assert summary["ndcg@10"] == pytest.approx(mean_ndcg, abs=5e-5)  # the summary rounds to 4 places
    assert 0 < summary["ndcg@10"] < 1 and summary["recall@100"] < 1  # the runs are neither perfect nor empty


def test_the_dev_set_follows_the_design_format() -> None:
    questions = load_question_set(DEV)
    assert len(questions) >= 40
    assert {q.type for q in questions} == {"topic", "fact", "method", "compare", "unanswerable"}
    assert all(bool(q.gold) != (q.type == "unanswerable") for q in questions)
    for line in DEV.read_text().splitlines():
        fields = set(json.loads(line))
        assert {"id", "question", "type", "gold_titles", "answer", "key_facts"} <= fields
        assert fields <= {"id", "question", "type", "gold_titles", "answer", "key_facts", "near_miss", "about_titles"}


NEAR_MISS = {"id": "n", "question": "q", "type": "unanswerable", "near_miss": True, "about_titles": ["Known Paper"]}


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"type": "fact", "gold_titles": ["Known Paper"]}, "near_miss is only for unanswerable questions, not fact"),
        ({"near_miss": "yes"}, "near_miss must be true or false"),
        ({"about_titles": []}, "a near-miss question needs about_titles"),
        ({"near_miss": False}, "about_titles is only for near-miss questions"),
        ({"about_titles": "Known Paper"}, "about_titles must be a list of titles"),
        ({"about_titles": ["Known Paper", "No Such Paper"]}, "about title not in the corpus: 'no such paper'"),
    ],
)
def test_near_miss_fields_are_validated_with_file_and_line(
    tmp_path: Path, change: dict[str, object], error: str
) -> None:
    plain = {"id": "u", "question": "Which papers fold proteins?", "type": "unanswerable"}
    path = write_jsonl(tmp_path / "questions.jsonl", [plain, NEAR_MISS | change])
    with pytest.raises(BadInput, match=error) as raised:
        load_question_set(path, known_titles=["Known  paper"])
    assert str(raised.value).startswith(f"{path}:2: ")


def test_a_near_miss_line_loads_its_normalised_about_titles_into_the_digest(tmp_path: Path) -> None:
    other = NEAR_MISS | {"id": "m", "about_titles": ["Another Paper"]}
    path = write_jsonl(tmp_path / "questions.jsonl", [NEAR_MISS | {"about_titles": ["  KNOWN paper "]}, other])
    near, moved = load_question_set(path, known_titles=["Known Paper", "Another Paper"])
    assert (near.near_miss, near.about) == (True, frozenset({"known paper"}))
    plain = Question("n", "q", "unanswerable", frozenset())
    assert len({near.digest, moved.digest, plain.digest}) == 3  # a changed on-topic list is another question
    plain_line = {"id": "n", "question": "q", "type": "unanswerable"}
    assert load_question_set(write_jsonl(tmp_path / "plain.jsonl", [plain_line]))[0].digest == plain.digest


@pytest.mark.parametrize("name", ["dev", "heldout"])
def test_question_sets_keep_their_key_facts_and_near_miss_papers_in_the_corpus(name: str) -> None:
    papers = {normalise_title(paper.title): paper for paper in read_corpus(BUNDLED_CORPUS)}
    questions = load_question_set(PROJECT_DIR / "eval" / "datasets" / f"{name}.jsonl", papers)
    for question in questions:  # a key fact the gold abstracts lack could never be found in a cited source
        for fact in question.key_facts:
            assert any(fact.lower() in papers[title].abstract.lower() for title in question.gold), (question.id, fact)
    near_miss = [q for q in questions if q.near_miss]
    assert len(near_miss) >= 14 and all(1 <= len(q.about) <= 3 for q in near_miss)
    assert all(3 <= len(q.gold) <= 7 for q in questions if q.type == "topic" and q.id.startswith("heldout"))


def test_beir_loader_reads_split_qrels_and_skips_a_header(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "d1", "title": "T", "text": "x"}])
    write_jsonl(tmp_path / "queries_train.jsonl", [{"_id": "q1", "text": "a"}, {"_id": "q2", "text": "b"}])
    (tmp_path / "qrels_train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td1\t0\n")
    (question,) = load_beir(tmp_path, "train")
    assert (question.id, question.gold) == ("q1", frozenset({"d1"}))


def test_hybrid_beats_each_retriever_on_the_dev_set(bundled_data: Path, tmp_path: Path) -> None:
    data = shutil.copytree(bundled_data, tmp_path / "data")  # the eval cache is written beside the store
    report = evaluate_retrieval(DEV, make_settings(data), ["bm25", "dense", "hybrid"])
    hybrid = report["hybrid"]
    assert hybrid["ndcg@10"] > max(report["bm25"]["ndcg@10"], report["dense"]["ndcg@10"])
    assert hybrid["recall@5"] >= 0.85  # a floor under the measured 0.87: a regression, not noise, breaks it
    assert hybrid["questions"] + hybrid["unscored"] == len(load_question_set(DEV))
    assert set(hybrid["by_type"]) == {"topic", "fact", "method", "compare"}


def test_eval_cli_scores_a_beir_folder_in_its_own_collection(tmp_path: Path) -> None:
    folder = tmp_path / "mini"
    folder.mkdir()
    docs = [
        {"_id": f"d{i}", "title": f"Topic {w}", "text": f"This abstract is about {w}."}
        for i, w in enumerate(["cats", "boats", "stars"])
    ]
    write_jsonl(folder / "corpus.jsonl", docs)
    write_jsonl(
        folder / "queries.jsonl", [{"_id": "q1", "text": "sailing boats"}, {"_id": "q2", "text": "astronomy stars"}]
    )
    (folder / "qrels.tsv").write_text("q1\td1\t1\nq2\td2\t1\n")
    result = CliRunner().invoke(cli, ["eval", "retrieval", str(folder), "--retriever", "hybrid", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.splitlines()[-1])
    assert list(report) == ["hybrid"]
    assert report["hybrid"]["recall@1"] == 1.0
    assert {"recall@5", "recall@100", "mrr@10", "ndcg@10", "by_type", "fingerprint"} <= set(report["hybrid"])
    stats = CliRunner().invoke(cli, ["stats", "--json", "--collection", "beir-mini"])
    assert json.loads(stats.stdout)["papers"] == 3
