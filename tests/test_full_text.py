"""Full text end to end: a folder of real PDFs (LaTeX-made) in, answers citing the page a fact is on, the PDF served
at that page to the web UI and nothing else served."""

import json
import re
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from app.ui import ingest_upload
from rag.assistant import Assistant
from rag.errors import BadInput
from rag.ingest import IngestReport
from rag.library import summaries
from tests.conftest import App, cli, make_settings, rag_serve
from tests.pdfs import latex_paper, scanned_pdf, truncated_pdf
from tests.test_ui import CHROMIUM, CHROMIUM_FLAGS, open_app

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "ui-pdf.png"
ROUTER = "Sparse Expert Routing for Protein Language Models"
KERNELS = "Tiled Attention Kernels for Long Genomic Sequences"
QUESTION = "What learning rate trained the sparse expert router of the protein language model?"
INTRODUCTION = (
    "Protein language models read amino acid sequences as text and learn structure from evolution. "
    "Their cost grows with every residue, which limits them to short proteins on one accelerator. "
    "Mixture-of-experts layers keep the compute per token small while the parameter count grows."
)
METHOD = (
    "Each residue is sent to two of sixty-four experts by a learned router. "
    "The router sees the residue embedding and its position in the chain. "
    "A balancing loss keeps every expert busy."
)
RESULTS = (
    "On structure prediction the sparse model matches the dense baseline. "
    "It needs a third of the floating-point operations per sequence."
)


def router_paper(folder: Path) -> Path:
    """Facts on known pages: the learning rate only on page 3, in the Training section."""
    return latex_paper(
        folder,
        "router",
        title=ROUTER,
        abstract="We route residues of protein sequences to sparse experts and match dense models at a third of the "
        "compute on structure prediction benchmarks.",
        sections=[
            ("Introduction", [INTRODUCTION]),
            (
                "Method",
                [METHOD, "\\clearpage", "Experts are feed-forward blocks of the same width as the dense layer."],
            ),
            (
                "Training",
                [
                    "\\clearpage",
                    "The sparse expert router was trained with a learning rate of 0.00037 and a batch of 512 sequences "
                    "for the protein language model.",
                    "Training took four days on eight accelerators.",
                ],
            ),
            ("Results", [RESULTS]),
        ],
    )


