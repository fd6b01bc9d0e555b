"""Bringing a library to the web UI: upload with progress, choose and delete collections, export citations.

The browser half drives Debian's chromium with Playwright against `rag serve`; the rest calls the upload path of
the UI (:func:`app.ui.ingest_upload`) on a real store."""

import re
import tempfile
import threading
from pathlib import Path

import bibtexparser
import httpx
import pytest
from bibtexparser.middlewares import LatexDecodingMiddleware
from gradio_client import Client
from playwright.sync_api import Browser, expect

from app.ui import answer_markdown, bibtex_download, filters_of, ingest_upload, reference_line
from rag.answer import Answer, final_answer
from rag.assistant import Assistant
from rag.errors import BadInput
from rag.evidence import Evidence
from rag.ingest import IngestProgress, IngestReport
from rag.library import summaries
from rag.readers import read_corpus
from rag.retrieve import Filters
from tests.conftest import App, make_settings
from tests.test_ui import SOFTMAX, browser, open_app, paper

LIBRARY = Path(__file__).parent / "data" / "library"
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "ui-library.png"
__all__ = ["browser"]  # the module-scoped chromium fixture, shared with tests/test_ui.py


def test_upload_a_bib_ask_it_and_download_the_citations_as_bibtex(
    browser: Browser, app_server: App, tmp_path: Path
) -> None:
    page = open_app(browser, app_server.url)
    expect(page.locator("#corpus-stats")).to_contain_text("231 papers", timeout=30_000)
    page.get_by_text("Library: collections and uploads").click()
    page.locator("#upload input[type=file]").set_input_files(LIBRARY / "library.bib")
    page.locator("#target input, #target textarea").first.fill("mine")
    chatter = Client(app_server.url, verbose=False)
    page.locator("#add-library").click()
    # someone else keeps chatting with the default collection while the library embeds
    other = chatter.predict(SOFTMAX, "papers", "none", 0, api_name="/ask")
    assert other["citations"] and not other["refused"]
    status = page.locator("#library-status")
    expect(status).to_contain_text("Ingested library.bib", timeout=180_000)
    expect(status).to_contain_text("20 papers added")
    expect(status).to_contain_text("1 entry without an abstract skipped")
    expect(page.locator("#corpus-stats")).to_contain_text("Corpus mine: 20 papers", timeout=30_000)

    page.get_by_text("Settings and filters").click()
    page.get_by_label("Answer model provider").click()
    page.get_by_role("option", name="none").click()  # the evidence-only answer: no model run needed
    page.locator("#question textarea").fill(SOFTMAX)
    page.locator("#question textarea").press("Enter")
    link = page.locator("#download-bibtex")
    expect(link).to_be_visible(timeout=120_000)
    cards = page.locator("#sources .rag-source")
    assert cards.count() >= 1 and "DOI 10.5555/" in cards.first.inner_text()  # the card shows the DOI, linked
    with page.expect_download() as download:
        link.click()
    assert download.value.suggested_filename == "citations.bib"
    saved = tmp_path / "citations.bib"
    download.value.save_as(saved)
    decoded = bibtexparser.parse_string(
        saved.read_text(encoding="utf-8"), append_middleware=[LatexDecodingMiddleware()]
    )
    entries = decoded.entries
    assert entries and all(entry.fields_dict["doi"].value.startswith("10.5555/") for entry in entries)
    panel = page.locator("#sources").inner_text()
    assert all(entry.fields_dict["title"].value in panel for entry in entries)
    page.get_by_text("Copy as Markdown").click()
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    references = re.compile(r"\*\*References\*\*\s+\[\d+\] ")
    expect(page.locator("#answer-markdown textarea")).to_have_value(references, timeout=10_000)

    # delete it, after a confirmation; the default collection is chosen again
    page.locator("#delete-collection").click()
    expect(page.get_by_text("Delete collection mine and its 20 papers?")).to_be_visible(timeout=10_000)
    page.locator("#confirm-delete").click()
    expect(status).to_contain_text("Deleted collection mine", timeout=30_000)
    expect(page.locator("#corpus-stats")).to_contain_text("231 papers", timeout=30_000)
    with pytest.raises(Exception, match="mine"):
        chatter.predict(SOFTMAX, "mine", "none", 0, api_name="/ask")


def test_uploads_stay_inside_the_data_directory_whatever_their_name(app_server: App, tmp_path: Path) -> None:
    """Gradio stores an upload under the data directory's uploads folder, with the name's path parts dropped."""
    data = Path(app_server.log).parent / "data"
    files = {"files": ("../../../escaped.bib", b"@article{x, title={T}, abstract={A}}", "text/plain")}
    reply = httpx.post(f"{app_server.url}/gradio_api/upload", files=files, timeout=30)
    reply.raise_for_status()
    stored = Path(reply.json()[0]).resolve()
    assert stored.is_relative_to((data / "uploads").resolve()) and stored.name == "escaped.bib"
    elsewhere = [*data.parent.parent.glob("**/escaped.bib"), *Path(tempfile.gettempdir()).glob("gradio/**/escaped.bib")]
    assert [path.resolve() for path in elsewhere] == [stored]


@pytest.fixture
def assistant(tmp_path: Path) -> Assistant:
    return Assistant(make_settings(tmp_path / "data", server={"max_upload_mb": 1}, llm={"provider": "none"}))


