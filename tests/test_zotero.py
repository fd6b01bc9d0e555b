"""A Zotero data directory as Zotero 7 writes it (tests/zotero_library.py): read offline and read-only, its PDFs
read for full text, its collections as filters, synced on re-ingest, and its faults each a clear message."""

import hashlib
import json
import shutil
import sqlite3
import tracemalloc
from pathlib import Path

import pytest

from rag.papers import Attached, DroppedField, Paper, Skipped
from rag.readers import read_entries
from rag.readers.zotero import ZoteroSelection, read_zotero
from tests.conftest import cli
from tests.pdfs import latex_paper, truncated_pdf
from tests.zotero_library import (
    BODY_FACT,
    BODY_PAGE,
    BODY_QUESTION,
    ROUTER_TITLE,
    StandardLibrary,
    ZoteroLibrary,
    standard_library,
)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _env(data: Path) -> dict[str, str]:
    return {"RAG_DATA_DIR": str(data), "RAG_LLM__PROVIDER": "none"}


def _ingest(path: Path, env: dict[str, str], *args: str) -> dict:
    result = cli("ingest", str(path), "--json", *args, env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _titles(search_output: str) -> set[str]:
    return {hit["title"] for hit in json.loads(search_output)}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> StandardLibrary:
    return standard_library(tmp_path_factory.mktemp("zotero") / "Zotero")


@pytest.fixture(scope="module")
def ingested(library: StandardLibrary, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], dict, str]:
    """The whole library ingested once, with the database's digest from before the ingest."""
    before = _digest(library.zotero.db)
    env = _env(tmp_path_factory.mktemp("zotero-data"))
    return env, _ingest(library.zotero.root, env), before


def test_the_library_is_ingested_with_full_texts_and_skips_counted_by_reason(
    library: StandardLibrary, ingested: tuple[dict[str, str], dict, str]
) -> None:
    _, report, _ = ingested
    assert (report["papers"], report["added"], report["full_text"]) == (16, 16, 12)
    assert report["papers"] == len(library.papers) and report["full_text"] == len(library.with_pdf)
    assert report["skipped_by_reason"] == {"trashed": 2, "note": 1, "not_a_paper": 1}
    assert report["problems"] == [] and report["dropped_fields"] == 0  # nothing here is a fault to warn of
    assert report["pages"] >= 12 + 2  # the router paper runs to page 3


def test_the_database_is_never_written(library: StandardLibrary, ingested: tuple[dict[str, str], dict, str]) -> None:
    _, _, before = ingested
    assert _digest(library.zotero.db) == before
    assert not library.zotero.db.with_name("zotero.sqlite-journal").exists()


def test_items_carry_their_metadata_collections_and_pdfs(library: StandardLibrary) -> None:
    entries = list(read_entries(library.zotero.root, "zotero"))
    kept = {
        e.paper.title if isinstance(e, Attached) else e.title: e for e in entries if isinstance(e, Paper | Attached)
    }
    assert set(kept) == {library.titles[key] for key in library.papers}
    attached = {title for title, entry in kept.items() if isinstance(entry, Attached)}
    assert attached == {library.titles[key] for key in library.with_pdf}
    router = kept[ROUTER_TITLE]
    assert isinstance(router, Attached) and router.pdf == library.pdfs[library.keys["router"]]
    paper = router.paper
    assert paper.paper_id == "doi:10.5555/router.2021" and paper.year == 2021
    assert paper.authors == ("Ada Lovelace", "Alan Turing") and paper.venue == "Journal of Computational Biology"
    assert {"proteins", "Thesis", "Thesis/Chapter 2", "Thesis/Chapter 2/Methods"} <= set(paper.categories)
    detector = kept["Detector Simulation with Generative Models"]
    assert isinstance(detector, Paper) and detector.authors == ("CERN", "Maria Curie")  # a one-field name
    assert detector.venue == "Machine Learning in High Energy Physics" and detector.kind == "incollection"
    scaling = kept["Scaling Laws for Chemical Language Models"]
    assert isinstance(scaling, Paper) and scaling.paper_id == "arxiv:2101.00001"
    assert [e.reason for e in entries if isinstance(e, Skipped)].count("trashed") == len(library.trashed)


