"""An OpenAI-compatible API for the assistant: ``GET /v1/models`` and ``POST /v1/chat/completions`` (plain and SSE).

Any OpenAI client, Open WebUI or a script can talk to it: responses are the ``openai`` package's own types
(``ChatCompletion``, ``ChatCompletionChunk``, ``Model``), streamed with sse-starlette. The last user message is the
question and the earlier user messages are the conversation (follow-ups are rewritten like in the UI). The answer
text carries its [n] citations; ``citations``, ``sources``, ``related``, ``weak``, ``refused``, ``refusal``,
``nearest``, ``notice``, ``synthesis`` and ``unsupported`` come back as extra top-level fields, on the last chunk when
streaming, with ``usage``. The streamed text is exactly the non-streamed text: both are the answer stream's deltas. A
client that goes away mid-stream closes its answer at once, so the local model is free for the next request. Errors,
bad bodies included, use OpenAI's error object. With ``RAG_API_KEY`` set, requests need ``Authorization: Bearer <key>``.
"""

import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from openai.types import CompletionUsage, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from pydantic import BaseModel, ConfigDict, model_validator
from sse_starlette import EventSourceResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from rag.answer import Answer, Draft, EvidenceReady, Fallback, Final, Quotes, Sentence, final_answer
from rag.assistant import Assistant
from rag.errors import BadInput, EmptyCollection, ServiceUnavailable
from rag.retrieve import check_question

# Model ids the API offers: the server's configured answer model, and evidence-only answers (no model, fast).
MODELS = {"rag": None, "rag-evidence": "none"}


class APIError(Exception):
    """A failure the client receives as OpenAI's error object."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), self.status)


def api_error(failure: EmptyCollection | ServiceUnavailable | BadInput) -> APIError:
    """The library's failures as the API reports them."""
    if isinstance(failure, EmptyCollection):
        return APIError(503, f"no corpus ingested: {failure}", "server_error", "no_corpus")
    if isinstance(failure, ServiceUnavailable):
        return APIError(503, str(failure), "server_error", "store_unavailable")
    return APIError(400, str(failure), param="messages")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, … are accepted and ignored
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            return " ".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, top_p, stream_options, … are accepted and ignored
    model: str
    messages: list[ChatMessage]
    stream: bool = False

    @model_validator(mode="after")
    def _has_a_question(self) -> "ChatRequest":
        if not "".join(self.user_turns()[-1:]).strip():
            raise ValueError("the last user message is empty: ask a question")
        return self

    def user_turns(self) -> list[str]:
        return [message.text() for message in self.messages if message.role == "user"]

    @property
    def question(self) -> str:
        return self.user_turns()[-1]

    @property
    def history(self) -> list[str]:
        """The user's turns before the question: what a follow-up is rewritten from."""
        return self.user_turns()[:-1]


def _invalid_request(request: Request, invalid: Exception) -> JSONResponse:
    """FastAPI's body validation (bad JSON, missing or mistyped fields) as OpenAI's 400 error object."""
    assert isinstance(invalid, RequestValidationError)
    first = invalid.errors()[0]
    where = [str(part) for part in first["loc"][1:]]  # loc starts with "body"
    if first["type"] == "json_invalid":
        error = first.get("ctx", {}).get("error", "")
        return APIError(400, f"the request body is not valid JSON ({error} at character {where[0]})").response()
    if first["type"] == "value_error":
        message = str(first["ctx"]["error"])
    elif not where:
        message = f"the request body must be a JSON object sent as application/json ({first['msg']})"
    else:
        message = f"invalid request: {'.'.join(where)}: {first['msg']}"
    return APIError(400, message, param=".".join(where) or None).response()


def _api_error(request: Request, failure: Exception) -> JSONResponse:
    assert isinstance(failure, APIError)
    return failure.response()


def add_api(app: FastAPI, assistant: Assistant) -> None:
    """Mount the API at /v1 on ``app`` with the handlers that turn its errors into OpenAI's error object (a mounted
    sub-app, such as the Gradio UI, keeps its own)."""
    app.include_router(build_api(assistant))
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)


