"""The rerank stage: late interaction on stored token vectors, the remote /rerank route and its fallback, reuse of
token vectors across index versions, and what it does to the dev set's ranking."""

from pathlib import Path

import numpy as np
import pytest

from rag import keyword_index, late_interaction
from rag.embedding import LocalMiniLMEmbedding
from rag.errors import BadInput
from rag.eval.suites import evaluate_retrieval
from rag.evidence import EvidenceFinder
from rag.ingest import ingest
from rag.readers import BUNDLED_CORPUS, read_corpus
from rag.retrieve import PaperRetriever
from rag.settings import PROJECT_DIR, Settings
from tests.conftest import make_settings, synthetic_papers, write_jsonl
from tests.fakes import rerank_server
from tests.test_retrieve import SOFTMAX_PAPERS

DEV = PROJECT_DIR / "eval" / "datasets" / "dev.jsonl"
QUESTION = "which papers discuss the softmax bottleneck"


def with_retrieval(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(update={"retrieval": settings.retrieval.model_copy(update=changes)})


@pytest.fixture(scope="module")
def bundled(bundled_data: Path) -> PaperRetriever:
    return PaperRetriever(make_settings(bundled_data))


def test_the_rerank_reorders_the_fused_top_depth(bundled: PaperRetriever) -> None:
    depth = bundled.settings.retrieval.rerank_depth
    fused = bundled.search(QUESTION, depth, "hybrid")
    reranked = bundled.search(QUESTION, 10, "rerank")
    assert [hit.rank for hit in reranked] == list(range(1, 11))
    assert {hit.paper_id for hit in reranked} <= {hit.paper_id for hit in fused}
    assert [hit.paper_id for hit in reranked] != [hit.paper_id for hit in fused[:10]]  # it does reorder
    by_id = {hit.paper_id: hit.score for hit in fused}
    assert all(hit.score == by_id[hit.paper_id] for hit in reranked)  # the fused score is kept for the gate
    scores = [hit.rerank_score or 0.0 for hit in reranked]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.5


def test_coverage_ranks_first_the_papers_that_use_every_term(bundled: PaperRetriever) -> None:
    local = bundled.reranker.local
    assert local is not None
    hits = bundled.search(QUESTION, 20, "hybrid")
    scores = local.scores(QUESTION, hits)
    assert {hits[i].title for i in np.argsort(-scores)[:2]} == SOFTMAX_PAPERS
    assert scores.min() < scores.max() - 0.1


def test_on_the_dev_set_the_rerank_beats_fusion(bundled_data: Path, tmp_path: Path) -> None:
    report = evaluate_retrieval(DEV, make_settings(bundled_data), ["hybrid", "rerank"])
    assert report["rerank"]["ndcg@10"] > report["hybrid"]["ndcg@10"]
    assert report["rerank"]["by_type"]["topic"]["ndcg@10"] > report["hybrid"]["by_type"]["topic"]["ndcg@10"]


def test_a_remote_reranker_orders_the_papers(bundled_data: Path) -> None:
    with rerank_server() as url:
        settings = with_retrieval(
            make_settings(bundled_data), reranker="remote", rerank_url=f"{url}/cohere/v1/rerank", rerank_depth=10
        )
        ranking = PaperRetriever(settings).rank("softmax bottleneck saturation", 5)
    assert ranking.notice is None
    scores = [hit.rerank_score for hit in ranking.hits]
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    assert "Saturation via the Softmax Bottleneck" in ranking.hits[0].title  # it holds every query word


def test_a_remote_reranker_that_is_down_falls_back_to_the_local_stage_with_a_notice(bundled_data: Path) -> None:
    local = PaperRetriever(make_settings(bundled_data)).search(QUESTION, 5)
    with rerank_server() as url:
        down = with_retrieval(make_settings(bundled_data), reranker="remote", rerank_url=f"{url}/error/v1/rerank")
        retriever = PaperRetriever(down)
        ranking = retriever.rank(QUESTION, 5)
        evidence = EvidenceFinder(down, retriever.collection).find(QUESTION)
    assert [hit.paper_id for hit in ranking.hits] == [hit.paper_id for hit in local]
    assert ranking.notice is not None and "HTTP 500" in ranking.notice and "local reranker" in ranking.notice
    assert evidence.notice == ranking.notice


def test_a_remote_reranker_without_a_url_is_refused(bundled_data: Path) -> None:
    with pytest.raises(BadInput, match=r"retrieval\.rerank_url is ''"):
        PaperRetriever(with_retrieval(make_settings(bundled_data), reranker="remote"))


def test_reranker_none_keeps_the_fused_order(bundled: PaperRetriever, bundled_data: Path) -> None:
    off = PaperRetriever(with_retrieval(make_settings(bundled_data), reranker="none"))
    assert [h.paper_id for h in off.search(QUESTION, 10)] == [
        h.paper_id for h in bundled.search(QUESTION, 10, "hybrid")
    ]


def test_a_republish_encodes_only_the_rows_it_has_not_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    papers = [
        {"id": f"p{i}", "title": p.title, "abstract": p.abstract} for i, p in enumerate(read_corpus(BUNDLED_CORPUS))
    ]
    settings = make_settings(tmp_path / "data")
    ingest(write_jsonl(tmp_path / "a.jsonl", papers[:20]), "jsonl", settings, progress=False)
    first = PaperRetriever(settings).collection.keywords.tokens
    encoded: list[str] = []
    original = LocalMiniLMEmbedding.encode_with_tokens

    def counting(self: LocalMiniLMEmbedding, texts: list[str]) -> object:
        encoded.extend(texts)
        return original(self, texts)

    monkeypatch.setattr(LocalMiniLMEmbedding, "encode_with_tokens", counting)
    ingest(write_jsonl(tmp_path / "b.jsonl", papers[:22]), "jsonl", settings, progress=False)
    second = PaperRetriever(settings).collection.keywords.tokens
    titles = {paper["title"] for paper in papers[:22]}
    assert titles & set(encoded) == {paper["title"] for paper in papers[20:22]}  # the token pass saw only the new
    assert np.array_equal(second.basis, first.basis)  # the projection is kept
    rows = first.rows_of()
    for paper_id, again in second.rows_of().items():
        if paper_id in rows:  # an unchanged row keeps its codes exactly
            assert np.array_equal(first.paper_vectors(rows[paper_id]), second.paper_vectors(again))
    assert len(second.rows_of()) == 22 and second.basis.shape == (384, late_interaction.DIMENSIONS)


def test_a_damaged_token_file_asks_for_a_reingest(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    ingest(write_jsonl(tmp_path / "a.jsonl", synthetic_papers(6)), "jsonl", settings, progress=False)
    version = keyword_index.current_id(settings.data_path, settings.collection)
    assert version is not None
    folder = keyword_index.index_dir(settings.data_path, settings.collection) / version
    (folder / late_interaction.TOKENS_FILE).write_bytes(b"not an npz file")
    with pytest.raises(BadInput, match="is unreadable: run `rag ingest FILE --collection papers` to rebuild it"):
        PaperRetriever(settings)