def test_a_fact_only_in_a_pdf_body_is_cited_with_its_page(ingested: tuple[dict[str, str], dict, str]) -> None:
    env, _, _ = ingested
    result = cli("ask", BODY_QUESTION, "--json", env=env)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert not answer["refused"], answer["answer"]
    (source,) = [s for s in answer["sources"] if s["title"] == ROUTER_TITLE]
    assert source["n"] in {citation["n"] for citation in answer["citations"]}
    pages = [page for sentence, page in zip(source["evidence"], source["pages"], strict=True) if BODY_FACT in sentence]
    assert pages == [BODY_PAGE]


def test_a_collection_takes_its_sub_collections_and_is_a_search_filter(
    library: StandardLibrary, ingested: tuple[dict[str, str], dict, str], tmp_path: Path
) -> None:
    env = _env(tmp_path / "data")
    report = _ingest(library.zotero.root, env, "--zotero-collection", "thesis/CHAPTER 2")  # as typed: any case
    chapter = {library.titles[key] for key in library.collections["Thesis/Chapter 2"]}
    assert report["papers"] == len(chapter) == 4
    found = cli("search", "protein sequences and genomes", "-k", "20", "--json", env=env)
    assert _titles(found.stdout) == chapter
    whole_env, _, _ = ingested  # in the whole library, the collection path is a category filter
    narrowed = cli("search", "models", "-k", "20", "--category", "Thesis/Chapter 2", "--json", env=whole_env)
    assert _titles(narrowed.stdout) == chapter
    methods = cli("search", "models", "-k", "20", "--category", "Thesis/Chapter 2/Methods", "--json", env=whole_env)
    assert _titles(methods.stdout) == {ROUTER_TITLE}


def test_an_unknown_collection_or_item_type_names_what_there_is(library: StandardLibrary, tmp_path: Path) -> None:
    env = _env(tmp_path / "data")
    missing = cli("ingest", str(library.zotero.root), "--zotero-collection", "Thesis/Chapter 9", env=env)
    assert missing.exit_code == 2
    assert "no collection 'Thesis/Chapter 9'" in missing.output and "Reading group, Thesis" in missing.output
    wrong = cli("ingest", str(library.zotero.root), "--zotero-types", "journalArticle,blogpost", env=env)
    assert wrong.exit_code == 2 and "no item type 'blogpost'" in wrong.output and "blogPost" in wrong.output
    assert json.loads(cli("collections", "list", "--json", env=env).stdout) == []


def test_item_types_are_chosen_with_zotero_types(library: StandardLibrary, tmp_path: Path) -> None:
    env = _env(tmp_path / "data")
    report = _ingest(library.zotero.root, env, "--zotero-types", "webpage,thesis")
    assert report["papers"] == 2  # the web page and the thesis; every other paper type is passed over, counted
    assert report["skipped_by_reason"]["not_a_paper"] == len(library.papers) - 1
    everything = [e for e in read_entries(library.zotero.root, "zotero", zotero=ZoteroSelection(types=("all",)))]
    assert sum(isinstance(e, Paper | Attached) for e in everything) == len(library.papers) + 1


def test_re_ingest_touches_only_new_changed_and_removed_items(tmp_path: Path) -> None:
    library = standard_library(tmp_path / "Zotero")
    zotero, env = library.zotero, _env(tmp_path / "data")
    first = _ingest(zotero.root, env)
    again = _ingest(zotero.root, env)
    assert (again["added"], again["updated"], again["skipped"], again["full_text"]) == (0, 0, first["papers"], 0)
    zotero.set_field(library.keys["kernels"], "title", "Tiled Attention Kernels for Very Long Genomic Sequences")
    zotero.erase(library.keys["quantized"])
    zotero.item("journalArticle", title="A New Paper on Reef Surveys", abstract="Drones survey reefs in a day.")
    synced = _ingest(zotero.root, env, "--prune")
    assert (synced["added"], synced["updated"], synced["removed"]) == (1, 1, 1)
    assert synced["full_text"] == 1  # the changed item's PDF, read again; no other
    found = cli("search", "tiled attention kernels genomic", "-k", "3", "--json", env=env)
    assert "Tiled Attention Kernels for Very Long Genomic Sequences" in _titles(found.stdout)


