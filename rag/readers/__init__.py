"""Corpus readers: every supported file format becomes a stream of :class:`Paper`, one module per family of formats.

Readers stream (a 2-million-line arXiv snapshot is never held whole) and raise :class:`~rag.errors.CorpusError`
naming the file and line of the first problem. Reference-manager exports may also yield :class:`Skipped` entries
(no abstract, or one malformed entry among good ones), which ingest counts and reports instead of failing.
"""

import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal, get_args

from rag.errors import CorpusError
from rag.papers import (
    MAX_ABSTRACT_CHARS,
    MAX_TITLE_CHARS,
    Attached,
    DroppedField,
    Entry,
    FieldNote,
    Paper,
    Skipped,
    arxiv_id,
    doi_of,
    make_paper,
    normalise_title,
    title_id,
)
from rag.readers.arxiv import read_arxiv
from rag.readers.beir import read_beir
from rag.readers.bibtex import read_bibtex
from rag.readers.csljson import read_csljson
from rag.readers.exports import is_pdf
from rag.readers.ris import read_ris
from rag.readers.seed import read_seed
from rag.readers.tabular import read_csv, read_jsonl
from rag.readers.zotero import DATABASE, WHOLE_LIBRARY, ZoteroSelection, is_data_dir, read_zotero

__all__ = [
    "BUNDLED_CORPUS",
    "EXPORT_SUFFIXES",
    "FORMATS",
    "MAX_ABSTRACT_CHARS",
    "MAX_TITLE_CHARS",
    "PASSED_OVER",
    "Attached",
    "DroppedField",
    "Entry",
    "FieldNote",
    "Paper",
    "Skipped",
    "ZoteroSelection",
    "arxiv_id",
    "corpus_files",
    "doi_of",
    "is_pdf",
    "make_paper",
    "normalise_title",
    "read_corpus",
    "read_entries",
    "resolve_path",
    "sniff_format",
    "title_id",
]

Format = Literal["auto", "seed", "jsonl", "csv", "beir", "arxiv", "bibtex", "ris", "csljson", "zotero"]
FORMATS: tuple[str, ...] = get_args(Format)
BUNDLED_CORPUS = Path(__file__).parent.parent / "assets" / "trending_papers.txt"

READERS: dict[str, Callable[[Path], Iterable[Entry]]] = {
    "seed": read_seed,
    "jsonl": read_jsonl,
    "csv": read_csv,
    "beir": read_beir,
    "arxiv": read_arxiv,
    "csljson": read_csljson,
}
# The formats whose entries name PDF files, and so are told where those files may lie.
PDF_NAMING_READERS: dict[str, Callable[[Path, Path | None], Iterable[Entry]]] = {
    "bibtex": read_bibtex,
    "ris": read_ris,
}


def resolve_path(path: Path, fmt: str) -> Path:
    """A BEIR folder stands for its ``corpus.jsonl``; anything else must be a non-empty file."""
    if path.is_dir():
        if (path / "corpus.jsonl").is_file():
            return path / "corpus.jsonl"
        raise CorpusError(path, "is a folder without corpus.jsonl")
    if not path.exists():
        raise CorpusError(path, "no such file")
    if path.stat().st_size == 0:
        raise CorpusError(path, "empty file")
    return path


def sniff_format(path: Path) -> str:
    """Guess the format from the first non-blank line (and the extension for BibTeX, RIS, JSON lines and CSV)."""
    with path.open("rb") as handle:
        head = handle.read(65_536)
    if b"\x00" in head:
        line = head[: head.index(b"\x00")].count(b"\n") + 1
        raise CorpusError(path, "binary data (NUL byte), not a text corpus", line)
    first = next((line for line in head.decode("utf-8", errors="replace").splitlines() if line.strip()), None)
    if first is None:
        raise CorpusError(path, "empty file (only blank lines)")
    first = first.lstrip("\ufeff").strip()
    suffix = path.suffix.lower()
    if suffix == ".bib" or first.startswith("@"):
        return "bibtex"
    if suffix == ".ris" or first.startswith("TY  -"):
        return "ris"
    if first.startswith("[") and path.suffix.lower() not in {".jsonl", ".ndjson"}:
        return "csljson"  # a JSON array: CSL JSON as Zotero exports it (.json); a .jsonl's reader says what is wrong
    if first.startswith("{") or path.suffix.lower() in {".jsonl", ".ndjson", ".json"}:
        try:
            record = json.loads(first)
        except json.JSONDecodeError:
            return "jsonl"  # the reader reports the exact problem and line
        if not isinstance(record, dict):
            return "jsonl"
        if "_id" in record or ("text" in record and "abstract" not in record and "id" in record):
            return "beir"
        if {"id", "abstract", "update_date"} <= record.keys():
            return "arxiv"
        return "jsonl"
    if path.suffix.lower() in {".csv", ".tsv"} or re.match(r"^\"?title\"?\s*,|,\s*\"?title\"?\s*(,|$)", first, re.I):
        return "csv"
    return "seed"


