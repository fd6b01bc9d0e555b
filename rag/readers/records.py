"""What every reader produces: :class:`Paper` (or :class:`Skipped`), built and validated by :func:`make_paper`."""

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rag.errors import CorpusError

MAX_TITLE_CHARS = 1_000
MAX_ABSTRACT_CHARS = 200_000

_ARXIV_ID = re.compile(r"^(?:arxiv:)?(\d{4}\.\d{4,5}|[a-z-]+(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?$", re.IGNORECASE)
_ARXIV_URL = re.compile(r"arxiv\.org/(?:abs|pdf)/([^\s?#]+?)(?:v\d+)?(?:\.pdf)?(?:[?#].*)?$", re.IGNORECASE)
_ARXIV_DOI = re.compile(r"^10\.48550/arxiv\.(.+)$", re.IGNORECASE)  # the DOI arXiv mints for each preprint
_DOI = re.compile(r"^(?:doi:\s*|https?://(?:dx\.)?doi\.org/)?(10\.\d{4,9}/\S+)$", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Paper:
    """One paper: the unit that is cited, counted and deduplicated."""

    paper_id: str
    title: str
    abstract: str
    authors: tuple[str, ...] = ()
    year: int | None = None
    categories: tuple[str, ...] = ()
    url: str | None = None
    venue: str | None = None  # journal, proceedings or publisher, as the reference manager had it
    doi: str | None = None  # lower-case, without a resolver prefix
    kind: str | None = None  # the BibTeX entry type (article, inproceedings, misc…) when the source says

    @property
    def content_hash(self) -> str:
        """Changes whenever anything that is indexed about the paper changes."""
        payload: list[Any] = [self.title, self.abstract, list(self.authors), self.year, list(self.categories), self.url]
        if self.venue or self.doi or self.kind:  # appended only when set: older papers keep their hash
            payload += [self.venue, self.doi, self.kind]
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Skipped:
    """An entry a reader passed over, and why: ingest counts them and names each malformed one's line."""

    path: Path
    line: int
    reason: Literal["no_abstract", "malformed"]
    detail: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.detail}"


Entry = Paper | Skipped


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
) -> Paper:
    """Validate and normalise one record. ``keep_id`` keeps a given id verbatim (BEIR qrels refer to it). Otherwise
    the id is the DOI (arXiv's own DOI as the arXiv id), else the arXiv id in the given id or URL, else the given id,
    else the title's hash: so the same paper from two exports is one paper."""
    path, line = where
    if not isinstance(title, str) or not title.strip():
        raise CorpusError(path, "record has no title", line)
    if not isinstance(abstract, str) or not abstract.strip():
        raise CorpusError(path, "record has no abstract/text", line)
    title, abstract = clean(title), clean(abstract)
    if len(title) > MAX_TITLE_CHARS:
        raise CorpusError(path, f"title is {len(title):,} characters (limit {MAX_TITLE_CHARS:,})", line)
    if len(abstract) > MAX_ABSTRACT_CHARS:
        raise CorpusError(path, f"abstract is {len(abstract):,} characters (limit {MAX_ABSTRACT_CHARS:,})", line)
    given = clean(str(paper_id)) if paper_id not in (None, "") else ""
    doi = doi_of(doi) if isinstance(doi, str) else None
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
        abstract=abstract,
        authors=_as_list(authors, r"\s*(?:,|\band\b)\s*", where),
        year=_as_year(year, where),
        categories=_as_list(categories, r"[\s,;]+", where),
        url=clean(url) if isinstance(url, str) and url.strip() else None,
        venue=clean(venue) or None if isinstance(venue, str) else None,
        doi=doi,
        kind=clean(kind).lower() or None if isinstance(kind, str) else None,
    )


def _as_list(value: Any, separator: str, where: tuple[Path, int]) -> tuple[str, ...]:
    if value in (None, ""):
        return ()
    if isinstance(value, str):
        items = re.split(separator, value)
    elif isinstance(value, list):
        items = [item if isinstance(item, str) else " ".join(map(str, item)) for item in value]
    else:
        raise CorpusError(where[0], f"expected a list or a string, got {type(value).__name__}", where[1])
    return tuple(cleaned for item in items if (cleaned := clean(item)))


def _as_year(value: Any, where: tuple[Path, int]) -> int | None:
    if value in (None, ""):
        return None
    match = re.match(r"^\s*(\d{4})", str(value))
    if not match:
        raise CorpusError(where[0], f"cannot read a year from {str(value)[:40]!r}", where[1])
    return int(match.group(1))


def lines(path: Path) -> Iterator[tuple[int, str]]:
    """Decoded lines with 1-based numbers; a line that is not UTF-8 is an error naming that line."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if b"\x00" in raw:
                raise CorpusError(path, "binary data (NUL byte), not a text corpus", number)
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise CorpusError(path, f"not UTF-8 text (byte {error.start} of the line)", number) from None
            yield number, text.rstrip("\r\n")


def json_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The JSON objects of a JSON-lines file with their line numbers; a bad line is an error naming it."""
    for number, line in lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise CorpusError(path, f"not valid JSON ({error.msg})", number) from None
        if not isinstance(record, dict):
            raise CorpusError(path, f"expected a JSON object, got {type(record).__name__}", number)
        yield number, record


def first(record: dict[str, Any], *keys: str) -> Any:
    """The first of ``keys`` that the record has a non-empty value for."""
    return next((record[key] for key in keys if record.get(key) not in (None, "")), None)
