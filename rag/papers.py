"""The one model of a paper: :class:`Paper` with its metadata and ordered :class:`Passage` s, what every reader
produces (through :func:`make_paper`, which validates), and the one codec between a paper and the store's row metadata.

Retrieval, evidence and citations read a paper through views of this model (``rag.retrieve.Hit``,
``rag.evidence.Source``, ``rag.cite.Reference``) rather than copying its fields.
"""

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from rag.errors import CorpusError
from rag.text import INSTRUCTION_LIKE, split_sentences

MAX_TITLE_CHARS = 1_000
MAX_ABSTRACT_CHARS = 200_000

_ARXIV_ID = re.compile(r"^(?:arxiv:)?(\d{4}\.\d{4,5}|[a-z-]+(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?$", re.IGNORECASE)
_ARXIV_URL = re.compile(r"arxiv\.org/(?:abs|pdf)/([^\s?#]+?)(?:v\d+)?(?:\.pdf)?(?:[?#].*)?$", re.IGNORECASE)
_ARXIV_DOI = re.compile(r"^10\.48550/arxiv\.(.+)$", re.IGNORECASE)  # the DOI arXiv mints for each preprint
_DOI = re.compile(r"^(?:doi:\s*|https?://(?:dx\.)?doi\.org/)?(10\.\d{4,9}/\S+)$", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# What a URL field holds when it holds a URL: a scheme ("https:", "ftp:", "file:"…) or a host name ("www.x.org/…").
_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:\S|[\w-]+(?:\.[\w-]+)+(?:[/:?#]|$))", re.IGNORECASE)
_T = TypeVar("_T")


ABSTRACT = "Abstract"  # the section of a paper's abstract passage
LIST_SEPARATOR = "; "  # authors and categories in the store's metadata (names hold commas, keywords spaces)


@dataclass(frozen=True)
class Passage:
    """A stretch of a paper's text and where it sits: what evidence quotes and a citation points to."""

    text: str
    page: int | None = None  # 1-based page of the PDF it was read from; None for text that has no pages
    section: str | None = None  # the heading it sits under ("4 Experiments"); ABSTRACT for the abstract


@dataclass(frozen=True)
class Paper:
    """One paper: the unit that is cited, counted and deduplicated. Its passages are in reading order, the abstract
    (when it has one) first; a paper read back from the store's metadata carries none."""

    paper_id: str
    title: str
    passages: tuple[Passage, ...] = ()
    authors: tuple[str, ...] = ()
    year: int | None = None
    categories: tuple[str, ...] = ()
    url: str | None = None
    venue: str | None = None  # journal, proceedings or publisher, as the reference manager had it
    doi: str | None = None  # lower-case, without a resolver prefix
    kind: str | None = None  # the BibTeX entry type (article, inproceedings, misc…) when the source says
    file: str | None = None  # the PDF it was read from, as kept under the data directory (named by its content hash)

    @property
    def abstract(self) -> str:
        """The abstract, "" for a paper that has none (a PDF whose abstract was not found)."""
        return self.passages[0].text if self.passages and self.passages[0].section == ABSTRACT else ""

    @property
    def body(self) -> tuple[Passage, ...]:
        """The passages after the abstract: a full text's sections."""
        return self.passages[1:] if self.abstract else self.passages

    @property
    def content_hash(self) -> str:
        """Changes whenever anything that is indexed about the paper changes."""
        payload: list[Any] = [self.title, self.abstract, list(self.authors), self.year, list(self.categories), self.url]
        if self.venue or self.doi or self.kind:  # appended only when set: older papers keep their hash
            payload += [self.venue, self.doi, self.kind]
        if self.body or self.file or (self.passages and self.passages[0].page is not None):
            payload += [self.file, [[p.text, p.page, p.section] for p in self.passages]]
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()[:16]

    def metadata(self) -> dict[str, str | int]:
        """What every row of the paper records about it in the store (Chroma metadata: flat str/int values)."""
        meta: dict[str, str | int] = {"paper_id": self.paper_id, "title": self.title}
        if self.year is not None:
            meta["year"] = self.year
        if self.url:
            meta["url"] = self.url
        if self.authors:
            meta["authors"] = LIST_SEPARATOR.join(self.authors)
        for key in ("venue", "doi", "kind", "file"):
            if value := getattr(self, key):
                meta[key] = value
        if self.categories:
            meta["categories"] = LIST_SEPARATOR.join(self.categories)
            meta.update({f"cat:{category}": 1 for category in self.categories})  # filterable flags
        return meta

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], passages: tuple[Passage, ...] = ()) -> "Paper":
        """The paper a row's metadata records (the inverse of :meth:`metadata`), with the given passages."""

        def listed(key: str) -> tuple[str, ...]:
            return tuple(item for item in str(meta.get(key, "")).split(LIST_SEPARATOR) if item)

        def text(key: str) -> str | None:
            value = meta.get(key)
            return str(value) if value not in (None, "") else None

        return cls(
            paper_id=str(meta.get("paper_id", "")),
            title=str(meta.get("title", "")),
            passages=passages,
            authors=listed("authors"),
            year=int(meta["year"]) if meta.get("year") not in (None, "") else None,
            categories=listed("categories"),
            url=text("url"),
            venue=text("venue"),
            doi=text("doi"),
            kind=text("kind"),
            file=text("file"),
        )


def abstract_chunks(meta: Mapping[str, Any]) -> int:
    """How many of a paper's chunks (the first ones) hold its abstract, as its rows record it (all of them, for a
    paper without full text)."""
    return int(meta.get("abstract_chunks", meta.get("n_chunks", 1)))


def chunk_of(meta: Mapping[str, Any], text: str) -> "Chunk":
    """A row's text as a chunk of its paper, with the page and section its metadata records."""
    index = int(meta.get("chunk", 0))
    page = meta.get("page")
    section = ABSTRACT if index < abstract_chunks(meta) else meta.get("section")
    return Chunk(index, Passage(text, int(page) if page not in (None, "") else None, str(section) if section else None))


@dataclass(frozen=True)
class Skipped:
    """An entry a reader passed over, and why: ingest counts them and names each malformed one's line."""

    path: Path
    line: int
    reason: Literal["no_abstract", "malformed", "no_text", "unreadable", "note", "trashed", "not_a_paper"]
    detail: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.detail}"


