"""A Zotero data directory (``zotero.sqlite`` and ``storage/<KEY>/<file>``) built as Zotero itself writes one.

Zotero cannot be installed here, so the database is made from Zotero's own schema files (vendored, with their
source commits, in ``tests/data/zotero/``) by the steps of ``Zotero.Schema._initializeSchema()``, and every row is
written with the columns, ids, deduplication and encodings that Zotero's data layer (``item.js``, ``creators.js``,
``tags.js``, ``collection.js``, ``attachments.js``) uses. Two releases can be built:

- ``"7.0"``: Zotero 7.0.32 (userdata 123, compatibility 7, global schema 40, rollback journal): what users run.
- ``"head"``: Zotero's main branch at f2a42bec, 2026-08-21, the future 11.0 (userdata 129, compatibility 9,
  rollback journal replaced by WAL, normalised search columns, ``clientVersion`` counters). Its pinned global schema
  (45) is not available offline; version 41 (what Zotero 8 ships) stands in for it.

The reader must use ids looked up by name (``fields.fieldName``, ``itemTypes.typeName``): a new database numbers
fields in schema order, an upgraded one keeps the ids of the release that first made it.
"""

from __future__ import annotations

import html
import json
import random
import re
import shutil
import sqlite3
import tempfile
import time
import unicodedata
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePath

from tests.pdfs import latex_paper

DATA = Path(__file__).resolve().parent / "data" / "zotero"
KEY_CHARS = "23456789ABCDEFGHIJKLMNPQRSTUVWXYZ"
USER_LIBRARY = 1
# Zotero.Attachments.LINK_MODE_*
IMPORTED_FILE, IMPORTED_URL, LINKED_FILE, LINKED_URL, EMBEDDED_IMAGE = 0, 1, 2, 3, 4
ANNOTATION_HIGHLIGHT = 1
DEFAULT_COLOR = "#ffd400"
NOTE_PREFIX, NOTE_SUFFIX = '<div class="zotero-note znv1">', "</div>"
SYNC_OBJECT_ITEM = 3


@dataclass(frozen=True)
class Release:
    """What differs between the Zotero releases a data directory can come from."""

    name: str
    folder: Path
    client_version: str  # Zotero.version, stored in settings ('client', 'lastVersion' / 'lastCompatibleVersion')
    compatibility: int  # Zotero.Schema._maxCompatibility, stored as version 'compatibility'
    wal: bool  # db.js opens the database with PRAGMA journal_mode=WAL (persistent in the file)
    auto_vacuum: bool  # _initializeSchema() sets PRAGMA auto_vacuum = 1


RELEASES = {
    "7.0": Release("7.0", DATA / "7.0", "7.0.32", 7, wal=False, auto_vacuum=True),
    "head": Release("head", DATA / "head", "11.0.SOURCE", 9, wal=True, auto_vacuum=False),
}


def sql_version(release: Release, schema: str) -> int:
    """The version on the first line of a schema SQL file, as _getSchemaSQLVersion() reads it."""
    first = (release.folder / f"{schema}.sql").read_text().split("\n", 1)[0]
    match = re.match(r"^-- ([0-9]+)", first)
    if not match:
        raise ValueError(f"no version on the first line of {schema}.sql")
    return int(match.group(1))


def parse_sql_file(sql: str) -> list[str]:
    """Zotero.DBConnection.parseSQLFile(): comment lines dropped, lines joined without newlines, split on ';'
    (';---' protects the semicolons inside trigger bodies). sqlite_master then holds the same text as Zotero's."""
    lines = sql.strip().replace(";---", "TEMPSEMI").split("\n")
    joined = "".join(re.sub(r"^(.*?)(?:--.+)?$", r"\1", line) for line in lines if re.match(r"^[^-]", line))
    if joined.endswith(";"):
        joined = joined[:-1]
    return [statement.replace("TEMPSEMI", ";") for statement in joined.split(";")]


# ---------------------------------------------------------------------------------------------------------------
# Text as Zotero stores it: normalised search columns, note titles, multipart dates
# ---------------------------------------------------------------------------------------------------------------

