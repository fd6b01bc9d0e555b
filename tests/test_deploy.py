"""Multi-process deployment on a `chroma run` server: ingest while users ask, and the store going away and back."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from tests.conftest import free_port, rag_serve, run_rag, synthetic_papers, write_jsonl

CHROMA = str(Path(sys.executable).with_name("chroma"))

pytestmark = pytest.mark.slow  # real faults and several processes: minutes, run by `make test-slow`


def ask(url: str, question: str) -> httpx.Response:
    body = {"model": "rag", "messages": [{"role": "user", "content": question}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


def test_ingest_while_users_ask_neither_locks_nor_corrupts(chroma_server: str, tmp_path: Path) -> None:
    env = {"RAG_CHROMA__SERVER_URL": chroma_server, "RAG_LLM__PROVIDER": "none", "RAG_INGEST__BATCH_PAPERS": "16"}
    first = write_jsonl(tmp_path / "first.jsonl", synthetic_papers(40))
    assert run_rag("ingest", str(first), env=env).returncode == 0
    with rag_serve(tmp_path / "data", tmp_path / "serve.log", **env) as app:
        assert ask(app.url, "protein folding study results").status_code == 200
        statuses: list[int] = []
        stop = threading.Event()

        def keep_asking() -> None:
            while not stop.is_set():
                statuses.append(ask(app.url, "speech recognition baseline improvement").status_code)

        asker = threading.Thread(target=keep_asking)
        asker.start()
        # a second process writes 200 more papers while the app keeps answering
        second = write_jsonl(tmp_path / "second.jsonl", synthetic_papers(200, start=40))
        ingested = run_rag("ingest", str(second), "--json", env=env)
        stop.set()
        asker.join(timeout=120)
        assert ingested.returncode == 0, ingested.stderr
        assert statuses and set(statuses) == {200}, statuses
        stats = json.loads(run_rag("stats", "--json", "--verify", env=env).stdout)
        assert (stats["papers"], stats["chunks"], stats["incomplete"]) == (240, 240, 0)
        # the app sees the new papers on its next question (it follows the published index version)
        reply = ask(app.url, "Study 239 of reinforcement learning").json()
        assert any(source["paper_id"] == "syn-239" for source in reply["sources"] + reply["nearest"])


def start_chroma(folder: Path, port: int) -> subprocess.Popen[bytes]:
    command = [CHROMA, "run", "--path", str(folder), "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(120):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise AssertionError("chroma run did not start")


def test_the_store_going_away_is_reported_and_the_app_recovers(tmp_path: Path) -> None:
    port = free_port()
    env = {"RAG_CHROMA__SERVER_URL": f"http://127.0.0.1:{port}", "RAG_LLM__PROVIDER": "none"}
    corpus = write_jsonl(tmp_path / "c.jsonl", synthetic_papers(30))
    chroma = start_chroma(tmp_path / "chroma", port)
    try:
        assert run_rag("ingest", str(corpus), env=env).returncode == 0
        with rag_serve(tmp_path / "data", tmp_path / "serve.log", **env) as app:
            assert ask(app.url, "graph neural networks").status_code == 200
            chroma.terminate()
            chroma.wait(timeout=30)
            down = ask(app.url, "graph neural networks")
            assert down.status_code == 503 and "not answering" in down.json()["error"]["message"]
            client = Client(app.url, verbose=False)
            inputs = ("graph neural networks", [], 8, "none", "qwen2.5-coder-0.5b", "papers", None, None, [])
            _, chat, _, notice, *_exports = client.predict(*inputs, api_name="/chat")
            assert "vector store is unavailable" in str(chat[-1]["content"]) and "Store unavailable" in notice
            # the same store comes back on the same port: the app answers again, without a restart
            chroma = start_chroma(tmp_path / "chroma", port)
            back = ask(app.url, "graph neural networks")
            assert back.status_code == 200 and back.json()["sources"]
    finally:
        chroma.terminate()
        chroma.wait(timeout=30)
