"""The web UI: a Gradio chat whose answers stream in, with a sources panel where every [n] leads.

The evidence is shown the moment retrieval has it (about half a second), before the model writes a word; the answer
then streams in with its citations linked to their entries in the panel. Each browser session keeps its own history
for follow-ups; models are shared through :class:`rag.assistant.Assistant`, and the local model's one-at-a-time
generation shows as Gradio's queue rather than a frozen page.
"""

import contextlib
import html
import os
import queue
import re
import shutil
import threading
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import gradio as gr

from rag.answer import Answer, Draft, EvidenceReady, Fallback, Final, Quotes, Sentence, evidence_block, final_answer
from rag.assistant import Assistant
from rag.cite import bibtex_library
from rag.errors import BadInput, EmptyCollection, ServiceUnavailable
from rag.evidence import Evidence
from rag.ingest import IngestProgress, IngestReport, entries, ingest
from rag.library import CollectionSummary
from rag.model_files import LOCAL_CHAT_MODELS
from rag.papers import ABSTRACT, Source
from rag.readers import EXPORT_SUFFIXES, arxiv_id, doi_of
from rag.retrieve import Filters
from rag.store import check_name
from rag.text import CITATION, cited_numbers

EXAMPLES = [
    "Which papers discuss the softmax bottleneck?",
    "How does KDEformer approximate attention?",
    "Which works study continual learning without forgetting?",
    "What limits the performance of small language models?",
]
EMPTY_PANEL = '<div class="rag-sources"><p class="rag-muted">Sources appear here when you ask a question.</p></div>'
NO_CORPUS = "No corpus ingested in collection `{collection}` — run `make run` or `rag ingest FILE`, then reload."
CSS = """
.rag-sources .rag-source { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 10px;
  margin-bottom: 8px; }
.rag-sources .rag-source:target { outline: 2px solid var(--color-accent); }
.rag-sources mark { background: #fff3a0; color: inherit; padding: 0 2px; }
.rag-sources blockquote { margin: 6px 0; padding-left: 8px; border-left: 3px solid var(--color-accent); }
.rag-muted { color: var(--body-text-color-subdued); font-size: 0.9em; }
a.rag-cite { text-decoration: none; font-weight: 600; }
.rag-draft { color: var(--body-text-color-subdued); }
"""

History = list[str]  # the user's earlier turns
ChatMessages = list[dict[str, Any]]


def chat_text(answer: Answer) -> str:
    """What the chat shows: the synthesis, then for a "which papers" question the answer's one line per paper, else
    the titles it rests on (their quotes are in the panel beside it); for an evidence-only answer, the evidence."""
    if not answer.synthesis:
        return answer.text
    if answer.evidence.lists_papers:  # one line per paper, then the possibly related ones
        return f"{answer.synthesis}\n\n{evidence_block(answer.evidence)}"
    titles = "\n".join(f"[{source.n}] {source.title}" for source in answer.evidence.sources)
    heading = "The closest paper, which may not answer this:" if answer.evidence.weak else "Sources:"
    return f"{answer.synthesis}\n\n{heading}\n{titles}"


def link_citations(text: str) -> str:
    """The text HTML-escaped (titles and model output are data), every [n] a link to source n in the panel."""
    return CITATION.sub(
        lambda match: "".join(
            f'<a class="rag-cite" href="#source-{n}">[{n}]</a>' for n in cited_numbers(match.group(0))
        ),
        html.escape(text),
    )


def _loose(sentence: str) -> re.Pattern[str]:
    """A sentence as a pattern that ignores whitespace: the splitter strips it and joined chunks may differ in it."""
    return re.compile(r"\s*".join(re.escape(char) for char in "".join(sentence.split())))


