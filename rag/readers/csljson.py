"""CSL JSON exports (Zotero's "CSL JSON", Mendeley, citeproc tools): one JSON array of items, streamed item by item.

The array is never loaded whole: the file is read in chunks and each item is decoded with
``json.JSONDecoder.raw_decode`` as soon as it is complete, so a 200 MB export needs one item's memory, each item
knows its line, and an item that never completes fails once it passes :data:`MAX_ENTRY_BYTES`.
"""

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rag.errors import CorpusError
from rag.papers import DroppedField, Entry, Skipped, clean, make_paper
from rag.readers.exports import MAX_ENTRY_BYTES, CitationKeys, arxiv_in_note, keyword_list, short_key, too_large
from rag.readers.records import first

_CHUNK = 65_536
# CSL item types as BibTeX entry types (Paper.kind); every other type (Zotero's preprints are "article") is misc.
_KINDS = {
    "article-journal": "article",
    "paper-conference": "inproceedings",
    "book": "book",
    "chapter": "incollection",
    "thesis": "phdthesis",
    "report": "techreport",
}


def read_csljson(path: Path) -> Iterator[Entry]:
    keys = CitationKeys(path)
    for line, item, text in _items(path):
        label = f"CSL item {item.get('id')!r}"
        if isinstance(item.get("title"), str):
            label += f" ({clean(item['title'])[:80]!r})"
        if item.get("id") not in (None, ""):
            keys.check(str(item["id"]), line, text)
        abstract = item.get("abstract")
        if not isinstance(abstract, str) or not abstract.strip():
            yield Skipped(path, line, "no_abstract", f"{label} has no abstract")
            continue
        found = arxiv_in_note(item.get("number"), item.get("note"), item.get("archive_location"))
        dropped: list[DroppedField] = []
        authors = item.get("author")
        if not _is_name_list(authors):
            shown = f"{type(authors).__name__} {str(authors)[:40]!r}"
            dropped.append(DroppedField(path, line, "author", f"expected a list of CSL names, got {shown}"))
            authors = None
        try:
            paper = make_paper(
                (path, line),
                title=item.get("title"),
                abstract=abstract,
                paper_id=f"arxiv:{found}" if found else short_key(first(item, "citation-key", "id")),
                authors=[name for person in authors or [] if (name := _display(person))],
                year=_year(item.get("issued")),
                categories=keyword_list(item.get("keyword")),
                url=item.get("URL"),
                venue=first(item, "container-title", "publisher"),
                doi=item.get("DOI"),
                kind=_KINDS.get(str(item.get("type")), "misc"),
                dropped=dropped,
            )
        except CorpusError as error:  # no title, or one too long: this item, not the file
            reason = str(error).removeprefix(f"{path}:{line}: ")
            yield Skipped(path, line, "malformed", f"{label} is malformed: {reason}")
            continue
        yield from dropped
        yield paper


def _is_name_list(value: Any) -> bool:
    """Whether a CSL name field is a list of name objects (``{"family": …, "given": …}`` or ``{"literal": …}``);
    an absent one is an empty list."""
    return value is None or (isinstance(value, list) and all(isinstance(person, dict) for person in value))


def _display(person: dict[str, Any]) -> str:
    """A CSL name as "Given Family" (with its particles and suffix), or an institution's literal name."""
    if isinstance(person.get("literal"), str):
        return str(person["literal"]).strip()
    parts = ("given", "dropping-particle", "non-dropping-particle", "family", "suffix")
    return " ".join(str(person[part]).strip() for part in parts if isinstance(person.get(part), str | int))


def _year(issued: Any) -> Any:
    """The year of a CSL date: ``{"date-parts": [[2017, 6, 12]]}`` (Zotero may write "2017"), or a raw/literal date."""
    if not isinstance(issued, dict):
        return issued
    parts = issued.get("date-parts")
    if isinstance(parts, list) and parts and isinstance(parts[0], list) and parts[0]:
        return parts[0][0]
    return first(issued, "raw", "literal")


