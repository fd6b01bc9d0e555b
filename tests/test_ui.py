"""The web UI for real: Debian's chromium driven by Playwright, and `gradio_client` against the running app."""

import re
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from gradio_client import Client
from playwright.sync_api import Browser, Page, expect, sync_playwright

from app.ui import chat_text, link_citations, sources_panel
from rag.answer import Answer, Sentence
from rag.evidence import Evidence
from rag.papers import ABSTRACT as ABSTRACT_SECTION
from rag.papers import Paper, Passage, Source
from tests.conftest import App, needs_local_model, rag_serve

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "ui-softmax.png"
SOFTMAX = "Which papers discuss the softmax bottleneck?"
SOFTMAX_PAPERS = ("Why do small language models underperform?", "On Retrieval Augmentation and the Limitations")
TITLE_ID = re.compile(r"\bt-[0-9a-f]{16}\b")  # the internal id of a paper without one of its own (a title hash)
ABSTRACT = [
    "Attention costs quadratic time in the sequence length.",
    "Prior work approximates it with low-rank projections.",
    "We sample keys by kernel density estimation, e.g. with random features.",
    "On long-range benchmarks the method is 4x faster at equal accuracy.",
]


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
    # the answer is complete: a "which papers" answer ends with one line per paper
    expect(chat).to_contain_text(re.compile(r"Papers \(\d+\):"), timeout=180_000)
    expect(chat.locator(".rag-draft")).to_have_count(0)  # ... and no draft outlives the answer
    assert re.search(r"\[\d\]", chat.inner_text())
    expect(page.locator("#question textarea")).to_have_value("")
    assert not TITLE_ID.search(panel.inner_text())  # cards name papers by title, never by internal id
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
    settings = (
        8,
        "none",
        "qwen2.5-coder-0.5b",
        "papers",
        None,
        None,
        [],
    )  # top-k, provider, model, collection, filters
    box, chat, panel, notice, bibtex, markdown = client.predict(SOFTMAX, [], *settings, api_name="/chat")
    assert box == "" and chat[-1]["role"] == "assistant" and 'href="#source-1"' in str(chat[-1]["content"])
    assert all(paper in panel for paper in SOFTMAX_PAPERS) and "Evidence-only" in notice
    assert not TITLE_ID.search(panel)
    assert 'download="citations.bib"' in bibtex and "**References**" in markdown
    box, chat, *_ = client.predict("  ", [], *settings, api_name="/chat")
    assert chat == []
    _, chat, *_ = client.predict("x" * 100_000, [], *settings, api_name="/chat")
    assert "the limit is 2,000" in str(chat[-1]["content"])  # a clear message in the chat, the app keeps serving


def test_an_empty_collection_says_how_to_ingest(browser: Browser, app_server: App) -> None:
    page = open_app(browser, app_server.url)
    page.get_by_text("Library: collections and uploads").click()
    collection = page.get_by_label("Collection", exact=True)
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


def paper(n: int = 1, quoted: tuple[int, ...] = (0, 2), **fields: object) -> Source:
    """A source over ABSTRACT quoting the sentences at ``quoted``, as the evidence finder builds one; ``fields`` are
    the paper's."""
    values: dict = {
        "paper_id": "t-2c27aa0b1c2d3e4f", "title": "Kernel density attention",
        "passages": (Passage(" ".join(ABSTRACT), None, ABSTRACT_SECTION),),
        "authors": ("Ann Lee", "Bo Chen", "Cy Diaz", "Dee Eng"), "year": 2023,
    }  # fmt: skip
    quotes = [Passage(ABSTRACT[i]) for i in quoted]
    return Source(n, Paper(**(values | fields)), 0.81, quotes, list(quoted), ABSTRACT[quoted[0]])


def test_a_source_card_names_authors_and_year_links_the_paper_and_never_shows_the_internal_id() -> None:
    panel = sources_panel(Evidence("q", [paper(url="https://example.org/kda")], []))
    assert not TITLE_ID.search(panel) and "t-2c27" not in panel
    assert "Ann Lee, Bo Chen, Cy Diaz et al." in panel and "Dee Eng" not in panel and "2023" in panel
    assert '<a href="https://example.org/kda" target="_blank" rel="noopener">Kernel density attention</a>' in panel
    two = sources_panel(Evidence("q", [paper(authors=("Ann Lee", "Bo Chen"))], []))
    assert "Ann Lee, Bo Chen ·" in two and "et al." not in two


@pytest.mark.parametrize(
    ("fields", "href", "label"),
    [
        ({"paper_id": "arxiv:2401.01234"}, "https://arxiv.org/abs/2401.01234", "arXiv 2401.01234"),
        ({"url": "arXiv:2401.01234v2"}, "https://arxiv.org/abs/2401.01234", "arXiv 2401.01234"),
        (
            {"paper_id": "10.1145/3442188.3445922"},
            "https://doi.org/10.1145/3442188.3445922",
            "DOI 10.1145/3442188.3445922",
        ),
        ({"url": "doi:10.1000/xyz<1>"}, "https://doi.org/10.1000/xyz%3C1%3E", "DOI 10.1000/xyz&lt;1&gt;"),
    ],
)
def test_an_arxiv_id_or_a_doi_links_to_its_page(fields: dict, href: str, label: str) -> None:
    panel = sources_panel(Evidence("q", [paper(**fields)], []))
    assert f'<a href="{href}" target="_blank" rel="noopener">Kernel density attention</a>' in panel
    assert label in panel


def test_a_url_that_is_not_http_is_not_linked() -> None:
    panel = sources_panel(Evidence("q", [paper(url="javascript:alert(1)")], []))
    assert "javascript:" not in panel and "<a " not in panel


