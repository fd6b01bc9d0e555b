"""Questions to score: a question set in DESIGN's JSON-lines format, or a BEIR folder's queries and qrels."""

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from rag.errors import BadInput
from rag.readers import normalise_title

QUESTION_TYPES = ("topic", "fact", "method", "compare", "unanswerable")


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    type: str
    gold: frozenset[str]  # normalised titles (question sets) or document ids (BEIR)
    key_facts: tuple[str, ...] = ()
    near_miss: bool = False
    about: frozenset[str] = frozenset()

    @cached_property
    def digest(self) -> str:
        """What a cached record of this question was computed for: a reworded question or changed gold is another."""
        content: list[object] = [self.text, sorted(self.gold), self.type, list(self.key_facts)]
        if self.near_miss or self.about:  # only then, so records cached for other questions stay valid
            content += [self.near_miss, sorted(self.about)]
        return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:16]


def load_question_set(path: Path, known_titles: Iterable[str] | None = None) -> list[Question]:
    """A question set in DESIGN's format, validated: every error names the file and line.

    Checks: JSON with an id and a question, unique ids, a known type, gold titles for answerable questions and
    none for unanswerable ones, key facts as strings, ``near_miss`` (a boolean) only on unanswerable questions and
    ``about_titles`` only on near-miss ones — and, given the corpus titles, every gold and about title in it.
    """
    known = {normalise_title(title) for title in known_titles} if known_titles is not None else None
    questions: list[Question] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
                question = Question(
                    id=str(record["id"]),
                    text=str(record["question"]),
                    type=record.get("type", "topic"),
                    gold=frozenset(normalise_title(title) for title in record.get("gold_titles", [])),
                    key_facts=tuple(record.get("key_facts", [])),
                    near_miss=record.get("near_miss", False),
                    about=frozenset(normalise_title(title) for title in record.get("about_titles", [])),
                )
            except (ValueError, KeyError, TypeError, AttributeError):
                raise BadInput(f"{where}: not a question-set line (needs id, question)") from None
            if not isinstance(record.get("about_titles", []), list):
                raise BadInput(f"{where}: about_titles must be a list of titles")
            if question.id in seen:
                raise BadInput(f"{where}: duplicate id {question.id!r}")
            if question.type not in QUESTION_TYPES:
                raise BadInput(f"{where}: type {question.type!r} is not one of {', '.join(QUESTION_TYPES)}")
            if (question.type == "unanswerable") == bool(question.gold):
                need = "no gold_titles" if question.type == "unanswerable" else "gold_titles"
                raise BadInput(f"{where}: a {question.type} question needs {need}")
            if not all(isinstance(fact, str) and fact for fact in question.key_facts):
                raise BadInput(f"{where}: key_facts must be non-empty strings")
            if not isinstance(question.near_miss, bool):
                raise BadInput(f"{where}: near_miss must be true or false")
            if question.near_miss and question.type != "unanswerable":
                raise BadInput(f"{where}: near_miss is only for unanswerable questions, not {question.type}")
            if question.near_miss and not question.about:
                raise BadInput(f"{where}: a near-miss question needs about_titles (its on-topic papers)")
            if question.about and not question.near_miss:
                raise BadInput(f"{where}: about_titles is only for near-miss questions (needs near_miss: true)")
            if known is not None and (unknown := sorted(question.gold - known)):
                raise BadInput(f"{where}: gold title not in the corpus: {unknown[0]!r}")
            if known is not None and (unknown := sorted(question.about - known)):
                raise BadInput(f"{where}: about title not in the corpus: {unknown[0]!r}")
            seen.add(question.id)
            questions.append(question)
    if not questions:
        raise BadInput(f"{path}: no questions")
    return questions


def load_beir(folder: Path, split: str) -> list[Question]:
    """Queries with at least one relevant document in the split's qrels."""
    suffix = "" if split == "test" else f"_{split}"
    queries_file, qrels_file = folder / f"queries{suffix}.jsonl", folder / f"qrels{suffix}.tsv"
    for required in (folder / "corpus.jsonl", queries_file, qrels_file):
        if not required.is_file():
            raise BadInput(f"{required}: missing (a BEIR folder needs corpus.jsonl, queries, qrels)")
    gold: dict[str, set[str]] = defaultdict(set)
    for number, line in enumerate(qrels_file.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t")
        if len(parts) < 2 or (number == 1 and not parts[-1].strip().lstrip("-").isdigit()):
            continue  # blank line or a "query-id corpus-id score" header
        if len(parts) < 3 or int(parts[2]) > 0:
            gold[parts[0].strip()].add(parts[1].strip())
    questions = []
    for line in queries_file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            qid = str(record.get("_id", record.get("id")))
            if qid in gold:
                questions.append(Question(qid, record["text"], "beir", frozenset(gold[qid])))
    return questions


def load_yes_no_maybe(folder: Path, split: str = "test") -> dict[str, str]:
    """PubMedQA's gold answers (yes / no / maybe) by question id, from the folder's ``qa_<split>.jsonl``."""
    labels = {}
    with (folder / f"qa_{split}.jsonl").open(encoding="utf-8") as handle:  # by "\n" only: texts hold U+0085
        for line in handle:
            if line.strip():
                record = json.loads(line)
                labels[str(record["id"])] = record["answer"]
    return labels