def test_a_standalone_pdf_and_a_linked_pdf_are_papers(tmp_path: Path) -> None:
    zotero = ZoteroLibrary(tmp_path / "Zotero")
    build = tmp_path / "latex"
    build.mkdir()
    standalone = latex_paper(
        build, "standalone", title="Sea Ice Thickness from Satellite Altimetry", abstract="", sections=[("Method",
        ["Freeboard measured by radar altimetry converts to ice thickness through hydrostatic balance."])],
    )  # fmt: skip
    linked = latex_paper(
        build, "linked", title="Wind Farm Wake Modelling", abstract="Wakes of upstream turbines cut output by a tenth.",
        sections=[("Method", ["Large-eddy simulation resolves the wake behind each rotor."])],
    )  # fmt: skip
    zotero.attach_pdf(None, standalone, title="standalone.pdf")
    parent = zotero.item("journalArticle", title="Wind Farm Wake Modelling", abstract=None)
    zotero.link_file(parent, str(linked))
    report = _ingest(zotero.root, _env(tmp_path / "data"))
    assert (report["papers"], report["full_text"], report["problems"]) == (2, 2, [])
    found = cli("search", "radar freeboard ice thickness", "-k", "1", "--json", env=_env(tmp_path / "data"))
    assert _titles(found.stdout) == {"Sea Ice Thickness from Satellite Altimetry"}  # the PDF's own title


def test_missing_unreadable_and_outside_pdfs_cost_the_pdf_not_the_paper(tmp_path: Path) -> None:
    library = standard_library(tmp_path / "Zotero")
    zotero = library.zotero
    outside = tmp_path / "secret.pdf"
    shutil.copyfile(library.pdfs[library.keys["router"]], outside)
    library.pdfs[library.keys["quantized"]].unlink()  # not synced to this machine; the item has an abstract
    library.pdfs[library.keys["seismic"]].unlink()  # no abstract either: nothing left to search
    truncated_pdf(library.pdfs[library.keys["federated"]])  # a damaged file
    escaping = zotero.item("journalArticle", title="An Escaping Attachment", abstract="Paths must stay inside.")
    zotero.attachment_row(escaping, "storage:../../secret.pdf", 1, "application/pdf")
    relative = zotero.item("journalArticle", title="A Relative Link", abstract="Linked to a base directory.")
    zotero.link_file(relative, "attachments:papers/relative.pdf")
    report = _ingest(zotero.root, _env(tmp_path / "data"))
    problems = "\n".join(report["problems"])
    assert report["papers"] == len(library.papers) + 2 - 1  # the seismic paper has neither abstract nor PDF now
    assert report["full_text"] == len(library.with_pdf) - 3
    assert report["skipped_by_reason"]["no_abstract"] == 1
    assert "storage:../../secret.pdf" in problems and "outside its storage folder" in problems
    assert "attachments:papers/relative.pdf" in problems and "base folder" in problems
    assert "is not on disk" in problems and "field 'file'" in problems  # the quantized PDF; the truncated one
    assert report["dropped_fields"] == 4


def test_an_uploaded_library_does_not_look_at_linked_files_outside_it(library: StandardLibrary, tmp_path: Path) -> None:
    server_pdf = library.pdfs[library.keys["router"]]  # a PDF elsewhere on the server
    uploaded = ZoteroLibrary(tmp_path / "upload" / "Zotero")
    for name, target in (("A PDF", server_pdf), ("No file", server_pdf.with_name("absent.pdf"))):
        item = uploaded.item("journalArticle", title=name, abstract="Linked to a file outside the upload.")
        uploaded.link_file(item, str(target))
    trusted = list(read_zotero(uploaded.root))
    assert [type(entry) for entry in trusted if not isinstance(entry, DroppedField)] == [Attached, Paper]
    confined = list(read_zotero(uploaded.root, pdfs_within=tmp_path / "upload"))
    assert [type(entry) for entry in confined if not isinstance(entry, DroppedField)] == [Paper, Paper]
    dropped = [entry.detail for entry in confined if isinstance(entry, DroppedField)]
    assert len(dropped) == 2 and all("outside the uploaded files" in detail for detail in dropped)  # exists or not


