"""Papers → chunks → embeddings → Chroma, idempotently and resumably; then a new keyword-index version is published.

Each chunk's metadata records its paper's content hash and chunk count, so the store itself says which papers are
complete and current: unchanged papers are skipped, changed ones replaced, half-written ones redone, and with
``prune`` the papers the file no longer holds are removed. Ingest is the only writer of index versions: it publishes
one whenever the rows differ from what the published version indexed (compared by fingerprint, so a changed abstract
with the same chunk count counts, and so does an earlier run that died before publishing).
"""

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Literal, TypeGuard, cast

import tiktoken
from chromadb.api.types import Where
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import BaseNode, MetadataMode, TextNode
from llama_index.vector_stores.chroma import ChromaVectorStore
from tqdm import tqdm

from rag import keyword_index
from rag.embedding import build_embedder, embedder_id, local_embedder
from rag.errors import CorpusError
from rag.library import files_dir, open_stored
from rag.papers import Attached, DroppedField, FieldNote, Paper, Skipped
from rag.readers import PASSED_OVER, WHOLE_LIBRARY, ZoteroSelection, corpus_files, read_entries
from rag.readers.pdf import PdfReader, read_pdfs
from rag.settings import Settings
from rag.store import PaperState, StoredCollection, check_compatible, connect, create_collection, fingerprint, manifest

EMBEDDED_KEYS = ("title",)
# Skips that are counted and not warned of, one by one: what a library holds that is not a paper to search.
COUNTED_ONLY = frozenset({"no_abstract", *PASSED_OVER})


def entries(count: int) -> str:
    return f"{count} {'entry' if count == 1 else 'entries'}"


@dataclass(frozen=True)
class IngestProgress:
    """How far an ingest is, for a caller that shows it (the web UI); the command line shows tqdm bars."""

    stage: Literal["reading", "embedding", "indexing"]
    done: int
    total: int


@dataclass
class IngestReport:
    papers: int
    chunks: int
    added: int
    skipped: int
    collection: str
    updated: int
    duplicates: int
    removed: int
    embedder: str
    seconds: float
    skipped_no_abstract: int = 0  # reference-manager entries without an abstract: nothing to search or cite
    skipped_malformed: int = 0
    # each entry or file passed over ("skipped file:line: why"), then each field dropped or read with a note
    # ("file:line: field 'year': why: dropped"), as the command line warns of them
    problems: list[str] = field(default_factory=list)
    full_text: int = 0  # papers read from a PDF
    pages: int = 0  # pages of the PDFs read
    passages: int = 0  # passages of the full texts read (abstracts included)
    skipped_by_reason: dict[str, int] = field(default_factory=dict)  # every skip: no_abstract, malformed, no_text…
    dropped_fields: int = 0  # fields that could not be read, left out of papers that were kept

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """What the command line and the UI report after an ingest."""
        lines = [
            f"{self.papers} papers ({self.added} added, {self.updated} updated, {self.skipped} unchanged, "
            f"{self.removed} removed, {self.duplicates} duplicates dropped), {self.chunks} chunks in "
            f"{self.collection!r} [{self.embedder}] in {self.seconds:.1f} s"
        ]
        if self.full_text:
            lines.append(f"{self.full_text} full texts read: {self.pages} pages, {self.passages} passages")
        if self.skipped_no_abstract:
            lines.append(f"{entries(self.skipped_no_abstract)} without an abstract skipped (nothing to search or cite)")
        if self.skipped_malformed:
            lines.append(f"{entries(self.skipped_malformed)} malformed, skipped (listed above; --strict fails instead)")
        if self.dropped_fields:
            fields = f"{self.dropped_fields} {'field' if self.dropped_fields == 1 else 'fields'}"
            lines.append(f"{fields} that could not be read dropped (listed above; --strict fails instead)")
        others = {
            reason: n for reason, n in self.skipped_by_reason.items() if reason not in ("no_abstract", "malformed")
        }
        if others:
            lines.append("skipped: " + ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in others.items()))
        return "\n".join(lines)


