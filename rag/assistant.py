"""One process serving many users (the web UI and the API): models load once and are shared, per-request choices
(collection, provider, model, top-k) pick among them, and the local model runs one generation at a time."""

import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

from rag.chat import Conversation
from rag.evidence import EvidenceFinder
from rag.llm import ChatModel, LLMUnavailable, Message, build_chat_model
from rag.models import embedder_id
from rag.settings import Settings
from rag.store import collection_name, connect, manifest, open_collection


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

    def stream(self, messages: list[Message], max_tokens: int) -> Iterator[str]:
        if not self.lock.acquire(timeout=self.wait_s):
            raise LLMUnavailable(f"the local model stayed busy with other requests for {self.wait_s:.0f} s")
        try:
            yield from self.model.stream(messages, max_tokens)
        finally:
            self.lock.release()


class Assistant:
    """Shared state of `rag serve`: evidence finders per collection and chat models per provider, loaded lazily."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cache_lock = threading.Lock()
        self._generation_lock = FifoLock()
        self._finders: dict[tuple[str, str], tuple[int, EvidenceFinder]] = {}
        self._models: dict[tuple[str, str], ChatModel | None] = {}

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
        """The collection's finder, rebuilt when the collection changed size (another process ingested)."""
        name = collection_name(settings)
        store = open_collection(connect(settings), name, create=False)
        count = store.count() if store else 0
        key = (name, settings.data_dir)
        with self._cache_lock:
            cached = self._finders.get(key)
            if cached is None or cached[0] != count:
                cached = (count, EvidenceFinder(settings))  # raises EmptyCollection when nothing is ingested
                self._finders[key] = cached
        return cached[1]

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

    def conversation(self, settings: Settings, history: list[tuple[str, str]]) -> tuple[Conversation, str | None]:
        """A conversation over shared models with this user's history, and a notice when the model is missing."""
        finder = self.finder(settings)
        try:
            model, notice = self.model(settings), None
        except LLMUnavailable as error:
            model, notice = None, f"The language model is unavailable ({error}); answering from the evidence alone."
        return Conversation(settings, finder, model, history), notice

    def collections(self) -> list[str]:
        """Collections ingested with the current embedder, by the names users gave them."""
        suffix = f"--{embedder_id(self.settings)}"
        names = [c if isinstance(c, str) else c.name for c in connect(self.settings).list_collections()]
        return sorted(name.removesuffix(suffix) for name in names if name.endswith(suffix))

    def stats(self, settings: Settings) -> dict[str, Any]:
        store = open_collection(connect(settings), collection_name(settings), create=False)
        papers = manifest(store)
        return {"collection": settings.collection, "papers": len(papers), "chunks": store.count() if store else 0}
