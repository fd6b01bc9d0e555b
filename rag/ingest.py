"""Papers → chunks → embeddings → Chroma, idempotently and resumably, then the BM25 index in step.

Each chunk's metadata records its paper's content hash and chunk count, so the store itself says which papers are
complete and current: unchanged papers are skipped, changed ones replaced, half-written ones redone.
"""

import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any, cast

import tiktoken
from chromadb.api.types import Where
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import BaseNode, MetadataMode, TextNode
from llama_index.vector_stores.chroma import ChromaVectorStore
from tqdm import tqdm

from rag import keyword_index
from rag.corpus import Paper, read_corpus
from rag.models import build_embedder, embedder_id
from rag.settings import Settings
from rag.store import collection_name, connect, manifest, open_collection

EMBEDDED_KEYS = ("title",)


@dataclass
class IngestReport:
    papers: int
    chunks: int
    added: int
    skipped: int
    collection: str
    updated: int
    duplicates: int
    embedder: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_splitter(settings: Settings) -> SentenceSplitter:
    """Sentence-aware chunks measured in cl100k tokens, the same counter that budgets LLM prompts."""
    return SentenceSplitter(
        chunk_size=settings.chunking.chunk_size,
        chunk_overlap=min(settings.chunking.chunk_overlap, settings.chunking.chunk_size // 2),
        tokenizer=tiktoken.get_encoding("cl100k_base").encode,
    )


def paper_nodes(paper: Paper, splitter: SentenceSplitter, version: str) -> list[TextNode]:
    """The paper's chunks; each carries the paper id, title and version, and embeds as "title + chunk"."""
    chunks = splitter.split_text_metadata_aware(paper.abstract, paper.title)
    base: dict[str, Any] = {
        "paper_id": paper.paper_id,
        "title": paper.title,
        "content_hash": version,
        "n_chunks": len(chunks),
    }
    if paper.year is not None:
        base["year"] = paper.year
    if paper.url:
        base["url"] = paper.url
    if paper.authors:
        base["authors"] = "; ".join(paper.authors)
    if paper.categories:
        base["categories"] = " ".join(paper.categories)
        base.update({f"cat:{category}": 1 for category in paper.categories})  # filterable flags
    nodes = []
    for i, chunk in enumerate(chunks):
        metadata = base | {"chunk": i}
        hidden = [key for key in metadata if key not in EMBEDDED_KEYS]
        nodes.append(
            TextNode(
                id_=f"{paper.paper_id}#{i}",
                text=chunk,
                metadata=metadata,
                excluded_embed_metadata_keys=hidden,
                excluded_llm_metadata_keys=hidden,
                metadata_template="{value}",
                text_template="{metadata_str}\n\n{content}",
            )
        )
    return nodes


def _batched(papers: Iterator[Paper], size: int) -> Iterator[list[Paper]]:
    while batch := list(islice(papers, size)):
        yield batch


def _unique(papers: Iterable[Paper], seen: set[str]) -> Iterator[Paper]:
    for paper in papers:
        if paper.paper_id not in seen:
            seen.add(paper.paper_id)
            yield paper


def ingest(path: Path, fmt: str, settings: Settings, progress: bool = True) -> IngestReport:
    """Ingest a corpus file. A malformed file is rejected before the store is touched."""
    started = time.perf_counter()
    # Pass 1 validates the whole file (streaming), so bad input never leaves a half-ingested store.
    total = 0
    ids: set[str] = set()
    for paper in read_corpus(path, fmt):
        total += 1
        ids.add(paper.paper_id)

    embedder: BaseEmbedding | None = None  # loaded only when something needs embedding: re-ingests stay fast
    splitter = make_splitter(settings)
    name = collection_name(settings)
    collection = open_collection(connect(settings), name, create=True)
    assert collection is not None
    vector_store = ChromaVectorStore(chroma_collection=collection)
    known = manifest(collection)
    version_suffix = f"{settings.chunking.chunk_size}/{settings.chunking.chunk_overlap}"

    added = updated = skipped = chunks = 0
    bar = tqdm(total=len(ids), unit="paper", desc=f"ingest {path.name}", disable=None if progress else True)
    for batch in _batched(_unique(read_corpus(path, fmt), set()), settings.ingest.batch_papers):
        todo: list[BaseNode] = []
        replaced: list[str] = []
        for paper in batch:
            version = f"{paper.content_hash}:{version_suffix}"
            state = known.get(paper.paper_id)
            if state is not None and state.complete and state.content_hash == version:
                skipped += 1
                chunks += state.n_chunks
                continue
            if state is not None:
                replaced.append(paper.paper_id)
                updated += state.complete
            nodes = paper_nodes(paper, splitter, version)
            todo.extend(nodes)
            chunks += len(nodes)
            added += 1
        if todo:
            embedder = embedder or build_embedder(settings)
            vectors = embedder.get_text_embedding_batch([n.get_content(MetadataMode.EMBED) for n in todo])
            for node, vector in zip(todo, vectors, strict=True):
                node.embedding = vector
            if replaced:
                collection.delete(where=cast(Where, {"paper_id": {"$in": replaced}}))
            vector_store.add(todo)
        bar.update(len(batch))
    bar.close()

    folder = keyword_index.index_dir(settings.data_path, name)
    if added or not keyword_index.in_step(collection, folder):
        keyword_index.rebuild(collection, folder)
    return IngestReport(
        papers=len(ids),
        chunks=chunks,
        added=added,
        skipped=skipped,
        collection=settings.collection,
        updated=updated,
        duplicates=total - len(ids),
        embedder=embedder_id(settings),
        seconds=round(time.perf_counter() - started, 2),
    )
