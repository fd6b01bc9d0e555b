"""The PDF reader on real LaTeX papers (two columns, running header, page numbers, references) and on the broken
and hostile files a library folder holds: each comes back as a Paper or a Skipped with its reason, in order, and
the calling process survives every one."""

import re
import time
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from fpdf import FPDF

from rag.papers import ABSTRACT, Paper, Skipped
from rag.readers.pdf import _join, file_digest, read_pdf, read_pdfs
from rag.settings import PdfSettings, Settings
from tests.pdfs import (
    encrypted_pdf,
    inflating_pdf,
    latex_paper,
    many_pages_pdf,
    numbered_sentence,
    scanned_pdf,
    truncated_pdf,
)

TITLE = "Sparse Routing for Efficient Protein Language Models"
HEADER = "Preprint under review at the Workshop on Efficient Models"
ABSTRACT_TEXT = "We route residues of protein sequences to sparse experts and match dense models."
ON_PAGE_2 = "The dropout rate of the router was 0.13 in every run."
ON_PAGE_3 = "The learning rate of the router was 0.00037 for every run."
SENTENCES = [numbered_sentence(n) for n in range(1, 280)]


def defaults() -> PdfSettings:
    return Settings().pdf  # type: ignore[call-arg]  # the fields come from config/default.toml


