"""Exports with their files: the PDF a BibTeX ``file`` field or a RIS ``L1`` line names (as Zotero, Better BibTeX,
Mendeley and JabRef write them) is read for full text, and Zotero's "Export Files" folder is one library, not a
library plus loose PDFs."""

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from app.ui import ingest_upload
from rag.assistant import Assistant
from rag.ingest import IngestReport
from rag.readers.exports import bibtex_files
from tests.conftest import cli, make_settings
from tests.pdfs import latex_paper, truncated_pdf

ROUTER = "Sparse Expert Routing for Protein Language Models"
FACT = "0.00041"


@pytest.mark.parametrize(
    ("field", "paths"),
    [
        (  # Zotero, a path into its storage folder
            "Full Text PDF:/home/ada/Zotero/storage/ABCD2345/Smith - 2020 - Routing.pdf:application/pdf",
            ["/home/ada/Zotero/storage/ABCD2345/Smith - 2020 - Routing.pdf"],
        ),
        (  # Zotero on Windows escapes ':' and '\'
            r"Full Text PDF:C\:\\Users\\ada\\Zotero\\storage\\ABCD2345\\a.pdf:application/pdf",
            [r"C:\Users\ada\Zotero\storage\ABCD2345\a.pdf"],
        ),
        (  # Zotero's Export Files: relative paths, a snapshot beside the PDF
            "Full Text PDF:files/5/a.pdf:application/pdf;Snapshot:files/6/a.html:text/html",
            ["files/5/a.pdf"],
        ),
        (":home/ada/Documents/Mendeley Desktop/Smith{\\_}2020.pdf:pdf", ["home/ada/Documents/Mendeley Desktop/Smith_2020.pdf"]),
        (":C$\\backslash$:/Users/ada/Mendeley/a.pdf:pdf", ["C:/Users/ada/Mendeley/a.pdf"]),  # Mendeley on Windows
        (":papers/smith2020.pdf:PDF;:papers/smith2020-supplement.pdf:PDF", ["papers/smith2020.pdf", "papers/smith2020-supplement.pdf"]),  # JabRef
        ("/home/ada/papers/a.pdf;/home/ada/papers/b.pdf", ["/home/ada/papers/a.pdf", "/home/ada/papers/b.pdf"]),  # Better BibTeX
        ("Snapshot:files/6/a.html:text/html", []),
    ],
)  # fmt: skip
def test_each_reference_managers_file_field_names_its_pdfs(field: str, paths: list[str]) -> None:
    assert bibtex_files(field) == paths


@pytest.fixture(scope="module")
def pdfs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    build = tmp_path_factory.mktemp("latex")
    router = latex_paper(
        build,
        "router",
        title=ROUTER,
        abstract="",  # the entry's abstract, or none, stands for the paper's
        sections=[
            ("Method", ["Each residue is sent to two of sixty-four experts by a learned router.", "\\clearpage"]),
            ("Training", [f"The router was trained with a learning rate of {FACT} on eight accelerators."]),
        ],
    )
    kernels = latex_paper(
        build,
        "kernels",
        title="Tiled Attention Kernels for Long Genomic Sequences",
        abstract="Tiled attention kernels process genomic sequences of a million bases on one accelerator.",
        sections=[("Introduction", ["Tiling keeps each block of the score matrix in fast on-chip memory."])],
    )
    return {"router": router, "kernels": kernels}


