"""The web UI: a Gradio chat whose answers stream in, with a sources panel where every [n] leads.

The evidence is shown the moment retrieval has it (about half a second), before the model writes a word; the answer
then streams in with its citations linked to their entries in the panel. Each browser session keeps its own history
for follow-ups; models are shared through :class:`rag.assistant.Assistant`, and the local model's one-at-a-time
generation shows as Gradio's queue rather than a frozen page.
"""

import html
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import gradio as gr

from rag.answer import Answer, Draft, EvidenceReady, Fallback, Final, Quotes, Sentence, final_answer, paper_lines
from rag.assistant import Assistant
from rag.errors import BadInput, EmptyCollection, ServiceUnavailable
from rag.evidence import Evidence, Source
from rag.model_files import LOCAL_CHAT_MODELS
from rag.readers import arxiv_id
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
    if answer.evidence.lists_papers:
        return f"{answer.synthesis}\n\n{paper_lines(answer.evidence)}"
    titles = "\n".join(f"[{source.n}] {source.title}" for source in answer.evidence.sources)
    return f"{answer.synthesis}\n\nSources:\n{titles}"


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


_DOI = re.compile(r"^(?:doi:\s*|https?://(?:dx\.)?doi\.org/)?(10\.\d{4,9}/\S+)$", re.IGNORECASE)


def identifier_link(source: Source) -> tuple[str, str] | None:
    """The paper's public identifier and its page — an arXiv id or a DOI, in its id or its URL field — if any."""
    for value in (source.paper_id, source.url or ""):
        if found := arxiv_id(value):
            return f"arXiv {found}", f"https://arxiv.org/abs/{found}"
        if match := _DOI.match(value.strip()):
            return f"DOI {match.group(1)}", "https://doi.org/" + quote(match.group(1), safe="/")
    return None


def _link(href: str, text: str) -> str:
    return f'<a href="{html.escape(href)}" target="_blank" rel="noopener">{text}</a>'


def _card(source: Source, details: Sequence[str], quote_text: str, quoted: Sequence[str]) -> str:
    """A paper as a reader identifies and checks it: its title (linked), authors, year and public identifier, the
    ``details`` given, the quote with its ``quoted`` sentences marked, and the whole abstract with them marked. The
    internal paper id (a title hash for most corpora) means nothing to a reader and is never shown."""
    identifier = identifier_link(source)
    title = html.escape(source.title)
    if source.url and source.url.startswith(("http://", "https://")):
        title = _link(source.url, title)
    elif identifier:
        title = _link(identifier[1], title)
    authors = ", ".join(source.authors[:3]) + (" et al." if len(source.authors) > 3 else "")
    meta = [html.escape(authors)] if authors else []
    meta += [str(source.year)] if source.year else []
    meta += [_link(identifier[1], html.escape(identifier[0]))] if identifier else []
    abstract = ""
    if source.abstract:
        full = _highlighted(source.abstract, quoted)
        abstract = f"<details><summary>Full abstract</summary><p>{full}</p></details>"
    return (
        f'<div class="rag-source" id="source-{source.n}"><div><b>[{source.n}]</b> {title}</div>'
        f'<div class="rag-muted">{" · ".join([*meta, *details])}</div>'
        f"<blockquote>{_highlighted(quote_text, quoted)}</blockquote>{abstract}</div>"
    )


def _source_card(source: Source, cited: bool) -> str:
    state = "cited" if cited else "not cited by the model: shown as evidence"
    return _card(source, [f"relevance {source.score:.2f}", state], source.quote, source.sentences)


