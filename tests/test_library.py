"""Reference-manager exports (BibTeX, RIS, CSL JSON as Zotero writes them): the readers, real ingests of the three
exports of one library, and a clear exit 2 with the store untouched for each kind of bad export."""

import json
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bibtexparser
import pytest
from click.testing import Result

from rag.errors import CorpusError
from rag.readers import (
    BUNDLED_CORPUS,
    DroppedField,
    FieldNote,
    Paper,
    Skipped,
    make_paper,
    read_corpus,
    read_entries,
    sniff_format,
    title_id,
)
from rag.store import fingerprint, manifest, open_collection
from tests.conftest import cli, make_settings
from tests.data.library import make_exports

LIBRARY = Path(__file__).parent / "data" / "library"
EXPORTS = {"bibtex": LIBRARY / "library.bib", "ris": LIBRARY / "library.ris", "csljson": LIBRARY / "library.json"}
ITEMS = make_exports.items()  # what the fixtures were written from
WITH_ABSTRACTS = [item for item in ITEMS if item.abstract]
SOFTMAX = [item.title for item in WITH_ABSTRACTS if "softmax bottleneck" in (item.abstract or "").lower()]


def papers(path: Path, fmt: str = "auto") -> list[Paper]:
    return list(read_corpus(path, fmt))


def display(author: str) -> str:
    family, _, given = author.partition(",")
    return f"{given.strip()} {family.strip()}".strip()


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


# --- readers --------------------------------------------------------------------------------------------------------


def test_the_fixtures_hold_twenty_corpus_papers_and_one_without_abstract() -> None:
    corpus = {paper.title: paper.abstract for paper in read_corpus(BUNDLED_CORPUS)}
    assert (len(ITEMS), len(WITH_ABSTRACTS)) == (21, 20)
    assert all(corpus[item.title] == item.abstract for item in WITH_ABSTRACTS)
    assert len(SOFTMAX) == 2  # the bundled corpus's two softmax-bottleneck papers are in the library
    assert len(bibtexparser.parse_file(str(EXPORTS["bibtex"])).entries) == 21  # the export parses as BibTeX as a whole


@pytest.mark.parametrize("fmt", EXPORTS)
def test_each_export_reads_to_the_library_it_was_written_from(fmt: str) -> None:
    entries = list(read_entries(EXPORTS[fmt]))
    read = [entry for entry in entries if isinstance(entry, Paper)]
    (skipped,) = [entry for entry in entries if isinstance(entry, Skipped)]
    assert skipped.reason == "no_abstract" and "Über die Grenzen neuronaler Netze" in skipped.detail
    assert [paper.title for paper in read] == [item.title for item in WITH_ABSTRACTS]  # verbatim, LaTeX decoded
    for paper, item in zip(read, WITH_ABSTRACTS, strict=True):
        assert paper.abstract == item.abstract
        assert paper.authors == tuple(display(author) for author in item.authors)
        assert paper.year == item.date[0]
        assert paper.venue == (item.venue or item.publisher)
        assert (paper.doi, paper.paper_id) == (item.doi, f"doi:{item.doi}")
        assert paper.categories == item.keywords  # whole keywords, spaces and all
        assert paper.kind == make_exports.BIBTEX_TYPES[item.kind]
        assert paper.url == item.url


def test_the_three_exports_read_to_identical_papers() -> None:
    """Same content hash from every export: switching export format re-embeds nothing."""
    bib, ris, csl = (papers(path) for path in EXPORTS.values())
    assert bib == ris == csl
    assert len({paper.content_hash for paper in bib}) == 20


