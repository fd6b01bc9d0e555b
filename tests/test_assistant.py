"""The serving process's shared model: one generation at a time, granted in arrival order, never a hang."""

import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from rag.assistant import FifoLock, SerialModel
from rag.chat_models import LLMUnavailable, Message


class GatedModel:
    """A model whose generation lasts until the test opens its gate; it records how many ran at once."""

    name, context_tokens = "gated", 4096

    def __init__(self) -> None:
        self.gate, self.running, self.most = threading.Event(), 0, 0

    def stream(self, messages: list[Message], max_tokens: int, stop: Sequence[str] = ()) -> Iterator[str]:
        self.running += 1
        self.most = max(self.most, self.running)
        self.gate.wait(10)
        self.running -= 1
        yield messages[0]["content"]


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.001)


def test_requests_are_served_one_at_a_time_in_arrival_order() -> None:
    inner, lock = GatedModel(), FifoLock()
    model = SerialModel(inner, lock, wait_s=10)
    served: list[str] = []

    def ask(name: str) -> None:
        served.extend(model.stream([{"role": "user", "content": name}], 1))

    threads = [threading.Thread(target=ask, args=(f"r{i}",)) for i in range(8)]
    threads[0].start()
    wait_until(lambda: inner.running == 1)  # r0 holds the model ...
    for i, thread in enumerate(threads[1:], start=1):
        thread.start()
        wait_until(lambda i=i: lock.waiting == i)  # ... and each later request has joined the queue before the next
    inner.gate.set()
    for thread in threads:
        thread.join()
    assert served == [f"r{i}" for i in range(8)] and inner.most == 1


def test_a_request_that_waits_too_long_gets_a_reason_not_a_hang() -> None:
    lock = FifoLock()
    assert lock.acquire(timeout=1)
    model = SerialModel(GatedModel(), lock, wait_s=0.2)
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match="busy"):
        list(model.stream([{"role": "user", "content": "x"}], 1))
    assert time.monotonic() - started < 2
    assert lock.waiting == 0  # the one who gave up left the queue
    lock.release()
    model.model.gate.set()  # type: ignore[attr-defined]
    assert list(model.stream([{"role": "user", "content": "y"}], 1)) == ["y"]
