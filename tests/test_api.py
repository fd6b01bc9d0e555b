"""The OpenAI-compatible API of `rag serve`, driven by the official `openai` client against the real app."""

import re

import httpx
import openai
import pytest

from tests.conftest import API_KEY, App

SOFTMAX = "Which papers discuss the softmax bottleneck?"
SOFTMAX_PAPERS = ("Why do small language models underperform?", "On Retrieval Augmentation and the Limitations")


def client(app: App, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app.url}/v1", api_key=key, timeout=300, max_retries=0)


def check_cited(text: str, citations: list[dict[str, object]], sources: list[dict[str, object]]) -> None:
    """Every [n] in the text is a citation, and every citation is one of the sources."""
    numbers = {int(n) for n in re.findall(r"\[(\d+)\]", text)}
    assert numbers and numbers == {c["n"] for c in citations}
    assert {c["paper_id"] for c in citations} <= {s["paper_id"] for s in sources}


def test_models_are_listed(app_server: App) -> None:
    assert {model.id for model in client(app_server).models.list()} == {"rag", "rag-evidence"}


def test_a_cited_answer_from_the_local_model(app_server: App) -> None:
    response = client(app_server).chat.completions.create(model="rag", messages=[{"role": "user", "content": SOFTMAX}])
    extra = response.model_extra or {}
    text = response.choices[0].message.content or ""
    check_cited(text, extra["citations"], extra["sources"])
    titles = " ".join(source["title"] for source in extra["sources"])
    assert all(paper in titles for paper in SOFTMAX_PAPERS)
    assert extra["refused"] is False and response.usage is not None and response.usage.prompt_tokens > 50


def test_a_streamed_answer_arrives_in_pieces_with_the_sources_last(app_server: App) -> None:
    stream = client(app_server).chat.completions.create(
        model="rag", messages=[{"role": "user", "content": "How does KDEformer approximate attention?"}], stream=True
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert len([c for c in chunks if c.choices[0].delta.content]) >= 2  # the synthesis, then the evidence block
    assert chunks[-1].choices[0].finish_reason == "stop"
    extra = chunks[-1].model_extra or {}
    check_cited(text, extra["citations"], extra["sources"])
    assert extra["sources"][0]["title"].startswith("KDEformer")


def test_a_follow_up_uses_the_earlier_turns(app_server: App) -> None:
    messages = [
        {"role": "user", "content": SOFTMAX},
        {"role": "assistant", "content": "Two papers discuss it [1][2]."},
        {"role": "user", "content": "and which of them use kNN retrieval?"},
    ]
    response = client(app_server).chat.completions.create(model="rag-evidence", messages=messages)  # type: ignore[arg-type]
    titles = [source["title"] for source in (response.model_extra or {})["sources"]]
    assert any(title.startswith(SOFTMAX_PAPERS[1]) for title in titles)


def test_off_topic_questions_are_refused_with_the_closest_papers(app_server: App) -> None:
    question = "What is the best recipe for sourdough bread with rye flour?"
    response = client(app_server).chat.completions.create(
        model="rag-evidence", messages=[{"role": "user", "content": question}]
    )
    extra = response.model_extra or {}
    assert extra["refused"] is True and extra["citations"] == [] and len(extra["nearest"]) == 3
    assert "does not cover" in (response.choices[0].message.content or "")


def test_without_the_key_every_endpoint_answers_401(app_server: App) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(app_server, key="wrong").models.list()
    with pytest.raises(openai.AuthenticationError):
        client(app_server, key="wrong").chat.completions.create(
            model="rag", messages=[{"role": "user", "content": SOFTMAX}]
        )
    bare = httpx.get(f"{app_server.url}/v1/models", timeout=10)
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "invalid_api_key"
    assert API_KEY not in app_server.log.read_text()  # the secret is never logged


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}', 404, "does not exist"),
        (b'{"model": "rag"}', 400, "messages"),
        (b'{"model": "rag", "messages": [{"role": "user", "content": "   "}]}', 400, "empty"),
        (b'{"model": "rag", "messages": [{"role": "wizard", "content": "hi"}]}', 400, "role"),
        (
            b'{"model": "rag-evidence", "messages": [{"role": "user", "content": "' + b"x" * 100_000 + b'"}]}',
            400,
            "the limit is",
        ),
    ],
)
def test_bad_requests_get_an_openai_error_and_the_server_keeps_serving(
    app_server: App, body: bytes, status: int, says: str
) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    response = httpx.post(f"{app_server.url}/v1/chat/completions", content=body, headers=headers, timeout=60)
    assert response.status_code == status
    assert says in response.json()["error"]["message"]
    assert httpx.get(f"{app_server.url}/v1/models", headers=headers, timeout=10).status_code == 200