def _highlighted(text: str, sentences: Sequence[str]) -> str:
    """The text HTML-escaped with each of the sentences in it marked, found in order whatever their whitespace."""
    spans: list[tuple[int, int]] = []
    start = 0
    for sentence in sentences:
        if not sentence.strip():
            continue
        pattern = _loose(sentence)
        if match := pattern.search(text, start) or pattern.search(text):
            spans.append(match.span())
            start = match.end()
    parts, at = [], 0
    for begin, end in sorted(spans):
        if begin < at:  # overlaps a sentence already marked
            continue
        parts += [html.escape(text[at:begin]), f"<mark>{html.escape(text[begin:end])}</mark>"]
        at = end
    return "".join(parts) + html.escape(text[at:])


def identifier_links(source: Source) -> list[tuple[str, str]]:
    """The paper's public identifiers and their pages — its DOI and its arXiv id, from its DOI field, its id or its
    URL — when known."""
    links: dict[str, tuple[str, str]] = {}
    for value in (source.paper.doi or "", source.paper_id, source.paper.url or ""):
        if (found := arxiv_id(value)) and "arxiv" not in links:
            links["arxiv"] = (f"arXiv {found}", f"https://arxiv.org/abs/{found}")
        elif (doi := doi_of(value)) and "doi" not in links:
            links["doi"] = (f"DOI {doi}", "https://doi.org/" + quote(doi, safe="/"))
    return [links[kind] for kind in ("doi", "arxiv") if kind in links]


def _link(href: str, text: str) -> str:
    return f'<a href="{html.escape(href)}" target="_blank" rel="noopener">{text}</a>'


def pdf_href(collection: str, paper_id: str, page: int | None = None) -> str:
    """Where the app serves a paper's PDF (rag serve's /pdf route), opened at ``page``."""
    return f"/pdf/{quote(collection, safe='')}/{quote(paper_id, safe='')}" + (f"#page={page}" if page else "")


def location(source: Source, collection: str | None) -> str:
    """Where the quote's best sentence is in the paper — "p. 4 · 4 Experiments" — linked to the PDF at that page when
    the collection keeps the paper's PDF; empty for a quote from text without pages."""
    paged = [passage for passage in source.quoted if passage.page is not None]
    found = next((passage for passage in paged if passage.text == source.best), paged[0] if paged else None)
    if found is None:
        return ""
    section = found.section if found.section and found.section != ABSTRACT else None
    label = html.escape(f"p. {found.page}" + (f" · {section}" if section else ""))
    if source.paper.file and collection:
        return _link(pdf_href(collection, source.paper_id, found.page), label + " (PDF)")
    return label


def _card(
    source: Source, details: Sequence[str], quote_text: str, quoted: Sequence[str], collection: str | None = None
) -> str:
    """A paper as a reader identifies and checks it: its title (linked), authors, year, venue and public ids, the
    ``details`` given, the quote with its ``quoted`` sentences marked, and the whole abstract with them marked. The
    internal paper id (a title hash for most corpora) means nothing to a reader and is never shown."""
    identifiers = identifier_links(source)
    title = html.escape(source.title)
    if source.paper.url and source.paper.url.startswith(("http://", "https://")):
        title = _link(source.paper.url, title)
    elif identifiers:
        title = _link(identifiers[0][1], title)
    authors = ", ".join(source.paper.authors[:3]) + (" et al." if len(source.paper.authors) > 3 else "")
    meta = [html.escape(authors)] if authors else []
    meta += [str(source.paper.year)] if source.paper.year else []
    meta += [f"<i>{html.escape(source.paper.venue)}</i>"] if source.paper.venue else []
    meta += [_link(href, html.escape(label)) for label, href in identifiers]
    meta += [where] if (where := location(source, collection)) else []
    abstract = ""
    if source.paper.abstract:
        full = _highlighted(source.paper.abstract, quoted)
        abstract = f"<details><summary>Full abstract</summary><p>{full}</p></details>"
    head = f'<div class="rag-source" id="source-{source.n}"><div><b>[{source.n}]</b> {title}</div>'
    if not source.n:  # an uncited paper (possibly related): no number, nothing a citation leads to
        head = f'<div class="rag-source rag-uncited"><div>{title}</div>'
    return (
        head + f'<div class="rag-muted">{" · ".join([*meta, *details])}</div>'
        f"<blockquote>{_highlighted(quote_text, quoted)}</blockquote>{abstract}</div>"
    )


