"""What the reference-manager export readers (BibTeX, RIS, CSL JSON) share: bounded record splitting, citation-key
bookkeeping, arXiv ids in notes and keyword lists."""

import hashlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from rag.errors import CorpusError
from rag.papers import Attached, DroppedField, Entry, Paper, arxiv_id

# One reference-manager entry is a few kB even with a long abstract: a larger one is not an export (or an entry that
# never closes), and stopping there keeps a 200 MB blob from being read whole.
MAX_ENTRY_BYTES = 1_000_000

_ARXIV_NOTE = re.compile(r"\barxiv:\s*([^\s,;\]]+)", re.IGNORECASE)
_SHORT_KEY = re.compile(r"^[\w:.+-]{1,100}$")  # a citation key, not a URI or a sentence


def too_large(path: Path, line: int) -> CorpusError:
    return CorpusError(
        path, f"entry is larger than {MAX_ENTRY_BYTES:,} bytes: not a reference-manager export (or it never ends)", line
    )


def line_records(path: Path, start: re.Pattern[str], end: re.Pattern[str] | None = None) -> Iterator[tuple[int, str]]:
    """The records of a line-based export with the line each starts on: a record starts at a line matching ``start``
    and runs to a line matching ``end`` (included) or to the next start. Lines outside records are passed over.
    Decoding is checked as :func:`rag.readers.records.lines` does, and no line or record is read past
    :data:`MAX_ENTRY_BYTES`, so an oversized record fails fast, naming its first line."""
    begun, size = 0, 0
    parts: list[str] = []
    with path.open("rb") as handle:
        number = 0
        while raw := handle.readline(MAX_ENTRY_BYTES + 1):
            number += 1
            if len(raw) > MAX_ENTRY_BYTES:
                raise too_large(path, begun or number)
            if b"\x00" in raw:
                raise CorpusError(path, "binary data (NUL byte), not a text export", number)
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise CorpusError(
                    path, f"not UTF-8 text (byte {error.start} of the line); export as UTF-8", number
                ) from None
            if start.match(text):
                if parts:
                    yield begun, "\n".join(parts)
                begun, parts, size = number, [], 0
            if not begun:
                continue
            parts.append(text)
            size += len(raw)
            if size > MAX_ENTRY_BYTES:
                raise too_large(path, begun)
            if end is not None and end.match(text):
                yield begun, "\n".join(parts)
                begun, parts, size = 0, [], 0
    if parts:
        yield begun, "\n".join(parts)


