"""`rag collections list|delete`, and collections written by the older version adopted on first open."""

import json
import logging
from pathlib import Path
from typing import Any

import chromadb
import pytest
from chromadb.config import Settings as ChromaClientSettings
from click.testing import CliRunner, Result
from llama_index.core.schema import MetadataMode
from llama_index.vector_stores.chroma import ChromaVectorStore

from rag.cli import cli
from rag.embedding import build_embedder
from rag.ingest import ingest, make_splitter, paper_nodes
from rag.readers import read_corpus
from rag.retrieve import PaperRetriever
from rag.settings import Settings
from tests.conftest import make_settings, run_rag, synthetic_papers, write_jsonl

LEGACY = "papers--minilm-l6-int8"


def rag(*args: str, stdin: str | None = None) -> Result:
    """`rag ARGS` in-process, over this test's RAG_DATA_DIR."""
    return CliRunner().invoke(cli, list(args), input=stdin)


def rag_json(*args: str) -> Any:
    result = rag(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def chroma(settings: Settings) -> chromadb.ClientAPI:
    path = str(settings.data_path / "chroma")
    return chromadb.PersistentClient(path=path, settings=ChromaClientSettings(anonymized_telemetry=False))


def write_legacy(settings: Settings, corpus: Path, name: str, embed: bool = True) -> None:
    """A collection as the older version wrote it: named "<name>--<embedder id>", no rag: metadata, rows versioned
    "<hash>:<chunk size>/<overlap>", and a keyword index in a folder of the same name with the old state file."""
    collection = chroma(settings).create_collection(name, metadata={"hnsw:space": "cosine"}, embedding_function=None)
    splitter = make_splitter(settings)
    nodes = [
        node for paper in read_corpus(corpus) for node in paper_nodes(paper, splitter, f"{paper.content_hash}:512/64")
    ]
    texts = [node.get_content(MetadataMode.EMBED) for node in nodes]
    vectors = build_embedder(settings).get_text_embedding_batch(texts) if embed else [[0.5] * 8 for _ in nodes]
    for node, vector in zip(nodes, vectors, strict=True):
        node.embedding = vector
    ChromaVectorStore(chroma_collection=collection).add(nodes)
    old = settings.data_path / "bm25" / name
    (old / "v-old").mkdir(parents=True)
    (old / "v-old" / "rag_state.json").write_text(json.dumps({"rows": len(nodes), "tokenizer": "en+scholarly-1"}))
    (old / "current").write_text("v-old")


def test_an_older_collection_is_adopted_once_with_the_embedder_its_name_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path / "data")
    corpus = write_jsonl(tmp_path / "c.jsonl", synthetic_papers(4))
    write_legacy(settings, corpus, LEGACY)
    with caplog.at_level(logging.WARNING, logger="rag.store"):
        stats = rag_json("stats")
    assert (stats["papers"], stats["chunks"], stats["embedder"]) == (4, 4, "minilm-l6-int8")
    assert [record.getMessage() for record in caplog.records] == [
        f"adopted legacy collection {LEGACY!r} as 'papers' (embedder minilm-l6-int8)"
    ]
    (adopted,) = chroma(settings).list_collections()
    assert adopted.name == "papers" and adopted.metadata == adopted.metadata | {
        "rag:name": "papers",
        "rag:embedder": "minilm-l6-int8",
        "rag:dimension": 384,
        "rag:chunk_size": 512,
        "rag:chunk_overlap": 64,
    }
    assert not (settings.data_path / "bm25" / LEGACY).exists()  # its old index moved with it

    caplog.clear()
    hits = PaperRetriever(settings).search("protein folding", k=1)
    assert "protein folding" in hits[0].title
    report = ingest(corpus, "jsonl", settings, progress=False)
    assert (report.added, report.skipped) == (0, 4)  # the old rows are current: nothing re-embedded
    assert not caplog.records  # said once


def test_list_adopts_older_collections_and_ignores_other_programs(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    corpus = write_jsonl(tmp_path / "c.jsonl", synthetic_papers(3))
    write_legacy(settings, corpus, LEGACY)
    write_legacy(settings, corpus, "papers--oai-text-embedding-3-small", embed=False)  # the same name, remote
    chroma(settings).create_collection("notes", embedding_function=None)  # another program's
    listed = rag_json("collections", "list")
    assert listed == [
        {"name": "papers", "papers": 3, "chunks": 3, "embedder": "minilm-l6-int8"},  # the configured one takes it
        {
            "name": "papers--oai-text-embedding-3-small",
            "papers": 3,
            "chunks": 3,
            "embedder": "oai-text-embedding-3-small",
        },
    ]
    remote = chroma(settings).get_collection("papers--oai-text-embedding-3-small")
    assert remote.metadata == remote.metadata | {"rag:embedding_model": "text-embedding-3-small", "rag:dimension": 8}
    text = rag("collections", "list").stdout.splitlines()
    assert text[0].split() == ["papers", "3", "papers", "minilm-l6-int8"]


def test_delete_asks_first_and_takes_the_keyword_index_with_it(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", synthetic_papers(2))
    for name in ("t", "keep"):  # a one-letter name is fine: Chroma's 3-character minimum is handled inside
        ingest(corpus, "jsonl", make_settings(tmp_path / "data", collection=name), progress=False)
    assert [row["name"] for row in rag_json("collections", "list")] == ["keep", "t"]

    declined = rag("collections", "delete", "t", stdin="n\n")
    assert declined.exit_code == 1 and "kept collection 't'" in declined.stderr
    unanswered = rag("collections", "delete", "t")  # stdin at its end: no one to ask
    assert unanswered.exit_code == 2
    assert unanswered.stderr.strip() == "rag: error: deleting 't' needs confirmation: answer the prompt, or pass --yes"
    assert rag_json("stats", "--collection", "t")["papers"] == 2

    confirmed = rag("collections", "delete", "t", stdin="y\n")
    assert confirmed.exit_code == 0 and "Delete collection 't' (2 papers)" in confirmed.stdout
    assert [row["name"] for row in rag_json("collections", "list")] == ["keep"]
    assert not (tmp_path / "data" / "bm25" / "t").exists()
    assert rag_json("stats", "--collection", "t")["papers"] == 0
    gone = rag("collections", "delete", "t", "--yes")
    assert gone.exit_code == 2 and "no collection named 't'" in gone.stderr
    assert rag("collections", "delete", "keep", "--yes").exit_code == 0
    assert rag_json("collections", "list") == []


def test_collections_exit_codes_from_the_console_script(tmp_path: Path) -> None:
    env = {"RAG_DATA_DIR": str(tmp_path / "fresh")}
    unknown = run_rag("collections", "delete", "nope", "--yes", env=env)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        "rag: error: no collection named 'nope' (`rag collections list` shows them)"
    ]
    listed = run_rag("collections", "list", "--json", env=env)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    bad = run_rag("collections", "delete", "../etc", env=env)
    assert bad.returncode == 2 and "collection name '../etc'" in bad.stderr