_FORMAT_TAGS = re.compile(r'</?(?:i|b|sub|sup)>|<span (?:style="font-variant:small-caps;"|class="nocase")>|</span>')
_SEARCH_MAP = str.maketrans(
    {"ø": "o", "œ": "oe", "æ": "ae", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ß": "ss", "ı": "i", "⁄": "/"}
)


def normalize_for_search(text: str) -> str:
    """Zotero.Utilities.Internal.normalizeForSearch(): case- and accent-folded text for the *Normalized columns."""
    if "<" in text:
        text = _FORMAT_TAGS.sub("", text)
    text = re.sub("[\u0300-\u036f]", "", unicodedata.normalize("NFKD", text)).lower().translate(_SEARCH_MAP)
    text = re.sub("[\u2018\u2019\u201a\u201b\u2032]", "'", text)
    text = re.sub("[\u201c\u201d\u201e\u201f\u2033]", '"', text)
    text = re.sub("[\u2010\u2011\u2012\u2013\u2014\u2015\u2212]", "-", text)
    return unicodedata.normalize("NFC", text)


def normalize_for_search_storage(value: str | None) -> str | None:
    """normalizeForSearchStorage(): the folded form, or NULL where SQLite's LIKE would fold it alike (most values)."""
    if not value:
        return None
    normalized = normalize_for_search(value)
    return None if normalized == re.sub("[A-Z]", lambda m: m.group().lower(), value) else normalized


def note_to_title(text: str) -> str:
    """Zotero.Utilities.Item.noteToTitle(): the first line of the note's text, at most 120 characters."""
    original = text
    text = re.sub(r"(</(h\d|p|div)+>)", "\\1\n", text.strip())
    text = re.sub(r"<br\s*/?>", " ", text)
    text = html.unescape(re.sub(r"<[^>]*>", "", text))
    if re.match(r"^<[^>\n]+[^/]>\n", original):
        text = text.strip()
    title = text[:120]
    return title.split("\n", 1)[0]


_MONTHS = [
    *("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    *("january", "february", "march", "april", "may", "june", "july", "august", "september", "october"),
    *("november", "december"),
]  # dateFormats.json en-US, short then long, lowercased as Zotero.Date.init() joins them
_SLASH_RE = re.compile(
    r"^(.*?)\b([0-9]{1,4})(?:([\-/.\u5e74])([0-9]{1,2}))?(?:([\-/.\u6708])([0-9]{1,4}))?((?:\b|[^0-9]).*?)$", re.ASCII
)
_YEAR_RE = re.compile(
    r"^(.*?)\b((?:circa |around |about |c\.? ?)?[0-9]{1,4}"
    r"(?: ?B\.? ?C\.?(?: ?E\.?)?| ?C\.? ?E\.?| ?A\.? ?D\.?)|[0-9]{3,4})\b(.*?)$",
    re.IGNORECASE | re.ASCII,
)
_MONTH_RE = re.compile(r"(.*)(?:^|[\W\d_])(" + "|".join(_MONTHS) + r")[^ ]*(?: (.*)$|$)", re.IGNORECASE)
_DAY_RE = re.compile(r"\b([0-9]{1,2})(?:st|nd|rd|th)?\b(.*)", re.IGNORECASE | re.ASCII)
_BCE = r"B\.?\s?C\.?(?:\s?E\.?)?"
_CE = r"C\.?\s?E\.?|A\.?\s?D\.?"
_ERA_YEAR_RE = re.compile(rf"^(?:({_CE})\s*)?([0-9]{{1,4}})(?:\s*({_BCE}|{_CE}))?$", re.IGNORECASE)
_ERA_RANGE_RE = re.compile(
    rf"^(?:({_CE})\s*)?([0-9]{{1,4}})(?:\s*({_BCE}|{_CE}))?\s*-\s*([0-9]{{1,4}})(?:\s*({_BCE}|{_CE}))?$",
    re.IGNORECASE,
)
_ERA_MARKER_RE = re.compile(rf"[0-9]\s*(?:{_BCE}|{_CE})|(?:{_CE})\s*[0-9]", re.IGNORECASE)
_ERA_MARKERS_RE = re.compile(rf"{_BCE}|{_CE}", re.IGNORECASE)
_CIRCA_RE = re.compile(r"^(?:~|circa |ca\.? ?|c\. ?|about |around )\s*", re.IGNORECASE)
_EDTF_SHAPE_RE = re.compile(r"^-?[0-9]{4}[-0-9~?%]*(/-?[0-9]{4}[-0-9~?%]*)?$")


def _normalize_dashes(text: str) -> str:
    return re.sub("--+", "-", re.sub("[\u2013\u2014\u2212]", "-", text))


def _has_era_notation(text: str) -> bool:
    return bool(re.search(r"(?:^|/)-[0-9]", text)) or bool(
        _ERA_MARKER_RE.search(text) and re.match(r"^[-0-9T:+Z~?%/\s.]*$", _ERA_MARKERS_RE.sub("", text), re.I)
    )


def _era_to_edtf(text: str) -> str | None:
    match = _ERA_RANGE_RE.match(text) or _ERA_YEAR_RE.match(text)
    if not match:
        return None
    groups = [*match.groups(), None, None][:5]
    prefix, begin, begin_marker, end, end_marker = groups
    if prefix and begin_marker:
        return None
    begin_marker = prefix or begin_marker
    if not begin_marker and not end_marker:
        return None
    if re.fullmatch("0+", begin or "") or (end and re.fullmatch("0+", end)):
        return None

    def year(value: str, marker: str | None) -> str:
        return ("-" if marker and re.match(rf"^{_BCE}$", marker, re.I) else "") + value.rjust(4, "0")

    edtf = year(begin or "", begin_marker or end_marker)
    if end:
        edtf += "/" + year(end, end_marker or begin_marker)
    return edtf


def _parse_edtf(text: str) -> dict[str, int] | None:
    """Zotero.Date.parseEDTF(), returning only the beginning of the date, which is all strToMultipart() uses."""
    text = _normalize_dashes(text.strip())
    circa = bool(_CIRCA_RE.match(text))
    if circa:
        text = _CIRCA_RE.sub("", text, count=1)
    text = _era_to_edtf(text) or text
    if not re.match(r"^[-0-9]\S*$", text):
        return None
    text = re.sub(r"(^|/)-([0-9]{1,3})(?=[-~?%/]|$)", lambda m: m.group(1) + "-" + m.group(2).rjust(4, "0"), text)
    span = re.match(r"^([0-9]{4})-([0-9]{2}|[0-9]{4})$", text)
    if span:
        begin, end = int(span.group(1)), int(span.group(2))
        if len(span.group(2)) == 2:
            end = begin // 100 * 100 + end if end > 12 else 0
        if end > begin:
            text = span.group(1) + "/" + str(end).rjust(4, "0")
    if circa and not re.search(r"[~?%]$", text):
        text += "~"
    if not _EDTF_SHAPE_RE.match(text):
        return None

    def parse(part: str) -> dict[str, int] | None:
        m = re.match(r"^(-?[0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?([~?%])?$", part)
        if not m:
            return None
        date = {"year": int(m.group(1))}
        if m.group(2):
            month = int(m.group(2))
            if not 1 <= month <= 12:
                return None
            date["month"] = month - 1
            if m.group(3):
                day = int(m.group(3))
                leap = date["year"] % 4 == 0 and (date["year"] % 100 != 0 or date["year"] % 400 == 0)
                days = (29 if leap else 28) if month == 2 else 30 if month in (4, 6, 9, 11) else 31
                if not 1 <= day <= days:
                    return None
                date["day"] = day
        return date

    parts = text.split("/")
    begin_date = parse(parts[0])
    if begin_date is None:
        return None
    if len(parts) > 1:
        end_date = parse(parts[1])
        if end_date is None:
            return None

        def comparable(d: dict[str, int]) -> int:
            return d["year"] * 10000 + ((d["month"] + 1) * 100 if "month" in d else 0) + d.get("day", 0)

        if comparable(end_date) <= comparable(begin_date):
            return None
    return begin_date


def _insert_order(order: str, part: str, where: dict[str, object]) -> str:
    """_insertDateOrderPart()."""
    if not order:
        return part
    before, after = where.get("before"), where.get("after")
    if before is True:
        return part + order
    if after is True:
        return order + part
    if isinstance(before, str) and before:
        return order.replace(before, part + before, 1) if before in order else order
    if isinstance(after, str) and after:
        return order.replace(after, after + part, 1) if after in order else order + part
    return order + part


def str_to_date(text: str) -> dict[str, object]:
    """Zotero.Date.strToDate() for an en-US locale: year, month (0-based), day and the order they were written in."""
    date: dict[str, object] = {"order": ""}
    text = re.sub(r"[\xa0\r\n\s]+", " ", text).strip()
    if not text:
        return date
    parts: list[dict[str, object]] = []
    m = _SLASH_RE.match(text)
    if (
        m
        and ((not m[5] or not m[3]) or m[3] == m[5] or (m[3] == "\u5e74" and m[5] == "\u6708"))
        and ((m[2] and m[4] and m[6]) or (not m[1] and not m[7]))
    ):
        order = ""
        year: str | None
        month: str | None
        day: str | None
        if len(m[2]) in (3, 4) or m[3] == "\u5e74":
            year, month, day = m[2], m[4], m[6]
            order = ("y" if m[2] else "") + ("m" if m[4] else "") + ("d" if m[6] else "")
        elif m[2] and not m[4] and m[6]:
            month, year, day = m[2], m[6], None
            order = "my"
        else:  # US: month first
            month, day, year = m[2], m[4], m[6]
            order = ("m" if m[2] else "") + ("d" if m[4] else "") + ("y" if m[6] is not None else "")
        long_year = bool(year) and len(str(year)) > 2
        y = int(year) if year else None
        d = int(day) if day else None
        mo = int(month) if month else None
        if mo is not None and mo > 12:
            d, mo = mo, d
            order = order.replace("m", "D").replace("d", "M").replace("D", "d").replace("M", "m")
        if (not mo or mo <= 12) and (not d or d <= 31):
            if y and y < 100 and not long_year:
                now = datetime.now().year
                y = (now - now % 100) + y if y <= now % 100 else (now - now % 100 - 100) + y
            if y is not None:
                date["year"] = y
            if d is not None:
                date["day"] = d
            if mo:
                date["month"] = mo - 1
            date["order"] = order
            parts += [{"part": m[1], "before": True}, {"part": m[7]}]
        else:
            date = {"order": ""}
            parts.append({"part": text})
    else:
        parts.append({"part": text})

    if not date.get("year"):
        for i, part in enumerate(parts):
            ym = _YEAR_RE.match(str(part["part"]))
            if ym:
                date["year"] = ym[2]
                date["order"] = _insert_order(str(date["order"]), "y", part)
                parts[i : i + 1] = [{"part": ym[1], "before": True}, {"part": ym[3]}]
                break
    if "month" not in date:
        for i, part in enumerate(parts):
            mm = _MONTH_RE.match(str(part["part"]))
            if mm:
                date["month"] = _MONTHS.index(mm[2].lower()) % 12
                date["order"] = _insert_order(str(date["order"]), "m", part)
                parts[i : i + 1] = [{"part": mm[1], "before": "m"}, {"part": mm[3] or "", "after": "m"}]
                break
    if not date.get("day"):
        for i, part in enumerate(parts):
            dm = _DAY_RE.search(str(part["part"]))
            if dm and int(dm[1]) <= 31:
                date["day"] = int(dm[1])
                date["order"] = _insert_order(str(date["order"]), "d", part)
                rest = str(part["part"])[: dm.start()] + (" " + dm[2] if dm[2] else "") if dm.start() > 0 else dm[2]
                parts[i : i + 1] = [{"part": rest}]
                break
    rest = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", "".join(f"{p['part']} " for p in parts))
    if rest:
        date["part"] = rest
    if date.get("year") or date.get("year") == 0:
        date["year"] = str(date["year"])
    return date


def str_to_multipart(text: str) -> str:
    """Zotero.Date.strToMultipart(): what itemData holds for a date field, "2019-05-03 May 3, 2019" (sortable
    year-month-day, 00 for what is missing, then the date as the user typed it)."""
    if not text:
        return ""
    edtf = _parse_edtf(text)
    parts: dict[str, object]
    if edtf is not None:
        parts = dict(edtf)
    elif _has_era_notation(_CIRCA_RE.sub("", _normalize_dashes(text.strip()), count=1)):
        parts = {}
    else:
        parts = str_to_date(text)
    year = str(parts.get("year", "")) if parts.get("year") else ""
    if not re.fullmatch(r"[0-9]{1,4}", year):
        year = ""
    month = parts.get("month")
    day = parts.get("day")
    return (
        f"{year.rjust(4, '0') if year else '0000'}-"
        f"{str(int(str(month)) + 1).rjust(2, '0') if month is not None else '00'}-"
        f"{str(day).rjust(2, '0') if day else '00'} {text}"
    )


def utc_now() -> str:
    """Zotero.DB.transactionDateTime: UTC, to the second."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _Tx:
    """One write transaction: Zotero stamps every row of a transaction with the same time and client version."""

    conn: sqlite3.Connection
    now: str
    library_versions: dict[int, int] = field(default_factory=dict)


class ZoteroLibrary:
    """Writes a Zotero data directory row by row as Zotero's data layer does, one short sqlite3 connection per call
    (foreign keys on, Zotero's triggers in place), so a reader is tested against what it will meet."""

    def __init__(self, root: Path, release: str = "7.0") -> None:
        """Open ``root/zotero.sqlite``, creating it as a first start of Zotero ``release`` does if it is absent."""
        self.root = root
        self.db = root / "zotero.sqlite"
        self.storage = root / "storage"
        self.clock: Callable[[], str] = utc_now  # replace to control dateModified (Zotero's resolution: a second)
        self._rng = random.Random(0)  # keys are random in Zotero; seeded here so that a build is repeatable
        root.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        if not self.db.exists():
            self.release = RELEASES[release]
            self._initialize()
        else:
            self.release = self._detect_release(release)
        self._load_schema()

    # -- schema ---------------------------------------------------------------------------------------------------

    def _initialize(self) -> None:
        """Zotero.Schema._initializeSchema(), then what Zotero's first start adds (Users.init's localUserKey,
        migrateExtraFields() clearing its flag). Translator/style version rows need the bundled files: left out."""
        release = self.release
        schema = json.loads((release.folder / "schema.json").read_text())
        conn = sqlite3.connect(self.db, isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys=true")
            conn.execute("BEGIN")
            if release.auto_vacuum:
                conn.execute("PRAGMA auto_vacuum = 1")
            conn.execute("PRAGMA page_size = 4096")
            conn.execute("PRAGMA encoding = 'UTF-8'")
            for name in ("system", "userdata", "triggers"):
                for statement in parse_sql_file((release.folder / f"{name}.sql").read_text()):
                    if not statement:  # executeSQLFile() stops at the first empty statement
                        break
                    conn.execute(statement)
            self._update_global_schema(conn, schema)
            for name in ("system", "userdata", "triggers"):
                conn.execute("REPLACE INTO version (schema,version) VALUES (?,?)", (name, sql_version(release, name)))
            conn.execute(
                "INSERT INTO libraries (libraryID, type, editable, filesEditable) VALUES (?, 'user', 1, 1)", (1,)
            )
            conn.execute(
                "REPLACE INTO settings (setting, key, value) VALUES ('client', 'lastVersion', ?)",
                (release.client_version,),
            )
            conn.execute(
                "REPLACE INTO settings VALUES ('client', 'lastCompatibleVersion', ?)", (release.client_version,)
            )
            conn.execute("REPLACE INTO version (schema,version) VALUES (?,?)", ("compatibility", release.compatibility))
            conn.execute("COMMIT")
            # First start, after the schema: Zotero.Users.init() and Zotero.Schema.migrateExtraFields()
            conn.execute("BEGIN")
            key = "".join(self._rng.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(8))
            conn.execute("INSERT INTO settings VALUES ('account', 'localUserKey', ?)", (key,))
            conn.execute("DELETE FROM settings WHERE setting='globalSchema' AND key='migrateExtra'")
            conn.execute("COMMIT")
            if release.wal:
                conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()

    @staticmethod
    def _update_global_schema(conn: sqlite3.Connection, data: dict) -> None:
        """_updateGlobalSchema() on an empty database: ids are handed out in schema order (Zotero.ID: MAX+1)."""
        fields: dict[str, int] = {}
        creator_types: dict[str, int] = {}
        for item_type in data["itemTypes"]:
            for entry in item_type["fields"]:
                for name in (entry["field"], entry.get("baseField")):
                    if name and name not in fields:
                        fields[name] = len(fields) + 1
            for entry in item_type["creatorTypes"]:
                creator_types.setdefault(entry["creatorType"], len(creator_types) + 1)
        conn.executemany("INSERT INTO fields VALUES (?, ?, NULL)", [(i, n) for n, i in fields.items()])
        conn.executemany("INSERT INTO creatorTypes VALUES (?, ?)", [(i, n) for n, i in creator_types.items()])
        type_fields, base_mappings, type_creators = [], [], []
        for type_id, item_type in enumerate(data["itemTypes"], start=1):
            conn.execute("INSERT INTO itemTypes VALUES (?, ?, NULL, 1)", (type_id, item_type["itemType"]))
            for index, entry in enumerate(item_type["fields"]):
                type_fields.append((type_id, fields[entry["field"]], 0, index))
                if entry.get("baseField"):
                    base_mappings.append((type_id, fields[entry["baseField"]], fields[entry["field"]]))
            for entry in item_type["creatorTypes"]:
                type_creators.append((type_id, creator_types[entry["creatorType"]], 1 if entry.get("primary") else 0))
        conn.execute("DELETE FROM itemTypeFields")
        conn.execute("DELETE FROM baseFieldMappings")
        conn.execute("DELETE FROM itemTypeCreatorTypes")
        conn.executemany("INSERT INTO itemTypeFields VALUES (?, ?, ?, ?)", type_fields)
        conn.executemany("INSERT INTO baseFieldMappings VALUES (?, ?, ?)", base_mappings)
        conn.executemany("INSERT INTO itemTypeCreatorTypes VALUES (?, ?, ?)", type_creators)
        # The DB copy leaves out itemTypes (already in the tables); Zotero's also holds csl and locales, not vendored
        blob = zlib.compress(json.dumps({k: v for k, v in data.items() if k != "itemTypes"}).encode())
        conn.execute("REPLACE INTO settings VALUES ('globalSchema', 'data', ?)", (blob,))
        conn.execute("REPLACE INTO version (schema,version) VALUES (?,?)", ("globalSchema", int(data["version"])))
        # _reloadSchema() -> _updateCustomTables() (customIDOffset 10000; the custom tables are empty)
        conn.execute("DELETE FROM itemTypesCombined")
        conn.execute("DELETE FROM fieldsCombined")
        conn.execute("DELETE FROM itemTypeFieldsCombined")
        conn.execute("DELETE FROM baseFieldMappingsCombined")
        conn.execute(
            "INSERT INTO itemTypesCombined SELECT itemTypeID, typeName, display, 0 AS custom FROM itemTypes UNION "
            "SELECT customItemTypeID + 10000 AS itemTypeID, typeName, display, 1 AS custom FROM customItemTypes"
        )
        conn.execute(
            "INSERT INTO fieldsCombined SELECT fieldID, fieldName, NULL AS label, fieldFormatID, 0 AS custom FROM "
            "fields UNION SELECT customFieldID + 10000 AS fieldID, fieldName, label, NULL, 1 AS custom FROM customFields"
        )
        conn.execute(
            "INSERT INTO itemTypeFieldsCombined SELECT itemTypeID, fieldID, hide, orderIndex FROM itemTypeFields UNION "
            "SELECT customItemTypeID + 10000 AS itemTypeID, COALESCE(fieldID, customFieldID + 10000) AS fieldID, hide, "
            "orderIndex FROM customItemTypeFields"
        )
        conn.execute(
            "INSERT INTO baseFieldMappingsCombined SELECT itemTypeID, baseFieldID, fieldID FROM baseFieldMappings "
            "UNION SELECT customItemTypeID + 10000 AS itemTypeID, baseFieldID, customFieldID + 10000 AS fieldID "
            "FROM customBaseFieldMappings"
        )
        conn.execute("REPLACE INTO settings VALUES ('globalSchema', 'migrateExtra', 1)")

    def _detect_release(self, default: str) -> Release:
        conn = sqlite3.connect(self.db)
        try:
            row = conn.execute("SELECT version FROM version WHERE schema='userdata'").fetchone()
        finally:
            conn.close()
        for release in RELEASES.values():
            if row and sql_version(release, "userdata") == row[0]:
                return release
        return RELEASES[default]

    def _load_schema(self) -> None:
        """Names to ids, from the database itself (ids differ between a new and an upgraded database)."""
        meta = json.loads((self.release.folder / "schema.json").read_text())["meta"]
        conn = sqlite3.connect(self.db)
        try:
            self.item_types = dict(conn.execute("SELECT typeName, itemTypeID FROM itemTypes").fetchall())
            self.fields = dict(conn.execute("SELECT fieldName, fieldID FROM fields").fetchall())
            self.creator_types = dict(conn.execute("SELECT creatorType, creatorTypeID FROM creatorTypes").fetchall())
            self._type_fields: dict[int, set[int]] = {}
            for type_id, field_id in conn.execute("SELECT itemTypeID, fieldID FROM itemTypeFields"):
                self._type_fields.setdefault(type_id, set()).add(field_id)
            self._base_map = {
                (t, b): f for t, b, f in conn.execute("SELECT itemTypeID, baseFieldID, fieldID FROM baseFieldMappings")
            }
            self._type_creators: dict[int, dict[int, int]] = {}
            for type_id, creator_type, primary in conn.execute("SELECT * FROM itemTypeCreatorTypes"):
                self._type_creators.setdefault(type_id, {})[creator_type] = primary
            self._columns = {
                table: {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                for table in ("items", "itemDataValues", "creators", "tags", "collections", "itemAnnotations")
            }
        finally:
            conn.close()
        date_bases = {self.fields[n] for n, m in meta.get("fields", {}).items() if m.get("type") == "date"}
        self._date_fields = date_bases | {f for (_, b), f in self._base_map.items() if b in date_bases}

    # -- transactions and ids -------------------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[_Tx]:
        conn = sqlite3.connect(self.db, isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("BEGIN IMMEDIATE")
            yield _Tx(conn, self.clock())
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def _client_version(self, tx: _Tx, table: str, id_column: str, object_id: int, library_id: int) -> None:
        """Library.incrementClientVersion() (once a transaction) stamped on the saved object: 'head' only."""
        if "clientVersion" not in self._columns[table]:
            return
        if library_id not in tx.library_versions:
            tx.library_versions[library_id] = tx.conn.execute(
                "UPDATE libraries SET clientVersion = clientVersion + 1 WHERE libraryID=? RETURNING clientVersion",
                (library_id,),
            ).fetchone()[0]
        tx.conn.execute(
            f"UPDATE {table} SET clientVersion = ? WHERE {id_column}=?", (tx.library_versions[library_id], object_id)
        )

    @staticmethod
    def _next_id(conn: sqlite3.Connection, table: str, column: str) -> int:
        """Zotero.ID.get(): MAX(id) + 1."""
        return int(conn.execute(f"SELECT COALESCE(MAX({column}) + 1, 1) FROM {table}").fetchone()[0])

    def _new_key(self, conn: sqlite3.Connection, table: str, library_id: int) -> str:
        while True:
            key = "".join(self._rng.choice(KEY_CHARS) for _ in range(8))
            if not conn.execute(f"SELECT 1 FROM {table} WHERE libraryID=? AND key=?", (library_id, key)).fetchone():
                return key

    def _id(self, conn: sqlite3.Connection, key: str, library_id: int = USER_LIBRARY) -> int:
        row = conn.execute("SELECT itemID FROM items WHERE libraryID=? AND key=?", (library_id, key)).fetchone()
        if row is None:
            raise KeyError(f"no item {library_id}/{key}")
        return int(row[0])

    def _type_of(self, conn: sqlite3.Connection, item_id: int) -> str:
        row = conn.execute(
            "SELECT typeName FROM items JOIN itemTypes USING (itemTypeID) WHERE itemID=?", (item_id,)
        ).fetchone()
        return str(row[0])

    def item_id(self, key: str, library_id: int = USER_LIBRARY) -> int:
        """The itemID of a key (tests join on it)."""
        conn = sqlite3.connect(self.db)
        try:
            return self._id(conn, key, library_id)
        finally:
            conn.close()

    # -- rows -----------------------------------------------------------------------------------------------------

    def _insert_item(self, tx: _Tx, item_type: str, library_id: int) -> tuple[int, str]:
        """The items row of a new object (DataObject._saveData + Item._saveData)."""
        if item_type not in self.item_types:
            raise ValueError(f"unknown item type {item_type!r}")
        item_id = self._next_id(tx.conn, "items", "itemID")
        key = self._new_key(tx.conn, "items", library_id)
        tx.conn.execute(
            "INSERT INTO items (itemID, libraryID, key, clientDateModified, itemTypeID, dateAdded, dateModified) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (item_id, library_id, key, tx.now, self.item_types[item_type], tx.now, tx.now),
        )
        self._client_version(tx, "items", "itemID", item_id, library_id)
        if tx.conn.execute("SELECT type FROM libraries WHERE libraryID=?", (library_id,)).fetchone()[0] == "feed":
            tx.conn.execute("INSERT INTO feedItems (itemID, guid) VALUES (?, ?)", (item_id, f"urn:guid:{key}"))
        return item_id, key

    def _field_id(self, item_type_id: int, name: str) -> int:
        """Item.setField()'s checks: a known field, mapped to the type's own field (publicationTitle -> bookTitle)."""
        if name not in self.fields:
            raise ValueError(f'"{name}" is not a valid itemData field')
        field_id = self._base_map.get((item_type_id, self.fields[name]), self.fields[name])
        if field_id not in self._type_fields.get(item_type_id, set()):
            type_name = next(n for n, i in self.item_types.items() if i == item_type_id)
            raise ValueError(f"'{name}' is not a valid field for type '{type_name}'")
        return field_id

    def _field_value(self, tx: _Tx, field_id: int, value: str) -> str:
        """Item.setField()'s normalisation: trimmed, NFC, one line unless multiline, dates multipart."""
        value = unicodedata.normalize("NFC", value.strip())
        if field_id not in (self.fields["abstractNote"], self.fields["extra"]):
            value = re.sub(r"[\r\n]+", " ", value)
        if (
            value
            and field_id in self._date_fields
            and not re.match(r"^[0-9]{4}-(0[0-9]|1[0-2])-([0-2][0-9]|3[01]) ", value)
        ):
            value = str_to_multipart(value)
        elif value and field_id == self.fields["accessDate"]:
            if value == "CURRENT_TIMESTAMP":
                value = tx.now
            elif re.match(r"^\d{4}-\d\d-\d\dT", value):
                value = (
                    datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
                )
            elif not re.match(r"^\d{4}-\d\d-\d\d( \d\d:\d\d:\d\d)?$", value):
                raise ValueError(f"invalid accessDate {value!r}")
        return value

    def _set_item_data(self, tx: _Tx, item_id: int, values: Mapping[int, str]) -> None:
        """itemData rows, values shared through itemDataValues (deduplicated by value), in fieldID order as JS
        iterates an object's integer keys."""
        for field_id in sorted(values):
            value = values[field_id]
            if value == "":
                tx.conn.execute("DELETE FROM itemData WHERE itemID=? AND fieldID=?", (item_id, field_id))
                continue
            row = tx.conn.execute("SELECT valueID FROM itemDataValues WHERE value=?", (value,)).fetchone()
            if row:
                value_id = int(row[0])
            else:
                value_id = self._next_id(tx.conn, "itemDataValues", "valueID")
                if "valueNormalized" in self._columns["itemDataValues"]:
                    tx.conn.execute(
                        "INSERT INTO itemDataValues (valueID, value, valueNormalized) VALUES (?,?,?)",
                        (value_id, value, normalize_for_search_storage(value)),
                    )
                else:
                    tx.conn.execute("INSERT INTO itemDataValues (valueID, value) VALUES (?,?)", (value_id, value))
            tx.conn.execute("REPLACE INTO itemData VALUES (?,?,?)", (item_id, field_id, value_id))

    def _creator_id(self, conn: sqlite3.Connection, first: str, last: str) -> int:
        """Creators.getIDFromData(): shared by (firstName, lastName, fieldMode); fieldMode 1 is a one-field name."""
        first = unicodedata.normalize("NFC", first.strip())
        last = unicodedata.normalize("NFC", last.strip())
        mode = 0 if first else 1
        if not first and not last:
            raise ValueError("Creator names cannot be empty")
        row = conn.execute(
            "SELECT creatorID FROM creators WHERE firstName=? AND lastName=? AND fieldMode=?", (first, last, mode)
        ).fetchone()
        if row:
            return int(row[0])
        creator_id = self._next_id(conn, "creators", "creatorID")
        if "firstNameNormalized" in self._columns["creators"]:
            conn.execute(
                "INSERT INTO creators (creatorID, firstName, lastName, fieldMode, firstNameNormalized, "
                "lastNameNormalized) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    creator_id,
                    first,
                    last,
                    mode,
                    normalize_for_search_storage(first),
                    normalize_for_search_storage(last),
                ),
            )
        else:
            conn.execute(
                "INSERT INTO creators (creatorID, firstName, lastName, fieldMode) VALUES (?, ?, ?, ?)",
                (creator_id, first, last, mode),
            )
        return creator_id

    def _tag_id(self, conn: sqlite3.Connection, name: str) -> int:
        """Tags.create(): one row a name, whatever the library."""
        name = unicodedata.normalize("NFC", name.strip())
        row = conn.execute("SELECT tagID FROM tags WHERE name=?", (name,)).fetchone()
        if row:
            return int(row[0])
        tag_id = self._next_id(conn, "tags", "tagID")
        if "nameNormalized" in self._columns["tags"]:
            conn.execute(
                "INSERT INTO tags (tagID, name, nameNormalized) VALUES (?, ?, ?)",
                (tag_id, name, normalize_for_search_storage(name)),
            )
        else:
            conn.execute("INSERT INTO tags (tagID, name) VALUES (?, ?)", (tag_id, name))
        return tag_id

    def _collection_id(self, tx: _Tx, path: str, library_id: int) -> int:
        parent: int | None = None
        for name in (part.strip() for part in path.split("/")):
            row = tx.conn.execute(
                "SELECT collectionID FROM collections WHERE libraryID=? AND collectionName=? "
                "AND parentCollectionID IS ?",
                (library_id, name, parent),
            ).fetchone()
            if row:
                parent = int(row[0])
                continue
            collection_id = self._next_id(tx.conn, "collections", "collectionID")
            tx.conn.execute(
                "INSERT INTO collections (collectionID, collectionName, parentCollectionID, libraryID, key, "
                "clientDateModified) VALUES (?, ?, ?, ?, ?, ?)",
                (collection_id, name, parent, library_id, self._new_key(tx.conn, "collections", library_id), tx.now),
            )
            self._client_version(tx, "collections", "collectionID", collection_id, library_id)
            parent = collection_id
        if parent is None:
            raise ValueError(f"empty collection path {path!r}")
        return parent

    def _add_to_collections(self, tx: _Tx, item_id: int, paths: Sequence[str], library_id: int) -> None:
        for path in paths:
            collection_id = self._collection_id(tx, path, library_id)
            order = tx.conn.execute(
                "SELECT IFNULL(MAX(orderIndex)+1, 0) FROM collectionItems WHERE collectionID=?", (collection_id,)
            ).fetchone()[0]
            tx.conn.execute(
                "INSERT OR IGNORE INTO collectionItems (collectionID, itemID, orderIndex) VALUES (?, ?, ?)",
                (collection_id, item_id, order),
            )

    def _regular_parent(self, tx: _Tx, parent: str | None, library_id: int) -> int | None:
        """Item._saveData: a note's or an attachment's parent must be a regular item."""
        if parent is None:
            return None
        parent_id = self._id(tx.conn, parent, library_id)
        if self._type_of(tx.conn, parent_id) in ("note", "attachment", "annotation"):
            raise ValueError(f"Parent item {library_id}/{parent} must be a regular item")
        return parent_id

    # -- public API -----------------------------------------------------------------------------------------------

    def collection(self, path: str, library_id: int = USER_LIBRARY) -> int:
        """Make the collections of ``"Thesis/Chapter 2"`` that do not exist yet; returns the last one's id."""
        with self._tx() as tx:
            return self._collection_id(tx, path, library_id)

    def trash_collection(self, path: str, library_id: int = USER_LIBRARY) -> None:
        """Move a collection to the trash (Zotero 7): a deletedCollections row; its items stay where they are."""
        with self._tx() as tx:
            collection_id = self._collection_id(tx, path, library_id)
            tx.conn.execute("INSERT OR IGNORE INTO deletedCollections (collectionID) VALUES (?)", (collection_id,))

    def group(self, name: str, group_id: int | None = None) -> int:
        """A group library (as a sync brings it down); returns its libraryID for ``library_id=``."""
        with self._tx() as tx:
            library_id = self._next_id(tx.conn, "libraries", "libraryID")
            tx.conn.execute(
                "INSERT INTO libraries (libraryID, type, editable, filesEditable) VALUES (?, 'group', 1, 1)",
                (library_id,),
            )
            tx.conn.execute(
                "INSERT INTO groups (groupID, libraryID, name, description, version) VALUES (?, ?, ?, '', 0)",
                (group_id or 1000 + library_id, library_id, name),
            )
            return library_id

    def feed(self, name: str, url: str) -> int:
        """A feed library (RSS subscription): items saved into it are feed items, not the user's papers."""
        with self._tx() as tx:
            library_id = self._next_id(tx.conn, "libraries", "libraryID")
            tx.conn.execute(
                "INSERT INTO libraries (libraryID, type, editable, filesEditable) VALUES (?, 'feed', 1, 0)",
                (library_id,),
            )
            tx.conn.execute("INSERT INTO feeds (libraryID, name, url) VALUES (?, ?, ?)", (library_id, name, url))
            return library_id

    def item(
        self,
        item_type: str = "journalArticle",
        *,
        title: str,
        abstract: str | None = None,
        creators: Sequence[tuple[str, str]] = (("Ada", "Lovelace"),),
        date: str | None = None,
        fields: Mapping[str, str] | None = None,
        tags: Sequence[str] = (),
        collections: Sequence[str] = (),
        trashed: bool = False,
        library_id: int = USER_LIBRARY,
    ) -> str:
        """A regular item as Item.save() writes it; ``creators`` are (first, last), ("", "CERN") a one-field name;
        ``date`` as typed (stored multipart); ``fields`` any other field by name. Returns the item key."""
        with self._tx() as tx:
            item_id, key = self._insert_item(tx, item_type, library_id)
            type_id = self.item_types[item_type]
            named: dict[str, str] = {"title": title}
            if abstract is not None:
                named["abstractNote"] = abstract
            if date is not None:
                named["date"] = date
            named.update(fields or {})
            values = {
                self._field_id(type_id, n): self._field_value(tx, self._field_id(type_id, n), v)
                for n, v in named.items()
            }
            self._set_item_data(tx, item_id, {f: v for f, v in values.items() if v})
            allowed = self._type_creators.get(type_id, {})
            creator_type = self.creator_types["author"]
            if creator_type not in allowed and allowed:
                creator_type = next(t for t, primary in allowed.items() if primary)
            for order, (first, last) in enumerate(creators):
                tx.conn.execute(
                    "INSERT OR REPLACE INTO itemCreators (itemID, creatorID, creatorTypeID, orderIndex) "
                    "VALUES (?, ?, ?, ?)",
                    (item_id, self._creator_id(tx.conn, first, last), creator_type, order),
                )
            if trashed:
                tx.conn.execute("REPLACE INTO deletedItems (itemID) VALUES (?)", (item_id,))
            self._add_to_collections(tx, item_id, collections, library_id)
            for tag in tags:
                tx.conn.execute(
                    "INSERT OR REPLACE INTO itemTags (itemID, tagID, type) VALUES (?, ?, ?)",
                    (item_id, self._tag_id(tx.conn, tag), 0),
                )
            return key

    def _attachment(
        self,
        tx: _Tx,
        parent: str | None,
        *,
        link_mode: int,
        content_type: str | None,
        path: str | None,
        title: str | None,
        url: str | None = None,
        collections: Sequence[str] = (),
        library_id: int = USER_LIBRARY,
        check_parent: bool = True,
    ) -> tuple[int, str]:
        parent_id = (
            self._regular_parent(tx, parent, library_id)
            if check_parent
            else (self._id(tx.conn, parent, library_id) if parent else None)
        )
        if parent_id is not None and collections:
            raise ValueError("parentItemID and collections cannot both be provided")
        item_id, key = self._insert_item(tx, "attachment", library_id)
        type_id = self.item_types["attachment"]
        values = {}
        if title:
            values[self.fields["title"]] = self._field_value(tx, self.fields["title"], title)
        if url:
            values[self._field_id(type_id, "url")] = url
        self._set_item_data(tx, item_id, values)
        tx.conn.execute(
            "INSERT INTO itemAttachments (itemID, parentItemID, linkMode, contentType, charsetID, path, syncState, "
            "storageModTime, storageHash, lastProcessedModificationTime) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (item_id, parent_id, link_mode, content_type, None, path, 0, None, None, None),
        )
        self._add_to_collections(tx, item_id, collections, library_id)
        return item_id, key

    def attach_pdf(
        self,
        parent: str | None,
        pdf: Path,
        title: str = "Full Text PDF",
        *,
        filename: str | None = None,
        collections: Sequence[str] = (),
        library_id: int = USER_LIBRARY,
    ) -> str:
        """Attachments.importFromFile(): the file copied to storage/<attachment key>/<name>, path 'storage:<name>'.
        ``parent=None`` makes a standalone PDF (which may sit in collections). Returns the attachment's key."""
        name = filename or pdf.name
        with self._tx() as tx:
            _, key = self._attachment(
                tx,
                parent,
                link_mode=IMPORTED_FILE,
                content_type="application/pdf",
                path=f"storage:{name}",
                title=title,
                collections=collections,
                library_id=library_id,
            )
            folder = self.storage / key
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pdf, folder / name)
            return key

    def link_file(
        self,
        parent: str | None,
        path: str,
        content_type: str = "application/pdf",
        *,
        title: str | None = None,
        collections: Sequence[str] = (),
        library_id: int = USER_LIBRARY,
    ) -> str:
        """A linked file (linkMode 2): ``path`` stored as given, an absolute path or 'attachments:<relative>'
        (relative to the user's Linked Attachment Base Directory, a preference outside the database)."""
        with self._tx() as tx:
            _, key = self._attachment(
                tx,
                parent,
                link_mode=LINKED_FILE,
                content_type=content_type,
                path=path,
                title=title or PurePath(path.removeprefix("attachments:")).name,
                collections=collections,
                library_id=library_id,
            )
            return key

    def attachment_row(
        self,
        parent: str | None,
        path: str | None,
        link_mode: int,
        content_type: str | None,
        *,
        title: str | None = "Attachment",
        url: str | None = None,
        library_id: int = USER_LIBRARY,
    ) -> str:
        """An attachment row exactly as given and no file, for fault tests: 'storage:../../x.pdf', a stored file that
        is missing, a linked URL (linkMode 3, ``url``), a parent that is not a regular item."""
        with self._tx() as tx:
            _, key = self._attachment(
                tx,
                parent,
                link_mode=link_mode,
                content_type=content_type,
                path=path,
                title=title,
                url=url,
                library_id=library_id,
                check_parent=False,
            )
            return key

    def note(
        self, parent: str | None, html_text: str, *, collections: Sequence[str] = (), library_id: int = USER_LIBRARY
    ) -> str:
        """A note: itemNotes holds the HTML in Zotero's '<div class="zotero-note znv1">' wrapper and its title."""
        text = re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", html_text).strip()
        with self._tx() as tx:
            parent_id = self._regular_parent(tx, parent, library_id)
            item_id, key = self._insert_item(tx, "note", library_id)
            stored = (
                text
                if re.match(r'^<div class="zotero-note znv[0-9]+">[\s\S]*</div>$', text)
                else (NOTE_PREFIX + text + NOTE_SUFFIX)
            )
            tx.conn.execute(
                "INSERT INTO itemNotes (itemID, parentItemID, note, title) VALUES (?,?,?,?)",
                (item_id, parent_id, stored, note_to_title(text)),
            )
            self._add_to_collections(tx, item_id, collections, library_id)
            return key

    def annotation(
        self,
        attachment: str,
        text: str,
        *,
        comment: str | None = None,
        page: int = 0,
        color: str = DEFAULT_COLOR,
        library_id: int = USER_LIBRARY,
    ) -> str:
        """A highlight made in Zotero's PDF reader: an 'annotation' item whose itemAnnotations row holds the text."""
        with self._tx() as tx:
            parent_id = self._id(tx.conn, attachment, library_id)
            row = tx.conn.execute(
                "SELECT linkMode, contentType FROM itemAttachments WHERE itemID=?", (parent_id,)
            ).fetchone()
            if (
                row is None
                or row[0] == LINKED_URL
                or row[1] not in ("application/pdf", "application/epub+zip", "text/html")
            ):
                raise ValueError("Annotation parent must be a PDF, EPUB, or HTML snapshot file attachment")
            item_id, key = self._insert_item(tx, "annotation", library_id)
            position = json.dumps({"pageIndex": page, "rects": [[72.0, 640.0, 300.0, 652.0]]}, separators=(",", ":"))
            values = {
                "itemID": item_id,
                "parentItemID": parent_id,
                "type": ANNOTATION_HIGHLIGHT,
                "authorName": None,
                "text": text,
                "textNormalized": normalize_for_search_storage(text),
                "comment": comment,
                "commentNormalized": normalize_for_search_storage(comment),
                "color": color,
                "pageLabel": str(page + 1),
                "sortIndex": f"{page:05d}|{0:06d}|{140:05d}",
                "position": position,
                "isExternal": 0,
            }
            columns = [c for c in values if c in self._columns["itemAnnotations"]]
            tx.conn.execute(
                f"REPLACE INTO itemAnnotations ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                [values[c] for c in columns],
            )
            return key

    def set_field(self, key: str, field_name: str, value: str, library_id: int = USER_LIBRARY) -> None:
        """An edit saved in Zotero: the value stored ('' deletes it), dateModified and clientDateModified now,
        synced=0, clientVersion bumped ('head'). items.version is the server's sync version: an edit leaves it."""
        with self._tx() as tx:
            item_id = self._id(tx.conn, key, library_id)
            type_id = tx.conn.execute("SELECT itemTypeID FROM items WHERE itemID=?", (item_id,)).fetchone()[0]
            field_id = self._field_id(type_id, field_name)
            self._set_item_data(tx, item_id, {field_id: self._field_value(tx, field_id, value)})
            tx.conn.execute(
                "UPDATE items SET dateModified=?, synced=0, clientDateModified=? WHERE itemID=?",
                (tx.now, tx.now, item_id),
            )
            self._client_version(tx, "items", "itemID", item_id, library_id)

    def trash(self, key: str, library_id: int = USER_LIBRARY) -> None:
        """Items.trash(): a deletedItems row for the item alone (its children are in the trash with it)."""
        with self._tx() as tx:
            item_id = self._id(tx.conn, key, library_id)
            tx.conn.execute(
                "UPDATE items SET synced=0, clientDateModified=CURRENT_TIMESTAMP, dateModified=? WHERE itemID=?",
                (tx.now, item_id),
            )
            tx.conn.execute("INSERT OR IGNORE INTO deletedItems (itemID) VALUES (?)", (item_id,))

    def erase(self, key: str, library_id: int = USER_LIBRARY) -> None:
        """Item.erase() (emptying the trash): children first, annotations of attachments, the storage folders, a
        syncDeleteLog row each. Orphaned creators, tags and values stay until Zotero's next purge."""
        with self._tx() as tx:
            self._erase(tx, self._id(tx.conn, key, library_id), library_id)

    def _erase(self, tx: _Tx, item_id: int, library_id: int) -> None:
        conn = tx.conn
        item_type = self._type_of(conn, item_id)
        if item_type == "attachment":
            (link_mode,) = conn.execute("SELECT linkMode FROM itemAttachments WHERE itemID=?", (item_id,)).fetchone()
            key = conn.execute("SELECT key FROM items WHERE itemID=?", (item_id,)).fetchone()[0]
            if link_mode != LINKED_URL:
                shutil.rmtree(self.storage / key, ignore_errors=True)
            for (child,) in conn.execute(
                "SELECT itemID FROM itemAnnotations WHERE parentItemID=?", (item_id,)
            ).fetchall():
                self._erase(tx, child, library_id)
        elif item_type not in ("note", "annotation"):
            children = conn.execute(
                "SELECT itemID FROM itemNotes WHERE parentItemID=?1 UNION "
                "SELECT itemID FROM itemAttachments WHERE parentItemID=?1",
                (item_id,),
            ).fetchall()
            for (child,) in children:
                self._erase(tx, child, library_id)
        key = conn.execute("SELECT key FROM items WHERE itemID=?", (item_id,)).fetchone()[0]
        conn.execute("DELETE FROM items WHERE itemID=?", (item_id,))
        if "clientVersion" in self._columns["items"] and library_id not in tx.library_versions:
            tx.library_versions[library_id] = conn.execute(
                "UPDATE libraries SET clientVersion = clientVersion + 1 WHERE libraryID=? RETURNING clientVersion",
                (library_id,),
            ).fetchone()[0]
        conn.execute(
            "REPLACE INTO syncDeleteLog (syncObjectTypeID, libraryID, key) VALUES (?, ?, ?)",
            (SYNC_OBJECT_ITEM, library_id, key),
        )

    def set_version(self, schema: str, version: int) -> None:
        """A version row, e.g. ('compatibility', 10) for a database a newer Zotero has upgraded."""
        with self._tx() as tx:
            tx.conn.execute("REPLACE INTO version (schema,version) VALUES (?,?)", (schema, version))

    def sql(self, statement: str, params: Sequence[object] = ()) -> list[tuple]:
        """Any statement, in a transaction with foreign keys on (the triggers still apply): for damage no API makes."""
        with self._tx() as tx:
            return tx.conn.execute(statement, params).fetchall()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the database as a running Zotero does: db.js sets PRAGMA main.locking_mode=EXCLUSIVE and Zotero has
        written since it started, so SQLite keeps the exclusive lock and another connection gets "database is
        locked" even to read (after its busy timeout, 5 s by default in Python)."""
        conn = sqlite3.connect(self.db, isolation_level=None)
        try:
            conn.execute("PRAGMA main.locking_mode=EXCLUSIVE")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "REPLACE INTO settings (setting, key, value) VALUES ('client', 'lastVersion', ?)",
                (self.release.client_version,),
            )
            conn.execute("COMMIT")
            yield
        finally:
            conn.close()

    def bulk(self, n: int, abstract_words: int = 120, *, seed: int = 1, library_id: int = USER_LIBRARY) -> list[str]:
        """``n`` journal articles (title, abstract, date, DOI, journal, two authors) in one transaction with
        executemany, rows as item() writes them: a 10,000-item library in seconds. Returns the keys."""
        rng = random.Random(seed)
        vocabulary = sorted({w.strip(".,").lower() for w in _BULK_TEXT.split()})
        journals = ["Journal of Synthetic Results", "Annals of Test Data", "Letters in Fixtures"]
        names = [
            (first, last)
            for first in ("Ada", "Alan", "Grace", "Edsger", "Barbara")
            for last in ("Hopper", "Knuth", "Liskov", "Ritchie")
        ]
        type_id = self.item_types["journalArticle"]
        ids = {
            name: self._field_id(type_id, name) for name in ("title", "abstractNote", "date", "DOI", "publicationTitle")
        }
        with self._tx() as tx:
            conn = tx.conn
            first_id = self._next_id(conn, "items", "itemID")
            keys: list[str] = []
            taken = {k for (k,) in conn.execute("SELECT key FROM items WHERE libraryID=?", (library_id,))}
            while len(keys) < n:
                key = "".join(self._rng.choice(KEY_CHARS) for _ in range(8))
                if key not in taken:
                    taken.add(key)
                    keys.append(key)
            conn.executemany(
                "INSERT INTO items (itemID, libraryID, key, clientDateModified, itemTypeID, dateAdded, dateModified) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(first_id + i, library_id, k, tx.now, type_id, tx.now, tx.now) for i, k in enumerate(keys)],
            )
            value_ids: dict[str, int] = {v: i for v, i in conn.execute("SELECT value, valueID FROM itemDataValues")}
            next_value = self._next_id(conn, "itemDataValues", "valueID")
            new_values: list[tuple[int, str]] = []
            item_data: list[tuple[int, int, int]] = []
            creator_ids = {name: self._creator_id(conn, *name) for name in names}
            item_creators: list[tuple[int, int, int, int]] = []
            for i in range(n):
                item_id = first_id + i
                words = [rng.choice(vocabulary) for _ in range(abstract_words)]
                row = {
                    ids["title"]: f"Bulk study {i + 1}: {' '.join(rng.choice(vocabulary) for _ in range(4))}",
                    ids["abstractNote"]: f"Abstract of bulk study {i + 1}. " + " ".join(words) + ".",
                    ids["date"]: str_to_multipart(str(1990 + i % 35)),
                    ids["DOI"]: f"10.5555/bulk.{i + 1}",
                    ids["publicationTitle"]: journals[i % len(journals)],
                }
                for field_id in sorted(row):
                    value = row[field_id]
                    if value not in value_ids:
                        value_ids[value] = next_value
                        new_values.append((next_value, value))
                        next_value += 1
                    item_data.append((item_id, field_id, value_ids[value]))
                for order in range(2):
                    item_creators.append(
                        (item_id, creator_ids[names[(i + order * 7) % len(names)]], self.creator_types["author"], order)
                    )
            if "valueNormalized" in self._columns["itemDataValues"]:
                conn.executemany(
                    "INSERT INTO itemDataValues (valueID, value, valueNormalized) VALUES (?,?,?)",
                    [(i, v, normalize_for_search_storage(v)) for i, v in new_values],
                )
            else:
                conn.executemany("INSERT INTO itemDataValues (valueID, value) VALUES (?,?)", new_values)
            conn.executemany("INSERT INTO itemData VALUES (?,?,?)", item_data)
            conn.executemany(
                "INSERT INTO itemCreators (itemID, creatorID, creatorTypeID, orderIndex) VALUES (?, ?, ?, ?)",
                item_creators,
            )
            if "clientVersion" in self._columns["items"]:
                version = conn.execute(
                    "UPDATE libraries SET clientVersion = clientVersion + 1 WHERE libraryID=? RETURNING clientVersion",
                    (library_id,),
                ).fetchone()[0]
                conn.execute("UPDATE items SET clientVersion=? WHERE itemID >= ?", (version, first_id))
            return keys


_BULK_TEXT = (
    "We study sparse routing, attention kernels, protein structure, genomic sequences, crystal graphs, diffusion "
    "sampling, retrieval, quantized inference, seismic waveforms, turbulent flow, catalyst screening, federated "
    "training, interpretability, benchmarks, calibration, uncertainty, scaling, pretraining, fine-tuning, ablation, "
    "evaluation, robustness, efficiency, latency, memory, throughput, accuracy, recall, precision, datasets, models, "
    "experiments, baselines, results, methods, analysis, theory, optimisation, gradients, regularisation, transfer."
)


# ---------------------------------------------------------------------------------------------------------------
# The standard 20-item library
# ---------------------------------------------------------------------------------------------------------------

BODY_QUESTION = "What learning rate trained the expert router of the mixture-of-experts protein model?"
BODY_FACT = "0.00029"
BODY_PAGE = 3
ROUTER_TITLE = "Learned Expert Routers for Mixture-of-Experts Protein Models"
COLLECTIONS = ("Thesis", "Thesis/Chapter 1", "Thesis/Chapter 2", "Thesis/Chapter 2/Methods", "Reading group")


@dataclass(frozen=True)
class _Paper:
    name: str
    item_type: str
    title: str
    abstract: str | None
    body: str  # one paragraph of the PDF's text ("" for papers without a PDF)
    creators: tuple[tuple[str, str], ...] = (("Ada", "Lovelace"),)
    date: str | None = None
    fields: tuple[tuple[str, str], ...] = ()
    tags: tuple[str, ...] = ()
    collections: tuple[str, ...] = ()


_PDF_PAPERS = (
    _Paper(
        "router",
        "journalArticle",
        ROUTER_TITLE,
        "We send each residue of a protein sequence to two of sixty-four experts chosen by a learned router and "
        "match dense protein language models at a third of the compute.",
        "",
        (("Ada", "Lovelace"), ("Alan", "Turing")),
        "2021-03-15",
        (("publicationTitle", "Journal of Computational Biology"), ("DOI", "10.5555/router.2021"), ("volume", "28")),
        ("mixture of experts", "proteins"),
        ("Thesis/Chapter 2/Methods",),
    ),
    _Paper(
        "kernels",
        "conferencePaper",
        "Tiled Attention Kernels for Long Genomic Sequences",
        "Tiled attention kernels process genomic sequences of a million bases on a single accelerator.",
        "Genomes are long and attention over them is quadratic. Tiling keeps each block of the score matrix in fast "
        "on-chip memory, so sequences of a million bases fit on one device.",
        (("Grace", "Hopper"),),
        "May 3, 2019",
        (("proceedingsTitle", "Proceedings of the Genomics Systems Workshop"), ("conferenceName", "GSW 2019")),
        ("attention", "genomics"),
        ("Thesis/Chapter 2",),
    ),
    _Paper(
        "single_cell",
        "preprint",
        "Contrastive Pretraining of Single-Cell Transcriptomes",
        None,
        "Cells measured in different laboratories are pulled together when they share a type and pushed apart "
        "otherwise; the learned embedding clusters forty cell types without labels.",
        (("Barbara", "Liskov"),),
        "2022",
        (("repository", "bioRxiv"),),
        (),
        ("Thesis/Chapter 2",),
    ),
    _Paper(
        "crystals",
        "journalArticle",
        "Graph Neural Networks for Crystal Property Prediction",
        "Message passing over periodic crystal graphs predicts formation energies within thirty millielectronvolts.",
        "Atoms are nodes and bonds within a cutoff radius are edges; periodic images close the graph across the cell.",
        (("Edsger", "Dijkstra"),),
        "2020-07",
        (("publicationTitle", "Physical Review Materials"),),
        ("materials",),
        ("Thesis/Chapter 1",),
    ),
    _Paper(
        "backbones",
        "preprint",
        "Diffusion Models for Protein Backbone Design",
        "A denoising diffusion model over residue frames designs protein backbones that fold as predicted.",
        "Noise is added to residue rotations and translations and a network learns to remove it step by step.",
        (("Frances", "Allen"),),
        "2023-01-09",
        (("repository", "arXiv"), ("archiveID", "arXiv:2301.01234")),
        ("proteins", "diffusion"),
        ("Thesis/Chapter 1",),
    ),
    _Paper(
        "clinical_rag",
        "conferencePaper",
        "Retrieval-Augmented Generation for Clinical Question Answering",
        None,
        "Clinical questions are answered from retrieved guideline passages, and every answer cites its passage.",
        (("John", "McCarthy"),),
        "2024",
        (),
        (),
        ("Reading group",),
    ),
    _Paper(
        "quantized",
        "journalArticle",
        "Quantized Inference of Large Language Models on CPUs",
        "Four-bit weights and eight-bit activations run a seven-billion-parameter model at reading speed on a laptop.",
        "Weights are grouped by sixty-four and scaled per group; matrix products use integer dot-product instructions.",
        (("Donald", "Knuth"),),
        "2024-02-29",
        (("publicationTitle", "Transactions on Machine Learning Systems"),),
        ("inference",),
        ("Reading group",),
    ),
    _Paper(
        "seismic",
        "journalArticle",
        "Self-Supervised Learning of Seismic Waveforms",
        None,
        "Masked segments of seismograms are reconstructed from their context, which teaches phase arrival picking.",
        (("Inge", "Lehmann"),),
        "2019",
        (),
        (),
        ("Thesis",),
    ),
    _Paper(
        "operators",
        "conferencePaper",
        "Neural Operators for Turbulent Flow Simulation",
        "Fourier neural operators advance turbulent flow fields a hundred times faster than the numerical solver.",
        "The operator learns the map from one velocity field to the next in the frequency domain.",
        (("Olga", "Ladyzhenskaya"),),
        "2022-12-01",
        (),
        (),
        (),
    ),
    _Paper(
        "catalysts",
        "preprint",
        "Active Learning for Catalyst Discovery",
        None,
        "Each round queries the density functional calculations the surrogate model is least sure about.",
        (("Gerhard", "Ertl"),),
        "2021",
        (),
        (),
        (),
    ),
    _Paper(
        "federated",
        "journalArticle",
        "Federated Training of Medical Imaging Models",
        "Hospitals train a shared segmentation model without exchanging scans, within two points of pooled training.",
        "Each site trains locally for one epoch and sends weight updates that a server averages.",
        (("Florence", "Nightingale"),),
        "2020-11-02",
        (("publicationTitle", "Medical Image Analysis"),),
        ("medicine",),
        ("Reading group",),
    ),
    _Paper(
        "autoencoders",
        "conferencePaper",
        "Sparse Autoencoders for Interpreting Vision Transformers",
        None,
        "A sparse dictionary over patch activations yields features a person can name, such as fur or text.",
        (("Chris", "Olah"),),
        "2024-06",
        (),
        (),
        (),
    ),
)
_METADATA_PAPERS = (
    _Paper(
        "grasping",
        "conferencePaper",
        "Curriculum Learning for Robotic Grasping",
        "A curriculum from simple to cluttered scenes doubles the grasp success of a robot arm.",
        "",
        (("Rodney", "Brooks"),),
        "May 3, 2019",
        (
            ("DOI", "10.5555/grasping.2019"),
            ("url", "https://example.org/grasping"),
            ("proceedingsTitle", "Proceedings of Robot Learning"),
        ),
        ("robotics",),
        ("Thesis/Chapter 2",),
    ),
    _Paper(
        "scaling",
        "preprint",
        "Scaling Laws for Chemical Language Models",
        "Loss falls as a power law in parameters and molecules seen, until the data run out.",
        "",
        (("Jared", "Kaplan"), ("Sam", "McCandlish")),
        "2021",
        (
            ("archiveID", "arXiv:2101.00001"),
            ("repository", "arXiv"),
            ("url", "https://arxiv.org/abs/2101.00001"),
            ("DOI", "10.48550/arXiv.2101.00001"),
            ("extra", "Citation Key: kaplan2021scaling\nversion: 2"),
        ),
        ("scaling", "chemistry"),
        ("Thesis/Chapter 1",),
    ),
    _Paper(
        "thesis",
        "thesis",
        "Probabilistic Models of Coral Reef Recovery",
        "Hierarchical Bayesian models of reef surveys predict recovery times after bleaching events.",
        "",
        (("Marie", "Tharp"),),
        "2018-11-02",
        (("university", "University of the Tests"), ("thesisType", "PhD thesis"), ("place", "Oxford")),
        ("ecology",),
        (),
    ),
    _Paper(
        "detector",
        "bookSection",
        "Detector Simulation with Generative Models",
        "Generative adversarial networks simulate calorimeter showers a thousand times faster than Geant4.",
        "",
        (("", "CERN"), ("Maria", "Curie")),
        "2020-03",
        (("bookTitle", "Machine Learning in High Energy Physics"), ("publisher", "Test Press"), ("pages", "101-130")),
        (),
        (),
    ),
)
_TRASHED_PAPERS = (
    _Paper(
        "trashed_captions",
        "journalArticle",
        "Deprecated Benchmarks for Image Captioning",
        "Older captioning benchmarks reward generic captions; we retire three of them.",
        "",
        (("Alan", "Kay"),),
        "2017",
        (),
        ("benchmarks",),
        ("Reading group",),
    ),
    _Paper(
        "trashed_duplicate",
        "conferencePaper",
        "A Duplicate Entry on Speech Recognition",
        "An end-to-end recogniser transcribes conversational speech with a word error rate of five percent.",
        "",
        (("Claude", "Shannon"),),
        "2016-09-08",
        (),
        (),
        ("Thesis/Chapter 1",),
    ),
)


@dataclass(frozen=True)
class StandardLibrary:
    """The standard library and what a test needs to know about it (keys by name, and the sets a reader must
    reproduce). ``collections[path]`` are the papers in a collection or its sub-collections, not trashed;
    ``direct[path]`` is every item the collection itself holds (collectionItems), trashed and non-papers included."""

    zotero: ZoteroLibrary
    keys: dict[str, str]
    papers: frozenset[
        str
    ]  # live regular items of paper types (journalArticle, conferencePaper, preprint, thesis, bookSection)
    with_pdf: frozenset[str]
    with_abstract: frozenset[str]
    trashed: frozenset[str]
    non_papers: frozenset[str]  # top-level note and webpage; child note, attachments and annotation are in ``children``
    children: frozenset[str]
    pdfs: dict[str, Path]  # paper key -> its PDF in storage/
    titles: dict[str, str]
    years: dict[str, int | None]
    collections: dict[str, frozenset[str]]
    direct: dict[str, frozenset[str]]
    build_seconds: float


def _paper_pdf(folder: Path, paper: _Paper) -> Path:
    authors = " \\and ".join(f"{first} {last}".strip() for first, last in paper.creators)
    if paper.name == "router":
        sections = [
            (
                "Introduction",
                [
                    "Protein language models read amino acid sequences as text. Their cost grows with every "
                    "residue, which limits them to short proteins on one accelerator."
                ],
            ),
            (
                "Method",
                [
                    "Each residue is sent to two of sixty-four experts by a learned router that sees the residue "
                    "embedding and its position in the chain.",
                    "\\clearpage",
                    "Experts are feed-forward blocks of the same width as the dense layer.",
                ],
            ),
            (
                "Training",
                [
                    "\\clearpage",
                    f"The expert router was trained with a learning rate of {BODY_FACT} and a batch of 256 "
                    "sequences for the mixture-of-experts protein model.",
                    "Training took four days on eight accelerators.",
                ],
            ),
            ("Results", ["On structure prediction the sparse model matches the dense baseline."]),
        ]
    else:
        sections = [
            ("Introduction", [paper.body]),
            ("Conclusion", [f"We presented {paper.title[0].lower()}{paper.title[1:]}."]),
        ]
    return latex_paper(
        folder, paper.name, title=paper.title, abstract=paper.abstract, sections=sections, authors=authors
    )


def _zotero_filename(paper: _Paper) -> str:
    """Zotero 7's default attachment name: '{firstCreator} - {year} - {title}.pdf'."""
    last = paper.creators[0][1]
    first_creator = f"{last} and {paper.creators[1][1]}" if len(paper.creators) == 2 else last
    year = str_to_multipart(paper.date or "")[:4]
    return f"{first_creator} - {year} - {paper.title}.pdf"


def standard_library(root: Path, release: str = "7.0") -> StandardLibrary:
    """The 20-item library the Zotero reader is tested against: 12 papers with a PDF (7 with an abstract), 4 with
    metadata only, 2 in the trash, a standalone note and a web page; plus a child note, an annotation and tags."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zotero-latex-") as build, ThreadPoolExecutor() as pool:
        pdf_files = dict(
            zip([p.name for p in _PDF_PAPERS], pool.map(lambda p: _paper_pdf(Path(build), p), _PDF_PAPERS), strict=True)
        )
        zotero = ZoteroLibrary(root, release)
        for path in COLLECTIONS:
            zotero.collection(path)
        keys: dict[str, str] = {}
        pdfs: dict[str, Path] = {}
        titles: dict[str, str] = {}
        years: dict[str, int | None] = {}

        def add(paper: _Paper, trashed: bool = False) -> str:
            key = zotero.item(
                paper.item_type,
                title=paper.title,
                abstract=paper.abstract,
                creators=paper.creators,
                date=paper.date,
                fields=dict(paper.fields),
                tags=paper.tags,
                collections=paper.collections,
                trashed=trashed,
            )
            keys[paper.name] = key
            titles[key] = paper.title
            year = str_to_multipart(paper.date or "")[:4]
            years[key] = int(year) if year and year != "0000" else None
            return key

        for paper in _PDF_PAPERS:
            key = add(paper)
            filename = _zotero_filename(paper)
            keys[f"{paper.name}_pdf"] = zotero.attach_pdf(key, pdf_files[paper.name], filename=filename)
            pdfs[key] = zotero.storage / keys[f"{paper.name}_pdf"] / filename
    for paper in _METADATA_PAPERS:
        add(paper)
    for paper in _TRASHED_PAPERS:
        add(paper, trashed=True)
    keys["note"] = zotero.note(
        None,
        '<div data-schema-version="9"><h1>Reading plan</h1><p>Read the routing papers before the '
        "<strong>group meeting</strong> &amp; bring questions.</p></div>",
        collections=("Reading group",),
    )
    keys["webpage"] = zotero.item(
        "webpage",
        title="How to Read a Research Paper",
        abstract="A three-pass method for reading papers: skim, read closely, then reconstruct the argument.",
        creators=(("Srinivasan", "Keshav"),),
        date="2016",
        fields={
            "websiteTitle": "Keshav's Blog",
            "url": "https://example.org/how-to-read",
            "accessDate": "2025-01-10T12:00:00Z",
        },
        tags=("reading",),
        collections=("Reading group",),
    )
    titles[keys["webpage"]] = "How to Read a Research Paper"
    keys["router_note"] = zotero.note(
        keys["router"], "<p>Check the balancing loss against the dense baseline.</p><p>Second paragraph.</p>"
    )
    keys["router_annotation"] = zotero.annotation(
        keys["router_pdf"], "Each residue is sent to two of sixty-four experts", comment="the core idea"
    )

    paper_names = [p.name for p in (*_PDF_PAPERS, *_METADATA_PAPERS)]
    papers = frozenset(keys[n] for n in paper_names)
    all_papers = [*_PDF_PAPERS, *_METADATA_PAPERS]

    def in_collection(path: str, paper: _Paper) -> bool:
        return any(c == path or c.startswith(path + "/") for c in paper.collections)

    collections = {path: frozenset(keys[p.name] for p in all_papers if in_collection(path, p)) for path in COLLECTIONS}
    conn = sqlite3.connect(zotero.db)
    try:
        direct: dict[str, frozenset[str]] = {}
        for path in COLLECTIONS:
            collection_id = zotero.collection(path)
            direct[path] = frozenset(
                k
                for (k,) in conn.execute(
                    "SELECT key FROM collectionItems JOIN items USING (itemID) WHERE collectionID=?", (collection_id,)
                )
            )
    finally:
        conn.close()
    return StandardLibrary(
        zotero=zotero,
        keys=keys,
        papers=papers,
        with_pdf=frozenset(keys[p.name] for p in _PDF_PAPERS),
        with_abstract=frozenset(keys[p.name] for p in all_papers if p.abstract),
        trashed=frozenset(keys[p.name] for p in _TRASHED_PAPERS),
        non_papers=frozenset((keys["note"], keys["webpage"])),
        children=frozenset(
            [keys["router_note"], keys["router_annotation"]] + [keys[f"{p.name}_pdf"] for p in _PDF_PAPERS]
        ),
        pdfs=pdfs,
        titles=titles,
        years=years,
        collections=collections,
        direct=direct,
        build_seconds=time.perf_counter() - started,
    )
