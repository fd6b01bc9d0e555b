"""The web UI: a Gradio chat whose answers stream in, with a sources panel where every [n] leads.

The evidence is shown the moment retrieval has it (about half a second), before the model writes a word; the answer
then streams in with its citations linked to their entries in the panel. Each browser session keeps its own history
for follow-ups; models are shared through :class:`rag.assistant.Assistant`, and the local model's one-at-a-time
generation shows as Gradio's queue rather than a frozen page.
"""

import html
from typing import Any

import gradio as gr

from rag.answer import Answer, Draft, EvidenceReady, Fallback, Final, Quotes, Sentence, final_answer
from rag.assistant import Assistant
from rag.errors import BadInput, EmptyCollection, ServiceUnavailable
from rag.evidence import Evidence, Source
from rag.model_files import LOCAL_CHAT_MODELS
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
    """What the chat shows: the synthesis and the titles it rests on (their quotes are in the panel beside it),
    or, for an evidence-only answer, the evidence itself."""
    if not answer.synthesis:
        return answer.text
    titles = "\n".join(f"[{source.n}] {source.title}" for source in answer.evidence.sources)
    return f"{answer.synthesis}\n\nSources:\n{titles}"


def link_citations(text: str) -> str:
    """Every [n] becomes a link to source n in the panel."""
    return CITATION.sub(
        lambda match: "".join(
            f'<a class="rag-cite" href="#source-{n}">[{n}]</a>' for n in cited_numbers(match.group(0))
        ),
        text,
    )


def _highlighted(abstract: str, sentences: list[str]) -> str:
    marked = html.escape(abstract)
    for sentence in sentences:
        marked = marked.replace(html.escape(sentence), f"<mark>{html.escape(sentence)}</mark>")
    return marked


def _source_card(source: Source, cited: bool) -> str:
    title = html.escape(source.title)
    if source.url and source.url.startswith(("http://", "https://")):
        title = f'<a href="{html.escape(source.url)}" target="_blank" rel="noopener">{title}</a>'
    state = "cited" if cited else "not cited by the model: shown as evidence"
    quotes = "".join(f"<mark>{html.escape(sentence)}</mark> " for sentence in source.sentences)
    abstract = ""
    if source.abstract:
        full = _highlighted(source.abstract, source.sentences)
        abstract = f"<details><summary>Full abstract</summary><p>{full}</p></details>"
    return (
        f'<div class="rag-source" id="source-{source.n}"><div><b>[{source.n}]</b> {title}</div>'
        f'<div class="rag-muted">relevance {source.score:.2f} · {state} · {html.escape(source.paper_id)}</div>'
        f"<blockquote>{quotes}</blockquote>{abstract}</div>"
    )


def sources_panel(evidence: Evidence, cited: list[int] | None = None) -> str:
    """The sources panel: numbered evidence, then what retrieval also found; for a refusal, the closest papers."""
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
    """Why an answer is not a model's synthesis, in one line; empty when it is."""
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