def test_latex_accents_escapes_and_protected_capitals_decode_to_unicode() -> None:
    """The export as written holds LaTeX; the papers hold the text it stands for."""
    text = EXPORTS["bibtex"].read_text(encoding="utf-8")
    read = {paper.title: paper for paper in papers(EXPORTS["bibtex"])}
    small = read[
        "Why do small language models underperform? Studying Language Model Saturation via the Softmax Bottleneck"
    ]
    assert "{Studying} {Language} {Model} {Saturation} via the {Softmax} {Bottleneck}}" in text
    assert "author = {Dvo{\\v r}{\\'a}k, Jan and van der Berg, Anna and N{\\'u}{\\~n}ez, Luc{\\'i}a}" in text
    assert small.authors == ("Jan Dvořák", "Anna van der Berg", "Lucía Núñez")
    assert "journal = {Journal of Learning \\& Inference}" in text and small.venue == "Journal of Learning & Inference"
    assert "title = {{D{$\\varepsilon$}pS:} {Delayed} {{$\\varepsilon$}-Shrinking}" in text
    assert "DεpS: Delayed ε-Shrinking for Faster Once-For-All Training" in read
    assert "journal = {Revue Fran{\\c c}aise d'Apprentissage Automatique}" in text
    assert "Revue Française d'Apprentissage Automatique" in {paper.venue for paper in read.values()}
    flash = next(paper for paper in read.values() if paper.title.startswith("FlashAttention-2"))
    assert "reaching only 25-40{\\textbackslash}\\% of the theoretical" in text  # the corpus holds a literal "\%"
    assert "reaching only 25-40\\% of the theoretical" in flash.abstract


def test_auto_sniffs_each_export_by_extension_and_by_content(tmp_path: Path) -> None:
    for fmt, path in EXPORTS.items():
        assert sniff_format(path) == fmt
        renamed = shutil.copy(path, tmp_path / f"export-{fmt}.txt")
        assert sniff_format(Path(renamed)) == fmt  # the first line alone says which


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_ids_without_doi_come_from_arxiv_then_the_citation_key_then_the_title(tmp_path: Path) -> None:
    bib = write(tmp_path, "ids.bib", """
@misc{smith_noted_2017, title = {Noted}, abstract = {A.}, note = {arXiv:1706.03762 [cs]}}
@article{jones_eprint_2019, title = {Eprint}, abstract = {B.}, eprint = {1810.04805v2}, archivePrefix = {arXiv}}
@article{lee_plain_2020, title = {Plain}, abstract = {C.}, url = {https://example.org/~lee/plain%202020.pdf}}
@article{kim_both_2021, title = {Both}, abstract = {D.}, doi = {https://doi.org/10.5555/ABC}, note = {arXiv:2101.00001}}
""")  # fmt: skip
    noted, eprint, plain, both = papers(bib)
    assert (noted.paper_id, eprint.paper_id, plain.paper_id) == (
        "arxiv:1706.03762",
        "arxiv:1810.04805",
        "lee_plain_2020",
    )
    assert plain.url == "https://example.org/~lee/plain%202020.pdf"  # URLs are not LaTeX: '~' and '%' kept
    assert (both.paper_id, both.doi) == ("doi:10.5555/abc", "10.5555/abc")
    csl = write(tmp_path, "ids.json", json.dumps([
        {"id": "http://zotero.org/users/local/x/items/AB12CD34", "type": "article", "title": "Uri", "abstract": "E.",
         "number": "arXiv:2301.00002"},
        {"id": "http://zotero.org/users/local/x/items/EF56GH78", "type": "webpage", "title": "Web page", "abstract": "F."},
        {"id": "key_2022", "type": "article-journal", "title": "Keyed", "abstract": "G."},
    ], indent="\t"))  # fmt: skip
    uri, web, keyed = papers(csl)
    assert (uri.paper_id, web.paper_id, keyed.paper_id) == ("arxiv:2301.00002", title_id("Web page"), "key_2022")
    assert (uri.kind, web.kind, keyed.kind) == ("misc", "misc", "article")
    ris = write(tmp_path, "ids.ris", "TY  - RPRT\nTI  - Untitled report\nAU  - Solo\nAB  - H.\nER  - \n")
    (report,) = papers(ris)
    assert (report.paper_id, report.kind, report.authors) == (title_id("Untitled report"), "techreport", ("Solo",))


MALFORMED = {
    "unclosed brace": ("@article{bad, title = {Broken, abstract = {x},", "never closes"),
    "missing =": ("@article{bad,\n  title {Broken},\n  abstract = {x},\n}", "Expected a `=`"),
    "missing comma": ("@article{bad,\n  title = {Broken}\n  abstract = {x},\n}", "field 'title' runs into the next"),
    "early close": ("@article{bad,\n  title = {Broken}},\n  abstract = {x},\n}", "text after its closing brace"),
    "duplicate field": ("@article{bad,\n  title = {A},\n  title = {B},\n  abstract = {x},\n}", "Duplicate field"),
}  # fmt: skip


