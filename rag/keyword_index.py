"""The BM25 side of hybrid search: llama-index's ``BM25Retriever`` (bm25s) persisted under ``RAG_DATA_DIR``.

Chroma is the source of truth; one writer publishes. Ingest (and the adoption of an older version's collection)
builds the index from the collection's rows and publishes it as an immutable version folder named by an atomically
replaced ``current`` file, so no process sees a partial index. Readers load the published version and never build:
a missing or outdated one is an error that says to run `rag ingest`. Each version records its paper and chunk counts
(what `rag stats` and the UI show, free at any size) and holds the rows' MiniLM wordpiece document frequencies (the
relevance gate's IDF, rag/relevance.py) and token vectors (the rerank stage's, rag/late_interaction.py). Caches key on
the version id.
"""

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node
from llama_index.retrievers.bm25 import BM25Retriever

from rag.embedding import LocalMiniLMEmbedding, minilm_tokenizer
from rag.errors import BadInput, EmptyCollection
from rag.late_interaction import TokenVectors, build_token_vectors
from rag.papers import abstract_chunks
from rag.store import StoredCollection, fingerprint, iter_records, states_of
from rag.text import STOPWORDS

STATE_FILE = "rag_state.json"
PIECES_FILE = "wordpieces.npy"  # how many rows contain each MiniLM wordpiece: the relevance gate's IDF
CURRENT = "current"  # a file naming the published version folder
# Bump when tokenisation changes: readers then ask for a re-ingest, which rebuilds.
TOKENIZER_VERSION = "en+scholarly-1+pieces"
MAX_CATEGORIES = 500  # a version lists at most this many categories (an arXiv snapshot has ~170)
FORMAT = 3  # of the version folder: 2 had no token vectors, 1 recorded only rows and tokenizer


@dataclass(frozen=True)
class IndexVersion:
    """One published build, as its state file records it."""

    id: str  # the version folder's name
    papers: int
    chunks: int
    tokenizer: str
    created: str  # ISO 8601, UTC
    collection_id: str  # Chroma's id of the collection it was built from
    fingerprint: str  # rag.store.fingerprint of the rows it indexes
    format: int
    files: tuple[str, ...] = ()  # what the folder held when published
    years: tuple[int, int] | None = None  # the papers' year range: what the UI's year filter offers
    categories: tuple[str, ...] = ()  # the papers' categories/keywords, most papers first: the UI's filter choices

    def current_for(self, stored: StoredCollection) -> bool:
        """Whether readers of this collection may use it: this format and tokenizer, built from this collection."""
        return self.format == FORMAT and self.tokenizer == TOKENIZER_VERSION and self.collection_id == stored.id

    def intact(self, data_path: Path, name: str) -> bool:
        """Whether every file it was published with is still there (so a reader can load it)."""
        folder = index_dir(data_path, name) / self.id
        return bool(self.files) and all((folder / file).is_file() for file in self.files)


@dataclass
class KeywordIndex:
    """The BM25 retriever and the collection's wordpiece document frequencies, from one published version."""

    retriever: BM25Retriever
    piece_frequencies: np.ndarray  # indexed by MiniLM token id
    version: IndexVersion
    tokens: TokenVectors

    @property
    def documents(self) -> int:
        return len(self.retriever.corpus)


def piece_frequencies(nodes: list[BaseNode]) -> np.ndarray:
    """In how many rows (title and text) each MiniLM wordpiece occurs."""
    tokenizer = minilm_tokenizer()
    counts = np.zeros(tokenizer.get_vocab_size(), dtype=np.int32)
    for start in range(0, len(nodes), 1000):
        batch = nodes[start : start + 1000]
        texts = [f"{node.metadata.get('title', '')}. {node.get_content()}" for node in batch]
        for encoding in tokenizer.encode_batch(texts):
            counts[np.unique(encoding.ids)] += 1
    return counts


def index_dir(data_path: Path, name: str) -> Path:
    return data_path / "bm25" / name


