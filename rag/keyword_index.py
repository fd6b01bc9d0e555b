"""The BM25 side of hybrid search: llama-index's ``BM25Retriever`` (bm25s) persisted under ``RAG_DATA_DIR``.

Chroma is the source of truth. The index is rebuilt from the collection's rows after every ingest that changed
something, and a loader that finds it out of step (another row count) rebuilds it before use.
"""

import json
import shutil
import tempfile
from pathlib import Path

from bm25s.stopwords import STOPWORDS_EN
from chromadb.api.models.Collection import Collection
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node
from llama_index.retrievers.bm25 import BM25Retriever

from rag.store import iter_records

STATE_FILE = "rag_state.json"
# Words that every abstract and every "which papers …" question uses: as query terms they only add noise.
SCHOLARLY_STOPWORDS = (  # noqa: SIM905 - a word list reads best as words
    "paper papers work works study studies studied propose proposed proposes approach approaches method methods "
    "discuss discusses show shows present presents research researchers result results"
).split()
STOPWORDS = [*STOPWORDS_EN, *SCHOLARLY_STOPWORDS]
# Bump when tokenisation changes, so indexes built the old way are rebuilt.
TOKENIZER_VERSION = "en+scholarly-1"


def index_dir(data_path: Path, physical_collection: str) -> Path:
    return data_path / "bm25" / physical_collection


def _nodes(collection: Collection) -> list[BaseNode]:
    return [
        metadata_dict_to_node(row["metadatas"], text=row["documents"])
        for row in iter_records(collection, ["metadatas", "documents"])
    ]


def rebuild(collection: Collection, folder: Path) -> BM25Retriever | None:
    """Index every row of the collection and swap the new index in atomically; None for an empty collection."""
    nodes = _nodes(collection)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if not nodes:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    retriever = BM25Retriever.from_defaults(
        nodes=nodes,
        similarity_top_k=min(100, len(nodes)),
        language=STOPWORDS,  # type: ignore[arg-type]  # passed through to bm25s, which takes a list too
    )
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
    retriever.persist(str(staging), show_progress=False)
    (staging / STATE_FILE).write_text(json.dumps({"rows": len(nodes), "tokenizer": TOKENIZER_VERSION}))
    retired = folder.with_name(folder.name + ".old")
    shutil.rmtree(retired, ignore_errors=True)
    if folder.exists():
        folder.rename(retired)
    staging.rename(folder)
    shutil.rmtree(retired, ignore_errors=True)
    return retriever


def in_step(collection: Collection, folder: Path) -> bool:
    """Whether the persisted index covers exactly the rows the collection has now."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return bool(state.get("rows") == collection.count() and state.get("tokenizer") == TOKENIZER_VERSION)


def load(collection: Collection, folder: Path) -> BM25Retriever | None:
    """The persisted index, rebuilt first when it is missing or out of step with Chroma."""
    if not in_step(collection, folder):
        return rebuild(collection, folder)
    return BM25Retriever.from_persist_dir(str(folder), show_progress=False)