@pytest.mark.parametrize("broken", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_bibtex_entry_is_skipped_with_its_line_and_the_next_is_read(
    tmp_path: Path, broken: tuple[str, str]
) -> None:
    entry, reason = broken
    good = "@article{good,\n  title = {Good},\n  abstract = {Fine.},\n}\n"
    path = write(tmp_path, "m.bib", f"@string{{j = {{J}}}}\n\n{entry}\n\n{good}")
    skipped, paper = read_entries(path)
    assert isinstance(skipped, Skipped) and skipped.reason == "malformed"
    assert (skipped.line, reason in skipped.detail, "@article{bad}" in skipped.detail) == (3, True, True)
    assert isinstance(paper, Paper) and paper.title == "Good"


def test_comments_strings_and_preambles_are_not_papers(tmp_path: Path) -> None:
    path = write(tmp_path, "c.bib", """@preamble{"\\newcommand{\\noop}[1]{}"}
@comment{jabref-meta: databaseType:bibtex;}
@string{jlr = {Journal of Learning Research}}
@Article{only, Title = {Only}, Abstract = {One.}, Journal = jlr, Keywords = {a; b c}}
""")  # fmt: skip
    (paper,) = papers(path)
    assert (paper.venue, paper.categories) == ("Journal of Learning Research", ("a", "b c"))


# --- a bad field costs the field, not the entry -------------------------------------------------------------------

ODD_FIELDS = {
    "bibtex": ("odd.bib", """@article{good_2020,
  title = {Good},
  abstract = {Fine.},
  year = {2020},
}

@article{odd_2021,
  title = {Odd fields},
  abstract = {Still worth reading.},
  author = {Lovelace, Ada and Turing, Alan},
  year = {n.d.},
  doi = {not a doi},
  url = {https://example.org/odd},
}
""", "odd_2021"),
    "ris": ("odd.ris", "\n".join([
        "TY  - JOUR", "TI  - Good", "AB  - Fine.", "PY  - 2020", "ER  - ", "",
        "TY  - JOUR", "TI  - Odd fields", "AU  - Lovelace, Ada", "AU  - Turing, Alan", "AB  - Still worth reading.",
        "PY  - n.d.", "DO  - not a doi", "UR  - https://example.org/odd", "ER  - ", "",
    ]), title_id("Odd fields")),
}  # fmt: skip


@pytest.mark.parametrize("fmt", ODD_FIELDS)
def test_an_unreadable_year_or_doi_costs_only_that_field(tmp_path: Path, fmt: str) -> None:
    name, text, paper_id = ODD_FIELDS[fmt]
    path = write(tmp_path, name, text)
    good, year, doi, odd = read_entries(path)
    assert isinstance(good, Paper) and (good.title, good.year) == ("Good", 2020)
    assert year == DroppedField(path, 7, "year", "cannot read a year from 'n.d.'")
    assert doi == DroppedField(path, 7, "doi", "not a DOI: 'not a doi'")
    assert str(doi) == f"{path}:7: field 'doi': not a DOI: 'not a doi': dropped"
    assert isinstance(odd, Paper) and (odd.title, odd.abstract) == ("Odd fields", "Still worth reading.")
    assert (odd.authors, odd.url, odd.paper_id) == (
        ("Ada Lovelace", "Alan Turing"),
        "https://example.org/odd",
        paper_id,
    )
    assert (odd.year, odd.doi) == (None, None)
    with pytest.raises(CorpusError) as caught:
        list(read_entries(path, strict=True))
    assert str(caught.value) == (
        f"{path}:7: field 'year': cannot read a year from 'n.d.' (--strict stops at an unreadable field)"
    )


def csl_items(undated: dict[str, Any]) -> list[dict[str, Any]]:
    """Three CSL JSON items as Better BibTeX writes them, the second one ``undated``."""
    return [
        {"id": "dated_2019", "type": "article-journal", "title": "Dated", "abstract": "A.",
         "issued": {"date-parts": [[2019, 6]]}},
        {"id": "undated", "type": "article-journal", "title": "Undated", "abstract": "B.",
         "author": [{"family": "Lovelace", "given": "Ada"}], **undated},
        {"id": "late_2021", "type": "article-journal", "title": "Late", "abstract": "C.", "issued": {"raw": "2021"}},
    ]  # fmt: skip


UNDATED = {
    "literal": {"issued": {"literal": "n.d."}},
    "raw": {"issued": {"raw": "n.d."}},
    "date-parts": {"issued": {"date-parts": [["n.d."]]}},
}


@pytest.mark.parametrize("undated", UNDATED.values(), ids=UNDATED.keys())
def test_an_undated_csl_item_is_read_without_its_year(tmp_path: Path, undated: dict[str, Any]) -> None:
    text = json.dumps(csl_items(undated), indent="\t")
    path = write(tmp_path, "undated.json", text)
    line = line_of(text, '"id": "undated"') - 1  # the item's opening brace
    dated, dropped, undated_paper, late = read_entries(path)
    assert dropped == DroppedField(path, line, "year", "cannot read a year from 'n.d.'")
    assert isinstance(undated_paper, Paper) and isinstance(dated, Paper) and isinstance(late, Paper)
    assert [(p.title, p.year) for p in (dated, undated_paper, late)] == [
        ("Dated", 2019),
        ("Undated", None),
        ("Late", 2021),
    ]
    assert undated_paper.authors == ("Ada Lovelace",)


MENDELEY = """@article{park_2019,
  title = {Gait analysis of a quadruped},
  abstract = {We study gaits.},
  author = {Park, Sanghwa; Seidl, Ralf; Beaumier, Michael; Hollis, Richard},
  year = {2019},
}

@article{plain_2020,
  title = {Plain},
  abstract = {Fine.},
  author = {Lovelace, Ada and Turing, Alan},
}
"""


def test_a_mendeley_semicolon_author_list_is_read_as_names_with_a_note(tmp_path: Path) -> None:
    path = write(tmp_path, "mendeley.bib", MENDELEY)
    note, park, plain = read_entries(path, strict=True)  # nothing was dropped: --strict reads it too
    assert type(note) is FieldNote and note == FieldNote(
        path, 1, "author", "names separated by ';' (Mendeley) read as 4 names"
    )
    assert str(note) == f"{path}:1: field 'author': names separated by ';' (Mendeley) read as 4 names"
    assert isinstance(park, Paper) and park.authors == (
        "Sanghwa Park",
        "Ralf Seidl",
        "Michael Beaumier",
        "Richard Hollis",
    )
    assert (park.year, park.paper_id) == (2019, "park_2019")
    assert isinstance(plain, Paper) and plain.authors == ("Ada Lovelace", "Alan Turing")


def test_an_author_list_that_cannot_be_read_costs_the_field_not_the_entry(tmp_path: Path) -> None:
    bib = write(tmp_path, "commas.bib", """@article{commas_2020,
  title = {Commas},
  abstract = {No separators between the names.},
  author = {Alpha, Beta, Gamma, Delta},
  editor = {X, Y, Z},
  year = {2020},
}
""")  # fmt: skip
    dropped, paper = read_entries(bib)  # the editor is not read: its commas cost nothing
    assert dropped == DroppedField(
        bib, 1, "author", "cannot split 'Alpha, Beta, Gamma, Delta' into names (too many commas)"
    )
    assert isinstance(paper, Paper) and (paper.title, paper.authors, paper.year) == ("Commas", (), 2020)
    csl = write(tmp_path, "authors.json", json.dumps([
        {"id": "a", "title": "A string", "abstract": "A.", "author": "Smith, J"},
        {"id": "b", "title": "An object", "abstract": "B.", "author": {"family": "Smith"}},
        {"id": "c", "title": "A list of strings", "abstract": "C.", "author": ["Smith, J"]},
    ], indent="\t"))  # fmt: skip
    entries = list(read_entries(csl))
    assert [entry.detail for entry in entries if isinstance(entry, DroppedField)] == [
        "expected a list of CSL names, got str 'Smith, J'",
        "expected a list of CSL names, got dict \"{'family': 'Smith'}\"",
        "expected a list of CSL names, got list \"['Smith, J']\"",
    ]
    assert [(p.title, p.authors) for p in entries if isinstance(p, Paper)] == [
        ("A string", ()), ("An object", ()), ("A list of strings", ())
    ]  # fmt: skip


UNTITLED = {
    "bibtex": ("untitled.bib", "@article{untitled,\n  abstract = {No title.},\n}\n\n@article{good,\n  title = {Good},\n  abstract = {Fine.},\n}\n", "@article{untitled} is malformed: record has no title"),
    "ris": ("untitled.ris", "TY  - JOUR\nAB  - No title.\nER  - \n\nTY  - JOUR\nTI  - Good\nAB  - Fine.\nER  - \n", "RIS record JOUR is malformed: record has no title"),
    "csljson": ("untitled.json", '[\n{"id": "untitled", "abstract": "No title."},\n{"id": "good", "title": "Good", "abstract": "Fine."}\n]\n', "CSL item 'untitled' is malformed: record has no title"),
}  # fmt: skip


@pytest.mark.parametrize("fmt", UNTITLED)
def test_an_entry_without_a_title_is_skipped_as_malformed_and_the_next_is_read(tmp_path: Path, fmt: str) -> None:
    name, text, detail = UNTITLED[fmt]
    path = write(tmp_path, name, text)
    skipped, paper = read_entries(path)
    assert skipped == Skipped(path, 1 if fmt != "csljson" else 2, "malformed", detail)
    assert isinstance(paper, Paper) and paper.title == "Good"


@pytest.mark.parametrize(
    "url",
    ["https://example.org/a b.pdf", "http://dx.doi.org/10.1000/x", "ftp://ftp.example.org/pub/a.ps",
     "file:///home/me/a.pdf", "www.example.org/paper", "arxiv.org/abs/1706.03762"],
)  # fmt: skip
def test_a_url_field_keeps_every_real_url(url: str) -> None:
    dropped: list[DroppedField] = []
    paper = make_paper((Path("x.bib"), 1), title="T", abstract="A.", url=url, dropped=dropped)
    assert (paper.url, dropped) == (url, [])


@pytest.mark.parametrize(
    ("url", "detail"),
    [("see attached", "not a URL: 'see attached'"), ("n/a", "not a URL: 'n/a'"), (["https://a.org"], "not a URL: \"['https://a.org']\"")],
)  # fmt: skip
def test_a_url_field_that_holds_no_url_is_dropped(url: Any, detail: str) -> None:
    dropped: list[DroppedField] = []
    paper = make_paper((Path("x.bib"), 3), title="T", abstract="A.", url=url, dropped=dropped)
    assert (paper.url, dropped) == (None, [DroppedField(Path("x.bib"), 3, "url", detail)])
    with pytest.raises(CorpusError, match=r"^x\.bib:3: not a URL"):  # no list to drop it into: it fails
        make_paper((Path("x.bib"), 3), title="T", abstract="A.", url=url)


def test_a_json_lines_record_with_an_unreadable_year_keeps_the_paper(tmp_path: Path) -> None:
    path = write(tmp_path, "year.jsonl", '{"title": "A", "abstract": "B", "year": "soon", "authors": [1, 2]}\n')
    assert list(read_entries(path)) == [
        DroppedField(path, 1, "authors", "expected a list of strings, got one holding int '1'"),
        DroppedField(path, 1, "year", "cannot read a year from 'soon'"),
        Paper(paper_id=title_id("A"), title="A", passages=papers(path)[0].passages),
    ]


# --- ingest through the command line ----------------------------------------------------------------------------


def ingest_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    result = cli("ingest", *args, "--json", env=env)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def stats(env: dict[str, str], collection: str) -> dict[str, Any]:
    result = cli("stats", "--collection", collection, "--json", env=env)
    assert result.exit_code == 0, result.output
    found: dict[str, Any] = json.loads(result.stdout)
    return found


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One data folder: each export ingested into its own collection (and again, in human mode), then all three
    into one collection "mine". Returns the env and every report."""
    env = {"RAG_DATA_DIR": str(tmp_path_factory.mktemp("library") / "data")}
    own = {fmt: ingest_json(env, str(path), "--collection", f"own-{fmt}") for fmt, path in EXPORTS.items()}
    again = {fmt: cli("ingest", str(path), "--collection", f"own-{fmt}", env=env) for fmt, path in EXPORTS.items()}
    mine = [ingest_json(env, str(path), "--collection", "mine") for path in EXPORTS.values()]
    return {"env": env, "own": own, "again": again, "mine": mine}


@pytest.mark.parametrize("fmt", EXPORTS)
def test_each_export_ingests_to_20_papers_and_reingest_adds_nothing(store: dict[str, Any], fmt: str) -> None:
    report = store["own"][fmt]
    assert (report["papers"], report["added"], report["skipped_no_abstract"], report["collection"]) == (
        20, 20, 1, f"own-{fmt}"
    )  # fmt: skip
    assert report["chunks"] >= 20 and report["problems"] == []
    again: Result = store["again"][fmt]
    assert again.exit_code == 0, again.output
    assert re.search(r"^20 papers \(0 added, 0 updated, 20 unchanged", again.stdout, re.M), again.stdout
    assert re.search(r"^1 entry without an abstract skipped", again.stdout, re.M), again.stdout
    assert stats(store["env"], f"own-{fmt}")["papers"] == 20


def test_three_exports_of_one_library_make_one_collection_of_20(store: dict[str, Any]) -> None:
    first, second, third = store["mine"]
    assert (first["papers"], first["added"]) == (20, 20)
    for later in (second, third):  # the same DOIs, the same content: nothing new, nothing changed
        assert (later["papers"], later["added"], later["updated"], later["skipped"]) == (20, 0, 0, 20)
    assert stats(store["env"], "mine")["papers"] == 20


def test_the_softmax_bottleneck_question_finds_both_papers_in_the_library(store: dict[str, Any]) -> None:
    question = "Which papers discuss the softmax bottleneck?"
    result = cli("search", question, "--collection", "mine", "-k", "3", "--json", env=store["env"])
    assert result.exit_code == 0, result.output
    assert set(SOFTMAX) <= {hit["title"] for hit in json.loads(result.stdout)}


def snapshot(env: dict[str, str]) -> tuple[dict[str, Any], str]:
    """What `rag stats` says about "mine", and a digest of every paper version it holds."""
    stored = open_collection(make_settings(Path(env["RAG_DATA_DIR"]), collection="mine"))
    assert stored is not None
    return stats(env, "mine"), fingerprint(manifest(stored.collection))


def broken_library(tmp_path: Path) -> tuple[Path, int]:
    """library.bib with one entry's syntax broken (``abstract {`` lacks its ``=``); returns it and that line."""
    text = EXPORTS["bibtex"].read_text(encoding="utf-8")
    key = "@inproceedings{kowalski_cramming_2023,"
    start = text.index(key)
    broken = text[:start] + text[start:].replace("\tabstract = {", "\tabstract {", 1)
    return write(tmp_path, "broken.bib", broken), line_of(text, key)


def test_a_bib_with_one_malformed_entry_ingests_the_rest_and_names_its_line(
    store: dict[str, Any], tmp_path: Path
) -> None:
    path, line = broken_library(tmp_path)
    result = cli("ingest", str(path), "--collection", "broken", "--json", env=store["env"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["papers"], report["skipped_malformed"], report["skipped_no_abstract"]) == (19, 1, 1)
    (problem,) = report["problems"]
    assert problem.startswith(f"skipped {path}:{line}: @inproceedings{{kowalski_cramming_2023}} is malformed")
    assert f"rag: warning: {problem}\n" in result.stderr


def test_strict_fails_on_the_malformed_entry_and_leaves_the_store_as_it_was(
    store: dict[str, Any], tmp_path: Path
) -> None:
    path, line = broken_library(tmp_path)
    before = snapshot(store["env"])
    result = cli("ingest", str(path), "--collection", "mine", "--strict", env=store["env"])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"rag: error: {path}:{line}: @inproceedings{{kowalski_cramming_2023}} is malformed")
    assert snapshot(store["env"]) == before


def test_a_csl_export_with_an_undated_item_ingests_every_item_and_names_the_field(
    store: dict[str, Any], tmp_path: Path
) -> None:
    text = json.dumps(csl_items(UNDATED["literal"]), indent="\t")
    path = write(tmp_path, "undated.json", text)
    line = line_of(text, '"id": "undated"') - 1
    result = cli("ingest", str(path), "--collection", "undated", "--json", env=store["env"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    warning = f"{path}:{line}: field 'year': cannot read a year from 'n.d.': dropped"
    assert (report["papers"], report["added"], report["dropped_fields"], report["skipped_malformed"]) == (3, 3, 1, 0)
    assert report["problems"] == [warning] and report["skipped_by_reason"] == {}
    assert result.stderr == f"rag: warning: {warning}\n"
    again = cli("ingest", str(path), "--collection", "undated", env=store["env"])
    assert again.exit_code == 0, again.output
    assert re.search(r"^3 papers \(0 added, 0 updated, 3 unchanged", again.stdout, re.M), again.stdout
    assert re.search(r"^1 field that could not be read dropped \(listed above", again.stdout, re.M), again.stdout
    assert stats(store["env"], "undated")["papers"] == 3


def test_strict_fails_on_the_undated_item_and_leaves_the_store_as_it_was(store: dict[str, Any], tmp_path: Path) -> None:
    text = json.dumps(csl_items(UNDATED["literal"]), indent="\t")
    path = write(tmp_path, "undated.json", text)
    line = line_of(text, '"id": "undated"') - 1
    before = snapshot(store["env"])
    result = cli("ingest", str(path), "--collection", "mine", "--strict", env=store["env"])
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"rag: error: {path}:{line}: field 'year': cannot read a year from 'n.d.' "
        "(--strict stops at an unreadable field)\n"
    )
    assert snapshot(store["env"]) == before


def test_a_mendeley_bib_ingests_its_authors_with_a_warning(store: dict[str, Any], tmp_path: Path) -> None:
    path = write(tmp_path, "mendeley.bib", MENDELEY)
    result = cli("ingest", str(path), "--collection", "mendeley", "--json", env=store["env"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    warning = f"{path}:1: field 'author': names separated by ';' (Mendeley) read as 4 names"
    assert (report["papers"], report["dropped_fields"], report["problems"]) == (2, 0, [warning])
    assert result.stderr == f"rag: warning: {warning}\n"


def test_an_entry_without_a_title_costs_that_entry_not_the_file(store: dict[str, Any], tmp_path: Path) -> None:
    text = EXPORTS["bibtex"].read_text(encoding="utf-8")
    key = "@article{tanaka_scaling_2020,"
    title_line = text.index("\n\ttitle = ", text.index(key))
    path = write(tmp_path, "untitled.bib", text[:title_line] + text[text.index("\n", title_line + 1) :])
    result = cli("ingest", str(path), "--collection", "untitled", "--json", env=store["env"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["papers"], report["skipped_malformed"], report["skipped_no_abstract"]) == (19, 1, 1)
    problem = f"skipped {path}:{line_of(text, key)}: @article{{tanaka_scaling_2020}} is malformed: record has no title"
    assert report["problems"] == [problem]
    assert result.stderr == f"rag: warning: {problem}\n"


def duplicate_keys(tmp_path: Path) -> tuple[Path, str]:
    text = EXPORTS["bibtex"].read_text(encoding="utf-8")
    key = "dvorak_small_2024"
    copy = f"\n@article{{{key},\n\ttitle = {{Another paper}},\n\tabstract = {{Different.}},\n}}\n"
    first, second = line_of(text, f"{{{key},"), text.count("\n") + 2
    return write(tmp_path, "dup.bib", text + copy), f":{second}: citation key '{key}' is used by two different entries (lines {first} and {second})"  # fmt: skip


def duplicate_csl_ids(tmp_path: Path) -> tuple[Path, str]:
    items = json.loads(EXPORTS["csljson"].read_text(encoding="utf-8"))
    items.append({**items[0], "title": "Another paper"})
    path = write(tmp_path, "dup.json", json.dumps(items, indent="\t", ensure_ascii=False))
    return path, f"citation key {items[0]['id']!r} is used by two different entries (lines 2 and "


def latin1(tmp_path: Path) -> tuple[Path, str]:
    text = EXPORTS["bibtex"].read_text(encoding="utf-8").replace('M{\\"u}ller, J{\\"o}rg', "Müller, Jörg")
    path = tmp_path / "latin1.bib"
    path.write_bytes(text.encode("latin-1", errors="replace"))
    return path, f":{line_of(text, 'Müller, Jörg')}: not UTF-8 text"


def latin1_ris(tmp_path: Path) -> tuple[Path, str]:
    text = EXPORTS["ris"].read_bytes().decode("utf-8")
    path = tmp_path / "latin1.ris"
    path.write_bytes(text.encode("latin-1", errors="replace"))
    return path, f":{line_of(text, 'Müller, Jörg')}: not UTF-8 text"


def prose(name: str) -> Callable[[Path], tuple[Path, str]]:
    def make(tmp_path: Path) -> tuple[Path, str]:
        text = "My reading list\nAttention is all you need, read it twice.\nScaling laws, later.\n"
        return write(tmp_path, name, text), {".bib": "not a BibTeX file", ".ris": "not a RIS file"}[Path(name).suffix]

    return make


def binary(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "library.json"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    return path, "binary data (NUL byte)"


def json_object(tmp_path: Path) -> tuple[Path, str]:
    return write(tmp_path, "library.json", '{"items": []}\n'), ":1: record has no title"


def truncated_csl(tmp_path: Path) -> tuple[Path, str]:
    text = EXPORTS["csljson"].read_text(encoding="utf-8")
    cut = text[: text.index('"title": "Cramming')]
    return write(tmp_path, "cut.json", cut), "the file ends inside an item (a truncated file?)"


def no_abstracts(tmp_path: Path) -> tuple[Path, str]:
    text = re.sub(r"\n\tabstract = \{.*\},", "", EXPORTS["bibtex"].read_text(encoding="utf-8"))
    return write(tmp_path, "bare.bib", text), ": none of its 21 entries has an abstract"


def no_abstracts_ris(tmp_path: Path) -> tuple[Path, str]:
    text = re.sub(r"AB  - [^\r\n]*\r\n", "", EXPORTS["ris"].read_bytes().decode("utf-8"))
    return write(tmp_path, "bare.ris", text), ": none of its 21 entries has an abstract"


BAD = {
    "duplicate keys": duplicate_keys,
    "duplicate CSL ids": duplicate_csl_ids,
    "latin-1 .bib": latin1,
    "latin-1 .ris": latin1_ris,
    "prose named .bib": prose("notes.bib"),
    "prose named .ris": prose("notes.ris"),
    "binary named .json": binary,
    "a JSON object, not an array": json_object,
    "truncated CSL JSON": truncated_csl,
    "no abstracts (.bib)": no_abstracts,
    "no abstracts (.ris)": no_abstracts_ris,
}


@pytest.mark.parametrize("make", BAD.values(), ids=BAD.keys())
def test_a_bad_export_exits_2_naming_the_problem_and_leaves_the_store_as_it_was(
    store: dict[str, Any], tmp_path: Path, make: Callable[[Path], tuple[Path, str]]
) -> None:
    path, message = make(tmp_path)
    before = snapshot(store["env"])
    result = cli("ingest", str(path), "--collection", "mine", env=store["env"])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()  # one line on stderr
    assert line.startswith(f"rag: error: {path}") and message in line, line
    assert snapshot(store["env"]) == before


HUGE = 200_000_000


@pytest.mark.parametrize(
    ("name", "head", "tail"),
    [
        ("huge.bib", b"@article{huge,\n  title = {Huge},\n  abstract = {", b"},\n}\n"),
        ("huge.ris", b"TY  - JOUR\r\nTI  - Huge\r\nAB  - ", b"\r\nER  - \r\n"),
        ("huge.json", b'[\n\t{\n\t\t"title": "Huge",\n\t\t"abstract": "', b'"\n\t}\n]\n'),
    ],
    ids=["bibtex", "ris", "csljson"],
)
def test_a_200_mb_export_fails_fast_naming_the_entry(
    store: dict[str, Any], tmp_path: Path, name: str, head: bytes, tail: bytes
) -> None:
    path = tmp_path / name
    with path.open("wb") as handle:  # one entry of 200 MB: a single line, as a runaway export writes it
        handle.write(head)
        block = b"lorem ipsum " * 87_382  # ~1 MB
        for _ in range(HUGE // len(block) + 1):
            handle.write(block)
        handle.write(tail)
    assert path.stat().st_size > HUGE
    before = snapshot(store["env"])
    started = time.perf_counter()
    result = cli("ingest", str(path), "--collection", "mine", env=store["env"])
    elapsed = time.perf_counter() - started
    path.unlink()
    assert result.exit_code == 2, result.output
    expected_line = 1 if name != "huge.json" else 2
    assert result.stderr.startswith(f"rag: error: {path}:{expected_line}: entry is larger than 1,000,000 bytes")
    assert elapsed < 5, f"took {elapsed:.1f} s: the file was read further than its first entry"
    assert snapshot(store["env"]) == before
