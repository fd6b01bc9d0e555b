"""Citations out: BibTeX entries for the papers an answer cites, or any papers in the store.

Entries are built with bibtexparser's model and writer, their text fields LaTeX-encoded by pylatexenc (the encoder
bibtexparser's own middleware uses), so that bibtexparser with LaTeX decoding reads back the stored title, authors,
year and DOI. Keys follow Google Scholar's shape (``vaswani2017attention``) and depend only on the paper, so the same
paper keeps its key; papers whose keys collide within one list get a, b, c… in paper-id order. ``url``, ``doi`` and
``eprint`` are written verbatim, as BibTeX styles print them (LaTeX escapes there would show).
"""

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import cast

import bibtexparser
from bibtexparser.library import Library
from bibtexparser.middlewares import MergeCoAuthors, MergeNameParts, default_unparse_stack
from bibtexparser.middlewares.names import parse_single_name_into_parts
from bibtexparser.model import Entry, Field
from chromadb.api.types import Where
from pylatexenc.latexencode import RULE_REGEX, UnicodeToLatexConversionRule, UnicodeToLatexEncoder

from rag.errors import BadInput
from rag.library import open_stored
from rag.papers import Paper, arxiv_id, doi_of
from rag.settings import Settings

_ENCODER = UnicodeToLatexEncoder(
    conversion_rules=[
        UnicodeToLatexConversionRule(
            rule_type=RULE_REGEX,
            rule=[
                (re.compile(r"(?<!\\)(\$.*[^\\]\$)"), r"\1"),  # math as written (bibtexparser's own rule)
                (re.compile(r"([-`'])(?=\1)"), r"\1{}"),  # "--", "``", "''" stay characters, not dashes or quotes
            ],
        ),
        "defaults",
    ],
    replacement_latex_protection="braces-all",  # {\'E}mile: BibTeX treats the accented letter as one letter
    unknown_char_policy="keep",  # UTF-8 has no LaTeX macro for most scripts: kept as is (biber and bibtex8 read it)
    unknown_char_warning=False,
)
_TITLE_TOKEN = re.compile(r"(?<!\\)\$[^$]+\$|\S+")  # a math span or a word: the unit whose capitals are protected

# The venue's field for each entry type; any other type keeps it as ``howpublished``.
VENUE_FIELD = {
    "article": "journal",
    "inproceedings": "booktitle",
    "conference": "booktitle",
    "incollection": "booktitle",
    "inbook": "booktitle",
    "book": "publisher",
    "techreport": "institution",
    "phdthesis": "school",
    "mastersthesis": "school",
}

# Words a key skips to reach the first significant word of a title. Fixed here, not taken from a dependency's
# stop-word list, so that keys do not change when a dependency does.
KEY_STOPWORDS = frozenset(
    {
        *("a", "an", "the", "on", "of", "in", "for", "to", "and", "or", "with", "from", "by", "at", "as", "via"),
        *("is", "are", "be", "do", "does", "can", "we", "what", "why", "how", "when", "which"),
        *("using", "towards", "toward", "into", "about", "over", "under"),
    }
)
# Latin letters that Unicode decomposition leaves non-ASCII.
_ASCII_LETTERS = str.maketrans({"ø": "o", "ß": "ss", "ł": "l", "æ": "ae", "œ": "oe", "đ": "d", "ð": "d", "þ": "th"})


def arxiv_of(paper: Paper) -> str | None:
    """The arXiv id in the paper id, URL or DOI, if there is one."""
    values = (paper.paper_id, paper.url, paper.doi)
    return next((found for value in values if value and (found := arxiv_id(value))), None)


def entry_type(paper: Paper) -> str:
    kind = re.sub(r"[^a-z]", "", (paper.kind or "").lower())
    return kind or ("article" if paper.venue else "misc")


def _ascii_words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKD", text.lower()).translate(_ASCII_LETTERS)
    return re.findall(r"[a-z0-9]+", folded.encode("ascii", "ignore").decode())


def family_name(name: str) -> str:
    """The family name in a display name ("Ludwig van Beethoven" → "Beethoven"), as BibTeX splits names."""
    parts = parse_single_name_into_parts(name, strict=False)
    return " ".join(parts.last) or name


def base_key(reference: Paper) -> str:
    """``{first author's family name}{year}{first significant title word}``, ASCII and lower-case. Without authors
    the title word leads; when neither authors nor title give a word, the paper id is the key."""
    family = "".join(_ascii_words(family_name(reference.authors[0]))) if reference.authors else ""
    word = next((w for w in _ascii_words(reference.title) if w not in KEY_STOPWORDS), "")
    year = str(reference.year) if reference.year is not None else ""
    if not family and not word:
        return "".join(_ascii_words(reference.paper_id)) or "paper"
    return family + year + word if family else word + year


def _letters(i: int) -> str:
    """a, b, … z, aa, ab, …: the i-th collision suffix."""
    suffix = ""
    i += 1
    while i:
        i, rest = divmod(i - 1, 26)
        suffix = chr(ord("a") + rest) + suffix
    return suffix