def sources_panel(evidence: Evidence, cited: list[int] | None = None) -> str:
    """The sources panel: numbered evidence, then what retrieval also found. For a refusal: the papers on the topic
    with their best sentence when they lack the asked fact, or the closest papers when the topic is not covered."""
    if evidence.refusal == "not_stated":
        heading = html.escape(f"On the topic, but not stating {evidence.not_stated}")
        cards = "".join(
            _card(s, [f"relevance {s.score:.2f}"], s.best or s.quote, [s.best] if s.best else s.sentences)
            for s in evidence.nearest
        )
        return f'<div class="rag-sources"><h3>{heading}</h3>{cards}</div>'
    if evidence.refused:
        rows = "".join(
            f"<li>{html.escape(s.title)} <span class='rag-muted'>(relevance {s.score:.2f})</span></li>"
            for s in evidence.nearest
        )
        return f'<div class="rag-sources"><h3>Closest papers, not answering</h3><ul>{rows}</ul></div>'
    cited_set = set(cited if cited is not None else [s.n for s in evidence.sources])
    cards = "".join(_source_card(source, source.n in cited_set) for source in evidence.sources)
    others = "".join(
        f"<li>{html.escape(s.title)} <span class='rag-muted'>(relevance {s.score:.2f})</span></li>"
        for s in evidence.others
    )
    also = f"<details><summary>Also retrieved, not cited ({len(evidence.others)})</summary><ul>{others}</ul></details>"
    return f'<div class="rag-sources"><h3>Sources</h3>{cards}{also if others else ""}</div>'


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
    ) -> Any:
        message = (message or "").strip()
        if not message:
            gr.Warning("Type a question first.")
            yield message, chat, history, gr.skip(), gr.skip()
            return
        chat = [*chat, {"role": "user", "content": message}, {"role": "assistant", "content": "Finding evidence…"}]
        yield "", chat, history, gr.skip(), ""
        try:
            request_settings = assistant.settings_for(collection, provider, local_model)
            conversation, notice = assistant.conversation(request_settings, list(history))
            text = ""  # the verified sentences so far
            for event in conversation.ask(message, candidates=int(top_k)):
                match event:
                    case EvidenceReady(evidence):
                        chat[-1]["content"] = (
                            "Writing the answer…" if conversation.model and not evidence.refused else ""
                        )
                        yield "", chat, history, sources_panel(evidence), notice or ""
                    case Draft(draft):  # the sentence being written, shown apart until it is verified
                        chat[-1]["content"] = (
                            link_citations(text) + f'<span class="rag-draft">{html.escape(draft)}</span>'
                        )
                        yield "", chat, history, gr.skip(), gr.skip()
                    case Sentence():
                        text += event.delta
                        chat[-1]["content"] = link_citations(text)
                        yield "", chat, history, gr.skip(), gr.skip()
                    case Quotes() | Fallback():  # the final answer below shows them compactly
                        pass
                    case Final(answer):
                        chat[-1]["content"] = link_citations(chat_text(answer))
                        line = notice or notice_for(answer, request_settings.llm.provider)
                        panel = sources_panel(answer.evidence, answer.cited)
                        yield "", chat, conversation.history, panel, line
        except EmptyCollection:
            chat[-1]["content"] = NO_CORPUS.format(collection=collection or settings.collection)
            yield "", chat, history, EMPTY_PANEL, "**No corpus ingested.**"
        except ServiceUnavailable as error:
            chat[-1]["content"] = f"The vector store is unavailable: {error}. Try again once it is back."
            yield "", chat, history, gr.skip(), "**Store unavailable.**"
        except BadInput as error:
            chat[-1]["content"] = f"Cannot answer that: {error}"
            yield "", chat, history, gr.skip(), ""

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

    def refresh(collection: str) -> tuple[str, Any]:
        try:
            names = assistant.collections()
        except (ServiceUnavailable, BadInput):  # the corpus line says what is wrong
            names = []
        return corpus_line(assistant, collection), gr.Dropdown(choices=sorted({*names, collection}))

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
        with gr.Accordion("Settings", open=False), gr.Row():
            top_k = gr.Slider(1, 20, value=settings.answer.candidates, step=1, label="Papers retrieved (top-k)")
            provider = gr.Dropdown(
                ["local", "openai", "none"], value=settings.llm.provider, label="Answer model provider"
            )
            local_model = gr.Dropdown(list(LOCAL_CHAT_MODELS), value=settings.llm.local_model, label="Local model")
            collection = gr.Dropdown(
                [settings.collection], value=settings.collection, allow_custom_value=True, label="Collection"
            )
        history = gr.State([])

        inputs = [box, chatbot, history, top_k, provider, local_model, collection]
        outputs = [box, chatbot, history, panel, notice]
        # Both triggers share one queue, so answers wait their turn visibly instead of contending for the model.
        answering = {"trigger_mode": "once", "concurrency_id": "answer"}
        box.submit(respond, inputs, outputs, api_name="chat", **answering)  # type: ignore[arg-type]
        send.click(respond, inputs, outputs, api_visibility="private", **answering)  # type: ignore[arg-type]
        clear.click(lambda: ("", [], [], EMPTY_PANEL, ""), None, outputs, api_visibility="private")
        collection.change(refresh, collection, [stats, collection], api_visibility="private")
        demo.load(refresh, collection, [stats, collection], api_visibility="private")
        gr.api(ask, api_name="ask", concurrency_id="answer")
    demo.queue(default_concurrency_limit=settings.server.concurrency, max_size=64)
    return demo
