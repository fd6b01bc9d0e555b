"""The `rag` command line: the JSON contract, exit codes, and bad input that changes nothing.

Most cases run in-process through click's runner (same parsing, errors and exit codes); one subprocess per exit code
checks the installed console script itself."""

import json
from pathlib import Path

import pytest

from tests.conftest import cli, run_rag, small_store, synthetic_papers, write_jsonl


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "small.jsonl", synthetic_papers(12))


def test_ingest_stats_and_search_follow_the_json_contract(small_corpus: Path, tmp_path: Path) -> None:
    first = cli("ingest", str(small_corpus), "--json")
    assert first.exit_code == 0, first.stderr
    report = json.loads(first.stdout)
    assert {"papers": 12, "chunks": 12, "added": 12, "skipped": 0, "collection": "papers"}.items() <= report.items()
    again = json.loads(cli("ingest", str(small_corpus), "--json").stdout)
    assert (again["added"], again["skipped"], again["chunks"]) == (0, 12, 12)

    stats = json.loads(cli("stats", "--json").stdout)
    assert stats == stats | {"papers": 12, "chunks": 12, "collection": "papers", "embedder": "minilm-l6-int8"}

    found = cli("search", "protein folding", "-k", "3", "--json")
    hits = json.loads(found.stdout)
    assert [hit["rank"] for hit in hits] == [1, 2, 3]
    assert set(hits[0]) == {"rank", "paper_id", "title", "score", "text", "rerank_score"}
    assert "protein folding" in hits[0]["title"]

    batch = write_jsonl(
        tmp_path / "q.jsonl",
        [{"id": "a", "question": "speech recognition"}, {"id": "b", "question": "reinforcement learning"}],
    )
    lines = cli("search", "--batch", str(batch), "-k", "2", "--json").stdout.splitlines()
    results = [json.loads(line) for line in lines]
    assert [r["id"] for r in results] == ["a", "b"]
    assert all(len(r["results"]) == 2 for r in results)
    assert "speech recognition" in results[0]["results"][0]["title"]
    # the installed console script prints the same (exit 0)
    script = run_rag("search", "protein folding", "-k", "3", "--json")
    assert script.returncode == 0 and [hit["paper_id"] for hit in json.loads(script.stdout)] == [
        hit["paper_id"] for hit in hits
    ]


def test_collections_are_separate(small_corpus: Path) -> None:
    assert cli("ingest", str(small_corpus), "--collection", "other", "--json").exit_code == 0
    assert json.loads(cli("stats", "--json", "--collection", "other").stdout)["papers"] == 12
    assert json.loads(cli("stats", "--json").stdout)["papers"] == 0


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One store for all bad-input cases (each case only reads it), and the files they feed in."""
    folder, env, corpus = small_store(tmp_path_factory, "cli")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "binary.bin").write_bytes(b"\x00\x01\x02")
    (folder / "odd.txt").write_text("A title\nIts abstract.\nA dangling title\n")
    return env | {
        "missing": str(folder / "missing.txt"),
        "empty": str(folder / "empty.txt"),
        "binary": str(folder / "binary.bin"),
        "odd": str(folder / "odd.txt"),
        "small": str(corpus),
        "long_question": "x" * 100_000,
        "stats": cli("stats", "--json", env=env).stdout,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "{missing}"], "{missing}: no such file"),
        (["ingest", "{empty}"], "{empty}: empty file"),
        (["ingest", "{binary}"], "{binary}:1: binary data (NUL byte), not a text corpus"),
        (["ingest", "{odd}"], "{odd}:3: title without an abstract (odd number of lines)"),
        (
            ["ingest", "{small}", "--format", "xml"],
            "--format 'xml' is not one of auto, seed, jsonl, csv, beir, arxiv, bibtex, ris, csljson, zotero, pdf",
        ),
        (
            ["ingest", "{small}", "--collection", "../etc"],
            "collection name '../etc' must be 1-64 characters of letters, digits, '.', '_' or '-', starting and ending with a letter or digit",
        ),
        (
            ["search", "{long_question}"],
            "the question is 100,000 characters; the limit is 2,000 (limits.max_question_chars)",
        ),
        (["search"], "give either a QUESTION or --batch FILE"),
        (["search", "--batch", "{odd}"], '{odd}:1: expected a JSON object with "id" and "question"'),
        (["eval", "retrieval", "{missing}"], "{missing}: no such file or folder"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_leaves_the_store_alone(
    ingested: dict[str, str], args: list[str], message: str
) -> None:
    env = {"RAG_DATA_DIR": ingested["RAG_DATA_DIR"]}
    result = cli(*[arg.format(**ingested) for arg in args], env=env)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"rag: error: {message.format(**ingested)}"]
    assert cli("stats", "--json", env=env).stdout == ingested["stats"]


def test_the_console_script_exits_2_on_bad_input_with_one_line(ingested: dict[str, str]) -> None:
    result = run_rag("ingest", ingested["odd"], env={"RAG_DATA_DIR": ingested["RAG_DATA_DIR"]})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"rag: error: {ingested['odd']}:3: title without an abstract (odd number of lines)"
    ]


def test_a_bad_setting_is_bad_input(small_corpus: Path) -> None:
    result = cli("ingest", str(small_corpus), env={"RAG_CHUNKING__CHUNK_SIZE": "4"})
    assert result.exit_code == 2
    assert "invalid setting chunking.chunk_size" in result.stderr
