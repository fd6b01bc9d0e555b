"""The OpenAI-compatible API, driven by the official `openai` client: against the real `rag serve` with the local
model, and in-process (the app under uvicorn with the local model, to watch its lock when a client hangs up; FastAPI's
TestClient as the client's transport against a chat server that dies mid-answer)."""

import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from app.api import add_api
from rag.assistant import Assistant, FifoLock, SerialModel
from tests.conftest import API_KEY, App, make_settings, needs_local_model
from tests.fakes import misbehaving_chat_server

SOFTMAX = "Which papers discuss the softmax bottleneck?"
SOFTMAX_PAPERS = ("Why do small language models underperform?", "On Retrieval Augmentation and the Limitations")
KDEFORMER = "How does KDEformer approximate attention?"
EXTRAS = ("citations", "sources", "related", "weak", "refused", "nearest", "notice", "synthesis")


def client(app: App, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app.url}/v1", api_key=key, timeout=300, max_retries=0)


def ask(api: openai.OpenAI, question: str, model: str = "rag") -> ChatCompletion:
    return api.chat.completions.create(model=model, messages=[{"role": "user", "content": question}])


def ask_streaming(api: openai.OpenAI, question: str, model: str = "rag") -> list[ChatCompletionChunk]:
    return list(api.chat.completions.create(model=model, messages=[{"role": "user", "content": question}], stream=True))


def streamed_text(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks)


def check_cited(text: str, citations: list[dict[str, object]], sources: list[dict[str, object]]) -> None:
    """Every [n] in the text is a citation, and every citation is one of the sources."""
    numbers = {int(n) for n in re.findall(r"\[(\d+)\]", text)}
    assert numbers and numbers == {c["n"] for c in citations}
    assert {c["paper_id"] for c in citations} <= {s["paper_id"] for s in sources}


def check_same_answer(reply: ChatCompletion, chunks: list[ChatCompletionChunk]) -> dict[str, Any]:
    """The stream carries exactly the reply's text, extras and usage (on its last chunk); returns the extras."""
    assert streamed_text(chunks) == reply.choices[0].message.content
    last, extra = chunks[-1], reply.model_extra or {}
    assert last.choices[0].finish_reason == "stop" == reply.choices[0].finish_reason
    assert {key: (last.model_extra or {})[key] for key in EXTRAS} == {key: extra[key] for key in EXTRAS}
    assert last.usage == reply.usage
    assert all(chunk.usage is None and not chunk.model_extra for chunk in chunks[:-1])
    return extra


def test_models_are_listed(app_server: App) -> None:
    assert {model.id for model in client(app_server).models.list()} == {"rag", "rag-evidence"}


def test_sources_cover_every_relevant_paper(app_server: App) -> None:
    response = ask(client(app_server), SOFTMAX, "rag-evidence")
    extra = response.model_extra or {}
    check_cited(response.choices[0].message.content or "", extra["citations"], extra["sources"])
    titles = " ".join(source["title"] for source in extra["sources"])
    assert all(paper in titles for paper in SOFTMAX_PAPERS) and extra["refused"] is False


@needs_local_model
def test_the_stream_is_exactly_the_answer_from_the_local_model(app_server: App) -> None:
    """Same question, same seed: the streamed pieces add up to the non-streamed text, with the same extras."""
    api = client(app_server)
    reply, chunks = ask(api, KDEFORMER), ask_streaming(api, KDEFORMER)
    extra = check_same_answer(reply, chunks)
    assert len([c for c in chunks if c.choices[0].delta.content]) >= 2  # the synthesis, then the evidence block
    assert extra["notice"] is None and extra["synthesis"] in streamed_text(chunks)
    check_cited(streamed_text(chunks), extra["citations"], extra["sources"])
    assert extra["sources"][0]["title"].startswith("KDEformer")
    usage = reply.usage
    assert usage is not None and usage.prompt_tokens > 50 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@contextmanager
def uvicorn_thread(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn in this process (a real socket, so a client can hang up); yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def local_api(bundled_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[openai.OpenAI, FifoLock]]:
    """The API in-process with the local model, and the lock that model is used under."""
    folder = tmp_path_factory.mktemp("local")
    shutil.copytree(bundled_data, folder / "data")
    assistant = Assistant(make_settings(folder / "data"))
    model = assistant.model(assistant.settings)
    assert isinstance(model, SerialModel)
    app = FastAPI()
    add_api(app, assistant)
    with uvicorn_thread(app) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=300, max_retries=0), model.lock