def _source_card(source: Source, cited: bool, collection: str | None) -> str:
    state = "cited" if cited else "not cited by the model: shown as evidence"
    return _card(source, [f"relevance {source.score:.2f}", state], source.quote, source.sentences, collection)


def sources_panel(evidence: Evidence, cited: list[int] | None = None) -> str:
    """The sources panel: numbered evidence, then what retrieval also found. For a refusal: the papers on the topic
    with their best sentence when they lack the asked fact, or the closest papers when the topic is not covered."""
    if evidence.refusal == "not_stated":
        heading = html.escape(f"On the topic, but not stating {evidence.not_stated}")
        cards = "".join(
            _card(
                s,
                [f"relevance {s.score:.2f}"],
                s.best or s.quote,
                [s.best] if s.best else s.sentences,
                evidence.collection,
            )
            for s in evidence.sources
        )
        return f'<div class="rag-sources"><h3>{heading}</h3>{cards}</div>'
    if evidence.refused:
        rows = "".join(
            f"<li>{html.escape(s.title)} <span class='rag-muted'>(relevance {s.score:.2f})</span></li>"
            for s in evidence.nearest
        )
        return f'<div class="rag-sources"><h3>Closest papers, not answering</h3><ul>{rows}</ul></div>'
    cited_set = set(cited if cited is not None else [s.n for s in evidence.sources])
    cards = "".join(_source_card(source, source.n in cited_set, evidence.collection) for source in evidence.sources)
    heading = "The closest paper, which may not answer this" if evidence.weak else "Sources"
    related = "".join(
        _card(s, [f"relevance {s.score:.2f}", "possibly related, not cited"], s.best or s.quote, [s.best])
        for s in evidence.related
    )
    maybe = f'<h3 class="rag-related">Possibly related ({len(evidence.related)})</h3>{related}' if related else ""
    others = "".join(
        f"<li>{html.escape(s.title)} <span class='rag-muted'>(relevance {s.score:.2f})</span></li>"
        for s in evidence.others
    )
    also = f"<details><summary>Also retrieved, not cited ({len(evidence.others)})</summary><ul>{others}</ul></details>"
    return f'<div class="rag-sources"><h3>{heading}</h3>{cards}{maybe}{also if others else ""}</div>'


def notice_for(answer: Answer, provider: str) -> str:
    """Why an answer is not a model's synthesis, or why its papers were ranked otherwise than configured, in one
    line; empty when neither."""
    ranked = f" {answer.evidence.notice}" if answer.evidence.notice else ""
    return _why_not_synthesis(answer, provider) + ranked


def _why_not_synthesis(answer: Answer, provider: str) -> str:
    if answer.evidence.refusal == "not_stated":
        return (
            f"**Refused:** papers on this topic are in the corpus, but no abstract of theirs states "
            f"{html.escape(answer.evidence.not_stated or '')}; they are listed as on the topic, not answering."
        )
    if answer.evidence.refused:
        return (
            "**Refused:** no paper in the corpus passed the relevance gate for this question, so nothing is cited. "
            "The closest papers are listed as not answering."
        )
    if answer.notice:
        return f"**Evidence-only answer:** {answer.notice}"
    if provider == "none":
        return "**Evidence-only answer:** no language model is selected (provider `none`); the quotes are the answer."
    return ""


def cited_sources(answer: Answer) -> list[Source]:
    """The sources the answer cites, in their numbers' order."""
    cited = set(answer.cited)
    return [source for source in answer.evidence.sources if source.n in cited]


def reference_line(source: Source) -> str:
    """A numbered reference as Markdown: authors (year). *Title*. Venue. Link."""
    paper = source.paper
    authors = ", ".join(paper.authors[:3]) + (" et al." if len(paper.authors) > 3 else "")
    parts = [f"{authors} ({paper.year})." if authors and paper.year else f"{authors or paper.year or ''}."]
    parts.append(f"*{source.title}*.")
    parts += [f"{paper.venue}."] if paper.venue else []
    links = identifier_links(source)
    parts += [links[0][1]] if links else [paper.url] if paper.url else []
    return " ".join(part for part in parts if part != ".")


