"""The serving process's shared model: one generation at a time, granted in arrival order, never a hang."""

import threading
import time
from collections.abc import Iterator

import pytest

from rag.assistant import FifoLock, SerialModel
from rag.llm import LLMUnavailable, Message


class SlowModel:
    name, context_tokens = "slow", 4096

    def __init__(self, seconds: float) -> None:
        self.seconds, self.running, self.most = seconds, 0, 0

    def stream(self, messages: list[Message], max_tokens: int) -> Iterator[str]:
        self.running += 1
        self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        self.running -= 1
        yield messages[0]["content"]


def test_requests_are_served_one_at_a_time_in_arrival_order() -> None:
    inner = SlowModel(0.05)
    model = SerialModel(inner, FifoLock(), wait_s=10)
    served: list[str] = []

    def ask(name: str) -> None:
        served.extend(model.stream([{"role": "user", "content": name}], 1))

    threads = []
    for i in range(8):
        threads.append(threading.Thread(target=ask, args=(f"r{i}",)))
        threads[-1].start()
        time.sleep(0.01)  # arrive in order while the first is still generating
    for thread in threads:
        thread.join()
    assert served == [f"r{i}" for i in range(8)] and inner.most == 1


def test_a_request_that_waits_too_long_gets_a_reason_not_a_hang() -> None:
    lock = FifoLock()
    assert lock.acquire(timeout=1)
    model = SerialModel(SlowModel(0), lock, wait_s=0.2)
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match="busy"):
        list(model.stream([{"role": "user", "content": "x"}], 1))
    assert time.monotonic() - started < 2
    lock.release()
    assert list(model.stream([{"role": "user", "content": "y"}], 1)) == ["y"]  # the one who gave up left the queue
