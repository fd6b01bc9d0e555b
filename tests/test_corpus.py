"""Corpus readers: every format, the sniffer, stable ids, and a clear error for each kind of bad file."""

import json
from pathlib import Path

import pytest

from rag.errors import CorpusError
from rag.readers import BUNDLED_CORPUS, Paper, arxiv_id, normalise_title, read_corpus, sniff_format, title_id
from tests.conftest import write_jsonl


def papers(path: Path, fmt: str = "auto") -> list[Paper]:
    return list(read_corpus(path, fmt))


def error_of(path: Path, fmt: str = "auto") -> str:
    with pytest.raises(CorpusError) as caught:
        papers(path, fmt)
    return str(caught.value)


def test_bundled_seed_corpus_has_231_papers_without_page_junk() -> None:
    result = papers(BUNDLED_CORPUS)
    assert len(result) == 231
    assert len({p.paper_id for p in result}) == 231
    assert result[0].title == "On Retrieval Augmentation and the Limitations of Language Model Training"
    assert not any(p.title.startswith(("Subscribe", "Get trending")) for p in result)
    assert all(len(p.abstract) > len(p.title) for p in result)


def test_seed_ids_are_stable_and_title_derived() -> None:
    first, again = papers(BUNDLED_CORPUS)[0], papers(BUNDLED_CORPUS)[0]
    assert (
        first.paper_id
        == again.paper_id
        == title_id("  on retrieval AUGMENTATION and the limitations of language model training ")
    )


def test_seed_with_odd_line_count_names_the_dangling_title(tmp_path: Path) -> None:
    path = tmp_path / "odd.txt"
    path.write_text("Title one\nAbstract one is here.\nTitle two without abstract\n")
    assert error_of(path) == f"{path}:3: title without an abstract (odd number of lines)"


def test_jsonl_reader_reads_optional_fields(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"title": "A  paper", "abstract": "Text\tone.", "authors": "Ada Lovelace and Alan Turing", "year": "2021-05-01",
             "categories": "cs.CL cs.LG", "url": "https://arxiv.org/abs/2101.00001v2"},
            {"id": "doc-7", "title": "B", "text": "Text two.", "authors": ["X Y"], "categories": ["stat.ML"]},
        ],
    )  # fmt: skip
    first, second = papers(path)
    assert first.paper_id == "arxiv:2101.00001"
    assert (first.title, first.abstract) == ("A paper", "Text one.")
    assert first.authors == ("Ada Lovelace", "Alan Turing")
    assert (first.year, first.categories) == (2021, ("cs.CL", "cs.LG"))
    assert (second.paper_id, second.categories, second.year) == ("doc-7", ("stat.ML",), None)


def test_arxiv_snapshot_reader(tmp_path: Path) -> None:
    record = {"id": "0704.0001", "title": "Calculation of\n  prompt diphoton", "abstract": "  A fully\n differential calculation.",
              "authors": "C. Balázs, E. L. Berger", "categories": "hep-ph", "update_date": "2008-11-13", "versions": []}  # fmt: skip
    path = write_jsonl(tmp_path / "arxiv.json", [record])
    assert sniff_format(path) == "arxiv"
    (paper,) = papers(path)
    assert paper.paper_id == "arxiv:0704.0001"
    assert paper.title == "Calculation of prompt diphoton"
    assert (paper.year, paper.categories, paper.url) == (2008, ("hep-ph",), "https://arxiv.org/abs/0704.0001")


def test_beir_reader_keeps_document_ids_for_qrels(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "4983", "title": "T", "text": "Body."}])
    assert sniff_format(path) == "beir"
    (paper,) = papers(tmp_path)  # a BEIR folder stands for its corpus.jsonl
    assert paper.paper_id == "4983"


def test_csv_reader_handles_quotes_and_newlines(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('title,abstract,year\n"Comma, title","Line one\nline two",2020\nPlain,Text,\n')
    first, second = papers(path)
    assert (first.title, first.abstract, first.year) == ("Comma, title", "Line one line two", 2020)
    assert second.year is None


def test_ids_and_titles_normalise() -> None:
    assert arxiv_id("2301.12345v3") == "2301.12345"
    assert arxiv_id("https://arxiv.org/pdf/2301.12345v1.pdf") == "2301.12345"
    assert arxiv_id("hep-th/9901001") == "hep-th/9901001"
    assert arxiv_id("doc-7") is None
    assert normalise_title("  The\tSoftmax  BOTTLENECK ") == "the softmax bottleneck"


@pytest.mark.parametrize(
    ("name", "content", "fmt", "expected"),
    [
        ("empty.txt", b"", "auto", "{path}: empty file"),
        ("blank.txt", b"\n \n", "auto", "{path}: empty file (only blank lines)"),
        ("binary.bin", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "auto", "{path}:3: binary data (NUL byte), not a text corpus"),
        ("latin1.txt", "Title\nAbstract caf\xe9\n".encode("latin-1"), "seed", "{path}:2: not UTF-8 text (byte 12 of the line)"),
        ("bad.jsonl", b'{"title": "A", "abstract": "B"}\n{"title": oops}\n', "auto", "{path}:2: not valid JSON (Expecting value)"),
        ("notitle.jsonl", b'{"title": "A", "abstract": "B"}\n\n{"abstract": "C"}\n', "jsonl", "{path}:3: record has no title"),
        ("list.jsonl", b'[1, 2]\n', "jsonl", "{path}:1: expected a JSON object, got list"),
        ("noabs.jsonl", b'{"title": "A"}\n', "jsonl", "{path}:1: record has no abstract/text"),
        ("cols.csv", b"name,summary_text\nA,B\n", "csv", "{path}:1: CSV header lacks column(s) title, abstract; found ['name', 'summary_text']"),
        ("ragged.csv", b"title,abstract\nA,B,C\n", "csv", "{path}:2: row has 3 fields, header has 2"),
        ("beir.jsonl", b'{"title": "A", "text": "B"}\n', "beir", "{path}:1: BEIR record has no _id/id"),
        ("arxiv.jsonl", b'{"title": "A", "abstract": "B"}\n', "arxiv", "{path}:1: arXiv record has no id"),
        ("long.txt", ("T" * 1001 + "\nabstract\n").encode(), "seed", "{path}:1: title line too long: are title and abstract lines out of step?"),
    ],
)  # fmt: skip
def test_malformed_corpora_name_file_and_line(
    tmp_path: Path, name: str, content: bytes, fmt: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert error_of(path, fmt) == expected.format(path=path)


def test_missing_path_and_unknown_format(tmp_path: Path) -> None:
    assert error_of(tmp_path / "nope.txt") == f"{tmp_path / 'nope.txt'}: no such file"
    assert "unknown format 'xml'" in error_of(BUNDLED_CORPUS, "xml")
    assert error_of(tmp_path) == f"{tmp_path}: is a folder without corpus.jsonl"


def test_readers_stream_instead_of_loading_whole_files(tmp_path: Path) -> None:
    """The first paper comes out before a malformed line far below is read."""
    path = tmp_path / "big.jsonl"
    good = json.dumps({"title": "A", "abstract": "B"}) + "\n"
    path.write_text(good * 50_000 + "not json\n")
    stream = read_corpus(path)
    assert next(stream).title == "A"
    with pytest.raises(CorpusError, match=r":50001: not valid JSON"):
        list(stream)
