"""RIS exports (Zotero, EndNote, Mendeley…), record by record (``TY  -`` … ``ER  -``), each record parsed by rispy."""

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import rispy

from rag.errors import CorpusError
from rag.papers import Entry, Skipped, clean, make_paper
from rag.readers.exports import CitationKeys, arxiv_in_note, first_pdf, keyword_list, line_records, short_key, with_pdf
from rag.readers.records import first

_START = re.compile(r"TY  -")
_END = re.compile(r"ER  -")
_LIST_TAGS = [*rispy.LIST_TYPE_TAGS, "L1", "L2"]  # an entry's files: Zotero writes one L1 line for each PDF
# RIS reference types as BibTeX entry types (Paper.kind); every other type (preprints, web pages…) is misc.
_KINDS = {
    **dict.fromkeys(("JOUR", "EJOUR", "JFULL"), "article"),
    **dict.fromkeys(("CONF", "CPAPER"), "inproceedings"),
    **dict.fromkeys(("BOOK", "EBOOK", "EDBOOK"), "book"),
    **dict.fromkeys(("CHAP", "ECHAP"), "incollection"),
    "THES": "phdthesis",
    "RPRT": "techreport",
}


def read_ris(path: Path, pdfs_within: Path | None = None) -> Iterator[Entry]:
    """The file's records, each with the PDF its ``L1`` lines name (only inside ``pdfs_within``, when given)."""
    keys = CitationKeys(path)
    records = 0
    for line, text in line_records(path, _START, _END):
        records += 1
        parsed = rispy.loads(text, list_tags=_LIST_TAGS)
        if not parsed:  # rispy keeps a record only once its ER line is read
            yield Skipped(path, line, "malformed", "RIS record has no end line (ER  - ) before the next one starts")
            continue
        record: dict[str, Any] = parsed[0]
        label = f"RIS record {record.get('type_of_reference', '?')}"
        if isinstance(title := first(record, "title", "primary_title"), str):
            label += f" ({clean(title)[:80]!r})"
        if key := short_key(record.get("id")):
            keys.check(key, line, text)
            label += f" {key!r}"
        files = [*(record.get("file_attachments1") or []), *(record.get("file_attachments2") or [])]
        pdf, dropped = first_pdf([f for f in files if f.lower().endswith(".pdf")], path, line, "L1", pdfs_within)
        abstract = first(record, "abstract", "notes_abstract")
        if not isinstance(abstract, str) or not abstract.strip():
            if pdf is None:
                yield from dropped  # why the PDFs it names could not be read
                yield Skipped(path, line, "no_abstract", f"{label} has no abstract (AB) or PDF (L1)")
                continue
            abstract = ""
        unknown: dict[str, list[str]] = record.get("unknown_tag") or {}
        found = arxiv_in_note(record.get("notes"), record.get("note"), record.get("accession_number"))
        urls = record.get("urls") or []
        try:
            paper = make_paper(
                (path, line),
                title=title,
                abstract=abstract,
                paper_id=f"arxiv:{found}" if found else key,
                authors=[_display(name) for name in (record.get("authors") or record.get("first_authors") or [])],
                year=first(record, "year", "date", "publication_year"),
                categories=keyword_list(record.get("keywords")),
                url=urls[0] if urls else None,
                venue=first(record, "secondary_title", "journal_name", "alternate_title3")
                or next(iter(unknown.get("BT", [])), None)
                or record.get("publisher"),
                doi=record.get("doi"),
                kind=_KINDS.get(str(record.get("type_of_reference", "")).upper(), "misc"),
                dropped=dropped,
                body_follows=pdf is not None,
            )
        except CorpusError as error:  # no title, or one too long: this record, not the file
            reason = str(error).removeprefix(f"{path}:{line}: ")
            yield Skipped(path, line, "malformed", f"{label} is malformed: {reason}")
            continue
        yield from dropped
        yield with_pdf(paper, pdf)
    if not records:
        raise CorpusError(path, "no RIS records (no line starts with 'TY  - '): not a RIS file")


def _display(name: str) -> str:
    """RIS writes "Family, Given[, Suffix]"; papers carry "Given Family"."""
    family, _, rest = name.partition(",")
    given, _, suffix = rest.partition(",")
    return " ".join(part.strip() for part in (given, family, suffix) if part.strip())
