"""Generic records: JSON lines and CSV with a header, one paper per record."""

import csv
from collections.abc import Iterator
from pathlib import Path

from rag.errors import CorpusError
from rag.papers import DroppedField, Entry, make_paper
from rag.readers.records import first, json_records, lines


def read_jsonl(path: Path) -> Iterator[Entry]:
    for number, record in json_records(path):
        dropped: list[DroppedField] = []
        paper = make_paper(
            (path, number),
            title=record.get("title"),
            abstract=first(record, "abstract", "text", "summary"),
            paper_id=first(record, "paper_id", "id", "arxiv_id", "doi"),
            authors=record.get("authors"),
            year=first(record, "year", "published", "date", "update_date"),
            categories=first(record, "categories", "category", "tags"),
            url=record.get("url"),
            dropped=dropped,
        )
        yield from dropped
        yield paper


def read_csv(path: Path) -> Iterator[Entry]:
    numbered = lines(path)
    header_line = next(((n, line) for n, line in numbered if line.strip()), None)
    if header_line is None:
        raise CorpusError(path, "empty file")
    header = [name.strip().lower() for name in next(csv.reader([header_line[1]]))]
    text_column = next((c for c in ("abstract", "text", "summary") if c in header), None)
    missing = [name for name, ok in (("title", "title" in header), ("abstract", text_column)) if not ok]
    if missing:
        raise CorpusError(path, f"CSV header lacks column(s) {', '.join(missing)}; found {header}", header_line[0])
    # csv handles quoted newlines itself, so feed it the rest of the lines as one stream, tracking line numbers.
    reader = csv.DictReader((line + "\n" for _, line in numbered), fieldnames=header, strict=True)
    try:
        for row in reader:
            number = header_line[0] + reader.line_num
            if None in row:
                raise CorpusError(
                    path, f"row has {len(header) + len(row[None])} fields, header has {len(header)}", number
                )
            dropped: list[DroppedField] = []
            paper = make_paper(
                (path, number),
                title=row.get("title"),
                abstract=row.get(text_column),
                paper_id=first(row, "paper_id", "id", "arxiv_id", "doi"),
                authors=row.get("authors"),
                year=first(row, "year", "published", "date", "update_date"),
                categories=first(row, "categories", "category", "tags"),
                url=row.get("url"),
                dropped=dropped,
            )
            yield from dropped
            yield paper
    except csv.Error as error:
        raise CorpusError(path, f"malformed CSV ({error})", header_line[0] + reader.line_num) from None