def make_splitter(settings: Settings) -> SentenceSplitter:
    """Sentence-aware chunks measured in cl100k tokens, the same counter that budgets LLM prompts."""
    return SentenceSplitter(
        chunk_size=settings.chunking.chunk_size,
        chunk_overlap=min(settings.chunking.chunk_overlap, settings.chunking.chunk_size // 2),
        tokenizer=tiktoken.get_encoding("cl100k_base").encode,
    )


def paper_nodes(paper: Paper, splitter: SentenceSplitter, version: str) -> list[TextNode]:
    """The paper's chunks: its abstract's, then each body passage's (a chunk never spans two passages, so it has one
    page and one section). Each carries the paper's metadata and version, and embeds as "title + chunk"."""
    abstract = splitter.split_text_metadata_aware(paper.abstract, paper.title) if paper.abstract else []
    pieces = [(chunk, paper.passages[0]) for chunk in abstract]
    for passage in paper.body:
        pieces += [(chunk, passage) for chunk in splitter.split_text_metadata_aware(passage.text, paper.title)]
    base: dict[str, Any] = {"paper_id": paper.paper_id, "title": paper.title}
    base |= {"content_hash": version, "n_chunks": len(pieces)} | paper.metadata()
    if paper.body:
        base["abstract_chunks"] = len(abstract)
    nodes = []
    for i, (chunk, passage) in enumerate(pieces):
        metadata = base | {"chunk": i}
        if passage.page is not None:
            metadata["page"] = passage.page
        if i >= len(abstract) and passage.section:
            metadata["section"] = passage.section
        hidden = [key for key in metadata if key not in EMBEDDED_KEYS]
        nodes.append(
            TextNode(
                id_=f"{paper.paper_id}#{i}",
                text=chunk,
                metadata=metadata,
                excluded_embed_metadata_keys=hidden,
                excluded_llm_metadata_keys=hidden,
                metadata_template="{value}",
                text_template="{metadata_str}\n\n{content}",
            )
        )
    return nodes


def _batched(papers: Iterator[Paper | Attached], size: int) -> Iterator[list[Paper | Attached]]:
    while batch := list(islice(papers, size)):
        yield batch


def _unique(papers: Iterable[Paper | Attached], seen: set[str]) -> Iterator[Paper | Attached]:
    for paper in papers:
        if paper.paper_id not in seen:
            seen.add(paper.paper_id)
            yield paper


def pages_of(paper: Paper) -> int:
    """How many pages the paper's passages reach (0 for a paper without pages)."""
    return max((passage.page or 0 for passage in paper.passages), default=0)


@dataclass
class _Read:
    """What an ingest read: pass 1's ids, skips and full texts of standalone PDFs (a PDF is parsed once), and the
    PDFs of entries that pass 2 read."""

    ids: set[str] = field(default_factory=set)
    total: int = 0
    passed_over: list[Skipped] = field(default_factory=list)
    notes: list[FieldNote] = field(default_factory=list)  # fields dropped or read with a note, of papers kept
    full_texts: list[Paper] = field(default_factory=list)
    unread: set[Path] = field(default_factory=set)  # a folder's export files that could not be read: passed over
    pdf_files: dict[str, Path] = field(default_factory=dict)  # a kept file's name → where it was read from
    entry_pdfs: set[Path] = field(default_factory=set)  # the PDFs entries name: not standalone papers as well
    # Under --strict, each entry's PDF with the entry's id and version, so the changed ones are read before the store
    # is touched.
    attached: list[tuple[str, str, Path]] = field(default_factory=list)
    late_skips: int = 0  # entries counted in pass 1 whose PDF turned out unreadable, with no abstract to fall back on
    full_text: int = 0
    pages: int = 0
    passages: int = 0

    def count_full_text(self, paper: Paper) -> None:
        self.full_text += 1
        self.pages += pages_of(paper)
        self.passages += len(paper.passages)


def _read_all(
    files: list[tuple[Path, str]],
    settings: Settings,
    strict: bool,
    progress: bool,
    tell: Callable[[IngestProgress], None],
    source: Path,
    zotero: ZoteroSelection,
    pdfs_within: Path | None,
) -> _Read:
    """Validate every file (streaming) and read every PDF, so bad input never leaves a half-ingested store."""
    read = _Read()
    for file, fmt in files:
        if fmt == "pdf":
            continue
        ids: list[str] = []
        skips: list[Skipped] = []
        notes: list[FieldNote] = []
        try:
            for entry in read_entries(file, fmt, strict, zotero, pdfs_within):
                if isinstance(entry, Paper | Attached):
                    ids.append(entry.paper_id)
                    if isinstance(entry, Attached):
                        read.entry_pdfs.add(entry.pdf.resolve())
                        if strict:
                            read.attached.append((entry.paper_id, entry.version(), entry.pdf))
                elif isinstance(entry, Skipped):
                    skips.append(entry)
                else:
                    notes.append(entry)
        except CorpusError as error:
            if strict or fmt == "zotero" or not source.is_dir():
                raise
            read.unread.add(file)  # a stray text file in a folder of papers costs that file, not the ingest
            read.passed_over.append(Skipped(file, error.line or 0, "unreadable", str(error).split(": ", 1)[-1]))
            continue
        read.passed_over += skips
        read.notes += notes
        read.total += len(ids)
        read.ids.update(ids)
    pdfs = [file for file, fmt in files if fmt == "pdf" and file.resolve() not in read.entry_pdfs]
    with tqdm(total=len(pdfs), unit="pdf", desc="read PDFs", disable=None if progress and pdfs else True) as bar:
        for file, entry in zip(pdfs, read_pdfs(pdfs, settings.pdf), strict=True):
            if isinstance(entry, Skipped):
                if strict and entry.reason != "no_text":
                    raise CorpusError(file, f"{entry.detail} (--strict stops at an unreadable PDF)")
                read.passed_over.append(entry)
            elif isinstance(entry, Paper):  # a PDF is one paper or one skip
                read.total += 1
                read.ids.add(entry.paper_id)
                read.full_texts.append(entry)
                read.count_full_text(entry)
                if entry.file:
                    read.pdf_files[entry.file] = file
            bar.update()
            bar.set_postfix(pages=read.pages, passages=read.passages)
            tell(IngestProgress("reading", bar.n, len(pdfs)))
    if not read.total:
        first = next((entry for entry in read.passed_over if entry.reason != "no_abstract"), None)
        raise CorpusError(source, first.detail if first else "no paper could be read from it")
    return read


def _papers(
    files: list[tuple[Path, str]], read: _Read, zotero: ZoteroSelection, pdfs_within: Path | None
) -> Iterator[Paper | Attached]:
    """Pass 2: the export files' papers read again (streaming), then the full texts pass 1 kept."""
    for file, fmt in files:
        if fmt != "pdf" and file not in read.unread:
            entries = read_entries(file, fmt, zotero=zotero, pdfs_within=pdfs_within)
            yield from (e for e in entries if isinstance(e, Paper | Attached))
    yield from read.full_texts


def _with_text(attached: Attached, reader: PdfReader, read: _Read, strict: bool) -> Paper | None:
    """The entry with its PDF's full text; with its abstract alone when the PDF cannot be read (None without one)."""
    found = reader.read(attached.pdf)
    if isinstance(found, Paper):
        paper = attached.with_text(found)
        read.count_full_text(paper)
        if paper.file:
            read.pdf_files[paper.file] = attached.pdf
        return paper
    assert isinstance(found, Skipped)  # a PDF is one paper or one skip
    if strict and found.reason != "no_text":
        raise CorpusError(attached.pdf, f"{found.detail} (--strict stops at an unreadable PDF)")
    if attached.paper.abstract:
        read.notes.append(DroppedField(found.path, found.line, "file", f"{found.detail}; its abstract was ingested"))
        return attached.paper
    read.late_skips += 1
    read.passed_over.append(found)
    return None


def _version(entry: Paper | Attached) -> str:
    return entry.version() if isinstance(entry, Attached) else entry.content_hash


def _current(state: PaperState | None, version: str) -> TypeGuard[PaperState]:
    """Whether the store holds this version of a paper whole: nothing to read or embed."""
    return state is not None and state.complete and state.content_hash == version


def _check_changed_pdfs(read: _Read, known: dict[str, PaperState], suffix: str, settings: Settings) -> None:
    """Under --strict, read the PDFs pass 2 will read (those of new or changed entries) before the store is touched,
    so an unreadable one stops the ingest with the store as it was."""
    changed = [
        pdf for paper_id, version, pdf in read.attached if not _current(known.get(paper_id), f"{version}:{suffix}")
    ]
    for pdf, entry in zip(changed, read_pdfs(changed, settings.pdf), strict=True):
        if isinstance(entry, Skipped) and entry.reason != "no_text":
            raise CorpusError(pdf, f"{entry.detail} (--strict stops at an unreadable PDF)")


def ingest(
    path: Path,
    fmt: str,
    settings: Settings,
    progress: bool = True,
    prune: bool = False,
    strict: bool = False,
    on_progress: Callable[[IngestProgress], None] | None = None,
    zotero: ZoteroSelection = WHOLE_LIBRARY,
    pdfs_within: Path | None = None,
) -> IngestReport:
    """Ingest a corpus file, a PDF or a folder of them (export files and PDFs mixed, read recursively); with
    ``prune``, also remove the collection's papers that ``path`` no longer holds. A malformed file, or settings whose
    embedder or chunking differ from the collection's, are rejected before the store is touched. A malformed entry
    among good ones in a reference-manager export, and a PDF that cannot be read, are skipped and reported, unless
    ``strict``. ``on_progress`` hears of each stage and batch. A Zotero data directory is read as ``zotero`` says;
    an entry's PDF (a Zotero attachment, an export's file field) is read only when the entry or the file changed,
    and, given ``pdfs_within`` (an upload's folder), only when it lies in that folder."""
    started = time.perf_counter()
    tell = on_progress or (lambda _: None)
    tell(IngestProgress("reading", 0, 0))
    stored = open_stored(settings)
    if stored is not None:
        check_compatible(stored, settings)
    files, unsupported = corpus_files(path, fmt)
    if zotero != WHOLE_LIBRARY and [fmt for _, fmt in files] != ["zotero"]:
        raise CorpusError(Path(path), "is not a Zotero data directory: --zotero-collection and --zotero-types need one")
    read = _read_all(files, settings, strict, progress, tell, Path(path), zotero, pdfs_within)
    ids = read.ids

    embedder: BaseEmbedding | None = None  # loaded only when something needs embedding: re-ingests stay fast
    splitter = make_splitter(settings)
    known = manifest(stored.collection if stored else None)
    final = dict(known)  # what the store will hold: the published index must match it
    version_suffix = f"{settings.chunking.chunk_size}/{settings.chunking.chunk_overlap}"
    _check_changed_pdfs(read, known, version_suffix, settings)
    kept_files = files_dir(settings.data_path, settings.collection)

    added = updated = skipped = chunks = 0
    bar = tqdm(total=len(ids), unit="paper", desc=f"ingest {Path(path).name}", disable=None if progress else True)
    done = 0
    tell(IngestProgress("embedding", done, len(ids)))
    with PdfReader(settings.pdf) as pdf_reader:  # its worker starts at the first entry whose PDF must be read
        for batch in _batched(_unique(_papers(files, read, zotero, pdfs_within), set()), settings.ingest.batch_papers):
            todo: list[BaseNode] = []
            replaced: list[str] = []
            for entry in batch:
                version = f"{_version(entry)}:{version_suffix}"
                state = known.get(entry.paper_id)
                if _current(state, version):
                    skipped += 1
                    chunks += state.n_chunks
                    continue
                if isinstance(entry, Attached):
                    with_text = _with_text(entry, pdf_reader, read, strict)
                    if with_text is None:
                        continue
                    paper = with_text
                else:
                    paper = entry
                if state is not None:
                    replaced.append(paper.paper_id)
                if state is not None and state.complete:
                    updated += 1
                else:
                    added += 1  # new, or half-written by a run that died: not whole in the store before
                if paper.file:  # kept before its rows are written: a paper in the store always has its PDF
                    kept_files.mkdir(parents=True, exist_ok=True)
                    if not (kept_files / paper.file).is_file():
                        shutil.copyfile(read.pdf_files[paper.file], kept_files / f".{paper.file}.part")
                        os.replace(kept_files / f".{paper.file}.part", kept_files / paper.file)
                nodes = paper_nodes(paper, splitter, version)
                todo.extend(nodes)
                chunks += len(nodes)
                final[paper.paper_id] = PaperState(version, len(nodes), present=len(nodes))
            if todo:
                embedder = embedder or build_embedder(settings)
                vectors = embedder.get_text_embedding_batch([n.get_content(MetadataMode.EMBED) for n in todo])
                for node, vector in zip(todo, vectors, strict=True):
                    node.embedding = vector
                if stored is None:
                    stored = create_collection(settings, connect(settings), dimension=len(vectors[0]))
                if replaced:
                    _delete_papers(stored, replaced)
                ChromaVectorStore(chroma_collection=stored.collection).add(todo)
            bar.update(len(batch))
            done += len(batch)
            tell(IngestProgress("embedding", done, len(ids)))
    bar.close()

    removed = sorted(set(known) - ids) if prune else []
    if stored is not None and removed:
        _delete_papers(stored, removed)
        for paper_id in removed:
            del final[paper_id]
    if stored is not None and keyword_index.stale(stored, settings.data_path, fingerprint(final)):
        tell(IngestProgress("indexing", 0, len(final)))
        keyword_index.publish(stored, settings.data_path, local_embedder(settings), progress)
    passed_over = read.passed_over
    reasons: Counter[str] = Counter(entry.reason for entry in passed_over)
    if unsupported:
        reasons["unsupported"] = len(unsupported)
    return IngestReport(
        papers=len(ids) - read.late_skips,
        chunks=chunks,
        added=added,
        skipped=skipped,
        collection=settings.collection,
        updated=updated,
        duplicates=read.total - len(ids),
        removed=len(removed),
        embedder=stored.info.embedder.id if stored else embedder_id(settings),
        seconds=round(time.perf_counter() - started, 2),
        skipped_no_abstract=reasons["no_abstract"],
        skipped_malformed=reasons["malformed"],
        problems=[f"skipped {entry}" for entry in passed_over if entry.reason not in COUNTED_ONLY]
        + [f"skipped {file}: not a PDF or an export file, passed over" for file in unsupported]
        + [str(note) for note in read.notes],
        dropped_fields=sum(isinstance(note, DroppedField) for note in read.notes),
        full_text=read.full_text,
        pages=read.pages,
        passages=read.passages,
        skipped_by_reason=dict(reasons),
    )


def _delete_papers(stored: StoredCollection, paper_ids: list[str]) -> None:
    """Delete every chunk of these papers, a bounded number of ids per request."""
    for start in range(0, len(paper_ids), 500):
        batch = paper_ids[start : start + 500]
        stored.collection.delete(where=cast(Where, {"paper_id": {"$in": batch}}))
