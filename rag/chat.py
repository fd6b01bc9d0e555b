"""Multi-turn use: a follow-up is rewritten into a standalone question before retrieval; history is token-bounded."""

from collections.abc import Iterator
from dataclasses import dataclass, field

from rag.answer import Answer, Draft, answer_stream
from rag.evidence import Evidence, EvidenceFinder
from rag.llm import ChatModel, LLMUnavailable
from rag.retrieve import Filters, check_question
from rag.settings import Settings
from rag.tokens import count_tokens

REWRITE_PROMPT = (
    "Rewrite the user's last message as one standalone question about research papers, resolving words like "
    "'they', 'them' or 'those' from the conversation. Reply with the question only."
)
HISTORY_TOKENS = 600


@dataclass
class Conversation:
    """One user's session: the evidence finder and chat model are shared, the history is not."""

    settings: Settings
    finder: EvidenceFinder
    model: ChatModel | None
    history: list[tuple[str, str]] = field(default_factory=list)  # (standalone question, answer text)

    def recent_history(self) -> list[tuple[str, str]]:
        """The latest turns that fit in HISTORY_TOKENS, oldest first."""
        kept: list[tuple[str, str]] = []
        used = 0
        for question, answer in reversed(self.history):
            used += count_tokens(question) + count_tokens(answer)
            if used > HISTORY_TOKENS and kept:
                break
            kept.insert(0, (question, answer[:400]))
        return kept

    def standalone(self, question: str) -> str:
        """The follow-up as a question retrieval can answer on its own."""
        history = self.recent_history()
        if not history:
            return question
        if self.model is not None:
            transcript = "\n".join(f"User: {q}\nAssistant: {a}" for q, a in history)
            messages = [
                {"role": "system", "content": REWRITE_PROMPT},
                {"role": "user", "content": f"{transcript}\nUser: {question}\n\nStandalone question:"},
            ]
            try:
                rewritten = "".join(self.model.stream(messages, 64)).strip().strip('"').splitlines()
                if rewritten and rewritten[0].strip():
                    return rewritten[0].strip()
            except LLMUnavailable:
                pass
        # Without a model: carry the previous question's subject into the follow-up.
        return f"{history[-1][0]} {question}"

    def ask(
        self, question: str, filters: Filters | None = None, candidates: int | None = None
    ) -> Iterator[Evidence | str | Draft | Answer]:
        """Stream the answer to a (possibly follow-up) question: the :class:`Evidence` first (shown while the model
        writes), then verified text pieces and drafts of the sentence being written, then the finished
        :class:`Answer`."""
        question = check_question(question, self.settings)
        evidence = self.finder.find(self.standalone(question), filters, candidates)

        yield evidence

        def attribute(claim: str) -> int | None:
            return self.finder.supporting_source(claim, evidence)

        for item in answer_stream(evidence, self.model, self.settings.llm.max_answer_tokens, attribute):
            if isinstance(item, Answer):
                self.history.append((evidence.question, item.text))
            yield item
