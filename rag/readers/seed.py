"""The trending-papers page that the bundled corpus comes from: a title line, then an abstract line."""

import re
from collections.abc import Iterator
from pathlib import Path

from rag.errors import CorpusError
from rag.papers import MAX_TITLE_CHARS, Paper, make_paper
from rag.readers.records import lines

_SEED_JUNK = re.compile(r"^get trending papers in your email inbox", re.IGNORECASE)
_SEED_SUBSCRIBE = re.compile(r"^Subscribe(?=\S)")


def read_seed(path: Path) -> Iterator[Paper]:
    """Title and abstract lines in turn; page junk and a glued 'Subscribe' dropped."""
    title: tuple[int, str] | None = None
    for number, line in lines(path):
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