def _export_files_folder(root: Path, pdfs: dict[str, Path]) -> Path:
    """What Zotero's "Export Library… → Export Files" writes: the .bib and a files/<n>/ folder for each attachment."""
    folder = root / "Exported Items"
    for n, name in ((5, "router"), (7, "kernels")):
        (folder / "files" / str(n)).mkdir(parents=True)
        shutil.copyfile(pdfs[name], folder / "files" / str(n) / f"{name}.pdf")
    (folder / "Exported Items.bib").write_text(
        "@article{router2021,\n"
        f"  title = {{{ROUTER}}},\n"
        "  author = {Lovelace, Ada},\n"
        "  year = {2021},\n"
        "  file = {Full Text PDF:files/5/router.pdf:application/pdf},\n"
        "}\n\n"
        "@inproceedings{kernels2019,\n"
        "  title = {Tiled Attention Kernels for Long Genomic Sequences},\n"
        "  abstract = {Tiled attention kernels process genomic sequences of a million bases.},\n"
        "  year = {2019},\n"
        "  file = {Full Text PDF:files/7/kernels.pdf:application/pdf;Snapshot:files/8/k.html:text/html},\n"
        "}\n\n"
        "@article{missing2020,\n"
        "  title = {A Paper Whose File Was Not Exported},\n"
        "  abstract = {Its abstract is all there is to search.},\n"
        "  file = {Full Text PDF:files/9/missing.pdf:application/pdf},\n"
        "}\n\n"
        "@article{bare2018,\n"
        "  title = {An Entry with Neither Abstract nor File},\n"
        "}\n"
    )
    return folder


def test_an_export_files_folder_reads_each_pdf_once_with_its_entry(pdfs: dict[str, Path], tmp_path: Path) -> None:
    folder = _export_files_folder(tmp_path, pdfs)
    env = {"RAG_DATA_DIR": str(tmp_path / "data"), "RAG_LLM__PROVIDER": "none"}
    result = cli("ingest", str(folder), "--json", env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["papers"], report["full_text"], report["duplicates"]) == (3, 2, 0)  # no PDF is a paper twice
    assert report["skipped_by_reason"] == {"no_abstract": 1}  # the bare entry
    (warning,) = report["problems"]
    assert warning.startswith(f"{folder / 'Exported Items.bib'}:15: field 'file': 'files/9/missing.pdf' is not on disk")
    found = json.loads(cli("search", "learning rate of the router", "-k", "1", "--json", env=env).stdout)
    assert (found[0]["title"], found[0]["page"]) == (ROUTER, 2)  # an entry without an abstract is now a paper
    again = json.loads(cli("ingest", str(folder), "--json", env=env).stdout)
    assert (again["added"], again["updated"], again["full_text"]) == (0, 0, 0)  # unchanged PDFs are not read again


def test_a_ris_l1_line_and_a_mendeley_path_without_its_root_find_the_pdf(pdfs: dict[str, Path], tmp_path: Path) -> None:
    shutil.copyfile(pdfs["router"], tmp_path / "router.pdf")
    ris = tmp_path / "library.ris"
    ris.write_text(
        f"TY  - JOUR\nTI  - {ROUTER}\nAU  - Lovelace, Ada\nPY  - 2021\nL1  - router.pdf\nER  - \n\n"
        "TY  - JOUR\nTI  - A Paper Linked by URL\nAB  - Linked, not stored.\n"
        f"L1  - file://{pdfs['kernels'].as_posix()}\nER  - \n"
    )
    bib = tmp_path / "mendeley.bib"
    relative = str(pdfs["kernels"]).lstrip("/").replace("_", "{\\_}")
    bib.write_text(f"@article{{k,\ntitle = {{Kernels}},\nfile = {{:{relative}:pdf}}\n}}\n")
    env = {"RAG_DATA_DIR": str(tmp_path / "data")}
    report = json.loads(cli("ingest", str(ris), "--json", env=env).stdout)
    assert (report["papers"], report["full_text"], report["problems"]) == (2, 2, [])
    mendeley = json.loads(cli("ingest", str(bib), "--json", "--collection", "m", env=env).stdout)
    assert (mendeley["papers"], mendeley["full_text"]) == (1, 1)


def test_strict_still_fails_on_a_file_that_is_not_there(pdfs: dict[str, Path], tmp_path: Path) -> None:
    folder = _export_files_folder(tmp_path, pdfs)
    env = {"RAG_DATA_DIR": str(tmp_path / "data")}
    result = cli("ingest", str(folder / "Exported Items.bib"), "--strict", env=env)
    assert result.exit_code == 2 and "field 'file'" in result.output and "--strict" in result.output
    assert json.loads(cli("collections", "list", "--json", env=env).stdout) == []


