"""Corpus readers: every supported file format becomes a stream of :class:`Paper`.

Readers stream line by line (a 2-million-line arXiv snapshot is never held whole) and raise
:class:`~rag.errors.CorpusError` naming the file and line of the first problem.
"""

import csv
import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from rag.errors import CorpusError

Format = Literal["auto", "seed", "jsonl", "csv", "beir", "arxiv"]
FORMATS: tuple[str, ...] = get_args(Format)

MAX_TITLE_CHARS = 1_000
MAX_ABSTRACT_CHARS = 200_000
BUNDLED_CORPUS = Path(__file__).parent / "assets" / "trending_papers.txt"

_ARXIV_ID = re.compile(r"^(?:arxiv:)?(\d{4}\.\d{4,5}|[a-z-]+(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?$", re.IGNORECASE)
_ARXIV_URL = re.compile(r"arxiv\.org/(?:abs|pdf)/([^\s?#]+?)(?:v\d+)?(?:\.pdf)?(?:[?#].*)?$", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SEED_JUNK = re.compile(r"^get trending papers in your email inbox", re.IGNORECASE)
_SEED_SUBSCRIBE = re.compile(r"^Subscribe(?=\S)")


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
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def content_hash(self) -> str:
        """Changes whenever anything that is indexed about the paper changes."""
        payload = [self.title, self.abstract, list(self.authors), self.year, list(self.categories), self.url]
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()[:16]


def normalise_title(title: str) -> str:
    """Case- and whitespace-insensitive form used to match titles (ids, gold sets)."""
    return " ".join(unicodedata.normalize("NFKC", title).lower().split())


def title_id(title: str) -> str:
    """A stable id for a paper that has no identifier of its own."""
    return "t-" + hashlib.sha1(normalise_title(title).encode()).hexdigest()[:16]


def arxiv_id(value: str) -> str | None:
    """The version-less arXiv id in an id or an arxiv.org URL, if there is one."""
    value = value.strip()
    match = _ARXIV_ID.match(value)
    if match:
        return match.group(1)
    match = _ARXIV_URL.search(value)
    return match.group(1) if match else None


def _clean(text: str) -> str:
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
    keep_id: bool = False,
) -> Paper:
    """Validate and normalise one record. ``keep_id`` keeps a given id verbatim (BEIR qrels refer to it)."""
    path, line = where
    if not isinstance(title, str) or not title.strip():
        raise CorpusError(path, "record has no title", line)
    if not isinstance(abstract, str) or not abstract.strip():
        raise CorpusError(path, "record has no abstract/text", line)
    title, abstract = _clean(title), _clean(abstract)
    if len(title) > MAX_TITLE_CHARS:
        raise CorpusError(path, f"title is {len(title):,} characters (limit {MAX_TITLE_CHARS:,})", line)
    if len(abstract) > MAX_ABSTRACT_CHARS:
        raise CorpusError(path, f"abstract is {len(abstract):,} characters (limit {MAX_ABSTRACT_CHARS:,})", line)
    given = _clean(str(paper_id)) if paper_id not in (None, "") else ""
    if keep_id and given:
        pid = given
    else:
        pid_arxiv = arxiv_id(given) if given else None
        if pid_arxiv is None and isinstance(url, str):
            pid_arxiv = arxiv_id(url)
        pid = f"arxiv:{pid_arxiv}" if pid_arxiv else (given or title_id(title))
    return Paper(
        paper_id=pid,
        title=title,
        abstract=abstract,
        authors=_as_list(authors, r"\s*(?:,|\band\b)\s*", where),
        year=_as_year(year, where),
        categories=_as_list(categories, r"[\s,;]+", where),
        url=_clean(url) if isinstance(url, str) and url.strip() else None,
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
    return tuple(cleaned for item in items if (cleaned := _clean(item)))


def _as_year(value: Any, where: tuple[Path, int]) -> int | None:
    if value in (None, ""):
        return None
    match = re.match(r"^\s*(\d{4})", str(value))
    if not match:
        raise CorpusError(where[0], f"cannot read a year from {str(value)[:40]!r}", where[1])
    return int(match.group(1))


def _lines(path: Path) -> Iterator[tuple[int, str]]:
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


def _read_seed(path: Path) -> Iterator[Paper]:
    """The trending-papers page: a title line, then an abstract line; page junk and a glued 'Subscribe' dropped."""
    title: tuple[int, str] | None = None
    for number, line in _lines(path):
        text = line.strip()
        if not text or _SEED_JUNK.match(text):
            continue
        if title is None:
            title = (number, _SEED_SUBSCRIBE.sub("", text))
            if len(title[1]) > MAX_TITLE_CHARS:
                raise CorpusError(path, "title line too long: are title and abstract lines out of step?", number)
            continue
        yield make_paper((path, title[0]), title=title[1], abstract=text)
        title = None
    if title is not None:
        raise CorpusError(path, "title without an abstract (odd number of lines)", title[0])


def _json_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise CorpusError(path, f"not valid JSON ({error.msg})", number) from None
        if not isinstance(record, dict):
            raise CorpusError(path, f"expected a JSON object, got {type(record).__name__}", number)
        yield number, record


def _first(record: dict[str, Any], *keys: str) -> Any:
    return next((record[key] for key in keys if record.get(key) not in (None, "")), None)


def _read_jsonl(path: Path) -> Iterator[Paper]:
    for number, record in _json_records(path):
        yield make_paper(
            (path, number),
            title=record.get("title"),
            abstract=_first(record, "abstract", "text", "summary"),
            paper_id=_first(record, "paper_id", "id", "arxiv_id", "doi"),
            authors=record.get("authors"),
            year=_first(record, "year", "published", "date", "update_date"),
            categories=_first(record, "categories", "category", "tags"),
            url=record.get("url"),
        )


def _read_arxiv(path: Path) -> Iterator[Paper]:
    """The arXiv metadata snapshot (Kaggle's arxiv-metadata-oai-snapshot.json)."""
    for number, record in _json_records(path):
        if not record.get("id"):
            raise CorpusError(path, "arXiv record has no id", number)
        yield make_paper(
            (path, number),
            title=record.get("title"),
            abstract=record.get("abstract"),
            paper_id=f"arxiv:{record['id']}",
            authors=record.get("authors"),
            year=record.get("update_date"),
            categories=record.get("categories"),
            url=f"https://arxiv.org/abs/{record['id']}",
        )


def _read_beir(path: Path) -> Iterator[Paper]:
    """A BEIR ``corpus.jsonl``: ids are kept verbatim so qrels still refer to them."""
    for number, record in _json_records(path):
        doc_id = _first(record, "_id", "id")
        if doc_id is None:
            raise CorpusError(path, "BEIR record has no _id/id", number)
        text = record.get("text")
        title = record.get("title") or (text.split(". ")[0][:200] if isinstance(text, str) else None)
        yield make_paper((path, number), title=title, abstract=text, paper_id=doc_id, keep_id=True)


def _read_csv(path: Path) -> Iterator[Paper]:
    lines = _lines(path)
    header_line = next(((n, line) for n, line in lines if line.strip()), None)
    if header_line is None:
        raise CorpusError(path, "empty file")
    header = [name.strip().lower() for name in next(csv.reader([header_line[1]]))]
    text_column = next((c for c in ("abstract", "text", "summary") if c in header), None)
    missing = [name for name, ok in (("title", "title" in header), ("abstract", text_column)) if not ok]
    if missing:
        raise CorpusError(path, f"CSV header lacks column(s) {', '.join(missing)}; found {header}", header_line[0])
    # csv handles quoted newlines itself, so feed it the rest of the lines as one stream, tracking line numbers.
    reader = csv.DictReader((line + "\n" for _, line in lines), fieldnames=header, strict=True)
    try:
        for row in reader:
            number = header_line[0] + reader.line_num
            if None in row:
                raise CorpusError(
                    path, f"row has {len(header) + len(row[None])} fields, header has {len(header)}", number
                )
            yield make_paper(
                (path, number),
                title=row.get("title"),
                abstract=row.get(text_column),
                paper_id=_first(row, "paper_id", "id", "arxiv_id", "doi"),
                authors=row.get("authors"),
                year=_first(row, "year", "published", "date", "update_date"),
                categories=_first(row, "categories", "category", "tags"),
                url=row.get("url"),
            )
    except csv.Error as error:
        raise CorpusError(path, f"malformed CSV ({error})", header_line[0] + reader.line_num) from None


READERS: dict[str, Callable[[Path], Iterator[Paper]]] = {
    "seed": _read_seed,
    "jsonl": _read_jsonl,
    "csv": _read_csv,
    "beir": _read_beir,
    "arxiv": _read_arxiv,
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
    """Guess the format from the first non-blank line (and the extension for JSON lines and CSV)."""
    with path.open("rb") as handle:
        head = handle.read(65_536)
    if b"\x00" in head:
        line = head[: head.index(b"\x00")].count(b"\n") + 1
        raise CorpusError(path, "binary data (NUL byte), not a text corpus", line)
    first = next((line for line in head.decode("utf-8", errors="replace").splitlines() if line.strip()), None)
    if first is None:
        raise CorpusError(path, "empty file (only blank lines)")
    first = first.lstrip("\ufeff").strip()
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


def read_corpus(path: Path, fmt: str = "auto") -> Iterator[Paper]:
    """Stream the papers of a corpus file (or BEIR folder) in the given or sniffed format."""
    if fmt not in FORMATS:
        raise CorpusError(path, f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "auto" and Path(path).is_dir():
        fmt = "beir"  # a folder is a BEIR benchmark: its corpus.jsonl is read with BEIR's ids
    path = resolve_path(Path(path), fmt)
    if fmt == "auto":
        fmt = sniff_format(path)
    papers = READERS[fmt](path)
    return _check_not_empty(path, papers)


def _check_not_empty(path: Path, papers: Iterator[Paper]) -> Iterator[Paper]:
    count = 0
    for paper in papers:
        count += 1
        yield paper
    if count == 0:
        raise CorpusError(path, "contains no papers")
