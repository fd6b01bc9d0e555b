"""Fake servers for tests that need a peer to fail in ways a real one rarely does on cue."""

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar


class _FakeHandler(BaseHTTPRequestHandler):
    """A loopback API for tests: HTTP/1.1, no request log, one way to send a whole reply."""

    protocol_version = "HTTP/1.1"

    def _send(self, status: int, data: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class MisbehavingChatServer(_FakeHandler):
    """An OpenAI-compatible endpoint that is slow, answers garbage, fails, or dies mid-answer, per the path."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        mode = self.path.strip("/").split("/")[0]
        if mode == "dies":  # one good chunk of a chunked stream, then the server is gone (no final chunk)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            piece = {"choices": [{"index": 0, "delta": {"content": "KDEformer approximates attention [1]. It"}}]}
            data = f"data: {json.dumps(piece)}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
            time.sleep(0.2)
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode == "slow":
            time.sleep(6)
        if mode == "error":
            self._send(500, b"")
            return
        self._send(200, b"data: {this is not json\n\ndata: [DONE]\n\n", "text/event-stream")


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that gave up (the point of the slow mode) breaks the pipe: expected here, not a traceback."""


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A handler served on a free loopback port in a thread; yields the server's URL."""
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@contextmanager
def misbehaving_chat_server() -> Iterator[str]:
    """A :class:`MisbehavingChatServer` on a free loopback port; yields its URL (append ``/MODE/v1``)."""
    with _serving(MisbehavingChatServer) as url:
        yield url


class VerdictChatServer(_FakeHandler):
    """An OpenAI-compatible judge that writes "Yes" and, under ``/logprobs/``, also lists first-token log-probabilities
    that favour "No" (under ``/plain/`` it lists none, as many servers do): which one a verdict followed shows which
    judge made it. Every request body is kept in ``requests``."""

    requests: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.requests.append(body)
        listed = self.path.startswith("/logprobs/") and body.get("logprobs")
        top = [{"token": token, "logprob": logprob, "bytes": None}
               for token, logprob in (("No", -0.3), ("Yes", -1.6), (" no", -3.2), ("Maybe", -4.0), ("The", -5.5))]  # fmt: skip
        if body.get("stream"):
            pieces = [{"id": "v", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                       "choices": [{"index": 0, "delta": {"content": "Yes"}, "finish_reason": None}]}]  # fmt: skip
            payload = "".join(f"data: {json.dumps(piece)}\n\n" for piece in pieces) + "data: [DONE]\n\n"
            self._send(200, payload.encode(), "text/event-stream")
            return
        logprobs = (
            {"content": [{"token": "No", "logprob": -0.3, "bytes": None, "top_logprobs": top}]} if listed else None
        )
        reply = {"id": "v", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "No" if listed else "Yes"},
                              "finish_reason": "length", "logprobs": logprobs}]}  # fmt: skip
        self._send(200, json.dumps(reply).encode())


@contextmanager
def verdict_chat_server() -> Iterator[str]:
    """A :class:`VerdictChatServer` on a free loopback port; yields its URL (append ``/logprobs/v1`` or
    ``/plain/v1``)."""
    VerdictChatServer.requests = []
    with _serving(VerdictChatServer) as url:
        yield url


class RerankServer(_FakeHandler):
    """The ``/rerank`` API for real, scoring a document by the share of the query's words it contains and answering
    best first, as servers do. The path's first part picks the server: ``/cohere/`` speaks the Cohere shape (and, like
    Cohere, refuses fields it does not know), ``/tei/`` speaks text-embeddings-inference's (documents as ``texts``, a
    bare list back); ``/slow/``, ``/error/``, ``/short/`` (drops the last result), ``/duplicate/`` (an index twice),
    ``/outside/`` (an index past the end), ``/nan/``, ``/shape/`` (TEI's field names in Cohere's envelope) and
    ``/garbage/`` misbehave. Every request is kept in ``requests`` (path, Authorization header, body)."""

    requests: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        mode = self.path.strip("/").split("/")[0]
        self.requests.append({"path": self.path, "authorization": self.headers.get("Authorization"), "body": body})
        if mode == "garbage":
            self._send(200, b"<html>502 Bad Gateway</html>", "text/html")
            return
        if mode == "error":
            self._send(500, b'{"error": "CUDA out of memory"}')
            return
        if mode == "slow":
            time.sleep(2)
        field = "texts" if mode == "tei" else "documents"
        unknown = sorted(set(body) - {"model", "query", "documents", "top_n"})
        if field not in body or (unknown and mode != "tei"):
            problem = f"missing field `{field}`" if field not in body else f"unknown field: parameter '{unknown[0]}'"
            self._send(422, json.dumps({"message": problem}).encode())
            return
        words = set(re.findall(r"\w+", body["query"].lower()))
        scores = [len(words & set(re.findall(r"\w+", text.lower()))) / max(len(words), 1) for text in body[field]]
        ranked = sorted(range(len(scores)), key=lambda index: -scores[index])[: body.get("top_n")]
        if mode == "tei":
            self._send(200, json.dumps([{"index": index, "score": scores[index]} for index in ranked]).encode())
            return
        results = [{"index": index, "relevance_score": scores[index]} for index in ranked]
        if mode == "short":
            results.pop()
        elif mode == "duplicate":
            results[-1]["index"] = results[0]["index"]
        elif mode == "outside":
            results[-1]["index"] = len(scores)
        elif mode == "nan":
            results[0]["relevance_score"] = float("nan")
        elif mode == "shape":
            results = [{"index": result["index"], "score": result["relevance_score"]} for result in results]
        reply = {"id": "r", "results": results, "meta": {"billed_units": {"search_units": 1}}}
        self._send(200, json.dumps(reply).encode())


@contextmanager
def rerank_server() -> Iterator[str]:
    """A :class:`RerankServer` on a free loopback port; yields its URL (append ``/MODE/v1/rerank``)."""
    RerankServer.requests = []
    with _serving(RerankServer) as url:
        yield url