def paragraphs(start: int, end: int) -> list[str]:
    return [" ".join(SENTENCES[at : min(at + 10, end)]) for at in range(start, end, 10)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pdfs")


@pytest.fixture(scope="module")
def two_column(folder: Path) -> Path:
    """Four pages: page 1 fills both columns, a fact alone on page 2 and another on page 3."""
    return latex_paper(
        folder,
        "routing",
        title=TITLE,
        abstract=ABSTRACT_TEXT,
        date="arXiv:2401.01234",
        header=HEADER,
        sections=[
            ("Introduction", paragraphs(0, 40)),
            (
                "Method",
                [
                    "The first finding flows from efficient official offices that fly an affine map. Our experi-"
                    "\\linebreak ments use self-\\linebreak attention, as self-attention is cheap.",
                    *paragraphs(40, 50),
                    "\\clearpage",
                    ON_PAGE_2,
                    *paragraphs(50, 100),
                    "\\subsection{Ablations}",
                    *paragraphs(100, 120),
                ],
            ),
            ("Experiments", ["\\clearpage", ON_PAGE_3, *paragraphs(120, 279)]),
        ],
    )


@pytest.fixture(scope="module")
def papers(folder: Path, two_column: Path) -> dict[str, Paper]:
    """The good papers, read in one call: the two-column one, a one-column one with a DOI and a file name as its
    document title, and one without an abstract or an identifier whose document title is real."""
    one_column = latex_paper(
        folder,
        "kernels",
        title="Tiled Attention Kernels for Long Genomic Sequences",
        abstract="Tiled attention kernels process genomic sequences of a million bases on one accelerator.",
        date="https://doi.org/10.1234/Genome.2024.17",
        pdf_title="main.tex",
        two_column=False,
        sections=[("Introduction", ["Genomes are long; attention over them is quadratic. " * 8])],
    )
    untitled = latex_paper(
        folder,
        "notes",
        title="Lab Notes",
        abstract=None,
        pdf_title="Calibration Notes on Expert Routers",
        sections=[("Setup", ["We calibrated the expert routers on a held-out split of ten thousand sequences."])],
    )
    read = list(read_pdfs([two_column, one_column, untitled], defaults()))
    assert all(isinstance(paper, Paper) for paper in read), read
    return dict(zip(["routing", "kernels", "notes"], read, strict=True))  # type: ignore[arg-type]


def body_text(paper: Paper) -> str:
    return " ".join(passage.text for passage in paper.body)


def test_title_id_abstract_and_its_page_come_from_the_first_page(papers: dict[str, Paper], two_column: Path) -> None:
    paper = papers["routing"]
    assert (paper.title, paper.paper_id) == (TITLE, "arxiv:2401.01234")
    assert paper.abstract == ABSTRACT_TEXT
    assert paper.passages[0].page == 1 and paper.passages[0].section == ABSTRACT
    assert paper.file == f"{file_digest(two_column)}.pdf" and re.fullmatch(r"[0-9a-f]{16}", file_digest(two_column))


def test_sections_are_the_numbered_headings_as_printed_one_passage_per_page_and_section(
    papers: dict[str, Paper],
) -> None:
    runs = [(passage.page, passage.section) for passage in papers["routing"].body]
    assert len(runs) == len(set(runs))
    sections = list(dict.fromkeys(section for _, section in runs))
    assert sections == [None, "1 Introduction", "2 Method", "2.1 Ablations", "3 Experiments"]
    pages = [page or 0 for page, _ in runs]
    assert pages == sorted(pages) and pages[-1] == 4  # the reference list alone on page 5


def test_a_fact_comes_out_on_the_page_it_is_printed_on(papers: dict[str, Paper]) -> None:
    passages = papers["routing"].body
    assert [(p.page, p.section) for p in passages if ON_PAGE_2 in p.text] == [(2, "2 Method")]
    assert [(p.page, p.section) for p in passages if ON_PAGE_3 in p.text] == [(3, "3 Experiments")]


def test_every_sentence_comes_out_whole_and_in_order_across_columns_and_pages(papers: dict[str, Paper]) -> None:
    text, at = body_text(papers["routing"]), 0
    for sentence in SENTENCES:
        found = text.find(sentence, at)
        assert found >= 0, f"not whole or out of order: {sentence!r}"
        at = found + len(sentence)


def test_ligatures_become_letters_and_broken_words_are_rejoined_but_compounds_kept(
    papers: dict[str, Paper], two_column: Path
) -> None:
    document = pdfium.PdfDocument(two_column)
    pages = [document[i].get_textpage() for i in range(len(document))]
    line_ends = [text.get_text_bounded(*text.get_rect(i))[-1:] for text in pages for i in range(text.count_rects())]
    assert line_ends.count("\x02") > 2  # TeX broke words of the sentences too, not only the forced breaks
    text = body_text(papers["routing"])
    assert "The first finding flows from efficient official offices that fly an affine map." in text
    assert not re.search("[\ufb00-\ufb06]", text)
    assert "Our experiments use self-attention, as self-attention is cheap." in text
    tex_broken = re.findall(r"\b[a-z]+- [a-z]+", text)
    assert not tex_broken and "\x02" not in text


@pytest.mark.parametrize(
    ("lines", "vocabulary", "text"),
    [
        (["an effi-", "cient map"], set(), "an efficient map"),
        (["uses self-", "attention"], {"self-attention"}, "uses self-attention"),  # printed unbroken elsewhere
        (["the mixture-of-", "experts model"], set(), "the mixture-of-experts model"),  # TeX breaks it at a hyphen
    ],
)
def test_a_line_end_hyphen_is_joined_inside_a_word_and_kept_in_a_compound(
    lines: list[str], vocabulary: set[str], text: str
) -> None:
    assert _join(lines, vocabulary) == text


def test_running_header_page_numbers_and_references_are_left_out(papers: dict[str, Paper]) -> None:
    text = body_text(papers["routing"])
    assert "Preprint under review" not in text
    assert not re.search(r"feeds\. \d+ Observation|\d \d", text)
    assert "Vaswani" not in text and "References" not in text and "BERT" not in text


def test_a_doi_names_the_paper_and_a_file_name_is_no_title(papers: dict[str, Paper], folder: Path) -> None:
    paper = papers["kernels"]
    assert (paper.paper_id, paper.doi) == ("doi:10.1234/genome.2024.17", "10.1234/genome.2024.17")
    assert paper.title == "Tiled Attention Kernels for Long Genomic Sequences"
    assert paper.abstract.startswith("Tiled attention kernels") and paper.body[-1].section == "1 Introduction"
    assert read_pdf(folder / "kernels.pdf") == paper  # alone, with the default settings


def test_a_real_document_title_wins_and_a_paper_without_an_id_is_named_by_its_content(
    papers: dict[str, Paper], folder: Path
) -> None:
    paper = papers["notes"]
    digest = file_digest(folder / "notes.pdf")
    assert (paper.title, paper.paper_id, paper.file) == (
        "Calibration Notes on Expert Routers",
        f"pdf:{digest}",
        f"{digest}.pdf",
    )
    assert paper.abstract == "" and paper.passages[-1].section == "1 Setup"
    assert "held-out split of ten thousand sequences" in paper.passages[-1].text


def skips(entries: list, count: int) -> list[Skipped]:
    assert len(entries) == count and all(isinstance(entry, Skipped) for entry in entries), entries
    return entries


def test_broken_files_are_skipped_each_with_its_reason(folder: Path) -> None:
    files = [
        scanned_pdf(folder / "scan.pdf"),
        encrypted_pdf(folder / "locked.pdf"),
        truncated_pdf(folder / "cut.pdf"),
        folder / "notes.txt.pdf",
        many_pages_pdf(folder / "long.pdf", 7),
    ]
    files[3].write_text("not a PDF at all\n")
    started = time.monotonic()
    read = skips(list(read_pdfs(files, defaults().model_copy(update={"max_pages": 5}))), 5)
    assert time.monotonic() - started < 10
    assert [(entry.path, entry.line, entry.reason) for entry in read] == [
        (files[0], 1, "no_text"),
        *((path, 1, "unreadable") for path in files[1:]),
    ]
    assert read[0].detail == "scan.pdf has no text layer (scanned?): skipped, no OCR"
    assert "encrypted" in read[1].detail
    assert "not a PDF or is damaged (truncated?)" in read[2].detail and "not a PDF" in read[3].detail
    assert read[4].detail == "long.pdf has 7 pages (limit pdf.max_pages=5)"


def test_a_pdf_over_the_time_limit_is_skipped_and_the_next_one_still_reads(folder: Path, two_column: Path) -> None:
    settings = PdfSettings(max_pages=1_000_000, timeout_s=2, max_memory_mb=2048)
    slow = many_pages_pdf(folder / "endless.pdf", 100_000)
    started = time.monotonic()
    read = list(read_pdfs([slow, two_column], settings))
    assert time.monotonic() - started < 8
    assert isinstance(read[0], Skipped) and read[0].detail == "endless.pdf took more than 2 s (pdf.timeout_s)"
    assert isinstance(read[1], Paper) and read[1].title == TITLE


def test_a_pdf_that_inflates_past_the_memory_limit_is_skipped_and_the_next_one_still_reads(
    folder: Path, two_column: Path
) -> None:
    settings = defaults().model_copy(update={"max_memory_mb": 100})
    bomb = inflating_pdf(folder / "bomb.pdf", 150)
    read = list(read_pdfs([bomb, two_column, bomb], settings))
    assert [type(entry) for entry in read] == [Skipped, Paper, Skipped]
    assert "bomb.pdf" in read[0].detail and "100 MB (pdf.max_memory_mb)" in read[0].detail  # type: ignore[union-attr]


def test_a_pdf_in_one_type_size_is_titled_by_its_file_name(tmp_path: Path) -> None:
    """Pages of text in one size have no title line: the file's name stands in, and the PDF is still read."""
    pdf = FPDF(format="letter")
    pdf.set_font("Helvetica", "", 10)
    for _ in range(2):
        pdf.add_page()
        pdf.multi_cell(0, 5, "Quarterly figures of the protein folding service rose in every region this year. " * 30)
    pdf.output(str(tmp_path / "folding_report-2024.pdf"))
    paper = read_pdf(tmp_path / "folding_report-2024.pdf")
    assert isinstance(paper, Paper), paper
    assert paper.title == "folding report-2024" and {passage.page for passage in paper.passages} == {1, 2}
