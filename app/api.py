"""An OpenAI-compatible API for the assistant: ``GET /v1/models`` and ``POST /v1/chat/completions`` (plain and SSE).

Any OpenAI client, Open WebUI or a script can talk to it. The last user message is the question and earlier turns are
the conversation (follow-ups are rewritten like in the UI). The answer text carries its [n] citations; the sources,
citations, refusal flag and any notice come back as extra top-level fields (on the last chunk when streaming).
Errors use OpenAI's error object. With ``RAG_API_KEY`` set, requests need ``Authorization: Bearer <key>``.
"""

import hmac
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool

from rag.answer import Answer
from rag.assistant import Assistant
from rag.errors import BadInput, EmptyCollection, ServiceUnavailable
from rag.evidence import Evidence

# Model ids the API offers: the server's configured answer model, and evidence-only answers (no model, fast).
MODELS = {"rag": None, "rag-evidence": "none"}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            return " ".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, top_p, … are accepted and ignored
    model: str
    messages: list[ChatMessage]
    stream: bool = False


def error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status)


def _history(messages: list[ChatMessage]) -> list[tuple[str, str]]:
    """Earlier (user, assistant) turns, paired in order; system messages are not questions."""
    turns, question = [], None
    for message in messages:
        if message.role == "user":
            question = message.text()
        elif message.role == "assistant" and question is not None:
            turns.append((question, message.text()))
            question = None
    return turns


def _extras(answer: Answer, notice: str | None) -> dict[str, Any]:
    payload = answer.as_json()
    return {
        "citations": payload["citations"],
        "sources": payload["sources"],
        "refused": payload["refused"],
        "nearest": payload["nearest"],
        "notice": payload["notice"] or notice,
    }


def build_api(assistant: Assistant) -> APIRouter:
    router = APIRouter(prefix="/v1")
    created = int(time.time())

    def authorised(request: Request) -> bool:
        key = assistant.settings.api_key.get_secret_value()
        if not key:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {key}".encode())

    def unauthorised() -> JSONResponse:
        return error(
            401, "missing or wrong API key: send 'Authorization: Bearer <RAG_API_KEY>'", code="invalid_api_key"
        )

    @router.get("/models")
    def list_models(request: Request) -> Any:
        if not authorised(request):
            return unauthorised()
        data = [{"id": name, "object": "model", "created": created, "owned_by": "rag"} for name in MODELS]
        return {"object": "list", "data": data}

    @router.post("/chat/completions")
    async def chat_completions(request: Request) -> Any:
        if not authorised(request):
            return unauthorised()
        try:
            body = json.loads(await request.body())
            chat = ChatRequest.model_validate(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error(400, "the request body is not valid JSON")
        except ValidationError as invalid:
            first = invalid.errors()[0]
            return error(400, f"invalid request: {'.'.join(map(str, first['loc']))}: {first['msg']}")
        if chat.model not in MODELS:
            return error(
                404, f"model {chat.model!r} does not exist; use one of {sorted(MODELS)}", code="model_not_found"
            )
        users = [m for m in chat.messages if m.role == "user"]
        if not users or not users[-1].text().strip():
            return error(400, "the last user message is empty: ask a question")
        try:
            settings = assistant.settings_for(provider=MODELS[chat.model])
            conversation, notice = await run_in_threadpool(assistant.conversation, settings, _history(chat.messages))
            stream = conversation.ask(users[-1].text())
            evidence = await run_in_threadpool(next, stream)  # retrieval and the gate: errors surface here
        except EmptyCollection as failure:
            return error(503, f"no corpus ingested: {failure}", "server_error", "no_corpus")
        except ServiceUnavailable as failure:
            return error(503, str(failure), "server_error", "store_unavailable")
        except BadInput as failure:
            return error(400, str(failure))
        assert isinstance(evidence, Evidence)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        base = {"id": completion_id, "created": int(time.time()), "model": chat.model}
        if not chat.stream:
            answer = await run_in_threadpool(lambda: [item for item in stream if isinstance(item, Answer)][-1])
            message = {"role": "assistant", "content": answer.text}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            usage = {
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": 0,
                "total_tokens": answer.prompt_tokens,
            }
            return base | {"object": "chat.completion", "choices": [choice], "usage": usage} | _extras(answer, notice)

        def events() -> Iterator[str]:
            def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
                return (
                    f"data: {json.dumps(base | {'object': 'chat.completion.chunk', 'choices': [choice]} | extra)}\n\n"
                )

            yield chunk({"role": "assistant", "content": ""})
            for item in stream:
                if isinstance(item, str):
                    yield chunk({"content": item})
                elif isinstance(item, Answer):
                    yield chunk({}, "stop", **_extras(item, notice))
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return router