def answer_markdown(answer: Answer) -> str:
    """The answer to paste into notes: its text with the [n] markers, then its numbered references."""
    cited = cited_sources(answer)
    body = answer.synthesis or answer.text
    if not cited:
        return body
    return body + "\n\n**References**\n\n" + "\n".join(f"[{s.n}] {reference_line(s)}" for s in cited)


def bibtex_download(answer: Answer) -> str:
    """A link that saves the cited papers' BibTeX entries as a file, built in the page (nothing written on the
    server); empty when nothing is cited."""
    cited = cited_sources(answer)
    if not cited:
        return ""
    entries = bibtex_library([source.paper for source in cited])
    href = "data:application/x-bibtex;charset=utf-8," + quote(entries)
    noun = "paper" if len(cited) == 1 else "papers"
    return (
        f'<a id="download-bibtex" class="rag-export" download="citations.bib" href="{html.escape(href)}">'
        f"⤓ BibTeX of the {len(cited)} cited {noun}</a>"
    )


def collection_label(row: CollectionSummary) -> str:
    return f"{row.name} — {row.papers} papers · {row.embedder}"


def filters_of(year_from: float | None, year_to: float | None, categories: Sequence[str] | None) -> Filters | None:
    """The UI's filter settings as search filters; None when nothing restricts."""
    filters = Filters(int(year_from) if year_from else None, int(year_to) if year_to else None, tuple(categories or ()))
    return filters if filters.to_llama() is not None else None


def corpus_line(assistant: Assistant, collection: str | None) -> str:
    try:
        settings = assistant.settings_for(collection)
        stats = assistant.stats(settings)
    except ServiceUnavailable as error:
        return f"**Store unavailable:** {error}"
    except BadInput as error:
        return f"**Bad setting:** {error}"
    if not stats["papers"]:
        return NO_CORPUS.format(collection=settings.collection)
    model = settings.llm.local_model if settings.llm.provider == "local" else settings.llm.provider
    return (
        f"Corpus **{stats['collection']}**: {stats['papers']} papers, {stats['chunks']} chunks · "
        f"answers by **{model}** · every claim cites [n]"
    )


def ingest_status(event: IngestProgress) -> str:
    """A line and a bar saying how far an upload's ingest is."""
    if event.stage == "reading":
        if event.total:
            bar = f'<progress value="{event.done}" max="{event.total}"></progress>'
            return f"{bar} Reading PDFs: {event.done} of {event.total}"
        return "Reading the file…"
    if event.stage == "indexing":
        return f"Indexing {event.total} papers for keyword search and reranking…"
    bar = f'<progress value="{event.done}" max="{max(event.total, 1)}"></progress>'
    return f"{bar} Embedding papers: {event.done} of {event.total}"


def ingest_summary(report: IngestReport, source: str) -> str:
    lines = [
        f"**Ingested {html.escape(source)}** into `{report.collection}`: {report.added} papers added, "
        f"{report.updated} updated, {report.skipped} unchanged; the file holds {report.papers}."
    ]
    if report.skipped_no_abstract:
        lines.append(f"{entries(report.skipped_no_abstract)} without an abstract skipped (nothing to cite).")
    skips = [problem for problem in report.problems if problem.startswith("skipped ")]  # not the dropped fields
    if report.skipped_malformed:
        shown = "; ".join(html.escape(problem.split(": ", 1)[-1]) for problem in skips[:3])
        lines.append(f"{entries(report.skipped_malformed)} malformed, skipped: {shown}")
    if report.dropped_fields:
        fields = f"{report.dropped_fields} {'field' if report.dropped_fields == 1 else 'fields'}"
        lines.append(f"{fields} that could not be read (a year, a DOI…) dropped; the papers kept.")
    if report.full_text:
        lines.append(f"{report.full_text} full texts read ({report.pages} pages, {report.passages} passages).")
    said = ("no_abstract", "malformed")
    unread = {reason: n for reason, n in report.skipped_by_reason.items() if reason not in said}
    if unread:
        shown = "; ".join(html.escape(problem.split(": ", 1)[-1]) for problem in skips[:3])
        lines.append(f"Skipped: {', '.join(f'{n} {reason}' for reason, n in unread.items())} ({shown}).")
    if report.duplicates:
        lines.append(f"{report.duplicates} duplicates dropped.")
    return "  \n".join(lines)


