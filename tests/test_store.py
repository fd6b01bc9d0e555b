"""What a collection owns: its embedder (recorded in its metadata, whatever the providers say) and its published
index versions (the counts readers show, and the version id every cache follows)."""

import json
import threading
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

import rag.assistant
from rag import keyword_index
from rag.assistant import Assistant
from rag.cli import cli
from rag.embedding import LOCAL_SPEC, build_embedder
from rag.evidence import EvidenceFinder
from rag.ingest import ingest
from rag.settings import Settings
from tests.conftest import make_settings, synthetic_papers, write_jsonl


def test_reads_follow_the_collection_never_the_chat_or_embedding_provider(
    bundled_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_DATA_DIR", str(bundled_data))
    monkeypatch.setenv("RAG_LLM__PROVIDER", "openai")
    monkeypatch.setenv("RAG_OPENAI__BASE_URL", "http://127.0.0.1:9/v1")  # nothing answers there
    result = CliRunner().invoke(cli, ["stats", "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert (stats["papers"], stats["chunks"], stats["embedder"]) == (231, 231, "minilm-l6-int8")

    monkeypatch.setenv("RAG_EMBEDDING__PROVIDER", "openai")  # only a new collection would take the remote embedder
    settings = Settings()
    assistant = Assistant(settings)
    assert assistant.stats(settings) == {"collection": "papers", "papers": 231, "chunks": 231}
    finder = assistant.finder(settings)  # embeds the question: a remote embedder would fail to connect
    evidence = finder.find("Which papers discuss the softmax bottleneck?")
    assert any("Softmax Bottleneck" in source.title for source in evidence.sources)
    # one embedder instance per space in the process: retrieval and the relevance gate share the bundled one
    assert finder.collection.embedder is finder.gate_embedder is build_embedder(settings, LOCAL_SPEC)


def test_a_changed_abstract_reaches_a_running_server_through_a_new_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path / "data", llm={"provider": "none"})
    records = synthetic_papers(6)
    corpus = write_jsonl(tmp_path / "c.jsonl", records)
    ingest(corpus, "jsonl", settings, progress=False)
    assistant = Assistant(settings)
    before = assistant.finder(settings)
    assert assistant.finder(settings) is before  # same published version: the cached finder

    records[2]["abstract"] = "We study quokka migration between islands."  # still one chunk: same row count
    report = ingest(write_jsonl(corpus, records), "jsonl", settings, progress=False)
    assert (report.added, report.updated, report.skipped, report.chunks) == (0, 1, 5, 6)
    version = keyword_index.current_version(settings.data_path, "papers")
    assert version is not None and version.id != before.collection.version.id
    assert (version.papers, version.chunks, version.tokenizer) == (6, 6, keyword_index.TOKENIZER_VERSION)
    assert datetime.fromisoformat(version.created).tzinfo is not None

    # One request builds the new version's finder; meanwhile the others answer from the previous one at once.
    building, release = threading.Event(), threading.Event()

    def slow_finder(request_settings: Settings) -> EvidenceFinder:
        building.set()
        release.wait(60)
        return EvidenceFinder(request_settings)

    monkeypatch.setattr(rag.assistant, "EvidenceFinder", slow_finder)
    built: list[EvidenceFinder] = []
    builder = threading.Thread(target=lambda: built.append(assistant.finder(settings)))
    builder.start()
    assert building.wait(60)
    assert assistant.finder(settings) is before  # not queued behind the build
    release.set()
    builder.join(60)
    (after,) = built
    assert after is not before and assistant.finder(settings) is after
    assert after.collection.version == version
    assert after.retriever.search("quokka migration", mode="bm25")[0].paper_id == "syn-2"
    assert before.retriever.search("quokka migration", mode="bm25") == []  # the old version never knew it


def test_an_unchanged_reingest_publishes_nothing_new(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    corpus = write_jsonl(tmp_path / "c.jsonl", synthetic_papers(5))
    ingest(corpus, "jsonl", settings, progress=False)
    first = keyword_index.current_id(settings.data_path, "papers")
    assert ingest(corpus, "jsonl", settings, progress=False).skipped == 5
    assert first is not None and keyword_index.current_id(settings.data_path, "papers") == first
    assert sorted(path.name for path in keyword_index.index_dir(settings.data_path, "papers").glob("v-*")) == [first]
