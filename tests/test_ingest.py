"""Ingest: chunking, idempotent re-ingest, replacement of changed papers, resume after interruption, bad input."""

import itertools
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.schema import MetadataMode
from llama_index.vector_stores.chroma import ChromaVectorStore

from rag import keyword_index
from rag.corpus import BUNDLED_CORPUS, Paper, read_corpus
from rag.errors import CorpusError
from rag.ingest import ingest, make_splitter, paper_nodes
from rag.retrieve import PaperRetriever
from rag.settings import Settings
from rag.store import collection_name, connect, iter_records, manifest, open_collection
from tests.conftest import make_settings, synthetic_papers, write_jsonl

LONG_ABSTRACT = " ".join(f"Sentence {i} describes experiment {i} with a distinct zebra{i} finding." for i in range(150))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", ingest={"batch_papers": 8})


def rows(settings: Settings) -> list[tuple[str, str]]:
    """(chunk id, version) of every row: a fingerprint of the store."""
    collection = open_collection(connect(settings), collection_name(settings), create=False)
    assert collection is not None
    return sorted((r["id"], r["metadatas"]["content_hash"]) for r in iter_records(collection, ["metadatas"]))


def test_a_typical_abstract_is_one_chunk_and_a_long_text_splits_with_overlap() -> None:
    splitter = make_splitter(Settings())
    typical = next(iter(read_corpus(BUNDLED_CORPUS)))
    (node,) = paper_nodes(typical, splitter, "v1")
    assert node.metadata["paper_id"] == typical.paper_id and node.metadata["title"] == typical.title
    assert node.get_content(MetadataMode.EMBED) == f"{typical.title}\n\n{typical.abstract}"

    long = Paper(paper_id="p-long", title="Long", abstract=LONG_ABSTRACT)
    nodes = paper_nodes(long, splitter, "v1")
    assert len(nodes) >= 3
    assert [n.node_id for n in nodes] == [f"p-long#{i}" for i in range(len(nodes))]
    assert all(n.metadata["n_chunks"] == len(nodes) and n.metadata["title"] == "Long" for n in nodes)
    for before, after in itertools.pairwise(nodes):
        last_sentence = before.text.rsplit(". ", 1)[-1]
        assert last_sentence in after.text  # consecutive chunks overlap


def test_reingesting_an_unchanged_corpus_adds_nothing(tmp_path: Path, settings: Settings) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", synthetic_papers(30))
    first = ingest(corpus, "auto", settings, progress=False)
    assert (first.papers, first.chunks, first.added, first.skipped) == (30, 30, 30, 0)
    before = rows(settings)
    second = ingest(corpus, "auto", settings, progress=False)
    assert (second.papers, second.chunks, second.added, second.skipped) == (30, 30, 0, 30)
    assert rows(settings) == before


def test_a_changed_abstract_replaces_its_old_chunks(tmp_path: Path, settings: Settings) -> None:
    records = synthetic_papers(20)
    corpus = write_jsonl(tmp_path / "c.jsonl", records)
    ingest(corpus, "auto", settings, progress=False)
    records[5]["abstract"] = LONG_ABSTRACT
    report = ingest(write_jsonl(corpus, records), "auto", settings, progress=False)
    assert (report.added, report.updated, report.skipped) == (1, 1, 19)
    store = rows(settings)
    long_chunks = [chunk for chunk, _ in store if chunk.startswith("syn-5#")]
    assert len(long_chunks) >= 3 and report.chunks == len(store) == 19 + len(long_chunks)
    # the keyword index follows the store: the new text is findable, the old one is gone
    hits = PaperRetriever(settings).search("zebra42 finding", k=3, mode="bm25")
    assert hits[0].paper_id == "syn-5"
    records[5]["abstract"] = "Back to a short abstract."
    ingest(write_jsonl(corpus, records), "auto", settings, progress=False)
    assert len(rows(settings)) == 20


def test_an_interrupted_ingest_resumes_with_exact_counts(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = synthetic_papers(40)
    records[13]["abstract"] = LONG_ABSTRACT  # a multi-chunk paper, half-written when the ingest dies
    corpus = write_jsonl(tmp_path / "c.jsonl", records)
    real_add = ChromaVectorStore.add
    calls = {"n": 0}

    def dying_add(self: ChromaVectorStore, nodes: list[Any], **kwargs: Any) -> list[str]:
        calls["n"] += 1
        if calls["n"] == 2:  # write half of the second batch, then die like a killed process
            real_add(self, nodes[: len(nodes) // 2])
            raise KeyboardInterrupt
        return real_add(self, nodes, **kwargs)

    monkeypatch.setattr(ChromaVectorStore, "add", dying_add)
    with pytest.raises(KeyboardInterrupt):
        ingest(corpus, "auto", settings, progress=False)
    monkeypatch.setattr(ChromaVectorStore, "add", real_add)
    collection = open_collection(connect(settings), collection_name(settings), create=False)
    half = manifest(collection)
    assert 8 < len(half) < 16 and any(not state.complete for state in half.values())

    report = ingest(corpus, "auto", settings, progress=False)
    complete_before = sum(state.complete for state in half.values())
    assert (report.papers, report.added, report.skipped) == (40, 40 - complete_before, complete_before)
    store = rows(settings)
    assert len(store) == len(set(store)) == report.chunks
    assert all(state.complete for state in manifest(collection).values())
    assert keyword_index.in_step(collection, keyword_index.index_dir(settings.data_path, collection_name(settings)))


def test_a_malformed_file_leaves_the_store_exactly_as_it_was(tmp_path: Path, settings: Settings) -> None:
    ingest(write_jsonl(tmp_path / "good.jsonl", synthetic_papers(10)), "auto", settings, progress=False)
    before = rows(settings)
    bad = write_jsonl(tmp_path / "bad.jsonl", synthetic_papers(30, start=100))
    bad.write_text(bad.read_text() + '{"title": "no abstract"}\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:31: record has no abstract"):
        ingest(bad, "auto", settings, progress=False)
    assert rows(settings) == before


def test_duplicates_in_a_file_are_counted_once(tmp_path: Path, settings: Settings) -> None:
    records = synthetic_papers(5)
    report = ingest(write_jsonl(tmp_path / "d.jsonl", records + records[:2]), "auto", settings, progress=False)
    assert (report.papers, report.duplicates, report.chunks) == (5, 2, 5)


def test_the_bundled_corpus_ingests_once(bundled_data: Path) -> None:
    settings = make_settings(bundled_data)
    report = ingest(BUNDLED_CORPUS, "auto", settings, progress=False)
    assert (report.papers, report.chunks, report.added, report.skipped) == (231, 231, 0, 231)
