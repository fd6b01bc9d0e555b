"""The web UI for real: Debian's chromium driven by Playwright, and `gradio_client` against the running app."""

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import App, needs_local_model, rag_serve

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "ui-softmax.png"
SOFTMAX = "Which papers discuss the softmax bottleneck?"
SOFTMAX_PAPERS = ("Why do small language models underperform?", "On Retrieval Augmentation and the Limitations")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
    with sync_playwright() as playwright:  # Playwright gives each launch a fresh temporary profile
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def open_app(browser: Browser, url: str) -> Page:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url, wait_until="load", timeout=60_000)  # gradio's heartbeat stream never lets the network idle
    page.locator("#question textarea").wait_for(timeout=60_000)
    return page


@needs_local_model
def test_the_softmax_question_streams_a_cited_answer_with_both_papers_in_the_sources(
    browser: Browser, app_server: App
) -> None:
    page = open_app(browser, app_server.url)
    expect(page.locator("#corpus-stats")).to_contain_text("231 papers", timeout=30_000)
    page.locator("#question textarea").fill(SOFTMAX)
    page.locator("#question textarea").press("Enter")
    panel = page.locator("#sources")
    for paper in SOFTMAX_PAPERS:  # the evidence shows before the model has finished
        expect(panel).to_contain_text(paper, timeout=60_000)
    chat = page.locator("#chat")
    # the model's words show token by token as a draft until their sentence is verified ...
    expect(chat.locator(".rag-draft").first).to_be_attached(timeout=120_000)
    expect(chat.locator("a.rag-cite").first).to_be_visible(timeout=180_000)
    expect(chat).to_contain_text(re.compile("Sources:|Evidence:"), timeout=180_000)  # the answer is complete
    expect(chat.locator(".rag-draft")).to_have_count(0)  # ... and no draft outlives the answer
    assert re.search(r"\[\d\]", chat.inner_text())
    expect(page.locator("#question textarea")).to_have_value("")
    citation = chat.locator("a.rag-cite").first.get_attribute("href") or ""
    assert re.fullmatch(r"#source-\d", citation) and panel.locator(citation).count() == 1
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_choosing_the_openai_provider_keeps_the_corpus(browser: Browser, app_server: App) -> None:
    """The chat provider changes only the chat model: the collection (and its embedder) stay what it recorded."""
    page = open_app(browser, app_server.url)
    expect(page.locator("#corpus-stats")).to_contain_text("231 papers", timeout=30_000)
    page.get_by_text("Settings").click()
    page.get_by_label("Answer model provider").click()
    page.get_by_role("option", name="openai").click()
    page.locator("#question textarea").fill(SOFTMAX)
    page.locator("#question textarea").press("Enter")
    panel = page.locator("#sources")
    for paper in SOFTMAX_PAPERS:
        expect(panel).to_contain_text(paper, timeout=60_000)
    # the OpenAI server of this test app is down (port 9): the answer falls back to the evidence, and says why
    expect(page.locator("#notice")).to_contain_text("Evidence-only answer", timeout=120_000)
    chat = page.locator("#chat")
    expect(chat).not_to_contain_text("No corpus ingested")
    expect(page.locator("#corpus-stats")).to_contain_text("231 papers")
    # a follow-up uses the conversation; clear starts afresh
    page.locator("#question textarea").fill("and which of them use kNN?")
    page.locator("#question textarea").press("Enter")
    expect(panel).to_contain_text(SOFTMAX_PAPERS[1], timeout=60_000)
    expect(chat.locator(".message")).not_to_have_count(2, timeout=5_000)
    page.locator("#clear").click()
    expect(panel).to_contain_text("Sources appear here", timeout=10_000)


def test_gradio_client_gets_the_same_answer_shape_as_the_cli(app_server: App) -> None:
    client = Client(app_server.url, verbose=False)
    payload = client.predict(SOFTMAX, "", "none", 0, api_name="/ask")
    assert set(payload) >= {"answer", "citations", "sources", "refused", "nearest", "notice", "prompt_tokens"}
    numbers = {int(n) for n in re.findall(r"\[(\d+)\]", payload["answer"])}
    assert numbers == {citation["n"] for citation in payload["citations"]}
    titles = " ".join(source["title"] for source in payload["sources"])
    assert all(paper in titles for paper in SOFTMAX_PAPERS)
    # the chat endpoint: the reply in the chat carries citation links; an empty message adds nothing
    box, chat, panel, notice = client.predict(SOFTMAX, [], 8, "none", "qwen2.5-coder-0.5b", "papers", api_name="/chat")
    assert box == "" and chat[-1]["role"] == "assistant" and 'href="#source-1"' in str(chat[-1]["content"])
    assert all(paper in panel for paper in SOFTMAX_PAPERS) and "Evidence-only" in notice
    box, chat, *_ = client.predict("  ", [], 8, "none", "qwen2.5-coder-0.5b", "papers", api_name="/chat")
    assert chat == []
    _, chat, *_ = client.predict("x" * 100_000, [], 8, "none", "qwen2.5-coder-0.5b", "papers", api_name="/chat")
    assert "the limit is 2,000" in str(chat[-1]["content"])  # a clear message in the chat, the app keeps serving


def test_an_empty_collection_says_how_to_ingest(browser: Browser, app_server: App) -> None:
    page = open_app(browser, app_server.url)
    page.get_by_text("Settings").click()
    collection = page.get_by_label("Collection")
    collection.fill("nothing-here")
    collection.press("Enter")
    expect(page.locator("#corpus-stats")).to_contain_text("No corpus ingested in collection", timeout=30_000)
    page.locator("#question textarea").fill(SOFTMAX)
    page.locator("#question textarea").press("Enter")
    expect(page.locator("#chat")).to_contain_text("rag ingest", timeout=30_000)


def test_ui_login_when_configured(tmp_path: Path, bundled_data: Path) -> None:
    shutil.copytree(bundled_data, tmp_path / "data")
    env = {"RAG_LLM__PROVIDER": "none", "RAG_SERVER__UI_AUTH": "ann:s3cret-pw"}
    with rag_serve(tmp_path / "data", tmp_path / "serve.log", **env) as app:
        with pytest.raises(Exception, match=r"(?i)login|auth|401|403"):
            Client(app.url, verbose=False).predict(SOFTMAX, "", "none", 0, api_name="/ask")
        payload = Client(app.url, auth=("ann", "s3cret-pw"), verbose=False).predict(
            SOFTMAX, "", "none", 0, api_name="/ask"
        )
        assert payload["citations"]
        assert "s3cret-pw" not in app.log.read_text()
