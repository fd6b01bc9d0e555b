"""What readers share: decoded lines and JSON records with their line numbers, and the first non-empty field."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rag.errors import CorpusError


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