def test_strict_stops_at_an_unreadable_pdf_before_the_store_is_touched(pdfs: dict[str, Path], tmp_path: Path) -> None:
    damaged = truncated_pdf(tmp_path / "damaged.pdf")  # starts as a PDF: only reading it finds the fault
    bib = tmp_path / "library.bib"
    bib.write_text(
        f"@article{{router,\n  title = {{{ROUTER}}},\n  file = {{{pdfs['router']}}}\n}}\n"
        f"@article{{cut,\n  title = {{A Cut Download}},\n  abstract = {{Half a file.}},\n  file = {{{damaged}}}\n}}\n"
    )
    env = {"RAG_DATA_DIR": str(tmp_path / "data"), "RAG_INGEST__BATCH_PAPERS": "1"}  # the router paper's batch first
    result = cli("ingest", str(bib), "--strict", env=env)
    assert result.exit_code == 2 and "damaged.pdf" in result.output and "--strict" in result.output
    assert json.loads(cli("collections", "list", "--json", env=env).stdout) == []
    report = json.loads(cli("ingest", str(bib), "--json", env=env).stdout)
    assert (report["papers"], report["full_text"]) == (2, 1)  # without --strict: the cut one keeps its abstract
    again = cli("ingest", str(bib), "--strict", env=env)  # nothing changed: no PDF needs reading, nothing to stop at
    assert again.exit_code == 0


def test_an_uploaded_library_reads_its_own_pdfs_and_no_other_file_of_the_server(
    pdfs: dict[str, Path], tmp_path: Path
) -> None:
    server_pdf = tmp_path / "server" / "private.pdf"  # a PDF on the server, named by absolute path in the upload
    server_pdf.parent.mkdir()
    shutil.copyfile(pdfs["kernels"], server_pdf)
    server_text = server_pdf.with_name("notes.pdf")  # a file that is not a PDF, and one that does not exist
    server_text.write_text("not a PDF")
    probes = f"{server_pdf};{server_text};{server_pdf.with_name('absent.pdf')}"
    bib = (
        f"@article{{inside,\n  title = {{{ROUTER}}},\n  file = {{Full Text PDF:files/1/router.pdf:application/pdf}}\n}}\n"
        f"@article{{outside,\n  title = {{Kernels}},\n  abstract = {{Kernels, abstract only.}},\n"
        f"  file = {{{server_pdf}}}\n}}\n"
        f"@article{{bare,\n  title = {{No Abstract}},\n  file = {{{probes}}}\n}}\n"
    )
    archive = tmp_path / "library.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("library.bib", bib)
        zipped.write(pdfs["router"], "files/1/router.pdf")
    upload = tmp_path / "uploads" / "1a2b" / "library.zip"  # where Gradio puts an upload: a folder of its own
    upload.parent.mkdir(parents=True)
    shutil.copyfile(archive, upload)
    assistant = Assistant(make_settings(tmp_path / "data", llm={"provider": "none"}))
    report = list(ingest_upload(assistant, [upload], "mine"))[-1]
    assert isinstance(report, IngestReport)
    assert (report.papers, report.full_text) == (2, 1)  # the router with its PDF; the kernels entry with its abstract
    assert report.skipped_by_reason == {"no_abstract": 1}  # the entry with neither an abstract nor a PDF it may read
    # Every server path gets the same answer, so an upload cannot learn which of them exist or are PDFs.
    assert sum("outside the uploaded files" in problem for problem in report.problems) == 4
    assert not [problem for problem in report.problems if "not on disk" in problem or "not a PDF" in problem]
    assert ":5: field 'file'" in next(p for p in report.problems if "field 'file'" in p)  # file and line named
    env = {"RAG_DATA_DIR": str(tmp_path / "data")}
    found = json.loads(
        cli("search", "score matrix in fast on-chip memory", "--collection", "mine", "--json", env=env).stdout
    )
    assert [hit.get("page") for hit in found if hit["title"] == "Kernels"] == [None]  # its abstract; no page of the PDF
    assert server_pdf.is_file()  # read by nobody, removed by nobody
