"""One process serving many users (the web UI and the API): models load once and are shared, per-request choices
(collection, provider, model, top-k) pick among them, and the local model runs one generation at a time."""

import threading
from collections import deque
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from rag import keyword_index
from rag.chat import Conversation
from rag.chat_models import ChatModel, KeepsPromptState, LLMUnavailable, Message, build_chat_model
from rag.errors import BadInput
from rag.evidence import EvidenceFinder
from rag.library import CollectionSummary, delete, open_stored, summaries
from rag.settings import Settings
from rag.store import collection_name, connect


class FifoLock:
    """A lock granted in arrival order: under load every waiting request gets its turn (threading.Lock promises no
    order, so one client could starve). A waiter that gives up leaves the queue."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._waiters: deque[threading.Event] = deque()
        self._held = False

    def acquire(self, timeout: float) -> bool:
        with self._guard:
            if not self._held and not self._waiters:
                self._held = True
                return True
            turn = threading.Event()
            self._waiters.append(turn)
        if turn.wait(timeout):
            return True
        with self._guard:
            if turn.is_set():  # handed over just as the wait ran out
                return True
            self._waiters.remove(turn)
            return False

    @property
    def waiting(self) -> int:
        """Requests queued behind the holder."""
        with self._guard:
            return len(self._waiters)

    def release(self) -> None:
        with self._guard:
            if self._waiters:
                self._waiters.popleft().set()  # straight to the next in line: the lock stays held
            else:
                self._held = False


class SerialModel:
    """A chat model that one request uses at a time: llama.cpp is not re-entrant. A request that waits longer than
    ``wait_s`` gets LLMUnavailable, so the caller answers from the evidence instead of hanging."""

    def __init__(self, model: ChatModel, lock: FifoLock, wait_s: float) -> None:
        self.model, self.lock, self.wait_s = model, lock, wait_s
        self.name, self.context_tokens = model.name, model.context_tokens

    def stream(self, messages: list[Message], max_tokens: int, stop: Sequence[str] = ()) -> Generator[str]:
        if not self.lock.acquire(timeout=self.wait_s):
            raise LLMUnavailable(f"the local model stayed busy with other requests for {self.wait_s:.0f} s")
        try:
            yield from self.model.stream(messages, max_tokens, stop)
        finally:
            self.lock.release()

    def keep_fixed_part(self, messages: list[Message]) -> None:
        if isinstance(self.model, KeepsPromptState) and self.lock.acquire(timeout=self.wait_s):
            try:
                self.model.keep_fixed_part(messages)
            finally:
                self.lock.release()


class Assistant:
    """Shared state of `rag serve`: evidence finders per collection and chat models per provider, loaded lazily."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cache_lock = threading.Lock()
        self._generation_lock = FifoLock()
        self._finders: dict[tuple[str, str], tuple[str, EvidenceFinder]] = {}  # (collection, data dir) → (version, …)
        self._building: dict[tuple[str, str], threading.Lock] = {}  # one finder build at a time per key
        self._models: dict[tuple[str, str], ChatModel | None] = {}
        self.ingesting = threading.Lock()  # uploads ingest one at a time, even one whose page has gone

    def settings_for(
        self, collection: str | None = None, provider: str | None = None, local_model: str | None = None
    ) -> Settings:
        """The server's settings with one request's choices applied (validated like any setting)."""
        llm = self.settings.llm.model_dump()
        llm |= {key: value for key, value in (("provider", provider), ("local_model", local_model)) if value}
        update: dict[str, Any] = {"llm": llm}
        if collection:
            update["collection"] = collection
        return Settings.model_validate(self.settings.model_dump() | update)

    def finder(self, settings: Settings) -> EvidenceFinder:
        """The collection's finder for its published index version. When ingest publishes a new one, one request
        builds the new finder (outside the shared lock) while the others keep answering from the previous one."""
        key = (collection_name(settings), settings.data_dir)
        connect(settings)  # a Chroma server that is down is ServiceUnavailable here, not a failure mid-search
        current = keyword_index.current_id(settings.data_path, key[0])  # one small file read per request
        with self._cache_lock:
            cached = self._finders.get(key)
            building = self._building.setdefault(key, threading.Lock())
        if cached is None:
            building.acquire()
        elif cached[0] == current or not building.acquire(blocking=False):
            return cached[1]  # current, or another request is building the new version's finder
        try:
            with self._cache_lock:
                cached = self._finders.get(key)
            if cached is not None and cached[0] == keyword_index.current_id(settings.data_path, key[0]):
                return cached[1]  # built while this request waited
            finder = EvidenceFinder(settings)  # raises EmptyCollection when nothing is published
            with self._cache_lock:
                self._finders[key] = (finder.collection.version.id, finder)
            return finder
        finally:
            building.release()

    def model(self, settings: Settings) -> ChatModel | None:
        """The provider's chat model, loaded once; LLMUnavailable when it cannot load (the caller degrades)."""
        llm = settings.llm
        key = (llm.provider, llm.local_model if llm.provider == "local" else settings.openai.chat_model)
        with self._cache_lock:
            if key not in self._models:
                model = build_chat_model(settings)
                if llm.provider == "local" and model is not None:
                    model = SerialModel(model, self._generation_lock, settings.server.model_wait_s)
                self._models[key] = model
            return self._models[key]

    def conversation(self, settings: Settings, history: list[str]) -> tuple[Conversation, str | None]:
        """A conversation over shared models with this user's earlier turns, and a notice when the model is missing."""
        finder = self.finder(settings)
        try:
            model, notice = self.model(settings), None
        except LLMUnavailable as error:
            model, notice = None, f"The language model is unavailable ({error}); answering from the evidence alone."
        return Conversation(settings, finder, model, history), notice

    def collections(self) -> list[CollectionSummary]:
        """The store's collections, by name, with their counts and embedders (each reads with its own)."""
        return summaries(self.settings)

    def delete(self, settings: Settings) -> None:
        """Delete the settings' collection with its index, and forget its finder; bad input when there is none."""
        stored = open_stored(settings)
        if stored is None:
            raise BadInput(f"no collection named {settings.collection!r}")
        delete(settings, stored)
        with self._cache_lock:
            self._finders.pop((collection_name(settings), settings.data_dir), None)

    def pdf(self, settings: Settings, paper_id: str) -> Path | None:
        """The PDF a paper of the settings' collection was read from, when the collection keeps one."""
        return self.finder(settings).collection.file_of(paper_id)

    def stats(self, settings: Settings) -> dict[str, Any]:
        """The collection's counts, as its published index version records them (no scan of the store)."""
        stored = open_stored(settings)
        version = keyword_index.published(stored, settings.data_path) if stored else None
        return {
            "collection": settings.collection,
            "papers": version.papers if version else 0,
            "chunks": version.chunks if version else 0,
        }