def citation_keys(references: Sequence[Paper]) -> list[str]:
    """One key per reference, unique in the list: a paper's base key, or, where several share it, the base key with
    a, b, c… in paper-id order (so the suffixes do not depend on the order of the list)."""
    bases = [base_key(reference) for reference in references]
    counts = Counter(bases)
    keys = {i: base for i, base in enumerate(bases) if counts[base] == 1}
    taken = set(keys.values())
    for base in sorted({base for i, base in enumerate(bases) if i not in keys}):
        sharing = sorted((i for i, b in enumerate(bases) if b == base), key=lambda i: (references[i].paper_id, i))
        n = 0
        for i in sharing:
            while (candidate := base + _letters(n)) in taken:
                n += 1
            keys[i] = candidate
            taken.add(candidate)
    return [keys[i] for i in range(len(references))]


def latex(text: str) -> str:
    """Unicode text as LaTeX that bibtexparser's LaTeX decoding turns back into the same text."""
    return str(_ENCODER.unicode_to_latex(text))


def protected_title(title: str) -> str:
    """The title in LaTeX, each word (or math span) with a capital in braces, so styles that change case keep it."""
    pieces: list[str] = []
    end = 0
    for match in _TITLE_TOKEN.finditer(title):
        token = match.group()
        encoded = latex(token)
        pieces += [title[end : match.start()], f"{{{encoded}}}" if any(c.isupper() for c in token) else encoded]
        end = match.end()
    return "".join(pieces) + title[end:]


def entry(reference: Paper, key: str) -> Entry:
    """The bibtexparser entry for a reference; its author field holds name parts, merged when written."""
    fields: list[Field] = []
    if reference.authors:
        names = [parse_single_name_into_parts(latex(name), strict=False) for name in reference.authors]
        fields.append(Field("author", names))
    fields.append(Field("title", protected_title(reference.title)))
    if reference.venue:
        fields.append(Field(VENUE_FIELD.get(entry_type(reference), "howpublished"), latex(reference.venue)))
    if reference.year is not None:
        fields.append(Field("year", str(reference.year)))
    if reference.doi:
        fields.append(Field("doi", reference.doi))
    if eprint := arxiv_of(reference):
        fields += [Field("eprint", eprint), Field("archivePrefix", "arXiv")]
    if reference.url:
        fields.append(Field("url", reference.url))
    return Entry(entry_type(reference), key, fields)


def _write(entry: Entry) -> str:
    form = bibtexparser.BibtexFormat()
    form.indent = "  "
    form.block_separator = "\n"
    stack = [MergeNameParts(style="last"), MergeCoAuthors(), *default_unparse_stack()]
    return str(bibtexparser.write_string(Library([entry]), unparse_stack=stack, bibtex_format=form))


def bibtex_entries(references: Sequence[Paper]) -> list[str]:
    """One BibTeX entry per reference, in order, keys unique in the list."""
    keys = citation_keys(references)
    return [_write(entry(reference, key)) for reference, key in zip(references, keys, strict=True)]


def bibtex_library(references: Sequence[Paper]) -> str:
    """The entries of :func:`bibtex_entries` as one text, ready to save as a ``.bib`` file."""
    return "\n".join(bibtex_entries(references))


def _canonical(paper_id: str) -> str:
    """The id the store gives a paper that a user names by its bare arXiv id or DOI (the readers' id rule)."""
    if found := arxiv_id(paper_id):
        return f"arxiv:{found}"
    doi = doi_of(paper_id)
    return f"doi:{doi}" if doi else paper_id


def references_for(settings: Settings, paper_ids: Sequence[str]) -> list[Paper]:
    """The references of the papers with these ids in the settings' collection, in the order given, each once.
    An id may also be given as a bare arXiv id or DOI. Ids the collection lacks are bad input, named."""
    stored = open_stored(settings)
    if stored is None or stored.collection.count() == 0:
        state = "is empty" if stored is not None else "does not exist"
        raise BadInput(f"collection {settings.collection!r} {state}: `rag ingest PATH --collection NAME` fills one")
    wanted = list(dict.fromkeys(paper_ids))
    candidates = {paper_id: [paper_id, _canonical(paper_id)] for paper_id in wanted}
    lookup = sorted({candidate for ids in candidates.values() for candidate in ids})
    page = stored.collection.get(where=cast(Where, {"paper_id": {"$in": lookup}}), include=["metadatas"])
    found: dict[str, Paper] = {}
    for metadata in page["metadatas"] or []:
        if metadata and "paper_id" in metadata:
            found.setdefault(str(metadata["paper_id"]), Paper.from_metadata(metadata))
    unknown = [paper_id for paper_id in wanted if not any(c in found for c in candidates[paper_id])]
    if unknown:
        raise BadInput(
            f"collection {settings.collection!r} has no paper with the id(s) {', '.join(map(repr, unknown))} "
            "(`rag search` shows papers' ids)"
        )
    chosen = [next(found[c] for c in candidates[paper_id] if c in found) for paper_id in wanted]
    return list({reference.paper_id: reference for reference in chosen}.values())