class _Stream:
    """The decoded text of a file, read chunk by chunk, with the line number of its first character; NUL bytes and
    non-UTF-8 are errors naming their line, as :func:`rag.readers.records.lines` has them."""

    def __init__(self, path: Path, handle: IO[bytes]) -> None:
        self.path, self.handle = path, handle
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.line = 1  # of text[0]
        self.bytes_lines = 0  # newlines in the bytes read so far
        self.eof = False
        self.started = False

    def more(self) -> bool:
        """Append the next chunk; False at the end of the file."""
        if self.eof:
            return False
        chunk = self.handle.read(_CHUNK)
        if b"\x00" in chunk:
            at = self.bytes_lines + chunk[: chunk.index(b"\x00")].count(b"\n") + 1
            raise CorpusError(self.path, "binary data (NUL byte), not a text export", at)
        pending = len(self.decoder.getstate()[0])
        try:
            text = self.decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as error:
            at = self.bytes_lines + chunk[: max(0, error.start - pending)].count(b"\n") + 1
            raise CorpusError(self.path, "not UTF-8 text; export as UTF-8", at) from None
        self.bytes_lines += chunk.count(b"\n")
        if not self.started:
            text, self.started = text.removeprefix("\ufeff"), True
        self.text += text
        self.eof = not chunk
        return bool(chunk)

    def skip_space(self, pos: int) -> int:
        """The position of the next non-blank character (reading on as needed); len(text) at the end."""
        while True:
            while pos < len(self.text) and self.text[pos].isspace():
                pos += 1
            if pos < len(self.text) or not self.more():
                return pos

    def line_at(self, pos: int) -> int:
        return self.line + self.text.count("\n", 0, pos)

    def drop(self, pos: int) -> None:
        """Forget the text before ``pos`` (an item already handed out)."""
        self.line = self.line_at(pos)
        self.text = self.text[pos:]


def _items(path: Path) -> Iterator[tuple[int, dict[str, Any], str]]:
    """(line, item, its JSON text) for each object of the file's top-level array."""
    decoder = json.JSONDecoder()
    with path.open("rb") as handle:
        stream = _Stream(path, handle)
        pos = stream.skip_space(0)
        if stream.text[pos : pos + 1] != "[":
            raise CorpusError(path, "not a CSL JSON array (a CSL JSON export starts with '[')", stream.line_at(pos))
        pos = stream.skip_space(pos + 1)
        count = 0
        while stream.text[pos : pos + 1] != "]":
            if pos >= len(stream.text):
                raise CorpusError(path, "the array never closes with ']' (a truncated file?)", stream.line_at(pos))
            if count:
                if stream.text[pos : pos + 1] != ",":
                    raise CorpusError(path, "expected ',' or ']' after a CSL JSON item", stream.line_at(pos))
                pos = stream.skip_space(pos + 1)
            if stream.text[pos : pos + 1] != "{":
                found = repr(stream.text[pos]) if pos < len(stream.text) else "the end of the file"
                raise CorpusError(path, f"expected a CSL JSON item ({{…}}), found {found}", stream.line_at(pos))
            stream.drop(pos)
            item, end = _decode(stream, decoder)
            yield stream.line, item, stream.text[:end]
            count += 1
            pos = stream.skip_space(end)
        if stream.skip_space(pos + 1) < len(stream.text):
            raise CorpusError(path, "text after the array's closing ']'", stream.line_at(stream.skip_space(pos + 1)))


def _decode(stream: _Stream, decoder: json.JSONDecoder) -> tuple[dict[str, Any], int]:
    """The object at the start of the stream's text, reading on until it is complete (or too large)."""
    while True:
        try:
            return decoder.raw_decode(stream.text)
        except json.JSONDecodeError as error:
            if len(stream.text) > MAX_ENTRY_BYTES:
                raise too_large(stream.path, stream.line) from None
            if not stream.more():
                if error.pos >= len(stream.text.rstrip()):
                    raise CorpusError(
                        stream.path, "the file ends inside an item (a truncated file?)", stream.line
                    ) from None
                raise CorpusError(stream.path, f"not valid JSON ({error.msg})", stream.line_at(error.pos)) from None
