"""The arXiv metadata snapshot (Kaggle's arxiv-metadata-oai-snapshot.json), streamed line by line."""

from collections.abc import Iterator
from pathlib import Path

from rag.errors import CorpusError
from rag.papers import DroppedField, Entry, make_paper
from rag.readers.records import json_records


def read_arxiv(path: Path) -> Iterator[Entry]:
    for number, record in json_records(path):
        if not record.get("id"):
            raise CorpusError(path, "arXiv record has no id", number)
        dropped: list[DroppedField] = []
        paper = make_paper(
            (path, number),
            title=record.get("title"),
            abstract=record.get("abstract"),
            paper_id=f"arxiv:{record['id']}",
            authors=record.get("authors"),
            year=record.get("update_date"),
            categories=record.get("categories"),
            url=f"https://arxiv.org/abs/{record['id']}",
            dropped=dropped,
        )
        yield from dropped
        yield paper