@dataclass(frozen=True)
class FieldNote:
    """A field of a kept entry that was read other than as written (Mendeley's ';' between author names): ingest
    warns of it, naming the file, line and field."""

    path: Path
    line: int
    field: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: field {self.field!r}: {self.detail}"


@dataclass(frozen=True)
class DroppedField(FieldNote):
    """A field of an entry that could not be read, dropped from that entry (the entry is kept): a bad field costs the
    field, not the entry; ingest warns of it and ``--strict`` fails on it."""

    def __str__(self) -> str:
        return f"{super().__str__()}: dropped"


@dataclass(frozen=True)
class Attached:
    """A reference-manager entry with its PDF on disk (a Zotero item, a BibTeX ``file`` field): a paper whose full
    text is read only when ingest needs it, that is when the entry or the file changed since the last ingest.
    ``title_from_pdf``: the entry is the PDF alone (a Zotero attachment without a parent item), so the PDF's own
    title, authors and DOI stand in for the entry's."""

    paper: Paper
    pdf: Path
    title_from_pdf: bool = False

    @property
    def paper_id(self) -> str:
        return self.paper.paper_id

    def version(self) -> str:
        """Changes when the entry or its file changes, known without reading the PDF (its size and time suffice, as
        for a build tool)."""
        stat = self.pdf.stat()
        payload = [self.paper.content_hash, str(self.pdf), stat.st_size, stat.st_mtime_ns, self.title_from_pdf]
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]

    def with_text(self, read: Paper) -> Paper:
        """The entry with the PDF's text: the entry's metadata and abstract (the PDF's abstract when the entry has
        none), then the PDF's body passages with their pages."""
        abstract = self.paper.passages if self.paper.abstract else read.passages[:1] if read.abstract else ()
        paper = replace(self.paper, passages=abstract + read.body, file=read.file)
        if self.title_from_pdf:
            paper = replace(paper, title=read.title, authors=read.authors or paper.authors, doi=read.doi or paper.doi)
        return paper


Entry = Paper | Attached | Skipped | FieldNote  # a DroppedField is a FieldNote


def normalise_title(title: str) -> str:
    """Case- and whitespace-insensitive form used to match titles (ids, gold sets)."""
    return " ".join(unicodedata.normalize("NFKC", title).lower().split())


def title_id(title: str) -> str:
    """A stable id for a paper that has no identifier of its own."""
    return "t-" + hashlib.sha1(normalise_title(title).encode()).hexdigest()[:16]


def arxiv_id(value: str) -> str | None:
    """The version-less arXiv id in an id, an arxiv.org URL or arXiv's own DOI, if there is one."""
    value = value.strip()
    if match := _DOI.match(value):
        value = match.group(1)
    if match := _ARXIV_DOI.match(value):
        value = match.group(1)
    match = _ARXIV_ID.match(value)
    if match:
        return match.group(1)
    match = _ARXIV_URL.search(value)
    return match.group(1) if match else None


def doi_of(value: str) -> str | None:
    """The DOI in a bare DOI, a ``doi:`` form or a doi.org URL, lower-cased (DOIs are case-insensitive)."""
    match = _DOI.match(value.strip())
    return match.group(1).rstrip(".,;").lower() if match else None


