"""BibTeX exports (Zotero, JabRef, Mendeley…), read with bibtexparser.

The file is cut into entry blocks at lines that start with ``@type{`` and each block is parsed alone: the file
streams, every entry knows its line, and a syntax error spoils only its own entry (reported as malformed).
"""

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bibtexparser
from bibtexparser.library import Library
from bibtexparser.middlewares import BlockMiddleware, LatexDecodingMiddleware, NormalizeFieldKeys, SeparateCoAuthors
from bibtexparser.middlewares.names import InvalidNameError, NameParts, parse_single_name_into_parts
from bibtexparser.model import Block, DuplicateBlockKeyBlock, ImplicitComment
from bibtexparser.model import Entry as BibEntry
from pylatexenc.latex2text import LatexNodes2Text, MacroTextSpec, SpecialsTextSpec, get_default_latex_context_db

from rag.errors import CorpusError
from rag.papers import DroppedField, Entry, FieldNote, Skipped, arxiv_id, clean, make_paper
from rag.readers.exports import (
    CitationKeys,
    arxiv_in_note,
    bibtex_files,
    first_pdf,
    keyword_list,
    line_records,
    with_pdf,
)

_ENTRY_START = re.compile(r"@\s*([A-Za-z][\w-]*)\s*[{(]\s*([^,\s{}()]*)")
# Not LaTeX: '%' and '~' in a URL are not a comment and a space, '\' in a file path is a folder separator.
_VERBATIM = ("url", "doi", "eprint", "file")
_VENUES = ("journal", "journaltitle", "booktitle", "school", "institution", "publisher")
_LATEX = re.compile(r"[\\{}$~%&#^_]|!`|\?`")  # what makes a field value LaTeX rather than plain text
_RUNS_ON = re.compile(r"\n\s*[A-Za-z][\w-]*\s*=\s*[{\"]")  # a field value that swallowed the next field

# bibtexparser logs each syntax error on stderr itself; this reader reports them as skipped entries instead.
logging.getLogger("bibtexparser").addHandler(logging.NullHandler())
logging.getLogger("bibtexparser").propagate = False


class _BeforeDecoding(BlockMiddleware):
    """Looks at the fields as written, before LaTeX decoding rewrites them: stashes URL, DOI and eprint, and notes a
    field that ran on into the next one because a comma is missing (bibtexparser reads both as one value)."""

    def transform_entry(self, entry: BibEntry, library: Library) -> BibEntry:
        strings = {f.key: f.value for f in entry.fields if isinstance(f.value, str)}
        entry.parser_metadata["verbatim"] = {key: strings[key] for key in _VERBATIM if key in strings}
        entry.parser_metadata["runs_on"] = next((key for key, value in strings.items() if _RUNS_ON.search(value)), None)
        return entry


class _Decoder(LatexNodes2Text):
    """pylatexenc reads text a character at a time (milliseconds a field): text with nothing LaTeX in it is
    returned as it is."""

    def latex_to_text(self, latex: str, **parse_flags: Any) -> str:
        return super().latex_to_text(latex, **parse_flags) if _LATEX.search(latex) else latex


def _decoder() -> LatexNodes2Text:
    """LaTeX to Unicode as bibtexparser's default, except that ASCII dashes and quotes stay as written (abstracts
    copied from arXiv hold them literally, and a paper must read the same from BibTeX, RIS and CSL JSON) and the
    text macros Zotero writes for ``^ < > |`` come back as those characters."""
    context = get_default_latex_context_db()
    context.add_context_category(
        "rag-bibtex",
        prepend=True,
        macros=[
            MacroTextSpec("url", simplify_repl="%s"),
            *(
                MacroTextSpec(name, simplify_repl=char)
                for name, char in (("textasciicircum", "^"), ("textless", "<"), ("textgreater", ">"), ("textbar", "|"))
            ),
        ],
        specials=[SpecialsTextSpec(chars, simplify_repl=chars) for chars in ("--", "---", "``", "''")],
    )
    return _Decoder(latex_context=context, math_mode="text", keep_braced_groups=False)


class _SemicolonNames(BlockMiddleware):
    """Mendeley writes an author list as "Park, Sanghwa; Seidl, Ralf" where BibTeX has " and " between names (read
    as they stand, the names are one name with too many commas): the ';' become " and ", noted for the reader to warn
    of."""

    def transform_entry(self, entry: BibEntry, library: Library) -> BibEntry:
        field = entry.get("author")
        if field is not None and isinstance(field.value, str) and ";" in field.value:
            names = [name.strip() for name in field.value.split(";") if name.strip()]
            if len(names) > 1:
                field.value = " and ".join(names)
                entry.parser_metadata["semicolons"] = True
        return entry


class _SplitAuthors(BlockMiddleware):
    """bibtexparser's SplitNameParts for the author field alone (the only name field read), except that a list it
    cannot split ("A, B, C, D": no "and" between the names) costs the field, noted for the reader to report, rather
    than the entry."""

    def transform_entry(self, entry: BibEntry, library: Library) -> BibEntry:
        field = entry.get("author")
        if field is not None and isinstance(field.value, list):
            try:
                field.value = [parse_single_name_into_parts(name) for name in field.value]
            except InvalidNameError as error:
                entry.pop("author")
                reason = error.reason.lower()
                entry.parser_metadata["unsplit_authors"] = f"cannot split {error.name[:60]!r} into names ({reason})"
        return entry