def current_id(data_path: Path, name: str) -> str | None:
    """The published version's id: one small file read, cheap enough for every request."""
    try:
        live = (index_dir(data_path, name) / CURRENT).read_text().strip()
    except OSError:
        return None
    return live if live.startswith("v-") else None


def current_version(data_path: Path, name: str) -> IndexVersion | None:
    """The published version, whatever its format; None when nothing (readable) is published."""
    live = current_id(data_path, name)
    if live is None:
        return None
    try:
        state = json.loads((index_dir(data_path, name) / live / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    known = {field.name for field in fields(IndexVersion)}
    older = {"chunks": state.get("rows", 0), "papers": 0, "format": 1}  # what a format-1 state lacks
    values = {"tokenizer": "", "created": "", "collection_id": "", "fingerprint": ""} | older
    values |= {key: value for key, value in state.items() if key in known} | {"id": live}
    years = values.get("years")
    return IndexVersion(
        **(
            values
            | {
                "files": tuple(values.get("files", ())),
                "years": (int(years[0]), int(years[1])) if years else None,
                "categories": tuple(values.get("categories", ())),
            }
        )
    )


def published(stored: StoredCollection, data_path: Path) -> IndexVersion | None:
    """The version readers use; None when nothing is published, bad input when it is not current for them."""
    version = current_version(data_path, stored.name)
    if version is not None and not version.current_for(stored):
        raise BadInput(
            f"the keyword index of collection {stored.name!r} was built by another version of rag or for another "
            f"collection of that name: run `rag ingest FILE --collection {stored.name}` to rebuild it"
        )
    return version


def load(stored: StoredCollection, data_path: Path) -> KeywordIndex:
    """The published index; EmptyCollection when none is, bad input when it is outdated or unreadable."""
    version = published(stored, data_path)
    if version is None:
        raise EmptyCollection(
            f"collection {stored.name!r} has no published index: run `rag ingest FILE --collection {stored.name}` "
            "(it also finishes an interrupted ingest)"
        )
    live = index_dir(data_path, stored.name) / version.id
    try:
        retriever = BM25Retriever.from_persist_dir(str(live), show_progress=False)
        return KeywordIndex(retriever, np.load(live / PIECES_FILE), version, TokenVectors.load(live))
    except (OSError, ValueError, KeyError, TypeError):
        raise BadInput(
            f"the keyword index {version.id} of collection {stored.name!r} is unreadable: run "
            f"`rag ingest FILE --collection {stored.name}` to rebuild it"
        ) from None


def publish(
    stored: StoredCollection, data_path: Path, encoder: LocalMiniLMEmbedding, progress: bool = False
) -> IndexVersion | None:
    """Index every row of the collection and publish it atomically; None (nothing published) when it is empty.
    ``encoder`` computes the rows' token vectors (those of rows the live version already holds are reused).

    Only the writer calls this (ingest, and the adoption of an older version's collection). Each build is written to
    its own version folder, then the ``current`` file is swapped to name it in one rename, so a reader in another
    process (the server, while `rag ingest` runs) always opens a complete index, and two writers never write into
    the same folder.
    """
    rows = list(iter_records(stored.collection, ["metadatas", "documents"]))
    nodes: list[BaseNode] = [metadata_dict_to_node(row["metadatas"], text=row["documents"]) for row in rows]
    folder = index_dir(data_path, stored.name)
    folder.mkdir(parents=True, exist_ok=True)
    if not nodes:
        (folder / CURRENT).unlink(missing_ok=True)
        return None
    retriever = BM25Retriever.from_defaults(
        nodes=nodes,
        similarity_top_k=min(100, len(nodes)),
        language=STOPWORDS,  # type: ignore[arg-type]  # passed through to bm25s, which takes a list too
    )
    # A freshly built retriever keeps its corpus beside the bm25s index, a loaded one inside it; searches build
    # retrievers from the bm25s index alone, so it must carry the corpus either way.
    retriever.bm25.corpus = retriever.corpus
    path = Path(tempfile.mkdtemp(prefix=f"v-{time.time_ns()}-", dir=folder))  # ids sort by creation
    retriever.persist(str(path), show_progress=False)
    np.save(path / PIECES_FILE, piece_frequencies(nodes))
    # The rerank weighs a paper by its abstract (the first chunk of a full text without one), as it was tuned: a whole
    # full text would cover any question, and cost its size in vectors.
    summaries = [node for node in nodes if int(node.metadata.get("chunk", 0)) < max(abstract_chunks(node.metadata), 1)]
    build_token_vectors(summaries, encoder, _live_tokens(stored, data_path), progress).save(path)
    states = states_of(row["metadatas"] for row in rows)
    years, categories = _facets(row["metadatas"] for row in rows)
    version = IndexVersion(
        years=years,
        categories=categories,
        files=(*sorted(file.name for file in path.iterdir()), STATE_FILE),
        id=path.name,
        papers=len(states),
        chunks=len(nodes),
        tokenizer=TOKENIZER_VERSION,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        collection_id=stored.id,
        fingerprint=fingerprint(states),
        format=FORMAT,
    )
    (path / STATE_FILE).write_text(json.dumps(asdict(version)))
    previous = _live(folder)
    pointer = folder / f".{path.name}.current"
    pointer.write_text(path.name)
    os.replace(pointer, folder / CURRENT)  # atomic: readers see the old index or the new one, never a mix
    if previous is not None:
        os.utime(previous)  # superseded now: a reader that just opened it gets a minute to finish
    _prune(folder, keep=path)
    return version


def _facets(metadatas: Iterable[Mapping[str, Any]]) -> tuple[tuple[int, int] | None, tuple[str, ...]]:
    """The papers' year range and their categories, most papers first (each paper counted once, from chunk 0)."""
    years: list[int] = []
    counts: Counter[str] = Counter()
    for meta in metadatas:
        if meta.get("chunk", 0) != 0:
            continue
        if isinstance(meta.get("year"), int):
            years.append(meta["year"])
        counts.update(key[4:] for key in meta if key.startswith("cat:"))
    ranked = tuple(category for category, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    return ((min(years), max(years)) if years else None), ranked[:MAX_CATEGORIES]


def stale(stored: StoredCollection, data_path: Path, rows: str) -> bool:
    """Whether the published version is not the one for the collection's rows (``rows``: their fingerprint):
    none, another format or collection, a file missing, or other rows. Ingest then publishes a new one."""
    version = current_version(data_path, stored.name)
    return (
        version is None
        or not version.current_for(stored)
        or not version.intact(data_path, stored.name)
        or version.fingerprint != rows
    )


def _live_tokens(stored: StoredCollection, data_path: Path) -> TokenVectors | None:
    """The live version's token vectors, when it is this collection's and readable: what a republish reuses."""
    version = current_version(data_path, stored.name)
    if version is None or not version.current_for(stored):
        return None
    try:
        return TokenVectors.load(index_dir(data_path, stored.name) / version.id)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def migrate(data_path: Path, old_name: str, stored: StoredCollection, encoder: LocalMiniLMEmbedding) -> None:
    """Publish an adopted collection's index under its new name and drop the one its old name kept."""
    publish(stored, data_path, encoder)
    if old_name != stored.name:
        remove(data_path, old_name)


def remove(data_path: Path, name: str) -> None:
    """Delete every version of a collection's index (the collection is gone)."""
    shutil.rmtree(index_dir(data_path, name), ignore_errors=True)


def _prune(folder: Path, keep: Path) -> None:
    """Drop versions superseded over a minute ago: no reader is still opening them (a load takes seconds)."""
    now = time.time()
    for old in folder.glob("v-*"):
        if old != keep and now - old.stat().st_mtime > 60:
            shutil.rmtree(old, ignore_errors=True)


def _live(folder: Path) -> Path | None:
    try:
        live = folder / (folder / CURRENT).read_text().strip()
    except OSError:
        return None
    return live if live.name.startswith("v-") and live.is_dir() else None
