"""Ingest: chunking, idempotent re-ingest, replacement of changed papers, resume after interruption, --prune, and
settings that do not match the collection's embedder or chunking."""

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from llama_index.core.schema import MetadataMode
from llama_index.vector_stores.chroma import ChromaVectorStore

from rag import keyword_index
from rag.cli import cli
from rag.errors import BadInput, CorpusError
from rag.ingest import ingest, make_splitter, paper_nodes
from rag.papers import ABSTRACT, Paper, Passage
from rag.readers import BUNDLED_CORPUS, read_corpus
from rag.retrieve import PaperRetriever
from rag.settings import Settings
from rag.store import fingerprint, iter_records, manifest, open_collection
from tests.conftest import make_settings, synthetic_papers, write_jsonl

LONG_ABSTRACT = " ".join(f"Sentence {i} describes experiment {i} with a distinct zebra{i} finding." for i in range(150))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", ingest={"batch_papers": 8})


def rows(settings: Settings) -> list[tuple[str, str]]:
    """(chunk id, version) of every row: a fingerprint of the store."""
    stored = open_collection(settings)
    assert stored is not None
    return sorted((r["id"], r["metadatas"]["content_hash"]) for r in iter_records(stored.collection, ["metadatas"]))


def test_a_typical_abstract_is_one_chunk_and_a_long_text_splits_with_overlap() -> None:
    splitter = make_splitter(Settings())
    typical = next(iter(read_corpus(BUNDLED_CORPUS)))
    (node,) = paper_nodes(typical, splitter, "v1")
    assert node.metadata["paper_id"] == typical.paper_id and node.metadata["title"] == typical.title
    assert node.get_content(MetadataMode.EMBED) == f"{typical.title}\n\n{typical.abstract}"

    long = Paper(paper_id="p-long", title="Long", passages=(Passage(LONG_ABSTRACT, None, ABSTRACT),))
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
    assert (report.added, report.updated, report.skipped) == (0, 1, 19)  # changed, not new
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
    stored = open_collection(settings)
    assert stored is not None and keyword_index.current_id(settings.data_path, stored.name) is None  # unpublished
    half = manifest(stored.collection)
    assert 8 < len(half) < 16 and any(not state.complete for state in half.values())

    report = ingest(corpus, "auto", settings, progress=False)
    complete_before = sum(state.complete for state in half.values())
    assert (report.papers, report.added, report.skipped) == (40, 40 - complete_before, complete_before)
    store = rows(settings)
    assert len(store) == len(set(store)) == report.chunks
    states = manifest(stored.collection)
    assert all(state.complete for state in states.values())
    version = keyword_index.published(stored, settings.data_path)
    assert version is not None and (version.papers, version.chunks) == (40, report.chunks)
    assert version.fingerprint == fingerprint(states)


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


def invoke(*args: str) -> dict[str, Any]:
    """`rag ARGS --json` in-process; its JSON output."""
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_prune_removes_the_papers_the_file_no_longer_holds(tmp_path: Path) -> None:
    every = write_jsonl(tmp_path / "all.jsonl", synthetic_papers(12))
    some = write_jsonl(tmp_path / "some.jsonl", synthetic_papers(12)[3:10])
    first = invoke("ingest", str(every), "--collection", "t")
    assert (first["added"], first["removed"]) == (12, 0)
    assert invoke("ingest", str(some), "--collection", "t")["removed"] == 0  # without --prune nothing goes
    assert invoke("stats", "--collection", "t")["papers"] == 12
    pruned = invoke("ingest", str(some), "--collection", "t", "--prune")
    assert (pruned["papers"], pruned["added"], pruned["skipped"], pruned["removed"]) == (7, 0, 7, 5)
    stats = invoke("stats", "--collection", "t", "--verify")
    assert (stats["papers"], stats["chunks"], stats["incomplete"]) == (7, 7, 0)
    assert [(row["name"], row["papers"]) for row in invoke("collections", "list")] == [("t", 7)]
    hits = PaperRetriever(make_settings(tmp_path / "data", collection="t")).search("Study 0", k=20, mode="bm25")
    assert {hit.paper_id for hit in hits} <= {f"syn-{i}" for i in range(3, 10)}


def test_prune_with_a_file_that_fails_to_parse_removes_nothing(tmp_path: Path, settings: Settings) -> None:
    ingest(write_jsonl(tmp_path / "all.jsonl", synthetic_papers(10)), "auto", settings, progress=False)
    before = rows(settings), keyword_index.current_id(settings.data_path, settings.collection)
    bad = write_jsonl(tmp_path / "bad.jsonl", synthetic_papers(2))
    bad.write_text(bad.read_text() + "{not json\n")
    result = CliRunner().invoke(cli, ["ingest", str(bad), "--prune", "--json"])
    assert result.exit_code == 2 and "bad.jsonl:3" in result.stderr
    assert (rows(settings), keyword_index.current_id(settings.data_path, settings.collection)) == before


def test_settings_for_another_embedder_or_chunking_are_refused_naming_both(tmp_path: Path, settings: Settings) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", synthetic_papers(4))
    ingest(corpus, "auto", settings, progress=False)
    before = rows(settings)
    remote = settings.model_copy(update={"embedding": settings.embedding.model_copy(update={"provider": "openai"})})
    with pytest.raises(BadInput) as refused:
        ingest(corpus, "auto", remote, progress=False)
    assert str(refused.value) == (
        "collection 'papers' was built with minilm-l6-int8; settings ask for oai-text-embedding-3-small "
        "(embedding.provider, openai.embedding_model); ingest into another collection or "
        "`rag collections delete papers`"
    )
    rechunked = settings.model_copy(update={"chunking": settings.chunking.model_copy(update={"chunk_size": 256})})
    with pytest.raises(
        BadInput, match=r"chunked with chunk_size=512, chunk_overlap=64; settings ask for chunk_size=256"
    ):
        ingest(corpus, "auto", rechunked, progress=False)
    assert rows(settings) == before
