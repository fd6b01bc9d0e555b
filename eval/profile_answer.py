"""Where the time of one answer goes, stage by stage, with the real local model (medians per question kind).

Each question of the set is asked in this process exactly as `rag serve` answers it (``Conversation.ask``), with the
stages timed by wrapping the objects that do them:
  * retrieval: every ranking the evidence finder asks for (the question's pool as it grows, a comparison's sides);
  * gate: the rest of finding the evidence (scoring candidates, the relevance model, the decision, "is it stated");
  * prompt: building the messages within the token budget;
  * prefill: from the model's call to its first text piece (restoring a cached prefix included);
  * decoding: the model's time for the rest of its pieces;
  * claim check: checking each sentence against the sources it cites;
  * other: the rest (splitting sentences, events, the quotes).
"first cited" is the time to the first piece of answer text a client receives (a verified sentence, or the
evidence-only text of a refusal). Refusals never call the model. Writes a Markdown table to --out.
Usage: .venv/bin/python eval/profile_answer.py [--suite heldout] [--out eval/results/profile.md]
"""

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import rag.answer
from rag.answer import Fallback, Final, Sentence
from rag.chat import Conversation
from rag.chat_models import ChatModel, Message, build_chat_model
from rag.eval.datasets import load_question_set
from rag.evidence import EvidenceFinder
from rag.settings import PROJECT_DIR, Settings

STAGES = ("retrieval", "gate", "prompt", "prefill", "decoding", "claim check", "other")


class Clock:
    """Seconds spent per stage during one answer."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)

    def timed(self, stage: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.spent[stage] += time.perf_counter() - started

        return wrapper


class TimedModel:
    """The chat model with its prefill (call to first piece) and decoding (every later piece) timed."""

    def __init__(self, model: ChatModel, clock: Clock) -> None:
        self.model, self.clock = model, clock
        self.name, self.context_tokens = model.name, model.context_tokens
        self.tokens: list[int] = []

    def stream(self, messages: list[Message], max_tokens: int, stop: Sequence[str] = ()) -> Generator[str]:
        pieces: Iterator[str] = self.model.stream(messages, max_tokens, stop)
        stage, started = "prefill", time.perf_counter()
        for piece in pieces:
            self.clock.spent[stage] += time.perf_counter() - started
            stage = "decoding"
            yield piece
            started = time.perf_counter()
        self.clock.spent[stage] += time.perf_counter() - started


def profile(settings: Settings, suite: str) -> dict[str, list[dict[str, float]]]:
    """Per question kind, one row of stage seconds (plus "first cited" and "total") per question."""
    finder = EvidenceFinder(settings)
    model = build_chat_model(settings)
    assert model is not None, "profile the local model: RAG_LLM__PROVIDER=local"
    questions = load_question_set(PROJECT_DIR / "eval" / "datasets" / f"{suite}.jsonl")
    by_kind: dict[str, list[dict[str, float]]] = defaultdict(list)
    rank, score, build = finder.retriever.rank, finder.find, rag.answer.build_messages
    check = finder.support.check
    for number, question in enumerate(questions, 1):
        clock = Clock()
        finder.retriever.rank = clock.timed("retrieval", rank)  # type: ignore[method-assign]
        finder.find = clock.timed("evidence", score)  # type: ignore[method-assign]
        finder.support.check = clock.timed("claim check", check)  # type: ignore[method-assign]
        rag.answer.build_messages = clock.timed("prompt", build)
        conversation = Conversation(settings, finder, TimedModel(model, clock))
        started = time.perf_counter()
        first = None
        for event in conversation.ask(question.text):
            if first is None and isinstance(event, Sentence | Fallback):
                first = time.perf_counter() - started
            if isinstance(event, Final):
                break
        total = time.perf_counter() - started
        spent = dict(clock.spent)
        spent["gate"] = spent.pop("evidence") - spent.get("retrieval", 0.0)
        spent["other"] = total - sum(spent.values())
        row = {stage: spent.get(stage, 0.0) for stage in STAGES}
        by_kind[question.type].append(row | {"first cited": first or total, "total": total})
        print(f"{number}/{len(questions)} {question.type:12} first {first or total:5.2f} s  total {total:5.2f} s")
    rag.answer.build_messages = build
    return by_kind


def table(by_kind: dict[str, list[dict[str, float]]]) -> list[str]:
    columns = [*STAGES, "first cited", "total"]
    lines = [
        "| kind | n | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    every = [row for rows in by_kind.values() for row in rows]
    for kind, rows in [*sorted(by_kind.items()), ("all", every)]:
        medians = [statistics.median(row[column] for row in rows) for column in columns]
        lines.append(f"| {kind} | {len(rows)} | " + " | ".join(f"{value:.2f}" for value in medians) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="heldout")
    parser.add_argument("--label", default="", help="a heading for this run's table (e.g. before, after)")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "eval" / "results" / "profile.md")
    args = parser.parse_args()
    settings = Settings()
    lines = [
        f"## {args.label or 'Profile'}: {args.suite} questions, {settings.llm.local_model}, seconds (medians)",
        "",
        *table(profile(settings, args.suite)),
    ]
    print("\n".join(lines))
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
