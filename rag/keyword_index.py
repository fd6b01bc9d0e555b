"""The BM25 side of hybrid search: llama-index's ``BM25Retriever`` (bm25s) persisted under ``RAG_DATA_DIR``.

Chroma is the source of truth. The index is rebuilt from the collection's rows after every ingest that changed
something, and a loader that finds it out of step (another row count) rebuilds it before use. Builds are published
as immutable version folders named by an atomically replaced ``current`` file, so no process sees a partial index.
Each version also holds the rows' MiniLM wordpiece document frequencies: the relevance gate's IDF (rag/relevance.py).
"""

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bm25s.stopwords import STOPWORDS_EN
from chromadb.api.models.Collection import Collection
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node
from llama_index.retrievers.bm25 import BM25Retriever

from rag.models import minilm_tokenizer
from rag.store import iter_records

STATE_FILE = "rag_state.json"
PIECES_FILE = "wordpieces.npy"  # how many rows contain each MiniLM wordpiece: the relevance gate's IDF
CURRENT = "current"  # a file naming the published version folder
# Words that every abstract and every "which papers …" question uses: as query terms they only add noise.
SCHOLARLY_STOPWORDS = (  # noqa: SIM905 - a word list reads best as words
    "paper papers work works study studies studied propose proposed proposes approach approaches method methods "
    "discuss discusses show shows present presents research researchers result results"
).split()
STOPWORDS = [*STOPWORDS_EN, *SCHOLARLY_STOPWORDS]
# Bump when tokenisation changes, so indexes built the old way are rebuilt.
TOKENIZER_VERSION = "en+scholarly-1+pieces"


@dataclass
class KeywordIndex:
    """The BM25 retriever and the collection's wordpiece document frequencies, from one published version."""

    retriever: BM25Retriever
    piece_frequencies: np.ndarray  # indexed by MiniLM token id

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


def index_dir(data_path: Path, physical_collection: str) -> Path:
    return data_path / "bm25" / physical_collection


def _nodes(collection: Collection) -> list[BaseNode]:
    return [
        metadata_dict_to_node(row["metadatas"], text=row["documents"])
        for row in iter_records(collection, ["metadatas", "documents"])
    ]


def rebuild(collection: Collection, folder: Path) -> KeywordIndex | None:
    """Index every row of the collection and publish it atomically; None for an empty collection.

    Each build is written to its own version folder, then the ``current`` file is swapped to name it in one rename, so a
    reader in another process (the server, while `rag ingest` runs) always opens a complete index, and two writers
    never write into the same folder.
    """
    nodes = _nodes(collection)
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
    version = Path(tempfile.mkdtemp(prefix="v-", dir=folder))
    retriever.persist(str(version), show_progress=False)
    frequencies = piece_frequencies(nodes)
    np.save(version / PIECES_FILE, frequencies)
    (version / STATE_FILE).write_text(json.dumps({"rows": len(nodes), "tokenizer": TOKENIZER_VERSION}))
    previous = _live(folder)
    pointer = folder / f".{version.name}.current"
    pointer.write_text(version.name)
    os.replace(pointer, folder / CURRENT)  # atomic: readers see the old index or the new one, never a mix
    if previous is not None:
        os.utime(previous)  # superseded now: a reader that just opened it gets a minute to finish
    _prune(folder, keep=version)
    return KeywordIndex(retriever, frequencies)


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


def in_step(collection: Collection, folder: Path) -> bool:
    """Whether the published index covers exactly the rows the collection has now."""
    live = _live(folder)
    try:
        state = json.loads((live / STATE_FILE).read_text()) if live else {}
    except (OSError, ValueError):
        return False
    return bool(state.get("rows") == collection.count() and state.get("tokenizer") == TOKENIZER_VERSION)


def load(collection: Collection, folder: Path) -> KeywordIndex | None:
    """The published index, rebuilt first when it is missing, unreadable or out of step with Chroma."""
    live = _live(folder)
    if live is not None and in_step(collection, folder):
        try:
            retriever = BM25Retriever.from_persist_dir(str(live), show_progress=False)
            return KeywordIndex(retriever, np.load(live / PIECES_FILE))
        except (OSError, ValueError):
            pass  # pruned or damaged under us: build afresh
    return rebuild(collection, folder)