def test_a_locked_database_is_read_from_a_copy(library: StandardLibrary, tmp_path: Path) -> None:
    copy = tmp_path / "Zotero"
    shutil.copytree(library.zotero.root, copy)
    zotero = ZoteroLibrary(copy)
    with zotero.locked():  # Zotero running: an exclusive lock that even a reader cannot pass
        report = _ingest(copy, _env(tmp_path / "data"))
    assert report["papers"] == len(library.papers)


def test_writes_not_yet_checkpointed_are_read(library: StandardLibrary, tmp_path: Path) -> None:
    copy = tmp_path / "Zotero"
    shutil.copytree(library.zotero.root, copy)
    held = sqlite3.connect(copy / "zotero.sqlite", isolation_level=None)  # Zotero running in WAL mode, reading:
    held.execute("PRAGMA journal_mode=WAL")  # a new item's rows sit in zotero.sqlite-wal, not yet in the database
    held.execute("BEGIN")
    held.execute("SELECT count(*) FROM items").fetchone()
    try:
        ZoteroLibrary(copy).item("journalArticle", title="A Paper Saved a Moment Ago", abstract="Still in the WAL.")
        assert (copy / "zotero.sqlite-wal").stat().st_size > 0
        titles = {e.title for e in read_entries(copy, "zotero") if isinstance(e, Paper)}
    finally:
        held.close()
    assert "A Paper Saved a Moment Ago" in titles


def test_what_is_not_a_readable_zotero_library_is_refused_and_the_store_untouched(
    library: StandardLibrary, tmp_path: Path
) -> None:
    env = _env(tmp_path / "data")
    empty = tmp_path / "NotZotero"
    empty.mkdir()
    (empty / "notes.txt").write_text("")
    not_one = cli("ingest", str(empty), "--zotero-collection", "Thesis", env=env)
    assert not_one.exit_code == 2 and "not a Zotero data directory" in not_one.output
    newer = tmp_path / "Newer"
    shutil.copytree(library.zotero.root, newer)
    ZoteroLibrary(newer).set_version("compatibility", 10)
    refused = cli("ingest", str(newer), env=env)
    assert refused.exit_code == 2 and "compatibility 10 > 9" in refused.output and "Zotero 5.0 to 8" in refused.output
    damaged = tmp_path / "Damaged"
    damaged.mkdir()
    (damaged / "zotero.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x07" * 4096)
    broken = cli("ingest", str(damaged), env=env)
    assert broken.exit_code == 2 and "not a readable SQLite database" in broken.output
    assert json.loads(cli("collections", "list", "--json", env=env).stdout) == []


def test_zotero_main_branch_databases_read_the_same(library: StandardLibrary, tmp_path: Path) -> None:
    head = standard_library(tmp_path / "Zotero", release="head")
    titles = {
        e.paper.title if isinstance(e, Attached) else e.title
        for e in read_entries(head.zotero.root, "zotero")
        if isinstance(e, Paper | Attached)
    }
    assert titles == {head.titles[key] for key in head.papers}


def test_ten_thousand_items_stream_in_flat_memory(tmp_path: Path) -> None:
    """Reading holds one batch of items at a time: the peak for 10,000 items is about that for 1,000."""
    peaks = []
    for n in (1_000, 10_000):
        zotero = ZoteroLibrary(tmp_path / f"bulk{n}")
        zotero.bulk(n, abstract_words=60)
        tracemalloc.start()
        papers = sum(isinstance(entry, Paper) for entry in read_zotero(zotero.root))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert papers == n
    assert peaks[1] < 1.5 * peaks[0], peaks


def test_dropped_fields_name_the_item(tmp_path: Path) -> None:
    zotero = ZoteroLibrary(tmp_path / "Zotero")
    zotero.item("journalArticle", title="An Undated Paper", abstract="No date here.", date="n.d.")
    zotero.item("journalArticle", title="A Bad DOI", abstract="Typed by hand.", fields={"DOI": "see the PDF"})
    entries = list(read_zotero(zotero.root))
    dropped = [e for e in entries if isinstance(e, DroppedField)]
    assert {e.field for e in dropped} == {"year", "doi"}
    assert all(str(e).startswith(f"{zotero.db}:") and "item " in e.detail for e in dropped), dropped
    assert sum(isinstance(e, Paper) for e in entries) == 2
