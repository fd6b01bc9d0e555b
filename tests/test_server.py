"""Server mode against a real `chroma run` on a free loopback port: search, kill -9 mid-ingest, a server that is down."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import chromadb
import pytest
from chromadb.config import Settings as ChromaClientSettings

from tests.conftest import RAG, free_port, run_rag, synthetic_papers, write_jsonl

COLLECTION = "papers"


def test_ingest_and_search_through_a_chroma_server(chroma_server: str, tmp_path: Path) -> None:
    env = {"RAG_CHROMA__SERVER_URL": chroma_server}
    corpus = write_jsonl(tmp_path / "c.jsonl", synthetic_papers(16))
    report = json.loads(run_rag("ingest", str(corpus), "--json", env=env).stdout)
    assert (report["papers"], report["added"], report["chunks"]) == (16, 16, 16)
    assert json.loads(run_rag("ingest", str(corpus), "--json", env=env).stdout)["added"] == 0
    stats = json.loads(run_rag("stats", "--json", env=env).stdout)
    assert (stats["papers"], stats["chunks"], stats["store"]) == (16, 16, chroma_server)
    hits = json.loads(run_rag("search", "speech recognition", "-k", "2", "--json", env=env).stdout)
    assert "speech recognition" in hits[0]["title"]
    assert not (tmp_path / "data" / "chroma").exists()  # nothing went to the embedded store


@pytest.mark.parametrize(("total", "kill_at"), [(300, 40), pytest.param(5000, 2500, id="5000-half-way")])
@pytest.mark.slow  # a kill test: the in-process resume is tests/test_ingest.py's
def test_kill_9_mid_ingest_then_rerun_gives_exact_counts(
    chroma_server: str, tmp_path: Path, total: int, kill_at: int
) -> None:
    env = {"RAG_CHROMA__SERVER_URL": chroma_server, "RAG_INGEST__BATCH_PAPERS": "8"}
    corpus = write_jsonl(tmp_path / "c.jsonl", synthetic_papers(total))
    parsed = urlparse(chroma_server)
    client = chromadb.HttpClient(
        host=str(parsed.hostname), port=int(parsed.port or 0), settings=ChromaClientSettings(anonymized_telemetry=False)
    )
    process = subprocess.Popen(
        [RAG, "ingest", str(corpus)], env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120 + total / 10
    written = 0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            written = client.get_collection(COLLECTION).count()
        except Exception:  # not created yet
            written = 0
        if written >= kill_at:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the ingest finished before it could be killed"
    partial = client.get_collection(COLLECTION).count()
    assert kill_at <= partial < total

    # the resumed ingest publishes the first index version, token vectors of every row included
    report = json.loads(run_rag("ingest", str(corpus), "--json", env=env, timeout=900).stdout)
    assert (report["papers"], report["chunks"]) == (total, total)
    assert report["added"] + report["skipped"] == total and report["skipped"] >= kill_at - 8
    ids = client.get_collection(COLLECTION).get(include=[])["ids"]
    assert len(ids) == len(set(ids)) == total
    assert json.loads(run_rag("stats", "--json", "--verify", env=env).stdout)["incomplete"] == 0


def test_a_server_that_is_down_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_rag("stats", "--json", env={"RAG_CHROMA__SERVER_URL": url, "RAG_CHROMA__CONNECT_TIMEOUT_S": "1"})
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"rag: error: Chroma server at {url} is not answering")
    assert line.endswith("start it with `chroma run --path DIR --host HOST --port PORT` or unset chroma.server_url")
