"""One loaded collection at one published version, and the collection's life: opening (adopting an older version's),
listing, deleting.

:class:`Collection` owns what reading a collection needs — the Chroma handle, the collection's own embedder, the
keyword index with its IDF and token vectors, and the paper codec — so retrieval, the rerank stage, the gate and the
claim checker take one object, and the serving process caches one per published version.
"""

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

from chromadb.api.types import Where
from llama_index.core import VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.vector_stores.chroma import ChromaVectorStore

from rag import keyword_index
from rag.embedding import LocalMiniLMEmbedding, build_embedder, local_embedder
from rag.errors import EmptyCollection
from rag.papers import ABSTRACT, Hit, Paper, Passage, chunk_of
from rag.relevance import TermWeights
from rag.settings import Settings
from rag.store import (
    StoredCollection,
    adopt,
    connect,
    delete_collection,
    legacy_collection,
    list_collections,
    open_collection,
)
from rag.text import join_chunks


def files_dir(data_path: Path, name: str) -> Path:
    """Where a collection keeps the PDFs its papers were read from, each named by its content hash."""
    return data_path / "files" / name


class Collection:
    """A collection opened at its published version: what every stage that reads it takes."""

    def __init__(self, settings: Settings, stored: StoredCollection, embedder: BaseEmbedding | None = None) -> None:
        self.settings = settings
        self.stored = stored
        self.name = stored.name
        self.keywords = keyword_index.load(stored, settings.data_path)  # the published version, never built here
        self.version = self.keywords.version
        self.embedder = embedder or build_embedder(settings, stored.info.embedder)  # the collection's own
        # The gate, the rerank and the claim checker read the bundled MiniLM's token vectors, whatever embedder built
        # the collection.
        self.token_encoder: LocalMiniLMEmbedding = (
            self.embedder if isinstance(self.embedder, LocalMiniLMEmbedding) else local_embedder(settings)
        )
        self.term_weights = TermWeights(self.keywords)
        self.vectors = VectorStoreIndex.from_vector_store(
            ChromaVectorStore(chroma_collection=stored.collection), embed_model=self.embedder
        )

    @classmethod
    def open(cls, settings: Settings, embedder: BaseEmbedding | None = None) -> "Collection":
        """The settings' collection; EmptyCollection when there is none or nothing is published."""
        stored = open_stored(settings)
        if stored is None:
            raise EmptyCollection(f"collection {settings.collection!r} is empty: run `rag ingest` first")
        return cls(settings, stored, embedder)

    def read(self, hits: list[Hit]) -> dict[str, Paper]:
        """Each hit's paper with the passages evidence reads: its whole abstract (its chunks joined, the overlap
        between consecutive ones removed), then the body chunks retrieval found, in reading order."""
        have = {(hit.paper_id, chunk.index): chunk.passage for hit in hits for chunk in hit.chunks}
        # an abstract of several chunks is read back whole from the store, as written (a keyword hit's copy of a
        # chunk may differ from it in whitespace)
        wanted = [f"{hit.paper_id}#{i}" for hit in hits if hit.abstract_chunks > 1 for i in range(hit.abstract_chunks)]
        if wanted:
            rows = self.stored.collection.get(ids=wanted, include=["documents", "metadatas"])
            for document, meta in zip(rows["documents"] or [], rows["metadatas"] or [], strict=True):
                chunk = chunk_of(meta, document)
                have[(str(meta["paper_id"]), chunk.index)] = chunk.passage
        papers = {}
        for hit in hits:
            parts = [have[(hit.paper_id, i)] for i in range(hit.abstract_chunks) if (hit.paper_id, i) in have]
            abstract = (Passage(join_chunks([p.text for p in parts]), parts[0].page, ABSTRACT),) if parts else ()
            body = tuple(chunk.passage for chunk in hit.body_chunks)
            papers[hit.paper_id] = replace(hit.paper, passages=abstract + body)
        return papers

    def file_of(self, paper_id: str) -> Path | None:
        """The PDF a paper of this collection was read from, when the collection keeps one (never a path a client
        names: the file is the one the paper's own row records)."""
        rows = self.stored.collection.get(where=cast(Where, {"paper_id": paper_id}), limit=1, include=["metadatas"])
        name = str((rows["metadatas"] or [{}])[0].get("file") or "") if rows["ids"] else ""
        path = files_dir(self.settings.data_path, self.name) / name
        return path if name and path.name == name and path.is_file() else None


def open_stored(settings: Settings) -> StoredCollection | None:
    """The settings' collection in the store, None when there is none. An older version's collection
    ("<name>--<embedder id>") is adopted on first open and its keyword index published under its new name."""
    client = connect(settings)
    stored = open_collection(settings, client)
    if stored is not None:
        return stored
    legacy = legacy_collection(settings, client)
    if legacy is None:
        return None
    return _adopted(settings, legacy.name, adopt(client, legacy, settings.collection, settings))


def _adopted(settings: Settings, old_name: str, stored: StoredCollection) -> StoredCollection:
    keyword_index.migrate(settings.data_path, old_name, stored, local_embedder(settings))
    return stored


@dataclass(frozen=True)
class CollectionSummary:
    """A collection as a list of them shows it: its published counts, embedder and filter choices."""

    name: str
    papers: int
    chunks: int
    embedder: str
    years: tuple[int, int] | None
    categories: tuple[str, ...]


def all_stored(settings: Settings) -> list[StoredCollection]:
    """Every collection of ours, by name; older versions' collections are adopted on the way."""
    stored, legacy = list_collections(settings)
    client = connect(settings) if legacy else None
    for name, collection in legacy:
        named = settings.model_copy(update={"collection": name})
        assert client is not None
        stored.append(_adopted(named, collection.name, adopt(client, collection, name, named)))
    return sorted(stored, key=lambda item: item.name)


def summaries(settings: Settings) -> list[CollectionSummary]:
    """Every collection, by name, as its published version records it (no scan of the store)."""
    rows = []
    for stored in all_stored(settings):
        version = keyword_index.current_version(settings.data_path, stored.name)
        rows.append(
            CollectionSummary(
                name=stored.name,
                papers=version.papers if version else 0,
                chunks=version.chunks if version else 0,
                embedder=stored.info.embedder.id,
                years=version.years if version else None,
                categories=version.categories if version else (),
            )
        )
    return rows


def delete(settings: Settings, stored: StoredCollection) -> None:
    """Delete a collection: its rows, every version of its keyword index and the PDFs it kept."""
    delete_collection(settings, stored)
    keyword_index.remove(settings.data_path, stored.name)
    shutil.rmtree(files_dir(settings.data_path, stored.name), ignore_errors=True)
