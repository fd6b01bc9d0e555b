"""The Chroma store: an embedded folder by default, or a ``chroma run`` server when ``chroma.server_url`` is set.

A Chroma collection carries the user's name and records in its own metadata the embedder and the chunking it was
built with (:class:`CollectionInfo`), so every open rebuilds the collection's own embedder whatever
``embedding.provider`` says today. Embeddings are always computed by us and passed in, so Chroma never loads (or
downloads) a model of its own.
"""

import hashlib
import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import chromadb
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.config import Settings as ChromaClientSettings
from chromadb.errors import NotFoundError

from rag.embedding import EmbedderSpec, configured_embedder
from rag.errors import BadInput, ServiceUnavailable
from rag.settings import Settings

_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")
SHORT_SUFFIX = "-rag"  # Chroma wants names of 3 characters or more; shorter ones carry this in Chroma
PAGE = 5_000
FORMAT = 1  # the rag:format of the collection metadata this version writes; a higher one is a newer version's
LEGACY_SEPARATOR = "--"  # older versions named collections "<name>--<embedder id>" and recorded nothing in them

log = logging.getLogger(__name__)


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


def _valid(name: str) -> bool:
    return bool(_COLLECTION_NAME.match(name)) and ".." not in name


def check_name(name: str) -> str:
    """The collection name, or bad input saying what a name may hold (it also names a folder on disk)."""
    if not _valid(name):
        raise BadInput(
            f"collection name {name!r} must be 1-64 characters of letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def collection_name(settings: Settings) -> str:
    """``settings.collection``, validated."""
    return check_name(settings.collection)


def chroma_name(name: str) -> str:
    """The Chroma collection that holds collection ``name``: the same name, unless it is too short for Chroma (the
    collection records its own name, so a suffixed one is never taken for another)."""
    return name if len(name) >= 3 else name + SHORT_SUFFIX


@dataclass(frozen=True)
class CollectionInfo:
    """What a collection records about how it was built: every reader and writer follows it."""

    embedder: EmbedderSpec
    dimension: int
    chunk_size: int
    chunk_overlap: int

    def metadata(self, name: str) -> dict[str, str | int]:
        return {
            "rag:format": FORMAT,
            "rag:name": name,
            "rag:embedder": self.embedder.id,
            "rag:embedding_model": self.embedder.model,
            "rag:dimension": self.dimension,
            "rag:chunk_size": self.chunk_size,
            "rag:chunk_overlap": self.chunk_overlap,
        }

    @classmethod
    def from_metadata(cls, name: str, metadata: Mapping[str, Any] | None) -> "CollectionInfo | None":
        """The recorded info; None when the collection records none (an older version's, or another program's)."""
        if not metadata or "rag:embedder" not in metadata:
            return None
        version = int(metadata.get("rag:format", 0))
        if version > FORMAT:
            raise BadInput(
                f"collection {name!r} was written by a newer version of rag (format {version}; this one reads "
                f"{FORMAT}): upgrade rag"
            )
        return cls(
            EmbedderSpec.from_id(str(metadata["rag:embedder"]), str(metadata.get("rag:embedding_model", ""))),
            int(metadata["rag:dimension"]),
            int(metadata["rag:chunk_size"]),
            int(metadata["rag:chunk_overlap"]),
        )

    @property
    def chunking(self) -> str:
        return f"chunk_size={self.chunk_size}, chunk_overlap={self.chunk_overlap}"


@dataclass(frozen=True)
class StoredCollection:
    """A collection of ours: its name, the Chroma handle and what it records."""

    name: str  # the user's; ``collection.name`` is Chroma's (see chroma_name)
    collection: Collection
    info: CollectionInfo

    @classmethod
    def of(cls, collection: Collection) -> "StoredCollection | None":
        """Ours, or None for a collection that records nothing (an older version's, or another program's)."""
        metadata = collection.metadata or {}
        name = str(metadata.get("rag:name", collection.name))
        info = CollectionInfo.from_metadata(name, metadata)
        return None if info is None else cls(name, collection, info)

    @property
    def id(self) -> str:
        """Chroma's id for it: a collection deleted and created again under the same name gets another."""
        return str(self.collection.id)


def configured_info(settings: Settings, dimension: int) -> CollectionInfo:
    """What a collection created now with these settings records."""
    chunking = settings.chunking
    return CollectionInfo(configured_embedder(settings), dimension, chunking.chunk_size, chunking.chunk_overlap)


def check_compatible(stored: StoredCollection, settings: Settings) -> None:
    """Ingest writes only with the collection's own embedder and chunking: a mismatch names both."""
    wanted = configured_info(settings, stored.info.dimension)
    advice = f"ingest into another collection or `rag collections delete {stored.name}`"
    if wanted.embedder.id != stored.info.embedder.id:
        keys = "embedding.provider" + (", openai.embedding_model" if wanted.embedder.provider == "openai" else "")
        raise BadInput(
            f"collection {stored.name!r} was built with {stored.info.embedder.id}; settings ask for "
            f"{wanted.embedder.id} ({keys}); {advice}"
        )
    if wanted.chunking != stored.info.chunking:
        raise BadInput(
            f"collection {stored.name!r} was chunked with {stored.info.chunking}; settings ask for "
            f"{wanted.chunking} ([chunking]); {advice}"
        )


def _get(client: ClientAPI, name: str) -> Collection | None:
    try:
        return client.get_collection(name, embedding_function=None)
    except NotFoundError:
        return None
    except ValueError as error:  # older clients say "does not exist" with a ValueError
        if "does not exist" in str(error):
            return None
        raise


def legacy_parts(name: str, settings: Settings) -> tuple[str, EmbedderSpec] | None:
    """(the user's name, the embedder) that an older version's collection name records; None for another name.
    An OpenAI-compatible model keeps its exact name when it is the configured one (the id is a lossy slug)."""
    base, separator, embedder = name.rpartition(LEGACY_SEPARATOR)  # older names were 3 characters or more
    if not separator or not _valid(base):
        return None
    configured = configured_embedder(settings)
    try:
        spec = EmbedderSpec.from_id(embedder, configured.model if configured.id == embedder else "")
    except BadInput:
        return None
    return base, spec


def _first_row(collection: Collection) -> tuple[int, str]:
    """The embedding width and the content version of one row ("" for an empty collection)."""
    page = collection.get(limit=1, include=["embeddings", "metadatas"])
    embeddings, metadatas = page.get("embeddings"), page.get("metadatas")
    if embeddings is None or len(embeddings) == 0:
        return 0, ""
    return len(embeddings[0]), str((metadatas or [{}])[0].get("content_hash", ""))


def adopt(client: ClientAPI, legacy: Collection, name: str, settings: Settings) -> StoredCollection:
    """Record in an older version's collection the embedder its name records (and the chunking its rows record) and
    rename it to ``name``; if another process adopted it first, that one. Its keyword index is the caller's
    (``rag.library`` publishes it under the new name)."""
    parts = legacy_parts(legacy.name, settings)
    assert parts is not None
    old_name, (_, spec) = legacy.name, parts
    dimension, version = _first_row(legacy)
    size, _, overlap = version.rpartition(":")[2].partition("/")  # rows carry "<hash>:<size>/<overlap>"
    chunking = settings.chunking
    info = CollectionInfo(
        spec,
        dimension or (384 if spec.provider == "local" else 0),
        int(size) if size.isdigit() else chunking.chunk_size,
        int(overlap) if overlap.isdigit() else chunking.chunk_overlap,
    )
    target = chroma_name(name)
    try:
        legacy.modify(name=None if target == old_name else target, metadata=info.metadata(name))
    except Exception:  # another process adopted it first: use what it made
        adopted = open_collection(settings, client)
        if adopted is None:
            raise
        return adopted
    log.warning("adopted legacy collection %r as %r (embedder %s)", old_name, name, spec.id)
    return StoredCollection(name, legacy, info)


def open_collection(settings: Settings, client: ClientAPI | None = None) -> StoredCollection | None:
    """The collection ``settings.collection`` names, None when there is none of ours (``rag.library.open_stored``
    also adopts an older version's)."""
    name = collection_name(settings)  # bad input before any connection is made
    client = client or connect(settings)
    found = _get(client, chroma_name(name))
    if found is None:
        return None
    stored = StoredCollection.of(found)
    if stored is not None and stored.name == name:
        return stored
    if stored is not None:
        raise BadInput(f"Chroma collection {found.name!r} holds collection {stored.name!r}: choose another name")
    if legacy_parts(name, settings) is not None:  # an older version's name, opened as itself: adopted by the caller
        return None
    raise BadInput(f"collection {name!r} records no embedder in its metadata: it was not made by rag")


def legacy_collection(settings: Settings, client: ClientAPI) -> Collection | None:
    """An older version's collection ("<name>--<embedder id>") that holds ``settings.collection`` (the configured
    embedder's preferred when there are several), or that name itself in the older form."""
    name = collection_name(settings)
    found = _get(client, chroma_name(name))
    if found is not None:
        return found if StoredCollection.of(found) is None and legacy_parts(name, settings) is not None else None
    wanted = configured_embedder(settings).id
    legacy = [
        collection
        for collection in client.list_collections()
        if (parts := legacy_parts(collection.name, settings)) is not None
        and parts[0] == name
        and StoredCollection.of(collection) is None
    ]
    legacy.sort(key=lambda collection: (not collection.name.endswith(LEGACY_SEPARATOR + wanted), collection.name))
    return legacy[0] if legacy else None


def create_collection(settings: Settings, client: ClientAPI, dimension: int) -> StoredCollection:
    """A new collection recording the configured embedder and chunking; if another process created it first, that
    one (which must then match the settings)."""
    name = collection_name(settings)
    info = configured_info(settings, dimension)
    try:
        collection = client.create_collection(
            chroma_name(name), metadata={"hnsw:space": "cosine", **info.metadata(name)}, embedding_function=None
        )
    except Exception:  # created meanwhile: chromadb raises several types for "already exists"
        existing = open_collection(settings, client)
        if existing is None:
            raise
        check_compatible(existing, settings)
        return existing
    return StoredCollection(name, collection, info)


def list_collections(settings: Settings) -> tuple[list[StoredCollection], list[tuple[str, Collection]]]:
    """Every collection of ours, and each older version's with the name it is adopted under (the configured
    embedder's first; a name already taken keeps the older collection's own)."""
    client = connect(settings)
    found = list(client.list_collections())
    names = {collection.name for collection in found}
    wanted = configured_embedder(settings).id
    stored: list[StoredCollection] = []
    legacy: list[tuple[str, Collection]] = []
    for collection in found:
        ours = StoredCollection.of(collection)
        if ours is not None:
            stored.append(ours)
        elif (parts := legacy_parts(collection.name, settings)) is not None:
            legacy.append((parts[0], collection))
    legacy.sort(key=lambda item: (not item[1].name.endswith(LEGACY_SEPARATOR + wanted), item[1].name))
    named: list[tuple[str, Collection]] = []
    for base, collection in legacy:
        target = base if base not in names else collection.name
        names.add(target)
        named.append((target, collection))
    return stored, named


def delete_collection(settings: Settings, stored: StoredCollection) -> None:
    """Drop the collection from Chroma; its keyword index and files are the caller's (rag.library.delete)."""
    connect(settings).delete_collection(stored.collection.name)


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


def states_of(metadatas: Iterable[Mapping[str, Any] | None]) -> dict[str, PaperState]:
    """paper_id → state, from the rows' chunk metadata."""
    states: dict[str, PaperState] = {}
    for meta in metadatas:
        meta = meta or {}
        paper_id = str(meta.get("paper_id", ""))
        state = states.setdefault(paper_id, PaperState(str(meta.get("content_hash")), int(meta.get("n_chunks", 0))))
        state.present += 1
        state.mixed |= state.content_hash != meta.get("content_hash")
    return states


def manifest(collection: Collection | None) -> dict[str, PaperState]:
    """paper_id → state, read from chunk metadata: the store itself is the record of what was ingested."""
    if collection is None:
        return {}
    return states_of(row["metadatas"] for row in iter_records(collection, ["metadatas"]))


def fingerprint(states: Mapping[str, PaperState]) -> str:
    """A digest of which paper versions a store holds (and how whole): equal digests, equal indexed content."""
    digest = hashlib.sha256()
    for paper_id in sorted(states):
        state = states[paper_id]
        digest.update(f"{paper_id}\t{state.content_hash}\t{state.present}\t{state.mixed:d}\n".encode())
    return digest.hexdigest()
