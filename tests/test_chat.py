"""Conversation: follow-ups rewritten into standalone questions, history bounded by tokens."""

from pathlib import Path

import pytest

from rag.answer import Answer
from rag.chat import HISTORY_TOKENS, Conversation
from rag.evidence import EvidenceFinder
from rag.tokens import count_tokens
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def finder(bundled_data: Path) -> EvidenceFinder:
    return EvidenceFinder(make_settings(bundled_data))


def answer(conversation: Conversation, question: str) -> Answer:
    *_, last = conversation.ask(question)
    assert isinstance(last, Answer)
    return last


def test_history_is_bounded_by_tokens(finder: EvidenceFinder) -> None:
    conversation = Conversation(finder.settings, finder, None)
    conversation.history = [(f"question {i} " + "word " * 100, "answer " * 200) for i in range(20)]
    kept = conversation.recent_history()
    assert 0 < len(kept) < 20 and kept[-1][0].startswith("question 19")
    assert sum(count_tokens(q) + count_tokens(a) for q, a in kept) <= HISTORY_TOKENS + 400


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


def test_a_follow_up_is_rewritten_by_the_local_model(finder: EvidenceFinder) -> None:
    from rag.llm import build_chat_model

    conversation = Conversation(finder.settings, finder, build_chat_model(finder.settings))
    conversation.history = [("Which papers speed up attention with kernel density estimation?", "KDEformer does [1].")]
    standalone = conversation.standalone("how fast is it compared to exact attention?")
    assert standalone != "how fast is it compared to exact attention?"
    assert any(word in standalone.lower() for word in ("kdeformer", "kernel density", "attention"))


def test_rag_chat_answers_a_question_and_a_follow_up(bundled_data: Path) -> None:
    import os
    import subprocess

    from tests.conftest import RAG

    session = "Which papers discuss the softmax bottleneck?\nand which of them use kNN retrieval?\n\n"
    result = subprocess.run(
        [RAG, "chat", "--provider", "none"],
        input=session,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAG_DATA_DIR": str(bundled_data)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Sources:") == 2
    follow_up = result.stdout.split("you> ")[2]
    assert "[1] On Retrieval Augmentation and the Limitations of Language Model Training" in follow_up
