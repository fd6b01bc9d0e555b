"""A Zotero data directory (``zotero.sqlite`` and ``storage/``), read offline and read-only.

Zotero keeps its database open, and locked, while it runs: the database (with its journal or write-ahead log) is
copied byte for byte into a temporary folder and the copy is read; the original is never opened. Only tables and
columns that have been stable since Zotero 5.0 are read (items, itemData, creators, tags, collections,
itemAttachments, deletedItems), and the database's own ``compatibility`` version says whether this reader may read it,
as Zotero itself decides. Items stream in batches, so a library of any size takes one batch's memory.
"""

import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rag.errors import CorpusError
from rag.papers import Attached, DroppedField, Entry, Skipped, arxiv_id, make_paper
from rag.readers.exports import OUTSIDE_UPLOAD, arxiv_in_note, pdf_problem, within

DATABASE = "zotero.sqlite"
# Zotero 5.0 migrated every older database to user-data schema 80; Zotero raises 'compatibility' only when a change
# breaks older readers (9 in Zotero 7 and 8). 129 is the newest user-data schema this reader was tested with.
OLDEST_SCHEMA = 80
NEWEST_TESTED_SCHEMA = 129
MAX_COMPATIBILITY = 9
BATCH_ITEMS = 500
COPY_ATTEMPTS = 3

# The item types read by default: what a researcher cites. `--zotero-types` chooses others (webpages, blog posts…).
PAPER_TYPES = (
    "journalArticle",
    "conferencePaper",
    "preprint",
    "book",
    "bookSection",
    "thesis",
    "report",
    "manuscript",
    "document",
)
NEVER_PAPERS = frozenset({"note", "attachment", "annotation"})
# Zotero item types as BibTeX entry types (Paper.kind); every other type is misc.
_KINDS = {
    "journalArticle": "article",
    "conferencePaper": "inproceedings",
    "book": "book",
    "bookSection": "incollection",
    "thesis": "phdthesis",
    "report": "techreport",
    "manuscript": "unpublished",
}
# The fields that name where an item appeared, most specific first (Zotero's base field is publicationTitle).
_VENUES = (
    "publicationTitle",
    "proceedingsTitle",
    "conferenceName",
    "bookTitle",
    "university",
    "institution",
    "repository",
    "publisher",
)
_LINKED_FILE = 2
_IMPORTED = (0, 1)  # an imported file, an imported web page: both live in storage/<attachment key>/


@dataclass(frozen=True)
class ZoteroSelection:
    """What of a library to read: one collection (a path such as "Thesis/Chapter 2", sub-collections included) and
    the item types (None: :data:`PAPER_TYPES`)."""

    collection: str | None = None
    types: tuple[str, ...] | None = None


WHOLE_LIBRARY = ZoteroSelection()


def is_data_dir(path: Path) -> bool:
    return path.is_dir() and (path / DATABASE).is_file()


def read_zotero(
    path: Path, selection: ZoteroSelection = WHOLE_LIBRARY, pdfs_within: Path | None = None
) -> Iterator[Entry]:
    """The library's papers (with their PDFs as :class:`Attached`), and what was skipped and why; given
    ``pdfs_within`` (an upload's folder), a linked file outside it is not looked at."""
    root = path.parent if path.name == DATABASE else path
    if not is_data_dir(root):
        raise CorpusError(
            root,
            f"not a Zotero data directory (no {DATABASE}); Zotero shows its data directory under "
            "Settings → Advanced → Files and Folders",
        )
    with _snapshot(root / DATABASE) as db:
        yield from _Library(root, db, selection, pdfs_within).entries()


@contextmanager
def _snapshot(database: Path) -> Iterator[sqlite3.Connection]:
    """A connection to a copy of the database, never the original (which a running Zotero holds locked). A copy
    taken while Zotero was writing can be torn: it is checked and taken again."""
    with tempfile.TemporaryDirectory(prefix="rag-zotero-") as folder:
        copy = Path(folder) / DATABASE
        for attempt in range(1, COPY_ATTEMPTS + 1):
            for suffix in ("", "-journal", "-wal"):
                source = database.with_name(database.name + suffix)
                target = copy.with_name(copy.name + suffix)
                target.unlink(missing_ok=True)
                try:
                    shutil.copyfile(source, target)
                except FileNotFoundError:
                    if not suffix:
                        raise CorpusError(database, "no such file") from None
                except PermissionError:
                    raise CorpusError(database, "cannot be read: permission denied") from None
            connection = sqlite3.connect(copy)
            try:
                check = connection.execute("PRAGMA quick_check").fetchone()
                if check and check[0] == "ok":
                    break
                problem = str(check[0]) if check else "no answer"
            except sqlite3.DatabaseError as error:
                problem = str(error)
            connection.close()
            if attempt == COPY_ATTEMPTS:
                raise CorpusError(
                    database,
                    f"is not a readable SQLite database ({problem}); if Zotero was saving, try again, "
                    "or close Zotero first",
                )
            time.sleep(0.5 * attempt)
        try:
            yield connection
        finally:
            connection.close()


