"""Conversation: follow-ups rewritten into standalone questions, history bounded by tokens."""

from pathlib import Path

import pytest

from rag.answer import Answer, final_answer
from rag.chat import Conversation
from rag.evidence import EvidenceFinder
from rag.text import count_tokens
from tests.conftest import cli, make_settings, needs_local_model


@pytest.fixture(scope="module")
def finder(bundled_data: Path) -> EvidenceFinder:
    return EvidenceFinder(make_settings(bundled_data))


def answer(conversation: Conversation, question: str) -> Answer:
    return final_answer(conversation.ask(question))


def test_history_keeps_the_latest_turns_that_fit_the_token_budget(finder: EvidenceFinder) -> None:
    conversation = Conversation(finder.settings, finder, None)
    conversation.history = [f"question {i} " + "word " * 30 for i in range(20)]
    kept = conversation.recent_turns()
    budget = finder.settings.chat.history_tokens
    assert 0 < len(kept) < 20 and kept[-1].startswith("question 19")
    assert sum(map(count_tokens, kept)) <= budget < sum(map(count_tokens, conversation.history[-len(kept) - 1 :]))


def test_sixty_follow_ups_without_a_model_are_never_rejected(finder: EvidenceFinder) -> None:
    conversation = Conversation(finder.settings, finder, None)
    for i in range(60):
        follow_up = f"and which of those use retrieval, variant number {i:03}?"  # 48 characters
        standalone = conversation.standalone(follow_up)
        assert standalone.endswith(follow_up) and len(standalone) <= finder.settings.limits.max_question_chars
        conversation.history.append(follow_up)
    assert count_tokens(conversation.standalone("and the last one?")) <= finder.settings.chat.history_tokens + 10


def test_a_follow_up_without_a_model_carries_the_previous_subject(finder: EvidenceFinder) -> None:
    conversation = Conversation(finder.settings, finder, None)
    first = answer(conversation, "Which papers discuss the softmax bottleneck?")
    assert not first.evidence.refused
    follow_up = answer(conversation, "and which of them use kNN retrieval?")
    assert "softmax bottleneck" in follow_up.question and "kNN" in follow_up.question
    assert (
        follow_up.evidence.sources[0].title
        == "On Retrieval Augmentation and the Limitations of Language Model Training"
    )
    assert len(conversation.history) == 2


@needs_local_model
def test_a_follow_up_is_rewritten_by_the_local_model(finder: EvidenceFinder) -> None:
    from rag.chat_models import build_chat_model

    conversation = Conversation(finder.settings, finder, build_chat_model(finder.settings))
    conversation.history = ["Which papers speed up attention with kernel density estimation?"]
    standalone = conversation.standalone("how fast is it compared to exact attention?")
    assert standalone != "how fast is it compared to exact attention?"
    assert any(word in standalone.lower() for word in ("kdeformer", "kernel density", "attention"))


def test_rag_chat_answers_a_question_and_a_follow_up(bundled_data: Path) -> None:
    session = "Which papers discuss the softmax bottleneck?\nand which of them use kNN retrieval?\n\n"
    result = cli("chat", "--provider", "none", input=session, env={"RAG_DATA_DIR": str(bundled_data)})
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("Sources:") == 2
    follow_up = result.stdout.split("you> ")[2]
    assert "[1] On Retrieval Augmentation and the Limitations of Language Model Training" in follow_up


@pytest.mark.slow
def test_rag_chat_takes_sixty_follow_ups_without_a_model(bundled_data: Path) -> None:
    import os
    import subprocess

    from tests.conftest import RAG

    turns = [f"and which of those use retrieval, variant number {i:03}?" for i in range(60)]
    result = subprocess.run(
        [RAG, "chat", "--provider", "none"],
        input="Which papers discuss the softmax bottleneck?\n" + "\n".join(turns) + "\n\n",
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "RAG_DATA_DIR": str(bundled_data)},
    )
    assert result.returncode == 0 and "limit" not in result.stderr, result.stderr
    assert result.stdout.count("you> ") == 62  # every turn answered, then the empty line that ends the session