@needs_local_model
def test_a_client_that_leaves_mid_stream_frees_the_model_at_once(local_api: tuple[openai.OpenAI, FifoLock]) -> None:
    """Closing the connection mid-answer closes that answer: the model is free for the next request within a token,
    not when the abandoned answer would have ended (or was garbage-collected)."""
    api, lock = local_api

    def busy() -> bool:
        if lock.acquire(timeout=0):
            lock.release()
            return False
        return True

    def writing() -> tuple[openai.Stream[ChatCompletionChunk], float]:
        """A streamed answer, once the model is writing it (the first chunk comes as soon as the evidence is ready;
        however many sentences the answer has, the model is busy right after)."""
        started = time.monotonic()
        stream = api.chat.completions.create(model="rag", messages=[{"role": "user", "content": SOFTMAX}], stream=True)
        next(iter(stream))
        deadline = time.monotonic() + 30
        while not busy():
            assert time.monotonic() < deadline, "the model never started"
            time.sleep(0.01)
        return stream, time.monotonic() - started

    abandoned, first_s = writing()
    abandoned.close()
    left = time.monotonic()
    assert lock.acquire(timeout=60), "the model stayed busy with an answer nobody reads"
    free_s = time.monotonic() - left
    lock.release()
    following, next_s = writing()  # the next answer gets the model, not the busy-model fallback
    following.close()
    print(f"model writing after {first_s:.1f} s; free {free_s:.2f} s after the client left; next {next_s:.1f} s")
    # llama.cpp's prompt evaluation is one C call that cannot be interrupted, so the bound is the prefill still under
    # way (a few seconds here), not the rest of the answer: without the close in a `finally` it stayed busy over 60 s.
    assert free_s < 15


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
    response = ask(client(app_server), "What is the best recipe for sourdough bread with rye flour?", "rag-evidence")
    extra = response.model_extra or {}
    assert extra["refused"] is True and extra["citations"] == [] and len(extra["nearest"]) == 3
    assert extra["synthesis"] == "" and response.usage is not None and response.usage.completion_tokens == 0
    assert "does not cover" in (response.choices[0].message.content or "")


def test_without_the_key_every_endpoint_answers_401(app_server: App) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(app_server, key="wrong").models.list()
    with pytest.raises(openai.AuthenticationError):
        ask(client(app_server, key="wrong"), SOFTMAX)
    bare = httpx.get(f"{app_server.url}/v1/models", timeout=10)
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "invalid_api_key"
    unchecked = httpx.post(f"{app_server.url}/v1/chat/completions", json={"model": "rag"}, timeout=10)
    assert unchecked.status_code == 401  # the key is checked before the body is
    assert API_KEY not in app_server.log.read_text()  # the secret is never logged


QUESTION = b'[{"role": "user", "content": "hi"}]'


@pytest.mark.parametrize(
    ("body", "status", "says", "param"),
    [
        (b"{not json", 400, "not valid JSON", None),
        (b"", 400, "must be a JSON object", None),
        (b"[1, 2]", 400, "must be a JSON object", None),
        (b'{"model": "gpt-9", "messages": ' + QUESTION + b"}", 404, "does not exist", "model"),
        (b'{"model": "rag"}', 400, "Field required", "messages"),
        (b'{"messages": ' + QUESTION + b"}", 400, "Field required", "model"),
        (b'{"model": 7, "messages": ' + QUESTION + b"}", 400, "valid string", "model"),
        (b'{"model": "rag", "messages": "hi"}', 400, "valid list", "messages"),
        (b'{"model": "rag", "messages": ' + QUESTION + b', "stream": "maybe"}', 400, "valid boolean", "stream"),
        (b'{"model": "rag", "messages": [{"role": "user", "content": 42}]}', 400, "messages.0.content", None),
        (b'{"model": "rag", "messages": [{"role": "wizard", "content": "hi"}]}', 400, "role", "messages.0.role"),
        (b'{"model": "rag", "messages": [{"role": "user", "content": "   "}]}', 400, "empty", None),
        (b'{"model": "rag", "messages": [{"role": "system", "content": "hi"}]}', 400, "empty", None),
        (
            b'{"model": "rag-evidence", "messages": [{"role": "user", "content": "' + b"x" * 100_000 + b'"}]}',
            400,
            "the limit is",
            "messages",
        ),
    ],
)
def test_bad_requests_get_an_openai_error_and_the_server_keeps_serving(
    app_server: App, body: bytes, status: int, says: str, param: str | None
) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    response = httpx.post(f"{app_server.url}/v1/chat/completions", content=body, headers=headers, timeout=60)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert says in error["message"]
    if param is not None:
        assert error["param"] == param
    assert httpx.get(f"{app_server.url}/v1/models", headers=headers, timeout=10).status_code == 200


@pytest.fixture(scope="module")
def dying_chat_api(bundled_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    """The API in-process with provider `openai` pointed at a chat server that sends a sentence and hangs up."""
    folder = tmp_path_factory.mktemp("dying")
    shutil.copytree(bundled_data, folder / "data")
    with misbehaving_chat_server() as url:
        overrides: dict[str, Any] = {"llm": {"provider": "openai"}, "openai": {"base_url": f"{url}/dies/v1"}}
        app = FastAPI()
        add_api(app, Assistant(make_settings(folder / "data", **overrides)))
        with TestClient(app) as http:
            yield openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http, max_retries=0)


def test_the_stream_is_exactly_the_answer_when_the_chat_server_dies_mid_answer(dying_chat_api: openai.OpenAI) -> None:
    """The verified sentence sent before the failure, then the evidence: the same text streamed or not."""
    reply, chunks = ask(dying_chat_api, KDEFORMER), ask_streaming(dying_chat_api, KDEFORMER)
    extra = check_same_answer(reply, chunks)
    assert "stopped mid-answer" in extra["notice"]
    assert extra["synthesis"] == "KDEformer approximates attention [1]."  # what the dying server managed to send
    text = reply.choices[0].message.content or ""
    assert text.startswith(extra["synthesis"] + "\n\n") and "Evidence:" in text
    check_cited(text, extra["citations"], extra["sources"])
    assert reply.usage is not None and reply.usage.completion_tokens > 0
