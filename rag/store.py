"""The Chroma store: an embedded folder by default, or a ``chroma run`` server when ``chroma.server_url`` is set.

Embeddings are always computed by us and passed in, so Chroma never loads (or downloads) a model of its own.
"""

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import chromadb
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.config import Settings as ChromaClientSettings

from rag.errors import BadInput, ServiceUnavailable
from rag.models import embedder_id
from rag.settings import Settings

_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,62}[A-Za-z0-9]$")
PAGE = 5_000


def connect(settings: Settings) -> ClientAPI:
    """A client for the configured store; a server that does not answer is a clear error, not a hang."""
    client_settings = ChromaClientSettings(anonymized_telemetry=False)
    url = settings.chroma.server_url
    if not url:
        path = settings.data_path / "chroma"
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=client_settings)
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise BadInput(f"chroma.server_url={url!r} is not an http(s) URL")
    deadline = time.monotonic() + settings.chroma.connect_timeout_s
    while True:  # a server that is still starting gets until the deadline
        try:
            client = chromadb.HttpClient(
                host=parsed.hostname,
                port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                ssl=parsed.scheme == "https",
                settings=client_settings,
            )
            client.heartbeat()
            return client
        except Exception as error:  # chromadb raises several types for an unreachable server
            if time.monotonic() >= deadline:
                raise ServiceUnavailable(
                    f"Chroma server at {url} is not answering ({type(error).__name__}); start it with "
                    "`chroma run --path DIR --host HOST --port PORT` or unset chroma.server_url"
                ) from None
            time.sleep(0.5)


def collection_name(settings: Settings) -> str:
    """The physical collection: the user's name plus the embedder, so embedding spaces never mix."""
    name = settings.collection
    if not _COLLECTION_NAME.match(name) or ".." in name:
        raise BadInput(
            f"collection name {name!r} must be 3-64 characters of letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return f"{name}--{embedder_id(settings)}"


def open_collection(client: ClientAPI, name: str, create: bool) -> Collection | None:
    """The collection, created with cosine distance when ``create``; None when it does not exist."""
    if create:
        return client.get_or_create_collection(name, metadata={"hnsw:space": "cosine"}, embedding_function=None)
    try:
        return client.get_collection(name, embedding_function=None)
    except Exception as error:  # NotFoundError / ValueError depending on client type
        if "does not exist" in str(error) or "not found" in str(error).lower():
            return None
        raise


def iter_records(collection: Collection, include: list[Any]) -> Iterator[dict[str, Any]]:
    """Every row of the collection, page by page, as dicts with ``id`` and the included fields."""
    offset = 0
    while True:
        page = collection.get(include=include, limit=PAGE, offset=offset)
        ids = page["ids"]
        for i, row_id in enumerate(ids):
            yield {"id": row_id, **{key: page[key][i] for key in include}}  # type: ignore[literal-required]
        if len(ids) < PAGE:
            return
        offset += PAGE


@dataclass
class PaperState:
    """What the store holds of one paper; complete when every chunk of the same version is present."""

    content_hash: str
    n_chunks: int
    present: int = 0
    mixed: bool = False

    @property
    def complete(self) -> bool:
        return not self.mixed and self.present == self.n_chunks


def manifest(collection: Collection | None) -> dict[str, PaperState]:
    """paper_id → state, read from chunk metadata: the store itself is the record of what was ingested."""
    states: dict[str, PaperState] = {}
    if collection is None:
        return states
    for row in iter_records(collection, ["metadatas"]):
        meta = row["metadatas"] or {}
        paper_id = str(meta.get("paper_id", ""))
        state = states.setdefault(paper_id, PaperState(str(meta.get("content_hash")), int(meta.get("n_chunks", 0))))
        state.present += 1
        state.mixed |= state.content_hash != meta.get("content_hash")
    return states
