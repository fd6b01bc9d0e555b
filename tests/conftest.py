"""Shared fixtures: isolated data folders, the bundled corpus ingested once, corpus-file builders, the CLI."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from rag.ingest import ingest
from rag.model_files import model_path
from rag.readers import BUNDLED_CORPUS
from rag.settings import Settings

RAG = str(Path(sys.executable).with_name("rag"))


def local_model_installed() -> bool:
    settings = Settings()
    return model_path(settings.models_path, settings.llm.local_model).is_file()


LOCAL_MODEL_MISSING = "the bundled chat model is not installed: run `rag models install`"
needs_local_model = pytest.mark.skipif(not local_model_installed(), reason=LOCAL_MODEL_MISSING)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own data folder and no stray configuration."""
    for key in list(os.environ):
        if key.startswith("RAG_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    return Settings(data_dir=str(data_dir), **overrides)


@pytest.fixture(scope="session")
def bundled_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder holding the bundled corpus, ingested once for the whole run (read-only for tests)."""
    data_dir = tmp_path_factory.mktemp("bundled")
    report = ingest(BUNDLED_CORPUS, "auto", make_settings(data_dir), progress=False)
    assert report.papers == 231
    return data_dir


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def synthetic_papers(count: int, start: int = 0) -> list[dict[str, Any]]:
    """Distinct small papers with ids, years and categories, for ingest and filter tests."""
    topics = ["graph neural networks", "protein folding", "speech recognition", "reinforcement learning"]
    return [
        {
            "id": f"syn-{i}",
            "title": f"Study {i} of {topics[i % 4]}",
            "abstract": f"We study {topics[i % 4]} in setting number {i}. Results improve the baseline by {i % 17} points.",
            "year": 2015 + i % 10,
            "categories": ["cs.LG", ["cs.CL", "q-bio.BM", "eess.AS", "cs.AI"][i % 4]],
        }
        for i in range(start, start + count)
    ]


def ingest_synthetic(data_dir: Path, count: int, collection: str = "papers") -> Path:
    """Ingest ``count`` synthetic papers into a data folder, in-process; returns the corpus file."""
    corpus = write_jsonl(data_dir.parent / f"synthetic-{collection}-{count}.jsonl", synthetic_papers(count))
    ingest(corpus, "auto", make_settings(data_dir, collection=collection), progress=False)
    return corpus


def small_store(tmp_path_factory: pytest.TempPathFactory, name: str) -> tuple[Path, dict[str, str], Path]:
    """A fresh data folder with 12 synthetic papers ingested through the CLI: its folder, env and corpus file."""
    folder = tmp_path_factory.mktemp(name)
    env = {"RAG_DATA_DIR": str(folder / "data")}
    corpus = write_jsonl(folder / f"{name}.jsonl", synthetic_papers(12))
    assert cli("ingest", str(corpus), env=env).exit_code == 0
    return folder, env, corpus


def cli(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:  # noqa: A002
    """The `rag` command in this process (click's runner): the same parsing, errors and exit codes as the console
    script, without a new interpreter's imports. Unexpected exceptions propagate, so a traceback fails the test."""
    from rag.cli import cli as rag_cli

    return CliRunner().invoke(rag_cli, list(args), input=input, env=env, catch_exceptions=False)


def run_rag(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    return subprocess.run(
        [RAG, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(
    command: list[str], health_url: str, log_path: Path, wait_s: float = 120, env: dict[str, str] | None = None
) -> Iterator[None]:
    """Run a server process until its health URL answers 200; stop it afterwards."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}
        )
        try:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    if httpx.get(health_url, timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail(f"{command[0]} did not answer on {health_url}: {log_path.read_text()[-2000:]}")
                time.sleep(0.3)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[str]:
    """A real `chroma run` server on a free loopback port; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    chroma = str(Path(sys.executable).with_name("chroma"))
    command = [chroma, "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1", "--port", str(port)]
    with serving(command, f"{url}/api/v2/heartbeat", tmp_path / "chroma.log", wait_s=60):
        yield url


API_KEY = "test-key-not-secret"


@dataclass
class App:
    url: str
    log: Path


@contextmanager
def rag_serve(data_dir: Path, log: Path, **env: str) -> Iterator[App]:
    """`rag serve` on a free loopback port over its own data folder (Chroma's embedded store is one process's)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [RAG, "serve", "--port", str(port)]
    with serving(command, f"{url}/", log, wait_s=180, env={"RAG_DATA_DIR": str(data_dir), **env}):
        yield App(url, log)


@pytest.fixture(scope="session")
def app_server(bundled_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The real app with the bundled corpus and the local model, its API behind a bearer token."""
    folder = tmp_path_factory.mktemp("serve")
    shutil.copytree(bundled_data, folder / "data")
    # An OpenAI-compatible server that is down, for requests that pick provider "openai".
    env = {"RAG_API_KEY": API_KEY, "RAG_OPENAI__BASE_URL": "http://127.0.0.1:9/v1"}
    with rag_serve(folder / "data", folder / "serve.log", **env) as app:
        yield app
