"""Citations out as BibTeX: the key rule, entries that bibtexparser reads back to the stored metadata, `rag cite`,
and the `bibtex` of every citation in `rag ask --json`."""

import json
from pathlib import Path
from typing import Any

import bibtexparser
import pytest
from bibtexparser.library import Library
from bibtexparser.middlewares import LatexDecodingMiddleware, SeparateCoAuthors, SplitNameParts
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.api import add_api
from rag.assistant import Assistant
from rag.cite import base_key, bibtex_entries, bibtex_library, citation_keys
from rag.papers import Paper
from rag.store import connect, create_collection
from tests.conftest import cli, make_settings, write_jsonl


def Reference(
    paper_id: str,
    title: str,
    authors: tuple[str, ...] = (),
    year: int | None = None,
    venue: str | None = None,
    doi: str | None = None,
    url: str | None = None,
    kind: str | None = None,
) -> Paper:
    """A paper as a citation sees it: metadata, no passages."""
    return Paper(paper_id, title, authors=authors, year=year, venue=venue, doi=doi, url=url, kind=kind)


def parsed(bibtex: str) -> Library:
    """The text as a reader of the .bib gets it: LaTeX decoded to Unicode, braces removed, authors split."""
    library = bibtexparser.parse_string(
        bibtex, append_middleware=[LatexDecodingMiddleware(), SeparateCoAuthors(), SplitNameParts()]
    )
    assert not library.failed_blocks, [block.error for block in library.failed_blocks]
    return library


def authors_of(entry: bibtexparser.model.Entry) -> tuple[str, ...]:
    return tuple(name.merge_first_name_first for name in entry["author"])


@pytest.mark.parametrize(
    ("reference", "key"),
    [
        (Reference("a", "Attention Is All You Need", ("Ashish Vaswani", "Noam Shazeer"), 2017), "vaswani2017attention"),
        (
            Reference("b", "On the Properties of Neural Machine Translation", ("Kyunghyun Cho",), 2014),
            "cho2014properties",
        ),
        (Reference("c", "Über die Natur", ("Ludwig van Beethoven",), 1810), "beethoven1810uber"),
        (Reference("d", "Ñandú: A Study", ("Łukasz Kaiser",), 2020), "kaiser2020nandu"),
        (Reference("e", "GPT-4 Technical Report", ("Jørgen Strauß",), 2023), "strauss2023gpt"),
        (Reference("f", "Attention Is All You Need", (), 2017), "attention2017"),
        (Reference("g", "Attention Is All You Need", ("Ashish Vaswani",)), "vaswaniattention"),
        (Reference("arxiv:2101.00001", "日本語の論文"), "arxiv210100001"),
    ],
)
def test_the_key_is_family_name_year_and_first_significant_title_word(reference: Reference, key: str) -> None:
    assert base_key(reference) == key
    assert citation_keys([reference]) == [key]


def test_colliding_keys_get_suffixes_in_paper_id_order_whatever_the_order_of_the_list() -> None:
    same = [
        Reference(pid, f"Breaking the {word}", ("Zhilin Yang",), 2018)
        for pid, word in [("z", "Softmax"), ("m", "softmax bottleneck"), ("a", "Softmax Again")]
    ]
    other = Reference("x", "Mixture of Softmaxes", ("Zhilin Yang",), 2018)
    forward = citation_keys([*same, other])
    backward = citation_keys([other, *reversed(same)])
    assert dict(zip(["z", "m", "a", "x"], forward, strict=True)) == {
        "a": "yang2018breakinga",
        "m": "yang2018breakingb",
        "z": "yang2018breakingc",
        "x": "yang2018mixture",
    }
    assert backward == [forward[3], *reversed(forward[:3])]
    # a suffixed key never takes another paper's own key: "smith2020b" is a title word's, so the pair skips it
    pair = [Reference(pid, "On the", ("Ann Smith",), 2020) for pid in ("p1", "p2")]
    b = Reference("p3", "B Cells", ("Ann Smith",), 2020)
    assert citation_keys([*pair, b]) == ["smith2020a", "smith2020c", "smith2020b"]


