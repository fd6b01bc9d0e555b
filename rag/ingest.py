"""Papers → chunks → embeddings → Chroma, idempotently and resumably; then a new keyword-index version is published.

Each chunk's metadata records its paper's content hash and chunk count, so the store itself says which papers are
complete and current: unchanged papers are skipped, changed ones replaced, half-written ones redone, and with
``prune`` the papers the file no longer holds are removed. Ingest is the only writer of index versions: it publishes
one whenever the rows differ from what the published version indexed (compared by fingerprint, so a changed abstract
with the same chunk count counts, and so does an earlier run that died before publishing).
"""

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Literal, cast

import tiktoken
from chromadb.api.types import Where
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import BaseNode, MetadataMode, TextNode
from llama_index.vector_stores.chroma import ChromaVectorStore
from tqdm import tqdm

from rag import keyword_index
from rag.embedding import build_embedder, embedder_id, local_embedder
from rag.readers import Paper, Skipped, read_corpus, read_entries
from rag.settings import Settings
from rag.store import (
    PaperState,
    StoredCollection,
    check_compatible,
    connect,
    create_collection,
    delete_collection,
    fingerprint,
    manifest,
    open_collection,
)

EMBEDDED_KEYS = ("title",)


def entries(count: int) -> str:
    return f"{count} {'entry' if count == 1 else 'entries'}"


@dataclass(frozen=True)
class IngestProgress:
    """How far an ingest is, for a caller that shows it (the web UI); the command line shows tqdm bars."""

    stage: Literal["reading", "embedding", "indexing"]
    done: int
    total: int


@dataclass
class IngestReport:
    papers: int
    chunks: int
    added: int
    skipped: int
    collection: str
    updated: int
    duplicates: int
    removed: int
    embedder: str
    seconds: float
    skipped_no_abstract: int = 0  # reference-manager entries without an abstract: nothing to search or cite
    skipped_malformed: int = 0
    problems: list[str] = field(default_factory=list)  # "file:line: what" for each malformed entry skipped

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """What the command line and the UI report after an ingest."""
        lines = [
            f"{self.papers} papers ({self.added} added, {self.updated} updated, {self.skipped} unchanged, "
            f"{self.removed} removed, {self.duplicates} duplicates dropped), {self.chunks} chunks in "
            f"{self.collection!r} [{self.embedder}] in {self.seconds:.1f} s"
        ]
        if self.skipped_no_abstract:
            lines.append(f"{entries(self.skipped_no_abstract)} without an abstract skipped (nothing to search or cite)")
        if self.skipped_malformed:
            lines.append(f"{entries(self.skipped_malformed)} malformed, skipped (listed above; --strict fails instead)")
        return "\n".join(lines)


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
    for key in ("venue", "doi", "kind"):
        if value := getattr(paper, key):
            base[key] = value
    if paper.categories:
        base["categories"] = "; ".join(paper.categories)  # keywords may hold spaces
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


def ingest(
    path: Path,
    fmt: str,
    settings: Settings,
    progress: bool = True,
    prune: bool = False,
    strict: bool = False,
    on_progress: Callable[[IngestProgress], None] | None = None,
) -> IngestReport:
    """Ingest a corpus file; with ``prune``, also remove the collection's papers the file no longer holds. A malformed
    file, or settings whose embedder or chunking differ from the collection's, are rejected before the store is
    touched. A malformed entry among good ones in a reference-manager export is skipped and reported, unless
    ``strict``. ``on_progress`` hears of each stage and batch."""
    started = time.perf_counter()
    tell = on_progress or (lambda _: None)
    tell(IngestProgress("reading", 0, 0))
    stored = open_collection(settings)
    if stored is not None:
        check_compatible(stored, settings)
    # Pass 1 validates the whole file (streaming), so bad input never leaves a half-ingested store.
    total = 0
    ids: set[str] = set()
    passed_over: list[Skipped] = []
    for entry in read_entries(path, fmt, strict):
        if isinstance(entry, Skipped):
            passed_over.append(entry)
            continue
        total += 1
        ids.add(entry.paper_id)

    embedder: BaseEmbedding | None = None  # loaded only when something needs embedding: re-ingests stay fast
    splitter = make_splitter(settings)
    known = manifest(stored.collection if stored else None)
    final = dict(known)  # what the store will hold: the published index must match it
    version_suffix = f"{settings.chunking.chunk_size}/{settings.chunking.chunk_overlap}"

    added = updated = skipped = chunks = 0
    bar = tqdm(total=len(ids), unit="paper", desc=f"ingest {path.name}", disable=None if progress else True)
    done = 0
    tell(IngestProgress("embedding", done, len(ids)))
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
            if state is not None and state.complete:
                updated += 1
            else:
                added += 1  # new, or half-written by a run that died: not whole in the store before
            nodes = paper_nodes(paper, splitter, version)
            todo.extend(nodes)
            chunks += len(nodes)
            final[paper.paper_id] = PaperState(version, len(nodes), present=len(nodes))
        if todo:
            embedder = embedder or build_embedder(settings)
            vectors = embedder.get_text_embedding_batch([n.get_content(MetadataMode.EMBED) for n in todo])
            for node, vector in zip(todo, vectors, strict=True):
                node.embedding = vector
            if stored is None:
                stored = create_collection(settings, connect(settings), dimension=len(vectors[0]))
            if replaced:
                _delete_papers(stored, replaced)
            ChromaVectorStore(chroma_collection=stored.collection).add(todo)
        bar.update(len(batch))
        done += len(batch)
        tell(IngestProgress("embedding", done, len(ids)))
    bar.close()

    removed = sorted(set(known) - ids) if prune else []
    if stored is not None and removed:
        _delete_papers(stored, removed)
        for paper_id in removed:
            del final[paper_id]
    if stored is not None and keyword_index.stale(stored, settings.data_path, fingerprint(final)):
        tell(IngestProgress("indexing", 0, len(final)))
        keyword_index.publish(stored, settings.data_path, local_embedder(settings), progress)
    return IngestReport(
        papers=len(ids),
        chunks=chunks,
        added=added,
        skipped=skipped,
        collection=settings.collection,
        updated=updated,
        duplicates=total - len(ids),
        removed=len(removed),
        embedder=stored.info.embedder.id if stored else embedder_id(settings),
        seconds=round(time.perf_counter() - started, 2),
        skipped_no_abstract=sum(entry.reason == "no_abstract" for entry in passed_over),
        skipped_malformed=sum(entry.reason == "malformed" for entry in passed_over),
        problems=[str(entry) for entry in passed_over if entry.reason == "malformed"],
    )


def remove_collection(settings: Settings, stored: StoredCollection) -> None:
    """Delete a collection and every version of its keyword index."""
    delete_collection(settings, stored)
    keyword_index.remove(settings.data_path, stored.name)


def _delete_papers(stored: StoredCollection, paper_ids: list[str]) -> None:
    """Delete every chunk of these papers, a bounded number of ids per request."""
    for start in range(0, len(paper_ids), 500):
        batch = paper_ids[start : start + 500]
        stored.collection.delete(where=cast(Where, {"paper_id": {"$in": batch}}))
