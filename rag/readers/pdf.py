"""Research-paper PDFs → :class:`~rag.papers.Paper`: title, abstract, and the body as one passage per page and
section, in reading order, without running headers, page numbers or the reference list.

pypdfium2 (PDFium) was chosen by measurement (eval/bench_pdf_readers.py → eval/results/pdf_readers.md): it gives one
text rectangle per printed line with its font, keeps the columns of a two-column page apart, spells ligatures
as letters and marks a line-end hyphen, at twice pypdf's speed and over ten times pdfplumber's.

A hostile PDF can hang a parser or inflate a small file into gigabytes, and PDFium aborts the whole process when an
allocation fails. So every PDF is parsed in a worker process that loads this file alone (not the ``rag`` package,
whose imports take seconds and memory), under an address-space limit (``pdf.max_memory_mb``) and a wall-clock
limit per PDF (``pdf.timeout_s``); a worker that times out or dies is killed and replaced, and the PDF skipped.
That is why this module imports only the standard library and pypdfium2 at its top.

Reading rules, in the order they apply:

- Running headers and footers: lines in the top or bottom tenth of a page, set apart from the text by a gap, that
  repeat (digits aside) on at least half of the pages; and bare page numbers there.
- Reading order: a page whose lines mostly keep to one half (some to the right one) is read in bands between the
  lines that span both columns (title,
  wide figures); within a band the left column, then the right one.
- Headings: a short line in a larger or bold font that is numbered ("4", "4.2", "A.1", "IV.") or a usual unnumbered
  heading ("Abstract", "References", "Acknowledgments"…). The abstract is the text after an "Abstract" heading (or
  "Abstract—…" run in) up to the next heading.
- The reference list ("References", "Bibliography"…) is left out, and so is everything after it up to an appendix
  heading ("Appendix…", "A Proofs"): appendices keep their facts (hyperparameters live there), reference entries
  only repeat other papers.
- Ligatures (ﬁ ﬂ ﬀ ﬃ ﬄ ﬅ ﬆ) become letters; nothing else is normalised.
- A word hyphenated at a line end is rejoined when the hyphen sits between lower-case letters, unless the document
  prints the hyphenated form unbroken elsewhere and never the joined one ("self-attention" stays): TeX breaks words
  far more often than a compound happens to fall on a line end. TeX never breaks a word that already holds a hyphen
  but at that hyphen, so "mixture-of-" + "experts" stays "mixture-of-experts".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import select
import subprocess
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

if TYPE_CHECKING:
    from rag.papers import Entry
    from rag.settings import PdfSettings

MARGIN = 0.1  # share of the page height at its top and bottom where running headers and footers sit
MIN_TEXT_CHARS = 20  # fewer printable characters in the whole PDF: a scan without a text layer
TITLE_CHARS = 300  # a longer "title" is page text in one type size, not a title: the file's name stands in
FIRST_PAGE_CHARS = 20_000  # of page 1's text, searched for the paper's DOI or arXiv id
_LIGATURES = re.compile("[\ufb00-\ufb06]")
_HYPHENS = "-\x02\ufffe\xad"  # at a line end; PDFium writes \x02 (or U+FFFE) for a hyphen it saw at a break
_TRAILING_LETTERS = re.compile("[A-Za-z]*$")
_LEADING_LETTERS = re.compile("[A-Za-z]*")
_PAGE_NUMBER = re.compile(r"^(?:page\s*)?(?:\d{1,4}|[ivxlc]{1,6})(?:\s*(?:of|/)\s*\d{1,4})?$", re.IGNORECASE)
_NUMBERED = re.compile(r"^(?:\d{1,2}(?:\.\d{1,2})*\.?|[A-Z](?:\.\d{1,2})*\.?|[IVX]{1,5}\.)\s+[A-Z]")
_NAMED = re.compile(
    r"^(?:abstract|introduction|related work|background|conclusions?|discussion|acknowledge?ments?|references|"
    r"bibliography|works cited|literature cited|appendix.*|supplementary material.*)$",
    re.IGNORECASE,
)
_REFERENCES = re.compile(
    r"^(?:[\dIVX]{1,4}\.?\s+)?(?:references|bibliography|works cited|literature cited)$", re.IGNORECASE
)
_APPENDIX = re.compile(r"^(?:appendix|supplementary material|[A-H](?:\.\d{1,2})*\.?\s+[A-Z])", re.IGNORECASE)
_ABSTRACT_RUN_IN = re.compile(r"^abstract\s*(?:[—–:.-]|\s)\s*(?=\S)", re.IGNORECASE)
_NOT_A_TITLE = re.compile(
    r"^(?:untitled\b.*|microsoft (?:word|powerpoint) - .*|.*\.(?:tex|dvi|pdf|ps|docx?|rtf|indd|odt)|title)$",
    re.IGNORECASE,
)
_WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")


@dataclass(frozen=True)
class Line:
    """One printed line of a page (one column's), as the parser gives it; ``top``/``bottom`` from the page's top."""

    text: str
    x0: float
    x1: float
    top: float
    bottom: float
    size: float
    bold: bool


@dataclass(frozen=True)
class Page:
    width: float
    height: float
    lines: list[Line]


# ---- the worker's side: parse a PDF into plain data ------------------------------------------------------------


def pdfium_lines(page: Any) -> list[Line]:
    """The page's lines: PDFium's text rectangles (one per line and column), each with the font of its first glyph."""
    text_page = page.get_textpage()
    height = page.get_height()
    lines = []
    font_name = bytes(64)
    for i in range(text_page.count_rects()):
        left, bottom, right, top = text_page.get_rect(i)
        text = text_page.get_text_bounded(left, bottom, right, top).strip()
        if not text:
            continue
        glyph = pdfium_c.FPDFText_GetCharIndexAtPos(text_page, left + 0.5, (top + bottom) / 2, 2.0, 2.0)
        size, bold = 0.0, False
        if glyph >= 0:
            size = pdfium_c.FPDFText_GetFontSize(text_page, glyph)
            name_length = pdfium_c.FPDFText_GetFontInfo(text_page, glyph, font_name, len(font_name), None)
            name = font_name[: max(name_length - 1, 0)].decode("latin-1").lower()
            bold = pdfium_c.FPDFText_GetFontWeight(text_page, glyph) >= 500 or any(
                mark in name for mark in ("bold", "cmbx", "black", "heavy", "semibold", "-bd", ",bd")
            )
        lines.append(Line(text, left, right, height - top, height - bottom, round(size, 1), bold))
    text_page.close()  # PDFium's text page is a page's size in memory: freed now, not when the document closes
    return lines


def parse_pdf(path: str, max_pages: int) -> dict[str, Any]:
    """What the worker hands back for one PDF: the paper's parts (see :func:`structure`) or ``skip``/``detail``."""
    name = Path(path).name
    try:
        document = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as error:
        if "password" in str(error).lower():
            return {"skip": "unreadable", "detail": f"{name} is encrypted (it needs a password): skipped"}
        return {"skip": "unreadable", "detail": f"{name} is not a PDF or is damaged (truncated?): {error}"}
    try:
        if len(document) > max_pages:
            return {
                "skip": "unreadable",
                "detail": f"{name} has {len(document)} pages (limit pdf.max_pages={max_pages})",
            }
        pages = []
        for index in range(len(document)):
            page = document[index]
            pages.append(Page(page.get_width(), page.get_height(), pdfium_lines(page)))
            page.close()  # one page in memory at a time: a 500-page PDF costs what a 50-page one does
        info = document.get_metadata_dict(skip_empty=True)
    finally:
        document.close()
    if sum(len(line.text) for page in pages for line in page.lines) < MIN_TEXT_CHARS:
        return {"skip": "no_text", "detail": f"{name} has no text layer (scanned?): skipped, no OCR"}
    return structure(pages, info)


def structure(pages: list[Page], info: dict[str, str]) -> dict[str, Any]:
    """The paper in a parsed PDF: title, authors, abstract (with its page), body passages ``[text, page, section]``
    and page 1's text (where its identifiers are looked for). The same for every parser (the benchmark feeds
    others' lines through it)."""
    kept = _drop_running_lines(pages)
    ordered = [_reading_order(page, lines) for page, lines in zip(pages, kept, strict=True)]
    every_line = [line for lines in ordered for line in lines]
    if not every_line:
        return {"title": None, "authors": None, "abstract": None, "abstract_page": None, "passages": [], "first": ""}
    sizes: Counter[float] = Counter()
    for line in every_line:
        sizes[round(line.size)] += len(line.text)
    body_size = sizes.most_common(1)[0][0]
    vocabulary = {word.lower() for line in every_line for word in _WORD.findall(_normalise(line.text))}
    title_lines = _title_lines(ordered[0])
    title = _real_title(info.get("Title", "")) or " ".join(_normalise(line.text) for line in title_lines) or None

    passages: list[list[Any]] = []
    abstract: list[str] = []
    abstract_page: int | None = None
    section: str | None = None
    in_abstract = in_references = False
    texts: list[str] = []  # the lines of the passage being read: this page's under the current heading

    def end_passage(page: int) -> None:
        if texts and not in_references:
            passages.append([_join(texts, vocabulary), page, section])
        texts.clear()

    for number, lines in enumerate(ordered, start=1):
        for line in lines:
            if line in title_lines:
                continue
            text = _normalise(line.text)
            front = not abstract and section is None  # before any heading: where an abstract starts
            run_in = _ABSTRACT_RUN_IN.match(text) if front else None
            bare_abstract = text.lower().rstrip(".:") == "abstract"
            if _is_heading(line, text, body_size) or run_in or (front and bare_abstract):
                end_passage(number)
                if run_in or bare_abstract:
                    in_abstract, abstract_page = True, number
                    if run_in:
                        abstract.append(text[run_in.end() :])
                    continue
                in_abstract = False
                if _REFERENCES.match(text):
                    in_references = True
                    continue
                if in_references and not _APPENDIX.match(text):
                    continue
                in_references, section = False, text
                continue
            if in_abstract:
                abstract.append(text)
            else:
                texts.append(text)
        end_passage(number)
    return {
        "title": title,
        "authors": info.get("Author") or None,
        "abstract": _join(abstract, vocabulary) or None,
        "abstract_page": abstract_page,
        "passages": passages,
        "first": " ".join(line.text for line in ordered[0])[:FIRST_PAGE_CHARS],
    }


def _normalise(text: str) -> str:
    """Ligatures as letters (NFKC on them alone: it would also rewrite superscripts, fractions, full-width signs)."""
    return _LIGATURES.sub(lambda match: unicodedata.normalize("NFKC", match.group()), text).strip()


def _join(lines: list[str], vocabulary: set[str]) -> str:
    """Lines as running text: single spaces, words broken at a line end made whole again (see the module's rules)."""
    pieces: list[str] = []
    for line in lines:
        if pieces and pieces[-1] and pieces[-1][-1] in _HYPHENS:
            head = pieces[-1][:-1]
            left = _TRAILING_LETTERS.search(head[-64:]).group()  # type: ignore[union-attr]  # it may match ""
            right = _LEADING_LETTERS.match(line).group()  # type: ignore[union-attr]
            compound = f"{left}-{right}".lower() in vocabulary and (left + right).lower() not in vocabulary
            compound = compound or head[: len(head) - len(left)].endswith("-")  # "mixture-of-" + "experts"
            joinable = left[-1:].islower() and right[:1].islower() and not compound
            pieces[-1] = head if joinable else f"{head}-"
            pieces.append(line)
        else:
            pieces += [" ", line] if pieces else [line]
    text = "".join(pieces)
    return " ".join(text.replace("\x02", "-").replace("\ufffe", "-").replace("\xad", "").split())


def _drop_running_lines(pages: list[Page]) -> list[list[Line]]:
    """Each page's lines without running headers, footers and page numbers."""

    def margin_lines(page: Page) -> list[Line]:
        found = []
        for line in page.lines:
            if line.bottom < page.height * MARGIN:
                below = [other.top - line.bottom for other in page.lines if other.top >= line.bottom]
                if min(below, default=page.height) > line.size:
                    found.append(line)
            elif line.top > page.height * (1 - MARGIN):
                above = [line.top - other.bottom for other in page.lines if other.bottom <= line.top]
                if min(above, default=page.height) > line.size:
                    found.append(line)
        return found

    def repeating(line: Line, page: Page) -> tuple[bool, str]:
        """Header or footer, and the text with its numbers masked (a running head may carry the page number)."""
        return line.top < page.height / 2, re.sub(r"\d+", "#", line.text.lower())

    candidates = [margin_lines(page) for page in pages]
    repeats = Counter(
        form
        for page, lines in zip(pages, candidates, strict=True)
        for form in {repeating(line, page) for line in lines}
    )
    often = max(2, (len(pages) + 1) // 2)
    kept = []
    for page, lines in zip(pages, candidates, strict=True):
        running = {
            id(line)
            for line in lines
            if repeats[repeating(line, page)] >= often or _PAGE_NUMBER.match(line.text.strip())
        }
        kept.append([line for line in page.lines if id(line) not in running])
    return kept


def _reading_order(page: Page, lines: list[Line]) -> list[Line]:
    """Lines in reading order: top to bottom, or by bands and columns where the page has a right column."""
    middle = page.width / 2
    lines = sorted(lines, key=lambda line: (line.top, line.x0))
    right = sum(line.x0 >= middle - 2 for line in lines)
    left = sum(line.x1 <= middle + 2 for line in lines)
    if not right or left < 3 or left + right < len(lines) / 2:  # most lines cross the middle: one column
        return lines
    ordered: list[Line] = []
    band: list[Line] = []
    for line in lines:
        if line.x1 <= middle + 2 or line.x0 >= middle - 2:
            band.append(line)
            continue
        ordered += [*sorted(band, key=lambda line: (line.x0 >= middle - 2, line.top)), line]
        band = []
    return ordered + sorted(band, key=lambda line: (line.x0 >= middle - 2, line.top))


def _is_heading(line: Line, text: str, body_size: float) -> bool:
    emphasised = line.bold or line.size > body_size * 1.1
    short = len(text) <= 90 and not text.endswith((".", ",", ";", ":"))
    return emphasised and short and bool(_NUMBERED.match(text) or _NAMED.match(text))


def _title_lines(lines: list[Line]) -> list[Line]:
    """Page 1's largest-type lines in its upper half that read as words (no arXiv stamp, no lone symbols)."""
    if not lines:
        return []
    page_bottom = max(line.bottom for line in lines)
    upper = [
        line
        for line in lines
        if line.top < page_bottom / 2
        and len(_WORD.findall(line.text)) >= 2
        and not line.text.lower().startswith("arxiv")
    ]
    if not upper:
        return []
    largest = max(line.size for line in upper)
    return [line for line in upper if line.size >= largest - 0.5]


def _real_title(title: str) -> str | None:
    """The information dictionary's title, when a person wrote it rather than the tool that made the PDF."""
    title = " ".join(title.split())
    return title if len(title) >= 4 and not _NOT_A_TITLE.match(title) else None


def serve() -> None:
    """The worker: one JSON request a line on stdin (``path``, ``max_pages``), one JSON answer a line back."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the answers
    limit = int(sys.argv[1]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # Linux; macOS refuses it (ValueError): no worker there
    for request in sys.stdin:
        asked = json.loads(request)
        try:
            answer = parse_pdf(asked["path"], asked["max_pages"])
        except MemoryError:
            answer = {"skip": "unreadable", "detail": f"{Path(asked['path']).name} needed more than {limit >> 20} MB"}
        except Exception as error:  # a parser bug on one hostile file must not stop the other files
            answer = {"skip": "unreadable", "detail": f"{Path(asked['path']).name}: {type(error).__name__}: {error}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


# ---- the caller's side ------------------------------------------------------------------------------------------


class _Worker:
    """The worker process, started on first use and replaced after a PDF that outlasted its time or killed it."""

    def __init__(self, settings: PdfSettings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        self.pending = b""

    def read(self, path: Path) -> dict[str, Any]:
        if self.process is None or self.process.poll() is not None:
            self.process = self._start()
        assert self.process.stdin is not None and self.process.stdout is not None
        request = {"path": str(path.resolve()), "max_pages": self.settings.max_pages}
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            return self._died(path)
        deadline = time.monotonic() + self.settings.timeout_s
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.process.stdout], [], [], left)[0]:
                self.close()
                return {"skip": "unreadable", "detail": f"{path.name} took more than {self.timeout} (pdf.timeout_s)"}
            chunk = os.read(self.process.stdout.fileno(), 1 << 16)
            if not chunk:
                return self._died(path)
            self.pending += chunk
        answer, self.pending = self.pending.split(b"\n", 1)
        return json.loads(answer)

    @property
    def timeout(self) -> str:
        return f"{self.settings.timeout_s:g} s"

    def _start(self) -> subprocess.Popen[bytes]:
        self.pending = b""
        load_this_file_alone = (
            "import importlib.util as u, sys; spec = u.spec_from_file_location('rag_pdf_worker', sys.argv.pop(1)); "
            "module = sys.modules[spec.name] = u.module_from_spec(spec); spec.loader.exec_module(module); "
            "module.serve()"
        )
        command = [sys.executable, "-I", "-c", load_this_file_alone, __file__, str(self.settings.max_memory_mb)]
        return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def _died(self, path: Path) -> dict[str, Any]:
        assert self.process is not None
        code = self.process.wait()
        self.close()
        return {
            "skip": "unreadable",
            "detail": f"{path.name} stopped the PDF reader (exit {code}): it needed more than "
            f"{self.settings.max_memory_mb} MB (pdf.max_memory_mb) or is malformed",
        }

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            for stream in (self.process.stdin, self.process.stdout):
                if stream is not None:
                    stream.close()
            self.process = None


def file_digest(path: Path) -> str:
    """The PDF's content hash: its kept file's name and, without a DOI or arXiv id, its paper id."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


class PdfReader:
    """Reads PDFs one at a time, as a caller comes to them, through one worker process started at the first PDF and
    stopped when the reader closes."""

    def __init__(self, settings: PdfSettings) -> None:
        self._worker = _Worker(settings)

    def read(self, path: Path) -> Entry:
        """The PDF as a Paper, or a Skipped saying why it could not be read."""
        return _entry(Path(path), self._worker.read(Path(path)))

    def __enter__(self) -> PdfReader:
        return self

    def __exit__(self, *_: object) -> None:
        self._worker.close()


def read_pdfs(paths: Iterable[Path], settings: PdfSettings) -> Iterator[Entry]:
    """Each PDF as a Paper or a Skipped, in order, all read by one worker process (replaced when one fails)."""
    with PdfReader(settings) as reader:
        for path in paths:
            yield reader.read(path)


def read_pdf(path: Path, settings: PdfSettings | None = None) -> Entry:
    """One PDF (a worker of its own: read many with :func:`read_pdfs`)."""
    if settings is None:
        from rag.settings import Settings

        settings = Settings().pdf  # type: ignore[call-arg]  # the fields come from config/default.toml
    return next(read_pdfs([path], settings))


def _entry(path: Path, parsed: dict[str, Any]) -> Entry:
    """The Paper the worker's answer describes (identified by its DOI, arXiv id or content hash), or why not."""
    from rag.errors import CorpusError
    from rag.papers import Passage, Skipped, arxiv_id, doi_of, make_paper

    if "skip" in parsed:
        return Skipped(path, 1, parsed["skip"], parsed["detail"])
    body = [Passage(text, page, section) for text, page, section in parsed["passages"] if text]
    if not body and not parsed["abstract"]:
        return Skipped(path, 1, "no_text", f"{path.name} has no text that could be read: skipped")
    title = parsed["title"]
    if not title or len(title) > TITLE_CHARS:  # no type larger than the text's: a page of it is no title
        title = " ".join(re.split(r"[_\s]+", path.stem)).strip() or path.name
    digest = file_digest(path)
    first = parsed["first"]
    doi = next((found for match in re.finditer(r"\b10\.\d{4,9}/\S+", first) if (found := doi_of(match.group()))), None)
    arxiv = next((found for match in re.finditer(r"arXiv:\s?(\S+)", first) if (found := arxiv_id(match[1]))), None)
    given = f"arXiv:{arxiv}" if arxiv else None if doi else f"pdf:{digest}"
    try:
        return make_paper(
            (path, 1),
            title=title,
            abstract=parsed["abstract"],
            paper_id=given,
            keep_id=given == f"pdf:{digest}",
            authors=parsed["authors"],
            doi=doi,
            body=body,
            abstract_page=parsed["abstract_page"],
            file=f"{digest}.pdf",
        )
    except CorpusError as error:  # a field no paper has (an abstract of 200,000 characters): this PDF, not the ingest
        return Skipped(path, 1, "unreadable", f"{path.name}: {str(error).removeprefix(f'{path}:1: ')}")