def _extras(answer: Answer, notice: str | None) -> dict[str, Any]:
    payload = answer.as_json()
    keys = ("citations", "sources", "related", "weak", "refused", "refusal", "nearest", "synthesis", "unsupported")
    return {key: payload[key] for key in keys} | {"notice": payload["notice"] or notice}


def _usage(answer: Answer) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        total_tokens=answer.prompt_tokens + answer.completion_tokens,
    )


def build_api(assistant: Assistant) -> APIRouter:
    async def authorise(request: Request) -> None:
        key = assistant.settings.api_key.get_secret_value()
        given = request.headers.get("authorization", "")
        if key and not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            message = "missing or wrong API key: send 'Authorization: Bearer <RAG_API_KEY>'"
            raise APIError(401, message, code="invalid_api_key")

    router = APIRouter(prefix="/v1", dependencies=[Depends(authorise)])
    created = int(time.time())

    @router.get("/models")
    async def list_models() -> dict[str, Any]:
        data = [Model(id=name, object="model", created=created, owned_by="rag").model_dump() for name in MODELS]
        return {"object": "list", "data": data}

    @router.post("/chat/completions")
    async def chat_completions(chat: ChatRequest) -> Response:
        if chat.model not in MODELS:
            message = f"model {chat.model!r} does not exist; use one of {sorted(MODELS)}"
            raise APIError(404, message, code="model_not_found", param="model")
        try:
            settings = assistant.settings_for(provider=MODELS[chat.model])
            conversation, notice = await run_in_threadpool(assistant.conversation, settings, chat.history)
            check_question(chat.question, settings)
            stream = conversation.ask(chat.question)
            if not chat.stream:
                await run_in_threadpool(next, stream)  # EvidenceReady: retrieval and the gate, whose errors land here
        except (EmptyCollection, ServiceUnavailable, BadInput) as failure:
            raise api_error(failure) from None
        completion_id, started = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        if not chat.stream:
            answer = await run_in_threadpool(final_answer, stream)
            reply_message = ChatCompletionMessage(role="assistant", content=answer.text, refusal=None)
            reply = ChatCompletion(
                id=completion_id,
                created=started,
                model=chat.model,
                object="chat.completion",
                choices=[Choice(index=0, message=reply_message, finish_reason="stop", logprobs=None)],
                usage=_usage(answer),
                **_extras(answer, notice),
            )
            return Response(reply.model_dump_json(exclude_unset=True), media_type="application/json")

        def chunk(delta: ChoiceDelta, finish: Literal["stop"] | None = None, **last: Any) -> str:
            choice = ChunkChoice(index=0, delta=delta, finish_reason=finish, logprobs=None)
            piece = ChatCompletionChunk(
                id=completion_id,
                created=started,
                model=chat.model,
                object="chat.completion.chunk",
                choices=[choice],
                **last,
            )
            return piece.model_dump_json(exclude_unset=True)

        async def chunks() -> AsyncIterator[str]:
            """The role at once, before retrieval; then the answer's text as it is verified. A failure of retrieval
            after the response has begun arrives as OpenAI's error object in a chunk (the client raises it)."""
            try:
                yield chunk(ChoiceDelta(role="assistant", content=""))
                try:
                    await run_in_threadpool(next, stream)  # EvidenceReady: retrieval and the gate
                except (EmptyCollection, ServiceUnavailable, BadInput) as failure:
                    yield json.dumps(api_error(failure).body())
                    return
                async for event in iterate_in_threadpool(stream):  # llama.cpp blocks: one event per thread call
                    match event:
                        case Sentence() | Quotes() | Fallback():
                            yield chunk(ChoiceDelta(content=event.delta))
                        case Final(answer):
                            yield chunk(ChoiceDelta(), "stop", usage=_usage(answer), **_extras(answer, notice))
                        case EvidenceReady() | Draft():
                            pass  # sources come with the last chunk; drafts are never part of the answer
                yield "[DONE]"
            finally:  # also when the client went away: closing the answer releases the local model at once
                with anyio.CancelScope(shield=True):
                    await run_in_threadpool(stream.close)

        return EventSourceResponse(chunks(), sep="\n")

    return router