def test_quotes_follow_the_abstract_with_an_ellipsis_where_sentences_are_skipped() -> None:
    skipped = sources_panel(Evidence("q", [paper(quoted=(0, 2, 3))], []))
    quote = skipped.split("<blockquote>")[1].split("</blockquote>")[0]
    assert quote == f"<mark>{ABSTRACT[0]}</mark> … <mark>{ABSTRACT[2]}</mark> <mark>{ABSTRACT[3]}</mark>"
    adjacent = sources_panel(Evidence("q", [paper(quoted=(1, 2))], []))
    assert "…" not in adjacent.split("<blockquote>")[1].split("</blockquote>")[0]


def test_the_full_abstract_is_whole_with_the_quotes_marked_whatever_their_whitespace() -> None:
    abstract = "  ".join(ABSTRACT[:2]) + "\n" + ABSTRACT[2].replace("e.g. with", "e.g.\nwith") + " " + ABSTRACT[3]
    panel = sources_panel(Evidence("q", [paper(passages=(Passage(abstract, None, ABSTRACT_SECTION),))], []))
    full = panel.split("<summary>Full abstract</summary><p>")[1].split("</p>")[0]
    assert full.replace("<mark>", "").replace("</mark>", "") == abstract  # nothing cut, nothing added
    assert full.count("<mark>") == 2 and f"<mark>{ABSTRACT[0]}</mark>" in full
    assert "<mark>" + ABSTRACT[2].replace("e.g. with", "e.g.\nwith") + "</mark>" in full


def test_a_not_stated_refusal_shows_the_papers_on_the_topic_apart_from_a_topic_not_covered() -> None:
    on_topic = [paper(1, quoted=(3,)), paper(2, quoted=(0,), title="Sparse attention", authors=("Ann Lee",))]
    panel = sources_panel(Evidence("What batch size?", on_topic, on_topic, not_stated="the batch size"))
    assert "<h3>On the topic, but not stating the batch size</h3>" in panel and "Closest papers" not in panel
    assert 'id="source-1"' in panel and 'id="source-2"' in panel  # the refusal's [1] and [2] lead here
    assert "Ann Lee, Bo Chen, Cy Diaz et al. · 2023" in panel and f"<mark>{ABSTRACT[3]}</mark>" in panel
    assert "Sparse attention" in panel and not TITLE_ID.search(panel)
    covered = sources_panel(Evidence("What about proteins?", [], on_topic))
    assert "<h3>Closest papers, not answering</h3>" in covered and "not stating" not in covered


def test_a_which_papers_answer_shows_the_synthesis_then_one_line_per_paper_with_links() -> None:
    sources = [paper(1, quoted=(2,)), paper(2, quoted=(3,), title="Fast attention", year=None)]
    evidence = Evidence("Which papers speed up attention?", sources, [], lists_papers=True)
    synthesis = Sentence("Both approximate attention to save time [1][2].", (1, 2))
    text = chat_text(Answer(evidence.question, evidence, "(the stream's text)", [synthesis], [1, 2]))
    assert text == (
        f"{synthesis.text}\n\nPapers (2):\n[1] Kernel density attention (2023): {ABSTRACT[2]}\n"
        f"[2] Fast attention: {ABSTRACT[3]}"
    )
    linked = link_citations(text)
    assert linked.count('href="#source-1"') == 2 and linked.count('href="#source-2"') == 2
    plain = chat_text(Answer("q", replace(evidence, lists_papers=False), "", [synthesis], [1, 2]))
    assert "Sources:\n[1] Kernel density attention\n[2] Fast attention" in plain


def test_a_list_answer_shows_possibly_related_papers_apart_and_uncited() -> None:
    sources = [paper(1, quoted=(2,))]
    related = [paper(0, quoted=(3,), title="Maybe attention")]
    evidence = Evidence("Which papers speed up attention?", sources, [], lists_papers=True, related=related)
    synthesis = Sentence("It approximates attention [1].", (1,))
    text = chat_text(Answer(evidence.question, evidence, "", [synthesis], [1]))
    assert text.endswith(f"Possibly related, not cited (1):\n- Maybe attention (2023): {ABSTRACT[3]}")
    assert 'href="#source-0"' not in link_citations(text)
    panel = sources_panel(evidence, [1])
    assert panel.index("Possibly related (1)") > panel.index('id="source-1"')
    assert "possibly related, not cited" in panel and "Maybe attention" in panel
    weak = sources_panel(replace(evidence, lists_papers=False, related=[], weak=True), [1])
    assert "<h3>The closest paper, which may not answer this</h3>" in weak


def test_hostile_titles_abstracts_and_answers_are_escaped() -> None:
    script = "<script>alert(1)</script>"
    hostile = replace(
        paper(
            title=f'A "title" {script}', passages=(Passage(f"Claim {script} here. More.", None, ABSTRACT_SECTION),),
            authors=("<img src=x onerror=alert(1)>",), url='https://x.org/"><b>',
        ),
        quoted=[Passage(f"Claim {script} here.")], positions=[0], best=f"Claim {script} here.",
    )  # fmt: skip
    for panel in (
        sources_panel(Evidence("q", [hostile], [])),
        sources_panel(Evidence("q", [], [hostile], not_stated=script)),
        sources_panel(Evidence("q", [], [hostile])),
    ):
        assert "<script>" not in panel and "<img" not in panel and '"><b>' not in panel
    linked = link_citations(f"{script} [1]")
    assert "<script>" not in linked and "&lt;script&gt;" in linked and 'href="#source-1"' in linked