_STACK = [
    NormalizeFieldKeys(),
    _BeforeDecoding(),
    LatexDecodingMiddleware(decoder=_decoder()),
    _SemicolonNames(),
    SeparateCoAuthors(),
    _SplitAuthors(),
]


def read_bibtex(path: Path, pdfs_within: Path | None = None) -> Iterator[Entry]:
    """The file's entries, each with the PDF its ``file`` field names (only inside ``pdfs_within``, when given)."""
    keys = CitationKeys(path)
    macros: list[Block] = []  # the @string definitions so far, which later entries may use
    blocks = 0
    for line, text in line_records(path, _ENTRY_START):
        blocks += 1
        header = _ENTRY_START.match(text)
        kind, key = header.groups() if header else ("?", "")  # every block starts with a header: line_records
        label = f"@{kind.lower()}{{{key}}}"
        library = bibtexparser.parse_string(text, append_middleware=_STACK, library=Library(macros))
        macros = [*library.strings]
        failed = [b for b in library.failed_blocks if not isinstance(b, DuplicateBlockKeyBlock)]
        if failed:
            yield Skipped(path, line, "malformed", f"{label} is malformed: {_reason(failed[0].error, text, line)}")
            continue
        for entry in library.entries:
            if problem := _shape_problem(entry, library):
                yield Skipped(path, line, "malformed", f"{label} is malformed: {problem}")
            else:  # @comment, @string and @preamble are blocks of their own, never entries
                keys.check(entry.key, line, text)
                yield from _entries(path, line, label, entry, pdfs_within)
    if not blocks:
        raise CorpusError(path, "no BibTeX entries (no line starts with @type{key,): not a BibTeX file")


def _reason(error: Exception, text: str, line: int) -> str:
    """bibtexparser's reason for a failed block, with the file line where it stopped reading."""
    reason = str(getattr(error, "abort_reason", None) or error or type(error).__name__).rstrip(".")
    if "end of file" in reason.lower():  # the end of this entry's block, not of the file
        return "it never closes (an unbalanced brace or quote?)"
    end = getattr(error, "end_index", None)
    return f"{reason} (at line {line + text[:end].count(chr(10))})" if isinstance(end, int) else reason


def _shape_problem(entry: BibEntry, library: Library) -> str | None:
    """What bibtexparser accepts but a well-formed entry never has: text after its closing brace, or a field that
    ran on into the next one because a comma is missing."""
    if any(isinstance(b, ImplicitComment) and re.search(r"[{}]", b.comment) for b in library.blocks):
        return "text after its closing brace (does a brace close it early?)"
    if runs_on := entry.parser_metadata.get("runs_on"):
        return f"field {runs_on!r} runs into the next field (a missing comma?)"
    return None


def _entries(path: Path, line: int, label: str, entry: BibEntry, pdfs_within: Path | None) -> Iterator[Entry]:
    """The entry's paper (with the PDF its ``file`` field names, when that is on disk), after the fields it was read
    without or read with a note; or why it was skipped."""
    fields: dict[str, Any] = {f.key: f.value for f in entry.fields}
    verbatim: dict[str, str] = entry.parser_metadata.get("verbatim", {})
    pdf, dropped = first_pdf(bibtex_files(verbatim.get("file", "")), path, line, "file", pdfs_within)
    abstract = written if isinstance(written := fields.get("abstract"), str) else ""
    if not abstract.strip() and pdf is None:
        yield from dropped  # why the PDFs it names could not be read
        title = f" ({clean(fields['title'])[:80]!r})" if isinstance(fields.get("title"), str) else ""
        yield Skipped(path, line, "no_abstract", f"@{entry.entry_type}{{{entry.key}}}{title} has no abstract or PDF")
        return
    eprint = verbatim.get("eprint", "")
    archive = str(fields.get("archiveprefix") or fields.get("eprinttype") or "arxiv").lower()
    found = (arxiv_id(eprint) if archive == "arxiv" and eprint else None) or arxiv_in_note(
        fields.get("note"), fields.get("annote"), fields.get("extra")
    )
    names = fields.get("author")
    authors = [name.merge_first_name_first for name in names if isinstance(name, NameParts)] if names else []
    if unsplit := entry.parser_metadata.get("unsplit_authors"):
        dropped.append(DroppedField(path, line, "author", unsplit))
    try:
        paper = make_paper(
            (path, line),
            title=fields.get("title"),
            abstract=abstract,
            paper_id=f"arxiv:{found}" if found else entry.key,
            authors=authors,
            year=fields.get("year") or fields.get("date"),
            categories=keyword_list(fields.get("keywords")),
            url=verbatim.get("url"),
            venue=next((fields[k] for k in _VENUES if isinstance(fields.get(k), str) and fields[k].strip()), None),
            doi=verbatim.get("doi"),
            kind=entry.entry_type,
            dropped=dropped,
            body_follows=pdf is not None,
        )
    except CorpusError as error:  # no title, or one too long: this entry, not the file
        reason = str(error).removeprefix(f"{path}:{line}: ")
        yield Skipped(path, line, "malformed", f"{label} is malformed: {reason}")
        return
    if entry.parser_metadata.get("semicolons") and authors:
        yield FieldNote(path, line, "author", f"names separated by ';' (Mendeley) read as {len(authors)} names")
    yield from dropped
    yield with_pdf(paper, pdf)