def clean(text: str) -> str:
    """One line of text: control characters and runs of whitespace become single spaces."""
    return " ".join(_CONTROL.sub(" ", text).split())


def make_paper(
    where: tuple[Path, int],
    *,
    title: Any,
    abstract: Any,
    paper_id: Any = None,
    authors: Any = None,
    year: Any = None,
    categories: Any = None,
    url: Any = None,
    venue: Any = None,
    doi: Any = None,
    kind: Any = None,
    keep_id: bool = False,
    body: Sequence[Passage] = (),
    abstract_page: int | None = None,
    file: str | None = None,
    dropped: list[DroppedField] | None = None,
    body_follows: bool = False,
) -> Paper:
    """Validate and normalise one record. ``keep_id`` keeps a given id verbatim (BEIR qrels refer to it). Otherwise
    the id is the DOI (arXiv's own DOI as the arXiv id), else the arXiv id in the given id or URL, else the given id,
    else the title's hash: so the same paper from two exports is one paper. A full text (``body``, read from
    ``file``) may come without an abstract, as may an entry whose PDF is read later (``body_follows``).

    A field that cannot be read (a year of "n.d.", a DOI that is not one, authors of the wrong type) is left out and
    recorded in ``dropped`` when it is a list, so that a reference-manager quirk costs the field, not the paper; with
    no list it raises. A paper cannot be without its title and abstract: their problems always raise."""
    path, line = where
    if not isinstance(title, str) or not title.strip():
        raise CorpusError(path, "record has no title", line)
    if not body and not body_follows and (not isinstance(abstract, str) or not abstract.strip()):
        raise CorpusError(path, "record has no abstract/text", line)
    title, abstract = clean(title), clean(abstract) if isinstance(abstract, str) else ""
    if len(title) > MAX_TITLE_CHARS:
        raise CorpusError(path, f"title is {len(title):,} characters (limit {MAX_TITLE_CHARS:,})", line)
    if len(abstract) > MAX_ABSTRACT_CHARS:
        raise CorpusError(path, f"abstract is {len(abstract):,} characters (limit {MAX_ABSTRACT_CHARS:,})", line)

    def read(name: str, parse: Callable[[Any], _T], value: Any) -> _T | None:
        """The field as ``parse`` reads it, or None once its problem is recorded in ``dropped``."""
        try:
            return parse(value)
        except ValueError as error:
            if dropped is None:
                raise CorpusError(path, str(error), line) from None
            dropped.append(DroppedField(path, line, name, str(error)))
            return None

    names = read("authors", lambda value: _as_list(value, r"\s*(?:,|\band\b)\s*"), authors) or ()
    published = read("year", _as_year, year)
    tags = read("categories", lambda value: _as_list(value, r"[\s,;]+"), categories) or ()
    url = read("url", _as_url, url)
    doi = read("doi", _as_doi, doi)
    given = clean(str(paper_id)) if paper_id not in (None, "") else ""
    if keep_id and given:
        pid = given
    else:
        found = arxiv_id(doi) if doi else None  # arXiv's own DOI names the preprint: it is the arXiv id
        if doi is None or found is not None:
            found = found or next((a for v in (given, url) if isinstance(v, str) and (a := arxiv_id(v))), None)
        pid = f"arxiv:{found}" if found else f"doi:{doi}" if doi else (given or title_id(title))
    return Paper(
        paper_id=pid,
        title=title,
        passages=((Passage(abstract, abstract_page, ABSTRACT),) if abstract else ()) + tuple(body),
        authors=names,
        year=published,
        categories=tags,
        url=url,
        venue=clean(venue) or None if isinstance(venue, str) else None,
        doi=doi,
        kind=clean(kind).lower() or None if isinstance(kind, str) else None,
        file=file,
    )


def _blank(value: Any) -> bool:
    """A field that is absent rather than unreadable: None, or a string of nothing but whitespace."""
    return value is None or (isinstance(value, str) and not value.strip())


def _shown(value: Any) -> str:
    return repr(str(value)[:40])


def _as_list(value: Any, separator: str) -> tuple[str, ...]:
    """Names or keywords from a separated string or a list (of strings, or of name parts as arXiv lists them)."""
    if _blank(value):
        return ()
    if isinstance(value, str):
        items = re.split(separator, value)
    elif not isinstance(value, list):
        raise ValueError(f"expected a list or a string, got {type(value).__name__} {_shown(value)}")
    elif odd := [item for item in value if not isinstance(item, str | list)]:
        raise ValueError(f"expected a list of strings, got one holding {type(odd[0]).__name__} {_shown(odd[0])}")
    else:
        items = [item if isinstance(item, str) else " ".join(map(str, item)) for item in value]
    return tuple(cleaned for item in items if (cleaned := clean(item)))