ZIP_EXPANSION = 10  # a zip may unpack to this many times the upload limit: PDFs hardly compress, a zip bomb does


def _is_zip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def _unzip(archive: Path, folder: Path, limit_bytes: int) -> None:
    """The zip's PDFs and export files, unpacked into ``folder`` under their own relative paths (so an exported
    library's relative file fields still find its PDFs; a member path never leaves ``folder``); bad input when it is
    not a zip or unpacks to more than ZIP_EXPANSION times the upload limit."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [
                info for info in zipped.infolist()
                if not info.is_dir() and Path(info.filename).suffix.lower() in {".pdf", *EXPORT_SUFFIXES}
            ]  # fmt: skip
            total = sum(info.file_size for info in members)
            if total > ZIP_EXPANSION * limit_bytes:
                raise BadInput(
                    f"{archive.name} unpacks to {total / 1e6:.0f} MB; a zip may unpack to at most "
                    f"{ZIP_EXPANSION * limit_bytes / 1e6:.0f} MB"
                )
            for i, info in enumerate(members):
                target = _member_path(folder, info.filename, i)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(info) as source, target.open("xb") as written:
                    shutil.copyfileobj(source, written)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, OSError) as error:
        raise BadInput(f"{archive.name} is not a readable zip ({error})") from None


def _member_path(folder: Path, name: str, number: int) -> Path:
    """Where the zip member ``name`` unpacks: its path with every part that could leave ``folder`` (a root, '..')
    dropped and each part made a safe file name; numbered when that path is taken."""
    parts = [
        re.sub(r"[\x00-\x1f]", "_", part)[-150:]
        for part in PurePosixPath(name.replace("\\", "/")).parts
        if part not in ("/", ".", "..")
    ]
    target = folder.joinpath(*parts)
    return target.with_name(f"{number:04d}-{target.name}") if target.exists() else target


def _staged(uploads: Sequence[Path], limit_bytes: int) -> Path:
    """What an ingest reads for the uploads: one file as it is; several files or a zip gathered in one folder."""
    if len(uploads) == 1 and not _is_zip(uploads[0]):
        return uploads[0]
    folder = uploads[0].parent / "library"
    folder.mkdir(exist_ok=True)
    for i, upload in enumerate(uploads):
        if _is_zip(upload):
            (folder / f"{i:03d}").mkdir()
            _unzip(upload, folder / f"{i:03d}", limit_bytes)
        else:
            os.link(upload, folder / f"{i:03d}-{upload.name}")
    return folder


def ingest_upload(
    assistant: Assistant, upload: Path | Sequence[Path], collection: str
) -> Iterator[IngestProgress | IngestReport]:
    """Ingest uploaded files — a library file, PDFs, or a zip of them — into a collection (new or existing) in a
    worker thread, yielding its progress and then its report; bad input (too big, no supported format, a bad name)
    raises before the store is touched. The uploads, and the folders Gradio made for them, are removed once the
    ingest is over, even when the page that asked has gone: the worker finishes the ingest on its own."""
    uploads = [upload] if isinstance(upload, Path) else list(upload)
    try:
        limit = assistant.settings.server.max_upload_mb
        size = sum(path.stat().st_size for path in uploads)
        if size > limit * 1_000_000:
            what = uploads[0].name if len(uploads) == 1 else f"{len(uploads)} files"
            raise BadInput(f"{what} is {size / 1e6:.0f} MB; uploads are limited to {limit:g} MB")
        settings = assistant.settings_for(check_name(collection))
        source = _staged(uploads, int(limit * 1_000_000))
    except BaseException:
        _remove_uploads(uploads)
        raise
    events: queue.Queue[IngestProgress | IngestReport | Exception] = queue.Queue()

    def run() -> None:
        outcome: IngestReport | Exception
        try:
            with assistant.ingesting:
                within = source if source.is_dir() else source.parent  # an upload reads no other file of the server
                outcome = ingest(source, "auto", settings, progress=False, on_progress=events.put, pdfs_within=within)
        except Exception as error:  # re-raised in the caller's thread below
            outcome = error
        finally:
            _remove_uploads(uploads)  # before the outcome is told: a caller that hears it finds the uploads gone
        events.put(outcome)

    threading.Thread(target=run, name=f"ingest-{collection}", daemon=True).start()
    while not isinstance(event := events.get(), IngestReport | Exception):
        yield event
    if isinstance(event, Exception):
        raise event
    yield event


def _remove_uploads(uploads: Sequence[Path]) -> None:
    for upload in uploads:
        shutil.rmtree(upload.parent / "library", ignore_errors=True)
        upload.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            upload.parent.rmdir()


def build_ui(assistant: Assistant) -> gr.Blocks:
    settings = assistant.settings

    def respond(
        message: str,
        chat: ChatMessages,
        history: History,
        top_k: float,
        provider: str,
        local_model: str,
        collection: str,
        year_from: float | None,
        year_to: float | None,
        categories: list[str] | None,
    ) -> Any:
        message = (message or "").strip()
        if not message:
            gr.Warning("Type a question first.")
            yield message, chat, history, gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        chat = [*chat, {"role": "user", "content": message}, {"role": "assistant", "content": "Finding evidence…"}]
        yield "", chat, history, gr.skip(), "", "", ""
        try:
            request_settings = assistant.settings_for(collection, provider, local_model)
            conversation, notice = assistant.conversation(request_settings, list(history))
            filters = filters_of(year_from, year_to, categories)
            text = ""  # the verified sentences so far
            for event in conversation.ask(message, filters, candidates=int(top_k)):
                match event:
                    case EvidenceReady(evidence):
                        chat[-1]["content"] = (
                            "Writing the answer…" if conversation.model and not evidence.refused else ""
                        )
                        yield "", chat, history, sources_panel(evidence), notice or "", gr.skip(), gr.skip()
                    case Draft(draft):  # the sentence being written, shown apart until it is verified
                        chat[-1]["content"] = (
                            link_citations(text) + f'<span class="rag-draft">{html.escape(draft)}</span>'
                        )
                        yield "", chat, history, gr.skip(), gr.skip(), gr.skip(), gr.skip()
                    case Sentence():
                        text += event.delta
                        chat[-1]["content"] = link_citations(text)
                        yield "", chat, history, gr.skip(), gr.skip(), gr.skip(), gr.skip()
                    case Quotes() | Fallback():  # the final answer below shows them compactly
                        pass
                    case Final(answer):
                        chat[-1]["content"] = link_citations(chat_text(answer))
                        line = notice or notice_for(answer, request_settings.llm.provider)
                        panel = sources_panel(answer.evidence, answer.cited)
                        exports = bibtex_download(answer), answer_markdown(answer)
                        yield "", chat, conversation.history, panel, line, *exports
        except EmptyCollection:
            chat[-1]["content"] = NO_CORPUS.format(collection=collection or settings.collection)
            yield "", chat, history, EMPTY_PANEL, "**No corpus ingested.**", "", ""
        except ServiceUnavailable as error:
            chat[-1]["content"] = f"The vector store is unavailable: {error}. Try again once it is back."
            yield "", chat, history, gr.skip(), "**Store unavailable.**", "", ""
        except BadInput as error:
            chat[-1]["content"] = f"Cannot answer that: {error}"
            yield "", chat, history, gr.skip(), "", "", ""

    def ask(question: str, collection: str = "", provider: str = "", top_k: int = 0) -> dict[str, Any]:
        """One question, no history: the same JSON as `rag ask --json`."""
        try:
            request_settings = assistant.settings_for(collection or None, provider or None)
            conversation, notice = assistant.conversation(request_settings, [])
            answer = final_answer(conversation.ask(question, candidates=top_k or None))
        except (BadInput, ServiceUnavailable) as error:  # the client gets the reason, not "Error"
            raise gr.Error(str(error)) from None
        payload = answer.as_json()
        payload["notice"] = payload["notice"] or notice
        return payload

    def refresh(collection: str) -> tuple[Any, ...]:
        """The corpus line, the collection list, and the chosen collection's filter choices."""
        try:
            rows = assistant.collections()
        except (ServiceUnavailable, BadInput):  # the corpus line says what is wrong
            rows = []
        choices = [(collection_label(row), row.name) for row in rows]
        if collection and collection not in {row.name for row in rows}:
            choices.append((f"{collection} — empty", collection))
        chosen = next((row for row in rows if row.name == collection), None)
        years = f"{chosen.years[0]}–{chosen.years[1]}" if chosen and chosen.years else "no years recorded"
        return (
            corpus_line(assistant, collection),
            gr.Dropdown(choices=choices, value=collection),
            gr.Dropdown(choices=list(chosen.categories) if chosen else [], value=[]),
            gr.Number(info=f"This collection: {years}"),
        )

    def add_library(upload: list[str] | None, target: str, collection: str) -> Any:
        """Ingest uploaded files into a new or existing collection, showing progress. Runs in its own queue, so
        questions keep being answered meanwhile."""
        if not upload:
            yield "Choose a file first.", gr.skip()
            return
        name = (target or "").strip() or collection or settings.collection
        paths = [Path(path) for path in upload]
        shown = paths[0].name if len(paths) == 1 else f"{len(paths)} files"
        try:
            for event in ingest_upload(assistant, paths, name):
                if isinstance(event, IngestReport):
                    yield ingest_summary(event, shown), gr.Dropdown(value=event.collection)
                else:
                    yield ingest_status(event), gr.skip()
        except (BadInput, ServiceUnavailable) as error:
            yield f"**Not ingested:** {html.escape(str(error))}. The collection is as it was.", gr.skip()

    def ask_delete(collection: str) -> tuple[str, Any]:
        row = next((row for row in assistant.collections() if row.name == collection), None)
        if row is None:
            return f"There is no collection `{collection}` to delete.", gr.Row(visible=False)
        return f"Delete collection **{row.name}** and its {row.papers} papers? This cannot be undone.", gr.Row(
            visible=True
        )

    def delete(collection: str) -> tuple[str, Any, Any]:
        try:
            assistant.delete(assistant.settings_for(collection))
        except (BadInput, ServiceUnavailable) as error:
            return f"**Not deleted:** {html.escape(str(error))}", gr.Row(visible=False), gr.skip()
        return f"Deleted collection `{collection}`.", gr.Row(visible=False), gr.Dropdown(value=settings.collection)

    with gr.Blocks(title="Research assistant") as demo:
        gr.Markdown("## Research assistant\nAsk about the papers in the corpus; every claim in an answer cites them.")
        stats = gr.Markdown(elem_id="corpus-stats")
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", height=520, elem_id="chat", feedback_options=None)
                notice = gr.Markdown(elem_id="notice")
                with gr.Row():
                    box = gr.Textbox(
                        placeholder="Ask about the papers… (follow-ups use the conversation)",
                        show_label=False,
                        scale=5,
                        max_lines=4,
                        elem_id="question",
                    )
                    send = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
                clear = gr.Button("Clear chat", elem_id="clear")
                gr.Examples(EXAMPLES, inputs=box, label="Examples")
            with gr.Column(scale=2):
                panel = gr.HTML(EMPTY_PANEL, elem_id="sources")
                bibtex = gr.HTML("", elem_id="export-bibtex")
                with gr.Accordion("Copy as Markdown", open=False):
                    markdown = gr.Textbox(
                        label="The answer with its numbered references",
                        lines=6,
                        interactive=False,
                        buttons=["copy"],
                        elem_id="answer-markdown",
                    )
        with gr.Accordion("Settings and filters", open=False), gr.Row():
            top_k = gr.Slider(1, 20, value=settings.answer.candidates, step=1, label="Papers retrieved (top-k)")
            provider = gr.Dropdown(
                ["local", "openai", "none"], value=settings.llm.provider, label="Answer model provider"
            )
            local_model = gr.Dropdown(list(LOCAL_CHAT_MODELS), value=settings.llm.local_model, label="Local model")
            year_from = gr.Number(label="From year", precision=0, elem_id="year-from")
            year_to = gr.Number(label="To year", precision=0, elem_id="year-to")
            categories = gr.Dropdown([], multiselect=True, label="Categories / keywords (all must hold)")
        with gr.Accordion("Library: collections and uploads", open=False, elem_id="library"):
            with gr.Row():
                collection = gr.Dropdown(
                    [settings.collection],
                    value=settings.collection,
                    allow_custom_value=True,  # a collection another process is still ingesting can be typed
                    label="Collection",
                    elem_id="collection",
                )
                delete_button = gr.Button(
                    "Delete this collection…", variant="stop", size="sm", scale=0, elem_id="delete-collection"
                )
            with gr.Row(visible=False) as confirm_row:
                confirm_text = gr.Markdown()
                confirm = gr.Button("Yes, delete it", variant="stop", elem_id="confirm-delete")
                cancel = gr.Button("Keep it", elem_id="cancel-delete")
            with gr.Row():
                upload = gr.File(
                    label="PDFs, a zip of them, or library files (BibTeX, RIS, CSL JSON, JSON lines, CSV)",
                    file_types=[".pdf", ".zip", ".bib", ".ris", ".json", ".jsonl", ".csv", ".txt"],
                    file_count="multiple",
                    elem_id="upload",
                )
                with gr.Column():
                    target = gr.Textbox(
                        label="Into collection (new or existing; empty = the chosen one)", elem_id="target"
                    )
                    add = gr.Button("Add to collection", variant="primary", elem_id="add-library")
            library_status = gr.Markdown(elem_id="library-status")
        history = gr.State([])

        inputs = [box, chatbot, history, top_k, provider, local_model, collection, year_from, year_to, categories]
        outputs = [box, chatbot, history, panel, notice, bibtex, markdown]
        # Both triggers share one queue, so answers wait their turn visibly instead of contending for the model.
        answering = {"trigger_mode": "once", "concurrency_id": "answer"}
        box.submit(respond, inputs, outputs, api_name="chat", **answering)  # type: ignore[arg-type]
        send.click(respond, inputs, outputs, api_visibility="private", **answering)  # type: ignore[arg-type]
        clear.click(lambda: ("", [], [], EMPTY_PANEL, "", "", ""), None, outputs, api_visibility="private")
        facets = [stats, collection, categories, year_from]
        collection.change(refresh, collection, facets, api_visibility="private")
        demo.load(refresh, collection, facets, api_visibility="private")
        # Ingests run one at a time in their own queue: an upload never holds up a question.
        add.click(
            add_library,
            [upload, target, collection],
            [library_status, collection],
            api_visibility="private",
            concurrency_id="ingest",
            concurrency_limit=1,
        ).then(lambda: None, None, upload, api_visibility="private")
        delete_button.click(ask_delete, collection, [confirm_text, confirm_row], api_visibility="private")
        confirm.click(delete, collection, [library_status, confirm_row, collection], api_visibility="private")
        cancel.click(lambda: gr.Row(visible=False), None, confirm_row, api_visibility="private")
        gr.api(ask, api_name="ask", concurrency_id="answer")
    demo.queue(default_concurrency_limit=settings.server.concurrency, max_size=64)
    return demo