def kernels_paper(folder: Path) -> Path:
    return latex_paper(
        folder,
        "kernels",
        title=KERNELS,
        abstract="Tiled attention kernels process genomic sequences of a million bases on one accelerator.",
        sections=[("Introduction", ["Genomes are long; attention over them is quadratic. " * 8])],
    )


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as a researcher keeps one: PDFs in sub-folders, a scan, and a file that is not a paper."""
    build = tmp_path_factory.mktemp("latex")
    folder = tmp_path_factory.mktemp("library") / "papers"
    (folder / "2024" / "genomics").mkdir(parents=True)
    shutil.copy(router_paper(build), folder / "router.pdf")
    shutil.copy(kernels_paper(build), folder / "2024" / "genomics" / "kernels.pdf")
    scanned_pdf(folder / "2024" / "scan.pdf")
    (folder / "README.md").write_text("my reading list\n")
    return folder


@pytest.fixture(scope="module")
def ingested(library: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], dict]:
    env = {"RAG_DATA_DIR": str(tmp_path_factory.mktemp("full-text") / "data"), "RAG_LLM__PROVIDER": "none"}
    result = cli("ingest", str(library), "--collection", "c", "--json", env=env)
    assert result.exit_code == 0, result.output
    return env, json.loads(result.stdout)


def test_a_folder_of_pdfs_is_read_recursively_with_skips_counted_by_reason(ingested: tuple[dict, dict]) -> None:
    _, report = ingested
    assert (report["papers"], report["added"], report["full_text"]) == (2, 2, 2)
    assert report["skipped_by_reason"] == {"no_text": 1, "unsupported": 1}
    assert report["pages"] == 4 and report["passages"] > report["full_text"]
    assert any("scan.pdf" in problem for problem in report["problems"])


def test_a_fact_only_on_page_3_is_cited_with_its_page(ingested: tuple[dict, dict]) -> None:
    env, _ = ingested
    result = cli("ask", QUESTION, "--collection", "c", "--json", env=env)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert not answer["refused"], answer["answer"]
    (source,) = [s for s in answer["sources"] if s["title"] == ROUTER]
    assert source["n"] in {citation["n"] for citation in answer["citations"]}
    assert len(source["pages"]) == len(source["evidence"])
    stating = [
        page for sentence, page in zip(source["evidence"], source["pages"], strict=True) if "0.00037" in sentence
    ]
    assert stating == [3]


def test_search_names_the_page_and_section_of_the_best_passage(ingested: tuple[dict, dict]) -> None:
    env, _ = ingested
    result = cli("search", "learning rate of the sparse expert router", "--collection", "c", "--json", env=env)
    best = json.loads(result.stdout)[0]
    assert best["title"] == ROUTER and best["page"] == 3 and "Training" in best["section"]


def test_re_ingest_adds_nothing_and_prune_removes_a_deleted_pdf(library: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(library, tmp_path / "papers")
    env = {"RAG_DATA_DIR": str(tmp_path / "data")}
    first = json.loads(cli("ingest", str(copy), "--json", env=env).stdout)
    again = json.loads(cli("ingest", str(copy), "--json", env=env).stdout)
    assert (first["added"], again["added"], again["skipped"]) == (2, 0, 2)
    (copy / "2024" / "genomics" / "kernels.pdf").unlink()
    pruned = json.loads(cli("ingest", str(copy), "--prune", "--json", env=env).stdout)
    assert (pruned["papers"], pruned["removed"]) == (1, 1)


def test_an_unreadable_pdf_given_alone_is_bad_input_and_the_store_is_untouched(tmp_path: Path) -> None:
    broken = truncated_pdf(tmp_path / "broken.pdf")
    env = {"RAG_DATA_DIR": str(tmp_path / "data")}
    result = cli("ingest", str(broken), "--collection", "c", env=env)
    assert result.exit_code == 2 and "broken.pdf" in result.output
    assert json.loads(cli("collections", "list", "--json", env=env).stdout) == []


@pytest.fixture(scope="module")
def pdf_app(ingested: tuple[dict, dict]) -> Iterator[App]:
    env, _ = ingested
    data = Path(env["RAG_DATA_DIR"])
    with rag_serve(data, data.parent / "serve.log", RAG_COLLECTION="c", RAG_LLM__PROVIDER="none") as app:
        yield app


def test_the_app_serves_a_kept_pdf_by_paper_and_nothing_by_path(pdf_app: App, library: Path) -> None:
    reply = httpx.post(
        f"{pdf_app.url}/v1/chat/completions",
        json={"model": "rag-evidence", "messages": [{"role": "user", "content": QUESTION}]},
        timeout=120,
    )
    paper_id = next(s["paper_id"] for s in reply.json()["sources"] if s["title"] == ROUTER)
    served = httpx.get(f"{pdf_app.url}/pdf/c/{paper_id}", timeout=30)
    assert served.status_code == 200 and served.headers["content-type"] == "application/pdf"
    assert served.content == (library / "router.pdf").read_bytes()
    for path in (
        "/pdf/c/..%2F..%2Fchroma%2Fchroma.sqlite3",
        "/pdf/c/" + "%2E%2E%2F" * 6 + "etc%2Fpasswd",
        f"/pdf/nosuch/{paper_id}",
        "/pdf/c/pdf:0000000000000000",
    ):
        assert httpx.get(pdf_app.url + path, timeout=30).status_code == 404, path


def test_the_ui_shows_the_page_on_the_card_and_opens_the_pdf_there(pdf_app: App) -> None:
    with sync_playwright() as playwright:
        browser: Browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = open_app(browser, pdf_app.url)
        page.locator("#question textarea").fill(QUESTION)
        page.locator("#question textarea").press("Enter")
        card = page.locator("#sources .rag-source", has_text=ROUTER).first
        expect(card).to_contain_text(re.compile(r"p\. 3 · \d? ?Training"), timeout=120_000)
        link = card.locator("a", has_text="p. 3")
        href = link.get_attribute("href") or ""
        assert re.fullmatch(r"/pdf/c/[^/#]+#page=3", href), href
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        with page.expect_popup() as opened:
            link.click()
        pdf = opened.value
        assert pdf.url.endswith("#page=3") and "/pdf/c/" in pdf.url
        served = page.request.get(pdf_app.url + href.split("#")[0])
        assert served.status == 200 and served.headers["content-type"] == "application/pdf"
        refused = page.request.get(pdf_app.url + "/pdf/c/..%2F..%2Fchroma%2Fchroma.sqlite3")
        assert refused.status == 404
        browser.close()


def gradio_upload(root: Path, source: Path, name: str) -> Path:
    """A file where Gradio puts an upload: a folder of its own."""
    folder = root / "uploads" / name.replace(".", "-")
    folder.mkdir(parents=True)
    return Path(shutil.copy(source, folder / name))


def test_several_pdfs_and_a_zip_upload_at_once_from_the_ui(library: Path, tmp_path: Path) -> None:
    assistant = Assistant(make_settings(tmp_path / "data", llm={"provider": "none"}))
    uploads = [
        gradio_upload(tmp_path, library / "router.pdf", "router.pdf"),
        gradio_upload(tmp_path, library / "2024" / "genomics" / "kernels.pdf", "kernels.pdf"),
    ]
    report = list(ingest_upload(assistant, uploads, "mine"))[-1]
    assert isinstance(report, IngestReport) and (report.papers, report.full_text) == (2, 2)
    assert not any(upload.exists() for upload in uploads)

    archive = tmp_path / "papers.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(library / "router.pdf", "papers/router.pdf")
        zipped.write(library / "2024" / "genomics" / "kernels.pdf", "../../escaped.pdf")  # never a path on disk
        zipped.writestr("notes.txt", "a reading list, not a corpus")
    report = list(ingest_upload(assistant, [gradio_upload(tmp_path, archive, "papers.zip")], "zipped"))[-1]
    assert isinstance(report, IngestReport) and (report.papers, report.full_text) == (2, 2)
    assert report.skipped_by_reason == {"unreadable": 1}  # the notes, named in problems
    assert not (tmp_path.parent / "escaped.pdf").exists() and not list(tmp_path.rglob("escaped.pdf"))


def test_a_zip_that_unpacks_too_far_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    assistant = Assistant(make_settings(tmp_path / "data", server={"max_upload_mb": 1}, llm={"provider": "none"}))
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("huge.pdf", b"%PDF-1.4\n" + b"\0" * 11_000_000)
    upload = gradio_upload(tmp_path, archive, "bomb.zip")
    with pytest.raises(BadInput, match="unpacks to 11 MB"):
        list(ingest_upload(assistant, [upload], "mine"))
    assert not upload.parent.exists() and summaries(assistant.settings) == []


def test_with_a_ui_login_a_pdf_is_served_only_to_a_logged_in_browser(
    ingested: tuple[dict, dict], library: Path, tmp_path: Path
) -> None:
    env, _ = ingested
    data = shutil.copytree(env["RAG_DATA_DIR"], tmp_path / "data")
    search = cli("search", "sparse expert router", "--collection", "c", "--json", env={"RAG_DATA_DIR": str(data)})
    paper_id = next(hit["paper_id"] for hit in json.loads(search.stdout) if hit["title"] == ROUTER)
    login = {"RAG_LLM__PROVIDER": "none", "RAG_SERVER__UI_AUTH": "ann:s3cret-pw"}
    with rag_serve(data, tmp_path / "serve.log", **login) as app:
        assert httpx.get(f"{app.url}/pdf/c/{paper_id}", timeout=30).status_code == 401
        with httpx.Client(base_url=app.url, timeout=30) as browser:
            assert browser.post("/login", data={"username": "ann", "password": "wrong"}).status_code >= 400
            assert browser.get(f"/pdf/c/{paper_id}").status_code == 401
            assert browser.post("/login", data={"username": "ann", "password": "s3cret-pw"}).status_code == 200
            served = browser.get(f"/pdf/c/{paper_id}")
        assert served.status_code == 200 and served.content == (library / "router.pdf").read_bytes()
