"""The remote reranker client against a small server that speaks the ``/rerank`` API, in both shapes and every fault."""

import time
from collections.abc import Iterator

import pytest

from rag.remote_rerank import RemoteReranker, RerankUnavailable
from tests.conftest import free_port
from tests.fakes import RerankServer, rerank_server

QUERY = "sparse attention transformers"
# the server's scores (share of the query's words present): 0, 1, 1/3 — it answers them best first: 1, 2, 0
DOCUMENTS = [
    "Graph neural networks for molecules",
    "Sparse attention makes long transformers cheap",
    "Attention is all",
]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with rerank_server() as url:
        yield url


@pytest.fixture(autouse=True)
def _fresh_log() -> None:
    RerankServer.requests.clear()


@pytest.mark.parametrize("mode", ["cohere", "tei"])
def test_scores_come_back_in_the_documents_order(server: str, mode: str) -> None:
    reranker = RemoteReranker(f"{server}/{mode}/v1/rerank", "bge-reranker-v2-m3", timeout_s=5)
    assert reranker.scores(QUERY, DOCUMENTS) == pytest.approx([0.0, 1.0, 1 / 3])
    assert reranker.scores("graph molecules", DOCUMENTS) == pytest.approx([1.0, 0.0, 0.0])


def test_the_request_carries_model_query_documents_and_key(server: str) -> None:
    RemoteReranker(f"{server}/cohere/v1/rerank", "bge-reranker-v2-m3", timeout_s=5, api_key="s3cret").scores(
        QUERY, DOCUMENTS
    )
    RemoteReranker(f"{server}/cohere/v1/rerank", "bge-reranker-v2-m3", timeout_s=5).scores(QUERY, DOCUMENTS)
    signed, anonymous = RerankServer.requests
    assert signed["path"] == "/cohere/v1/rerank"
    assert signed["body"] == {"model": "bge-reranker-v2-m3", "query": QUERY, "documents": DOCUMENTS, "top_n": 3}
    assert signed["authorization"] == "Bearer s3cret"
    assert anonymous["authorization"] is None


def test_a_tei_server_is_asked_again_with_texts_once_and_then_directly(server: str) -> None:
    reranker = RemoteReranker(f"{server}/tei/rerank", "ignored", timeout_s=5)
    reranker.scores(QUERY, DOCUMENTS)
    reranker.scores("graph", DOCUMENTS)
    assert [sorted(request["body"]) for request in RerankServer.requests] == [
        ["documents", "model", "query", "top_n"],  # refused: TEI wants "texts"
        ["query", "texts"],
        ["query", "texts"],
    ]
    assert RerankServer.requests[-1]["body"] == {"query": "graph", "texts": DOCUMENTS}


@pytest.mark.parametrize(
    ("mode", "problem"),
    [
        ("error", 'answered HTTP 500: {"error": "CUDA out of memory"}'),
        ("garbage", "sent a body that is not JSON: <html>502 Bad Gateway</html>"),
        ("shape", "sent a reply that is not the rerank API's: results.0.relevance_score: Field required"),
        (
            "nan",
            "sent a reply that is not the rerank API's: results.0.relevance_score: Input should be a finite number",
        ),
        ("short", "returned 2 scores for 3 documents"),
        ("duplicate", "returned index 1 more than once"),
        ("outside", "returned index 3 for 3 documents (0 to 2)"),
    ],
)
def test_a_faulty_reply_raises_with_the_url_and_the_problem(server: str, mode: str, problem: str) -> None:
    url = f"{server}/{mode}/v1/rerank"
    with pytest.raises(RerankUnavailable) as raised:
        RemoteReranker(url, "m", timeout_s=5).scores(QUERY, DOCUMENTS)
    assert str(raised.value) == f"the reranker at {url} {problem}"


def test_a_slow_server_times_out_after_the_configured_seconds(server: str) -> None:
    url = f"{server}/slow/v1/rerank"
    started = time.monotonic()
    with pytest.raises(RerankUnavailable, match=r"timed out after 0\.3 s") as raised:
        RemoteReranker(url, "m", timeout_s=0.3).scores(QUERY, DOCUMENTS)
    assert url in str(raised.value)
    assert 0.3 <= time.monotonic() - started < 1.5  # the server sleeps 2 s


def test_a_closed_port_raises_at_once() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/rerank"
    started = time.monotonic()
    with pytest.raises(RerankUnavailable, match="is not reachable") as raised:
        RemoteReranker(url, "m", timeout_s=5).scores(QUERY, DOCUMENTS)
    assert url in str(raised.value)
    assert time.monotonic() - started < 1


def test_no_documents_make_no_request(server: str) -> None:
    assert RemoteReranker(f"{server}/cohere/v1/rerank", "m", timeout_s=5).scores(QUERY, []) == []
    assert RerankServer.requests == []
