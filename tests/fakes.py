"""Fake servers for tests that need a peer to fail in ways a real one rarely does on cue."""

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class MisbehavingChatServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that is slow, answers garbage, fails, or dies mid-answer, per the path."""

    protocol_version = "HTTP/1.1"

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
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"data: {this is not json\n\ndata: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that gave up (the point of the slow mode) breaks the pipe: expected here, not a traceback."""


@contextmanager
def misbehaving_chat_server() -> Iterator[str]:
    """A :class:`MisbehavingChatServer` on a free loopback port; yields its URL (append ``/MODE/v1``)."""
    server = _QuietServer(("127.0.0.1", 0), MisbehavingChatServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