# What a folder's files may be, besides PDFs (found by content): anything else is passed over, and said so.
EXPORT_SUFFIXES = frozenset({".bib", ".ris", ".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".txt"})


def corpus_files(path: Path, fmt: str = "auto") -> tuple[list[tuple[Path, str]], list[Path]]:
    """The files an ingest of ``path`` reads, each with its format ("pdf" for a PDF), and the files it passes over.

    A file is read as given (a PDF by its content); a BEIR folder (``corpus.jsonl``) is one corpus, and so is a Zotero
    data directory (``zotero.sqlite``, or that file); any other folder is walked recursively in name order, taking PDFs
    and the export files EXPORT_SUFFIXES name, hidden files and folders left out."""
    path = Path(path)
    if fmt not in (*FORMATS, "pdf"):
        raise CorpusError(path, f"unknown format {fmt!r}; choose one of {', '.join((*FORMATS, 'pdf'))}")
    if fmt == "zotero" or (fmt == "auto" and (is_data_dir(path) or path.name == DATABASE)):
        return [(path, "zotero")], []
    if not path.is_dir() or (path / "corpus.jsonl").is_file() or fmt == "beir":
        if fmt == "pdf" or (fmt == "auto" and path.is_file() and path.stat().st_size and is_pdf(path)):
            return [(path, "pdf")], []
        return [(path, fmt)], []
    taken: list[tuple[Path, str]] = []
    passed: list[Path] = []
    for file in sorted(path.rglob("*")):
        if any(part.startswith(".") for part in file.relative_to(path).parts) or not file.is_file():
            continue
        if file.stat().st_size and is_pdf(file):
            taken.append((file, "pdf"))
        elif file.suffix.lower() in EXPORT_SUFFIXES and fmt != "pdf":
            taken.append((file, fmt))
        else:
            passed.append(file)
    if not taken:
        raise CorpusError(path, "is a folder without PDFs or export files (.bib, .ris, .json, .jsonl, .csv, .txt)")
    return taken, passed


def read_entries(
    path: Path,
    fmt: str = "auto",
    strict: bool = False,
    zotero: ZoteroSelection = WHOLE_LIBRARY,
    pdfs_within: Path | None = None,
) -> Iterator[Entry]:
    """Stream the papers of a corpus file (or BEIR folder, or Zotero data directory: what of it ``zotero`` says) in
    the given or sniffed format, with the entries a reader skipped; ``strict`` turns a malformed entry into an error
    instead of a skip. Given ``pdfs_within`` (an upload's folder), a PDF an entry names is looked for only there."""
    if fmt not in FORMATS:
        raise CorpusError(path, f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "zotero":
        return _checked(Path(path), read_zotero(Path(path), zotero, pdfs_within), strict)
    if fmt == "auto" and Path(path).is_dir():
        fmt = "beir"  # a folder is a BEIR benchmark: its corpus.jsonl is read with BEIR's ids
    path = resolve_path(Path(path), fmt)
    if fmt == "auto":
        fmt = sniff_format(path)
    if fmt in PDF_NAMING_READERS:
        return _checked(path, PDF_NAMING_READERS[fmt](path, pdfs_within), strict)
    return _checked(path, READERS[fmt](path), strict)


def read_corpus(path: Path, fmt: str = "auto") -> Iterator[Paper]:
    """Stream the papers of a corpus file, passing over the entries a reader skipped (and the PDFs entries name:
    ingest reads those)."""
    for entry in read_entries(path, fmt):
        if isinstance(entry, Paper):
            yield entry
        elif isinstance(entry, Attached) and entry.paper.passages:
            yield entry.paper


# What a library holds that is not a paper (or not one asked for): passed over and counted, never an error.
PASSED_OVER = frozenset({"note", "trashed", "not_a_paper"})


def _checked(path: Path, entries: Iterable[Entry], strict: bool) -> Iterator[Entry]:
    """The entries, failing on a malformed one or an unreadable field when strict, and on a file that yields no
    paper at all."""
    papers = no_abstract = 0
    malformed: Skipped | None = None
    for entry in entries:
        if isinstance(entry, Paper | Attached):
            papers += 1
        elif isinstance(entry, FieldNote):
            if strict and isinstance(entry, DroppedField):
                detail = f"field {entry.field!r}: {entry.detail} (--strict stops at an unreadable field)"
                raise CorpusError(path, detail, entry.line)
        elif entry.reason == "no_abstract":
            no_abstract += 1
        elif entry.reason not in PASSED_OVER:
            if strict:
                raise CorpusError(path, f"{entry.detail} (--strict stops at a malformed entry)", entry.line)
            malformed = malformed or entry
        yield entry
    if papers:
        return
    if no_abstract:
        raise CorpusError(
            path,
            f"none of its {no_abstract} entries has an abstract: export them with abstracts "
            "(Zotero's BibTeX, RIS and CSL JSON exports include the Abstract field when it is filled)",
        )
    if malformed is not None:
        raise CorpusError(path, f"no entry could be read; the first problem: {malformed.detail}", malformed.line)
    raise CorpusError(path, "contains no papers")