class CitationKeys:
    """The keys seen so far in one file: one key on two different entries is an error naming both lines (an entry
    exported twice, byte for byte, is the same paper and passes; ingest drops the copy)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: dict[str, tuple[int, str]] = {}

    def check(self, key: str, line: int, text: str) -> None:
        digest = hashlib.sha1(" ".join(text.split()).encode()).hexdigest()
        first_line, first_digest = self.seen.setdefault(key, (line, digest))
        if first_digest != digest:
            raise CorpusError(
                self.path,
                f"citation key {key!r} is used by two different entries (lines {first_line} and {line})",
                line,
            )


def short_key(value: Any) -> str | None:
    """A citation-key-like id worth keeping as the paper id (not a Zotero item URI, not a number alone)."""
    if isinstance(value, int | str) and _SHORT_KEY.match(str(value)) and not str(value).isdigit():
        return str(value)
    return None


def arxiv_in_note(*notes: Any) -> str | None:
    """The arXiv id Zotero writes into a note or Extra field ("arXiv:1706.03762 [cs]", "arXiv: 1706.03762")."""
    for note in notes:
        for text in note if isinstance(note, list) else [note]:
            if isinstance(text, str):
                for match in _ARXIV_NOTE.finditer(text):
                    if found := arxiv_id(match.group(1)):
                        return found
    return None


def keyword_list(value: Any) -> list[str]:
    """Whole keywords (a keyword may hold spaces: "Computer Science - Machine Learning"), from a list or a
    comma/semicolon-separated string."""
    items = value if isinstance(value, list) else re.split(r"[,;]", value) if isinstance(value, str) else []
    return [item.strip() for item in items if isinstance(item, str) and item.strip()]


# How reference managers write a path inside BibTeX's ``file`` field: Zotero and JabRef escape '\', ';' and ':'
# with a backslash; Mendeley writes LaTeX ("$\backslash$", "{\_}") and drops the leading '/' of a Linux path.
_MENDELEY_LATEX = (("$\\backslash$", "\\"), ("{\\_}", "_"), ("\\_", "_"), ("{\\&}", "&"), ("\\&", "&"), ("{~}", "~"))
_ESCAPED = re.compile(r"\\([\\;:])")  # an escaped backslash, ';' or ':' (a lone backslash is a Windows separator)
_TOKEN = re.compile(r"\\[\\;:]|[;:]|[^;:\\]+|\\")


def _split_unescaped(text: str, separator: str) -> list[str]:
    """``text`` split at each ``separator`` that no backslash escapes, the escapes kept for the next split."""
    parts = [""]
    for token in _TOKEN.findall(text):
        if token == separator:
            parts.append("")
        else:
            parts[-1] += token
    return parts


def bibtex_files(value: str) -> list[str]:
    """The PDF paths a BibTeX ``file`` field lists, as written: Zotero's ``Full Text:files/5/a.pdf:application/pdf``,
    Mendeley's ``:home/me/a.pdf:pdf``, JabRef's ``:a.pdf:PDF``, Better BibTeX's bare paths; several joined by ';'."""
    for latex, plain in _MENDELEY_LATEX:
        value = value.replace(latex, plain)
    found = []
    for item in _split_unescaped(value, ";"):
        parts = [_ESCAPED.sub(r"\1", part) for part in _split_unescaped(item.strip(), ":")]
        if len(parts) == 1:
            path, kind = parts[0], ""
        elif len(parts) == 2:  # "C:\papers\a.pdf" unescaped, or "description:path"
            path, kind = (":".join(parts), "") if len(parts[0]) == 1 and parts[0].isalpha() else (parts[1], "")
        else:
            path, kind = ":".join(parts[1:-1]), parts[-1]
        path = path.strip()
        if path and ("pdf" in kind.lower() or path.lower().endswith(".pdf")):
            found.append(path)
    return found


def _candidates(written: str, export: Path) -> list[Path]:
    """Where a path an export names may be: absolute, relative to the export file's folder, or a Linux path that
    lost its leading '/' (Mendeley); a ``file://`` URL too."""
    if written.startswith("file://"):
        written = unquote(urlparse(written).path)
    path = Path(written).expanduser()
    return [path] if path.is_absolute() else [export.parent / path, Path("/") / path]


def within(path: Path, folder: Path | None) -> bool:
    """Whether ``path`` lies in ``folder`` (an upload's folder; anywhere when None), links resolved."""
    return folder is None or path.resolve().is_relative_to(folder.resolve())


OUTSIDE_UPLOAD = "is outside the uploaded files: not read"


def first_pdf(
    written: Sequence[str], export: Path, line: int, field: str, pdfs_within: Path | None
) -> tuple[Path | None, list[DroppedField]]:
    """The first of the files an entry names that is a PDF on disk, and a dropped field for each one before it.
    Given ``pdfs_within`` (an upload's folder), a path outside it is not even looked at, so an uploaded library
    learns nothing of the server's other files."""
    missing: list[DroppedField] = []
    for path in written:
        candidates = [candidate for candidate in _candidates(path, export) if within(candidate, pdfs_within)]
        found = next((candidate for candidate in candidates if candidate.is_file()), None)
        if found is None:
            why = OUTSIDE_UPLOAD if not candidates else f"is not on disk (absolute, or relative to {export.parent})"
        elif (problem := pdf_problem(found)) is None:
            return found, missing
        else:
            why = problem
        missing.append(DroppedField(export, line, field, f"{path!r} {why}"))
    return None, missing


def is_pdf(path: Path) -> bool:
    """Whether the file is a PDF by its first bytes (a PDF may start with junk before ``%PDF-``; readers allow 1 KB)."""
    with path.open("rb") as handle:
        return b"%PDF-" in handle.read(1024)


def pdf_problem(path: Path) -> str | None:
    """Why the file on disk at ``path`` is not a PDF to read, or None when it is one."""
    try:
        return None if is_pdf(path) else "is not a PDF"
    except OSError as error:
        return f"cannot be read ({error.strerror})"


def with_pdf(paper: Paper, pdf: Path | None) -> Entry:
    """The paper, or the paper with its PDF to read when there is one."""
    return paper if pdf is None else Attached(paper, pdf)