def _as_year(value: Any) -> int | None:
    """The year a date starts with ("2017", "2017-06-12", 2017)."""
    if _blank(value):
        return None
    match = re.match(r"^\s*(\d{4})", str(value))
    if not match:
        raise ValueError(f"cannot read a year from {_shown(value)}")
    return int(match.group(1))


def _as_doi(value: Any) -> str | None:
    """The DOI of a DOI field (see :func:`doi_of`)."""
    if _blank(value):
        return None
    found = doi_of(value) if isinstance(value, str) else None
    if found is None:
        raise ValueError(f"not a DOI: {_shown(value)}")
    return found


def _as_url(value: Any) -> str | None:
    """A URL field's URL, as written: anything with a scheme or a host name, so that no real URL is refused."""
    if _blank(value):
        return None
    if not isinstance(value, str) or not _URL.match(value.strip()):
        raise ValueError(f"not a URL: {_shown(value)}")
    return clean(value)


def evidence_sentences(paper: Paper) -> list[Passage]:
    """The sentences of the paper's passages that can serve as evidence, each with its passage's page and section
    (a passage with none: the whole passage); instructions planted in a paper are never evidence."""
    sentences: list[Passage] = []
    for passage in paper.passages:
        found = [text for text in split_sentences(passage.text) if len(text) > 15 and not INSTRUCTION_LIKE.search(text)]
        sentences += [Passage(text, passage.page, passage.section) for text in found or [passage.text]]
    return sentences


def pieces(title: str, sentences: Sequence[Passage]) -> list[str]:
    """What a paper is scored and checked against, one forward pass each: its title and its evidence sentences
    (:func:`evidence_sentences`); the embedder truncates long texts, and a whole abstract outruns it."""
    return [title, *(sentence.text for sentence in sentences)]


class PaperView:
    """What a view of a paper (a hit, a source) reads through to its paper."""

    paper: Paper

    @property
    def paper_id(self) -> str:
        return self.paper.paper_id

    @property
    def title(self) -> str:
        return self.paper.title


@dataclass(frozen=True)
class Chunk:
    """One row of the store: a paper's ``index``-th chunk, a piece of one passage."""

    index: int
    passage: Passage


@dataclass
class Hit(PaperView):
    """One paper in a result list: the paper as its rows record it and the chunks retrieval found, best first."""

    rank: int
    paper: Paper  # read from the row metadata: no passages
    score: float  # fused (or single retriever's) score: what the relevance gate's retrieval ratio reads
    chunks: tuple[Chunk, ...]
    abstract_chunks: int  # how many of the paper's chunks (the first ones) hold its abstract
    rerank_score: float | None = None  # the rerank stage's score, when it ordered the list

    @property
    def text(self) -> str:
        """The best-matching chunk."""
        return self.chunks[0].passage.text

    @property
    def body_chunks(self) -> tuple[Chunk, ...]:
        """The retrieved chunks after the abstract, in reading order."""
        return tuple(sorted((c for c in self.chunks if c.index >= self.abstract_chunks), key=lambda c: c.index))

    def as_json(self) -> dict[str, Any]:
        best = self.chunks[0].passage
        where = {"page": best.page, "section": best.section} if best.page is not None else {}  # a full text's
        return {
            "rank": self.rank, "paper_id": self.paper_id, "title": self.title, "score": self.score, "text": self.text,
            "rerank_score": self.rerank_score, **where,
        }  # fmt: skip


@dataclass
class Source(PaperView):
    """A numbered source: what the answer may cite as [n]. ``paper`` carries the passages evidence read of it (the
    abstract, then the body passages retrieval found): everything a citation of it may rest on."""

    n: int
    paper: Paper
    score: float  # the gate's probability that the paper bears on the question
    quoted: list[Passage] = field(default_factory=list)  # the quoted sentences, in the paper's order
    positions: list[int] = field(default_factory=list)  # where each quoted sentence sits among the paper's sentences
    best: str = ""  # the sentence closest to the question

    @property
    def sentences(self) -> list[str]:
        return [passage.text for passage in self.quoted]

    @property
    def pages(self) -> list[int | None]:
        """The page of each quoted sentence (None for text without pages, such as an abstract from an export)."""
        return [passage.page for passage in self.quoted]

    @property
    def quote(self) -> str:
        """The quoted sentences as a reader checks them: in the paper's order, with "…" where sentences are skipped
        (when their places are known)."""
        parts: list[str] = []
        for i, sentence in enumerate(self.sentences):
            if i and self.positions and self.positions[i] != self.positions[i - 1] + 1:
                parts.append("…")
            parts.append(sentence)
        return " ".join(parts)

    @property
    def checkable_text(self) -> str:
        """The title and every passage read: what a claim citing this source is checked against."""
        return " ".join([f"{self.title}.", *(passage.text for passage in self.paper.passages)])
