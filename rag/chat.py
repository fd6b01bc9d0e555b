"""Multi-turn use: a follow-up is rewritten into a standalone question before retrieval.

The rewrite reads the user's own earlier turns (never the answers, which are long and would crowd them out), as many
of the latest as fit in ``chat.history_tokens``: what is kept is exactly what is counted. Without a model, the kept
turns are carried into the retrieval query as they are, so a long session never outgrows the question limit.
"""

from collections.abc import Generator
from dataclasses import dataclass, field

from rag.answer import AnswerEvent, Final, answer_stream
from rag.chat_models import ChatModel, LLMUnavailable
from rag.evidence import EvidenceFinder
from rag.retrieve import Filters, check_question
from rag.settings import Settings
from rag.text import count_tokens


@dataclass
class Conversation:
    """One user's session: the evidence finder and chat model are shared, the history is not."""

    settings: Settings
    finder: EvidenceFinder
    model: ChatModel | None
    history: list[str] = field(default_factory=list)  # the user's earlier turns, as typed

    def recent_turns(self) -> list[str]:
        """The latest user turns that fit in ``chat.history_tokens`` together, oldest first."""
        kept: list[str] = []
        used = 0
        for turn in reversed(self.history):
            used += count_tokens(turn)
            if used > self.settings.chat.history_tokens:
                break
            kept.insert(0, turn)
        return kept

    def standalone(self, question: str) -> str:
        """The follow-up as a question retrieval can answer on its own."""
        turns = self.recent_turns()
        if not turns:
            return question
        if self.model is not None:
            transcript = "\n".join(f"User: {turn}" for turn in turns)
            messages = [
                {"role": "system", "content": self.settings.prompts.rewrite},
                {"role": "user", "content": f"{transcript}\nUser: {question}\n\nStandalone question:"},
            ]
            try:
                rewritten = "".join(self.model.stream(messages, self.settings.chat.rewrite_tokens))
                first_line = next((line.strip().strip('"') for line in rewritten.splitlines() if line.strip()), "")
                if first_line:
                    return first_line[: self.settings.limits.max_question_chars]
            except LLMUnavailable:
                pass
        # Without a model: the earlier turns carry the subject into the follow-up, oldest dropped first to fit.
        limit = self.settings.limits.max_question_chars
        while turns and len(" ".join([*turns, question])) > limit:
            turns.pop(0)
        return " ".join([*turns, question])

    def ask(
        self, question: str, filters: Filters | None = None, candidates: int | None = None
    ) -> Generator[AnswerEvent, None, None]:
        """The typed answer stream (:func:`rag.answer.answer_stream`) for a possibly follow-up question."""
        question = check_question(question, self.settings)
        evidence = self.finder.find(self.standalone(question), filters, candidates)
        for event in answer_stream(evidence, self.model, self.settings, self.finder.support):
            if isinstance(event, Final):
                self.history.append(question)
            yield event