ROUND_TRIP = [
    Reference("doi:10.1/x", "Attention Is All You Need", ("Ashish Vaswani", "Noam Shazeer"), 2017, doi="10.1/x"),
    Reference(
        "doi:10.1145/3-a_b",
        "Émile's {BERT}: 50% of a_b & C++ #1 -- “quoted” — α ≤ β",
        ("Émile Zoë", "Ludwig van Beethoven", "Łukasz Kaiser", "José Núñez"),
        2019,
        "Proc. of A & B",
        "10.1145/3-a_b",
        kind="inproceedings",
    ),
    Reference(
        "doi:10.1/y",
        "Complexity $O(n \\log n)$ of Sorting, back\\slash and ~tilde",
        ("Jørgen Strauß",),
        2001,
        "J. Algorithms",
        "10.1/y",
    ),
    Reference(
        "doi:10.1002/(sici)1097-4636", "Schrödinger's Cat", ("Erwin Schrödinger",), 1935, doi="10.1002/(sici)1097-4636"
    ),
]


@pytest.mark.parametrize("reference", ROUND_TRIP, ids=lambda r: r.paper_id)
def test_an_entry_parses_back_to_the_stored_title_authors_year_and_doi(reference: Reference) -> None:
    (entry,) = parsed(bibtex_library([reference])).entries
    assert entry.key == citation_keys([reference])[0]
    assert entry["title"] == reference.title
    assert authors_of(entry) == reference.authors
    assert entry["year"] == str(reference.year)
    assert entry["doi"] == reference.doi
    assert [entry[key] for key in ("journal", "booktitle") if key in entry] == (
        [reference.venue] if reference.venue else []
    )
    assert "eprint" not in entry


def test_capitals_in_the_title_are_protected_with_braces() -> None:
    raw = bibtexparser.parse_string(bibtex_library([ROUND_TRIP[0], ROUND_TRIP[1]]))
    assert raw.entries[0]["title"] == "{Attention} {Is} {All} {You} {Need}"
    assert raw.entries[1]["title"].startswith("{{\\'E}mile's} {{\\{}BERT{\\}}:} 50")  # the accent inside, too
    assert raw.entries[0]["author"] == "Vaswani, Ashish and Shazeer, Noam"  # "Family, Given and …"


@pytest.mark.parametrize(
    ("reference", "entry_type", "venue_field"),
    [
        (Reference("a", "T", venue="Nature"), "article", "journal"),
        (Reference("a", "T", venue="NeurIPS", kind="inproceedings"), "inproceedings", "booktitle"),
        (Reference("a", "T", venue="MIT Press", kind="book"), "book", "publisher"),
        (Reference("a", "T", venue="arXiv", kind="misc"), "misc", "howpublished"),
        (Reference("a", "T"), "misc", None),
    ],
)
def test_the_entry_type_is_the_kind_else_article_with_a_venue_else_misc(
    reference: Reference, entry_type: str, venue_field: str | None
) -> None:
    (entry,) = parsed(bibtex_library([reference])).entries
    assert entry.entry_type == entry_type
    venue_fields = {"journal", "booktitle", "publisher", "howpublished"} & set(entry.fields_dict)
    assert venue_fields == ({venue_field} if venue_field else set())
    if venue_field:
        assert entry[venue_field] == reference.venue


@pytest.mark.parametrize(
    ("reference", "eprint"),
    [
        (Reference("arxiv:1706.03762", "T"), "1706.03762"),
        (Reference("arxiv:hep-th/9901001", "T"), "hep-th/9901001"),
        (Reference("doi:10.48550/arxiv.2301.00001", "T", doi="10.48550/arxiv.2301.00001"), "2301.00001"),
        (Reference("key1", "T", url="https://arxiv.org/abs/2005.14165v3"), "2005.14165"),
        (Reference("doi:10.1/x", "T", doi="10.1/x", url="https://example.org/x"), None),
    ],
)
def test_arxiv_papers_carry_eprint_and_archive_prefix(reference: Reference, eprint: str | None) -> None:
    (entry,) = parsed(bibtex_library([reference])).entries
    if eprint is None:
        assert "eprint" not in entry and "archivePrefix" not in entry
    else:
        assert (entry["eprint"], entry["archivePrefix"]) == (eprint, "arXiv")
    assert ("url" in entry) == (reference.url is not None)


def test_the_library_is_the_entries_in_order_with_unique_keys() -> None:
    references = [*ROUND_TRIP, ROUND_TRIP[0]]  # the same paper twice still gets two keys
    entries = bibtex_entries(references)
    library = parsed(bibtex_library(references))
    assert [entry.key for entry in library.entries] == citation_keys(references)
    assert len(set(citation_keys(references))) == len(references) == len(entries)
    assert [parsed(text).entries[0]["title"] for text in entries] == [r.title for r in references]