def uploaded(tmp_path: Path, source: Path | bytes, name: str) -> Path:
    """A file where Gradio would put an upload: a folder of its own."""
    folder = tmp_path / "uploads" / "0f3a"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(source.read_bytes() if isinstance(source, Path) else source)
    return path


def test_an_upload_ingests_with_progress_and_is_removed_afterwards(assistant: Assistant, tmp_path: Path) -> None:
    upload = uploaded(tmp_path, LIBRARY / "library.ris", "library.ris")
    events = list(ingest_upload(assistant, upload, "mine"))
    report = events[-1]
    assert isinstance(report, IngestReport) and report.papers == 20 and report.skipped_no_abstract == 1
    embedding = [e for e in events if isinstance(e, IngestProgress) and e.stage == "embedding"]
    assert embedding[0].done == 0 and embedding[-1].done == embedding[-1].total == 20
    assert not upload.exists() and not upload.parent.exists()
    assert [(row.name, row.papers) for row in summaries(assistant.settings)] == [("mine", 20)]


def test_the_filters_offer_the_collections_years_and_keywords_and_restrict_the_answer(
    assistant: Assistant, tmp_path: Path
) -> None:
    list(ingest_upload(assistant, uploaded(tmp_path, LIBRARY / "library.bib", "library.bib"), "mine"))
    (row,) = summaries(assistant.settings)
    papers = [p for p in read_corpus(LIBRARY / "library.bib") if p.year is not None]
    assert row.years == (min(p.year for p in papers), max(p.year for p in papers))
    assert set(row.categories) == {keyword for p in papers for keyword in p.categories}
    settings = assistant.settings_for("mine")

    def cited_years(filters: Filters | None) -> set[int | None]:
        conversation, _ = assistant.conversation(settings, [])
        answer = final_answer(conversation.ask(SOFTMAX, filters))
        return {source.paper.year for source in answer.evidence.sources}

    unfiltered = cited_years(filters_of(None, None, None))
    latest = max(year for year in unfiltered if year is not None)
    assert cited_years(filters_of(latest, latest, None)) == {latest}
    assert latest not in cited_years(filters_of(None, latest - 1, None))
    assert cited_years(filters_of(row.years[1] + 1, None, None)) == set()  # nothing that new: refused


@pytest.mark.parametrize(
    ("content", "name", "problem"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "figure.bib", "binary data"),
        (b"x" * 1_500_000, "huge.bib", "uploads are limited to 1 MB"),
        (b"@article{k, title={T}}\n", "no-abstract.bib", "abstract"),
    ],
)
def test_a_bad_upload_is_refused_with_the_reason_and_the_store_as_it_was(
    assistant: Assistant, tmp_path: Path, content: bytes, name: str, problem: str
) -> None:
    upload = uploaded(tmp_path, content, name)
    with pytest.raises(BadInput, match=problem):
        list(ingest_upload(assistant, upload, "mine"))
    assert not upload.exists()
    assert summaries(assistant.settings) == []


def test_a_bad_collection_name_is_refused_before_anything_is_read(assistant: Assistant, tmp_path: Path) -> None:
    upload = uploaded(tmp_path, LIBRARY / "library.bib", "library.bib")
    with pytest.raises(BadInput, match="collection name"):
        list(ingest_upload(assistant, upload, "../outside"))
    assert not upload.exists() and not (tmp_path / "outside").exists()


def test_the_answer_exports_as_markdown_with_references_and_as_bibtex() -> None:
    sources = [
        paper(1, venue="Proc. Softmax Workshop", doi="10.5555/sm.1", year=2024),
        paper(2, paper_id="arxiv:2401.01234", title="Second paper"),
    ]
    answer = Answer("q", Evidence("q", sources, []), "Text [1][2].", cited=[1, 2])
    markdown = answer_markdown(answer)
    assert markdown.startswith("Text [1][2].\n\n**References**\n\n[1] Ann Lee, Bo Chen, Cy Diaz et al. (2024).")
    assert "*Kernel density attention*. Proc. Softmax Workshop. https://doi.org/10.5555/sm.1" in markdown
    assert "[2] " in markdown and "https://arxiv.org/abs/2401.01234" in reference_line(sources[1])
    link = bibtex_download(answer)
    assert 'download="citations.bib"' in link and "2 cited papers" in link
    uncited = Answer("q", Evidence("q", sources, []), "Nothing cited.", cited=[])
    assert bibtex_download(uncited) == "" and answer_markdown(uncited) == "Nothing cited."


def test_an_upload_while_another_ingest_runs_waits_its_turn(assistant: Assistant, tmp_path: Path) -> None:
    """Two uploads never ingest at once, even when the page of the first has gone."""
    first = uploaded(tmp_path, LIBRARY / "library.json", "library.json")
    with assistant.ingesting:  # another upload's ingest holds the store
        stream = ingest_upload(assistant, first, "mine")
        started = threading.Event()

        def consume() -> None:
            started.set()
            list(stream)

        worker = threading.Thread(target=consume)
        worker.start()
        started.wait()
        worker.join(timeout=2)
        assert worker.is_alive() and summaries(assistant.settings) == []  # still waiting
    worker.join(timeout=120)
    assert [(row.name, row.papers) for row in summaries(assistant.settings)] == [("mine", 20)]
