"""A BEIR benchmark's ``corpus.jsonl``: ids are kept verbatim so the qrels still refer to them."""

from collections.abc import Iterator
from pathlib import Path

from rag.errors import CorpusError
from rag.papers import Paper, make_paper
from rag.readers.records import first, json_records


def read_beir(path: Path) -> Iterator[Paper]:
    for number, record in json_records(path):
        doc_id = first(record, "_id", "id")
        if doc_id is None:
            raise CorpusError(path, "BEIR record has no _id/id", number)
        text = record.get("text")
        title = record.get("title") or (text.split(". ")[0][:200] if isinstance(text, str) else None)
        yield make_paper((path, number), title=title, abstract=text, paper_id=doc_id, keep_id=True)