class _Library:
    """One snapshot of a library: its schema checked, its collections known, its items read batch by batch."""

    def __init__(
        self, root: Path, db: sqlite3.Connection, selection: ZoteroSelection, pdfs_within: Path | None
    ) -> None:
        self.root, self.db, self.selection, self.pdfs_within = root, db, selection, pdfs_within
        self.where = root / DATABASE
        self._check_schema()
        self.paths = self._collection_paths()
        self.chosen = self._chosen_collections()
        self.types = self._chosen_types()

    def _check_schema(self) -> None:
        try:
            versions = dict(self.db.execute("SELECT schema, version FROM version").fetchall())
        except sqlite3.DatabaseError:
            raise CorpusError(self.where, "is not a Zotero database (it has no version table)") from None
        userdata = int(versions.get("userdata") or 0)
        compatibility = int(versions.get("compatibility") or 0)
        if userdata < OLDEST_SCHEMA:
            raise CorpusError(
                self.where,
                f"is a Zotero database of schema {userdata}, older than Zotero 5.0 ({OLDEST_SCHEMA}): open it "
                "once in a current Zotero, which upgrades it",
            )
        if compatibility > MAX_COMPATIBILITY:
            raise CorpusError(
                self.where,
                f"is from a newer Zotero than this reader knows (compatibility {compatibility} > "
                f"{MAX_COMPATIBILITY}; user-data schema {userdata}): this reads Zotero 5.0 to 8 databases "
                f"(schema {OLDEST_SCHEMA} to {NEWEST_TESTED_SCHEMA}, compatibility up to {MAX_COMPATIBILITY})",
            )

    def _collection_paths(self) -> dict[int, str]:
        """Each collection's path from its library's root ("Thesis/Chapter 2"), from the parent links."""
        rows = self.db.execute("SELECT collectionID, collectionName, parentCollectionID FROM collections").fetchall()
        parents = {cid: (name, parent) for cid, name, parent in rows}
        paths: dict[int, str] = {}

        def path_of(cid: int, depth: int = 0) -> str:
            if cid not in paths:
                name, parent = parents[cid]
                name = str(name).replace("/", "∕")  # a slash inside a name would read as a level
                above = path_of(parent, depth + 1) if parent in parents and depth < 100 else ""
                paths[cid] = f"{above}/{name}" if above else name
            return paths[cid]

        for cid in parents:
            path_of(cid)
        return paths

    def _chosen_collections(self) -> set[int] | None:
        wanted = self.selection.collection
        if wanted is None:
            return None
        wanted = "/".join(part.strip() for part in wanted.strip("/").split("/"))
        roots = [cid for cid, path in self.paths.items() if path.casefold() == wanted.casefold()]
        if not roots:
            tops = sorted({path.split("/")[0] for path in self.paths.values()})
            known = f"its top-level collections: {', '.join(tops)}" if tops else "it has no collections"
            raise CorpusError(self.where, f"no collection {wanted!r} ({known})")
        below = [path for cid, path in self.paths.items() if cid in roots]
        return {cid for cid, path in self.paths.items() if any(path == p or path.startswith(p + "/") for p in below)}

    def _chosen_types(self) -> frozenset[str]:
        known = {str(name) for (name,) in self.db.execute("SELECT typeName FROM itemTypesCombined")}
        if self.selection.types is None:
            return frozenset(PAPER_TYPES)
        if self.selection.types == ("all",):
            return frozenset(known - NEVER_PAPERS)
        unknown = sorted(set(self.selection.types) - known)
        if unknown:
            raise CorpusError(
                self.where,
                f"--zotero-types: no item type {', '.join(map(repr, unknown))} in this library; its types: "
                + ", ".join(sorted(known - NEVER_PAPERS)),
            )
        return frozenset(self.selection.types)

    def entries(self) -> Iterator[Entry]:
        last = -1
        while True:
            rows = self.db.execute(
                f"""SELECT i.itemID, i.key, i.libraryID, t.typeName FROM items i
                JOIN itemTypesCombined t ON t.itemTypeID = i.itemTypeID
                JOIN libraries l ON l.libraryID = i.libraryID
                WHERE i.itemID > ? AND l.type != 'feed'
                AND i.itemID NOT IN (SELECT itemID FROM itemAttachments WHERE parentItemID IS NOT NULL)
                AND i.itemID NOT IN (SELECT itemID FROM itemNotes WHERE parentItemID IS NOT NULL)
                AND i.itemID NOT IN (SELECT itemID FROM itemAnnotations)
                ORDER BY i.itemID LIMIT {BATCH_ITEMS}""",
                (last,),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield from self._batch(rows)

    def _batch(self, rows: Sequence[tuple[int, str, int, str]]) -> Iterator[Entry]:
        ids = [row[0] for row in rows]
        marks = ",".join("?" * len(ids))
        fields: dict[int, dict[str, str]] = {}
        for item, name, value in self.db.execute(
            f"""SELECT d.itemID, f.fieldName, v.value FROM itemData d
            JOIN fieldsCombined f ON f.fieldID = d.fieldID JOIN itemDataValues v ON v.valueID = d.valueID
            WHERE d.itemID IN ({marks})""",
            ids,
        ):
            fields.setdefault(item, {})[str(name)] = str(value)
        creators: dict[int, list[tuple[str, str]]] = {}
        for item, first, last, mode, role in self.db.execute(
            f"""SELECT ic.itemID, c.firstName, c.lastName, c.fieldMode, ct.creatorType FROM itemCreators ic
            JOIN creators c ON c.creatorID = ic.creatorID JOIN creatorTypes ct ON ct.creatorTypeID = ic.creatorTypeID
            WHERE ic.itemID IN ({marks}) ORDER BY ic.itemID, ic.orderIndex""",
            ids,
        ):
            name = str(last or "") if mode == 1 else " ".join(str(p).strip() for p in (first, last) if p)
            creators.setdefault(item, []).append((str(role), name.strip()))
        tags: dict[int, list[str]] = {}
        for item, name in self.db.execute(
            f"SELECT it.itemID, t.name FROM itemTags it JOIN tags t ON t.tagID = it.tagID WHERE it.itemID IN ({marks})"
            " ORDER BY t.name",
            ids,
        ):
            tags.setdefault(item, []).append(str(name))
        collections: dict[int, list[int]] = {}
        for item, cid in self.db.execute(
            f"SELECT itemID, collectionID FROM collectionItems WHERE itemID IN ({marks})", ids
        ):
            collections.setdefault(item, []).append(cid)
        trashed = {
            item for (item,) in self.db.execute(f"SELECT itemID FROM deletedItems WHERE itemID IN ({marks})", ids)
        }
        files: dict[int, list[tuple[str, int, str | None, str | None]]] = {}
        for item, parent, key, mode, content_type, raw in self.db.execute(
            f"""SELECT a.itemID, a.parentItemID, i.key, a.linkMode, a.contentType, a.path FROM itemAttachments a
            JOIN items i ON i.itemID = a.itemID
            WHERE (a.parentItemID IN ({marks}) OR a.itemID IN ({marks}))
            AND a.itemID NOT IN (SELECT itemID FROM deletedItems)
            ORDER BY i.dateAdded, a.itemID""",
            ids + ids,
        ):
            files.setdefault(parent if parent is not None else item, []).append((str(key), mode, content_type, raw))
        for item, key, library, kind in rows:
            chosen = self.chosen
            if chosen is not None and not chosen & set(collections.get(item, [])):
                continue
            label = f"item {key}"
            if title := fields.get(item, {}).get("title"):
                label += f" ({title[:80]!r})"
            if item in trashed:
                yield Skipped(self.where, item, "trashed", f"{label} is in the trash")
            elif kind == "note":
                yield Skipped(self.where, item, "note", f"{label} is a note")
            elif kind == "attachment":
                yield from self._standalone(item, key, library, fields.get(item, {}), files.get(item, []), label)
            elif kind not in self.types:
                yield Skipped(self.where, item, "not_a_paper", f"{label} is a {kind}: --zotero-types {kind} reads it")
            else:
                categories = [*tags.get(item, []), *self._with_ancestors(collections.get(item, []))]
                yield from self._paper(
                    item, key, library, kind, fields.get(item, {}), creators.get(item, []), categories,
                    files.get(item, []), label,
                )  # fmt: skip

    def _with_ancestors(self, collection_ids: list[int]) -> list[str]:
        """The item's collection paths and every collection above them: a filter on "Thesis" finds the papers of
        "Thesis/Chapter 2" too."""
        found: dict[str, None] = {}
        for cid in collection_ids:
            parts = self.paths[cid].split("/")
            found.update(dict.fromkeys("/".join(parts[: n + 1]) for n in range(len(parts))))
        return list(found)

    def _paper(
        self,
        item: int,
        key: str,
        library: int,
        kind: str,
        fields: dict[str, str],
        creators: list[tuple[str, str]],
        categories: list[str],
        files: list[tuple[str, int, str | None, str | None]],
        label: str,
    ) -> Iterator[Entry]:
        where = (self.where, item)
        pdf, missing = self._pdf(files)
        abstract = fields.get("abstractNote", "")
        if not abstract.strip() and pdf is None:
            why = f" ({'; '.join(missing)})" if missing else ""
            yield Skipped(self.where, item, "no_abstract", f"{label} has neither an abstract nor a PDF on disk{why}")
            return
        yield from (DroppedField(self.where, item, "attachment", f"{label}: {why}") for why in missing)
        authors = [name for role, name in creators if role == "author" and name] or [n for _, n in creators if n]
        found = arxiv_id(fields.get("archiveID", "")) or arxiv_in_note(fields.get("extra"))
        dropped: list[DroppedField] = []
        try:
            paper = make_paper(
                where,
                title=fields.get("title"),
                abstract=abstract,
                paper_id=f"arxiv:{found}" if found else _item_id(key, library),
                authors=authors,
                year=_year(fields.get("date")),
                categories=categories,
                url=fields.get("url"),
                venue=next((fields[name] for name in _VENUES if fields.get(name, "").strip()), None),
                doi=fields.get("DOI"),
                kind=_KINDS.get(kind, "misc"),
                body_follows=pdf is not None,
                dropped=dropped,
            )
        except CorpusError as error:
            yield Skipped(self.where, item, "malformed", f"{label}: {str(error).split(': ', 2)[-1]}")
            return
        yield from (DroppedField(d.path, d.line, d.field, f"{label}: {d.detail}") for d in dropped)
        yield paper if pdf is None else Attached(paper, pdf)

    def _standalone(
        self,
        item: int,
        key: str,
        library: int,
        fields: dict[str, str],
        files: list[tuple[str, int, str | None, str | None]],
        label: str,
    ) -> Iterator[Entry]:
        """A PDF added to the library without a parent item: a paper whose title and authors come from the PDF."""
        pdf, missing = self._pdf(files)
        if pdf is None:
            if missing:
                yield Skipped(self.where, item, "unreadable", f"{label}: {'; '.join(missing)}")
            else:
                yield Skipped(self.where, item, "not_a_paper", f"{label} is an attachment that is not a PDF")
            return
        title = fields.get("title") or pdf.stem
        paper = make_paper(
            (self.where, item), title=title, abstract="", paper_id=_item_id(key, library), body_follows=True
        )
        yield Attached(paper, pdf, title_from_pdf=True)

    def _pdf(self, files: list[tuple[str, int, str | None, str | None]]) -> tuple[Path | None, list[str]]:
        """The item's first PDF that is on disk, and why each PDF attachment before it could not be used."""
        missing: list[str] = []
        for key, mode, content_type, raw in files:
            if content_type != "application/pdf" or not raw:
                continue
            path, why = self._file_of(key, mode, raw)
            if path is not None:
                return path, missing
            missing.append(f"its PDF {raw!r} {why}")
        return None, missing

    def _file_of(self, key: str, mode: int, raw: str) -> tuple[Path | None, str]:
        if mode in _IMPORTED:
            folder = (self.root / "storage" / key).resolve()
            name = raw.removeprefix("storage:")
            path = (folder / name).resolve()
            if not path.is_relative_to(folder):
                return None, "points outside its storage folder: not read"
        elif mode == _LINKED_FILE:
            if raw.startswith("attachments:"):
                return None, "is relative to Zotero's linked-attachment base folder, which only Zotero knows: not read"
            path = Path(raw)
            if not path.is_absolute():
                return None, "is not an absolute path: not read"
        else:
            return None, "is a link, not a file"
        if not within(path, self.pdfs_within):
            return None, OUTSIDE_UPLOAD
        if not path.is_file():
            return None, "is not on disk (not downloaded or synced here?)"
        if problem := pdf_problem(path):
            return None, problem
        return path, ""


def _item_id(key: str, library: int) -> str:
    """A Zotero item's own id: its key, which stays when its fields change (a group library's item, by library)."""
    return f"zotero:{key}" if library == 1 else f"zotero:{library}/{key}"


def _year(date: str | None) -> str | None:
    """The year of Zotero's stored date ("2017-06-12 June 12, 2017", "0000-00-00 n.d."), or the date as typed when
    Zotero could not find a year in it (to be reported as unreadable)."""
    if not date:
        return None
    match = re.match(r"^(\d{4})-\d{2}-\d{2} (.*)$", date, re.S)
    if not match:
        return date
    return match.group(1) if match.group(1) != "0000" else match.group(2) or None


def _selected_types(value: str | None) -> tuple[str, ...] | None:
    """``--zotero-types`` as given: comma-separated Zotero item types, or "all"."""
    if value is None:
        return None
    return tuple(part.strip() for part in value.split(",") if part.strip()) or None


def selection(collection: str | None, types: str | None) -> ZoteroSelection:
    return ZoteroSelection(collection, _selected_types(types))