# Two papers whose keys collide (same first author, year and first title word), arXiv ids, accented names.
CORPUS: list[dict[str, Any]] = [
    {
        "id": "arxiv:1711.03953",
        "title": "Breaking the Softmax Bottleneck: A High-Rank RNN Language Model",
        "abstract": "We formulate language modeling as a matrix factorization problem and show that the expressiveness of "
        "softmax-based models is limited by a softmax bottleneck. We propose a mixture of softmaxes to break the softmax "
        "bottleneck.",
        "authors": ["Zhilin Yang", "Zihang Dai", "Ruslan Salakhutdinov"],
        "year": 2018,
        "url": "https://arxiv.org/abs/1711.03953",
    },
    {
        "id": "arxiv:1902.08077",
        "title": "Breaking the Softmax Bottleneck via Learnable Monotonic Pointwise Non-linearities",
        "abstract": "The softmax bottleneck limits the rank of the log-probability matrix of language models. We break the "
        "softmax bottleneck with learnable monotonic pointwise non-linearities applied before the softmax.",
        "authors": ["Zhilin Yang", "Octavian-Eugen Ganea"],
        "year": 2018,
    },
    {
        "id": "arxiv:1706.03762",
        "title": "Attention Is All You Need",
        "abstract": "The dominant sequence transduction "
        "models are based on complex recurrent or convolutional neural networks. We propose the Transformer, based "
        "solely on attention mechanisms.",
        "authors": ["Ashish Vaswani", "Noam Shazeer", "Łukasz Kaiser"],
        "year": 2017,
    },
    {
        "id": "protein-1",
        "title": "Protein Structure Prediction with Émile's & Zoë's 50% Method",
        "abstract": "We predict "
        "protein structures from amino-acid sequences with a geometric network and report accuracy on held-out proteins.",
        "authors": ["Émile Zoë", "José Núñez"],
        "year": 2021,
    },
    {
        "id": "speech-1",
        "title": "End-to-end speech recognition with connectionist temporal classification",
        "abstract": "We train an end-to-end speech recognition system with connectionist temporal classification on raw "
        "audio.",
        "authors": ["Alex Graves"],
        "year": 2014,
    },
]
BY_ID = {paper["id"]: paper for paper in CORPUS}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The corpus ingested once into collection "lib" through the CLI; every test only reads it."""
    folder = tmp_path_factory.mktemp("cite")
    env = {"RAG_DATA_DIR": str(folder / "data")}
    corpus = write_jsonl(folder / "library.jsonl", CORPUS)
    assert cli("ingest", str(corpus), "--collection", "lib", env=env).exit_code == 0
    return env


def test_rag_cite_prints_a_bib_of_the_papers_asked_for(store: dict[str, str]) -> None:
    ids = ["arxiv:1706.03762", "protein-1", "arxiv:1711.03953"]
    result = cli("cite", *ids, "--collection", "lib", env=store)
    assert result.exit_code == 0, result.stderr
    entries = parsed(result.stdout).entries
    assert [entry["title"] for entry in entries] == [BY_ID[pid]["title"] for pid in ids]
    assert [authors_of(entry) for entry in entries] == [tuple(BY_ID[pid]["authors"]) for pid in ids]
    assert [entry["year"] for entry in entries] == [str(BY_ID[pid]["year"]) for pid in ids]
    assert [entry.key for entry in entries] == ["vaswani2017attention", "zoe2021protein", "yang2018breaking"]
    eprints = [getattr(entry.get("eprint"), "value", None) for entry in entries]
    assert eprints == ["1706.03762", None, "1711.03953"]
    assert entries[2]["archivePrefix"] == "arXiv" and entries[2]["url"] == BY_ID["arxiv:1711.03953"]["url"]


def test_rag_cite_json_gives_each_paper_its_key_and_entry(store: dict[str, str]) -> None:
    # a bare arXiv id names the same paper as its store id: one entry, not two
    ids = ["arxiv:1711.03953", "arxiv:1902.08077", "1711.03953"]
    result = cli("cite", *ids, "--collection", "lib", "--json", env=store)
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [set(row) for row in rows] == [{"paper_id", "key", "bibtex"}] * 2
    assert [row["paper_id"] for row in rows] == ids[:2]
    assert [row["key"] for row in rows] == ["yang2018breakinga", "yang2018breakingb"]  # the pair collides
    for row in rows:
        (entry,) = parsed(row["bibtex"]).entries
        assert (entry.key, entry["title"]) == (row["key"], BY_ID[row["paper_id"]]["title"])


def test_rag_cite_names_unknown_ids_and_prints_nothing(store: dict[str, str]) -> None:
    result = cli("cite", "arxiv:1706.03762", "arxiv:9999.99999", "nope", "--collection", "lib", env=store)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "rag: error: collection 'lib' has no paper with the id(s) 'arxiv:9999.99999', 'nope' (`rag search` shows "
        "papers' ids)"
    ]


def test_rag_cite_without_a_collection_or_with_an_empty_one_is_bad_input(store: dict[str, str]) -> None:
    missing = cli("cite", "arxiv:1706.03762", "--collection", "absent", env=store)
    assert missing.exit_code == 2 and missing.stdout == ""
    assert "collection 'absent' does not exist" in missing.stderr
    settings = make_settings(Path(store["RAG_DATA_DIR"]), collection="hollow")
    create_collection(settings, connect(settings), 384)
    empty = cli("cite", "arxiv:1706.03762", "--collection", "hollow", env=store)
    assert empty.exit_code == 2 and empty.stdout == ""
    assert "collection 'hollow' is empty" in empty.stderr


def test_every_citation_of_an_answer_carries_a_bibtex_entry_of_the_cited_paper(store: dict[str, str]) -> None:
    question = "Which papers discuss the softmax bottleneck?"
    result = cli("ask", question, "--collection", "lib", "--provider", "none", "--json", env=store)
    assert result.exit_code == 0, result.stderr
    citations = json.loads(result.stdout)["citations"]
    assert {c["paper_id"] for c in citations} == {"arxiv:1711.03953", "arxiv:1902.08077"}
    entries = [parsed(citation["bibtex"]).entries for citation in citations]
    assert all(len(found) == 1 for found in entries)
    for citation, (entry,) in zip(citations, entries, strict=True):
        assert entry["title"] == citation["title"] == BY_ID[citation["paper_id"]]["title"]
        assert authors_of(entry) == tuple(BY_ID[citation["paper_id"]]["authors"])
        assert entry["eprint"] == citation["paper_id"].removeprefix("arxiv:")
    keys = [entry.key for (entry,) in entries]
    assert len(set(keys)) == len(keys) == 2  # colliding keys are told apart within the answer


def test_a_cited_paper_keeps_its_key_across_answers_and_cite(store: dict[str, str]) -> None:
    answer = json.loads(
        cli(
            "ask", "What is the Transformer based on?", "--collection", "lib", "--provider", "none", "--json", env=store
        ).stdout
    )
    cited = {c["paper_id"]: parsed(c["bibtex"]).entries[0].key for c in answer["citations"]}
    assert "arxiv:1706.03762" in cited
    cite = json.loads(cli("cite", *cited, "--collection", "lib", "--json", env=store).stdout)
    assert {row["paper_id"]: row["key"] for row in cite} == cited


def test_of_metadata_reads_a_chunks_metadata() -> None:
    metadata = {
        "paper_id": "doi:10.1/z",
        "title": "T",
        "authors": "Ann Smith; Bo Li",
        "year": 2020,
        "venue": "V",
        "doi": "10.1/z",
        "kind": "article",
        "content_hash": "h",
        "chunk": 0,
    }
    assert Paper.from_metadata(metadata) == Reference(
        "doi:10.1/z", "T", ("Ann Smith", "Bo Li"), 2020, "V", "10.1/z", None, "article"
    )


def test_the_apis_citations_carry_the_same_bibtex(store: dict[str, str]) -> None:
    """The OpenAI-compatible API's extra fields come from the same answer: each citation has its entry there too."""
    app = FastAPI()
    add_api(app, Assistant(make_settings(Path(store["RAG_DATA_DIR"]), collection="lib")))
    question = "Which papers discuss the softmax bottleneck?"
    with TestClient(app) as http:
        reply = http.post(
            "/v1/chat/completions", json={"model": "rag-evidence", "messages": [{"role": "user", "content": question}]}
        )
    assert reply.status_code == 200, reply.text
    cli_answer = json.loads(
        cli("ask", question, "--collection", "lib", "--provider", "none", "--json", env=store).stdout
    )
    citations = reply.json()["citations"]
    assert citations and [c["bibtex"] for c in citations] == [c["bibtex"] for c in cli_answer["citations"]]
