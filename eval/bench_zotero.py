"""Zotero benchmark: reading, ingesting and re-syncing a Zotero data directory of 1,000 and of 10,000 items.

The libraries are built by tests/zotero_library.py from Zotero 7's own schema (journal articles with a title, a
120-word abstract, a date, a DOI, a journal and two authors). Measured in one run, for each size:

- read: seconds and the Python heap's peak (tracemalloc) of streaming every item through rag/readers/zotero.py;
- ingest: seconds and peak RSS of `rag ingest DIR` in its own process (reading, chunking, embedding, keyword index);
- re-ingest: seconds of the same command again with nothing changed (every paper skipped);
- sync: seconds after 10 items are edited in the database and 10 erased, with `--prune` (10 updated, 10 removed).

Flat memory means the 10,000-item peaks are about the 1,000-item ones (the ratio is printed). Writes
eval/results/zotero.{md,json}. Usage: .venv/bin/python eval/bench_zotero.py [--sizes 1000 10000]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from rag.papers import Paper
from rag.readers.zotero import read_zotero
from rag.settings import PROJECT_DIR

sys.path.insert(0, str(PROJECT_DIR))
from tests.zotero_library import ZoteroLibrary  # the test library builder, from the repository

RAG = str(Path(sys.executable).with_name("rag"))


def timed_ingest(root: Path, data: Path, *args: str) -> dict[str, Any]:
    """`rag ingest` in a child process: its report, its wall time and its peak RSS (GNU time's maximum resident set
    size, Debian's `time` package)."""
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", RAG, "ingest", str(root), "--json", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "RAG_DATA_DIR": str(data)},
        check=True,
    )
    report = json.loads(done.stdout)
    report["wall_s"] = round(time.perf_counter() - started, 2)
    report["peak_rss_mb"] = round(int(done.stderr.strip().splitlines()[-1]) / 1024, 1)
    return report


def measure(size: int, folder: Path) -> dict[str, Any]:
    zotero = ZoteroLibrary(folder / f"Zotero-{size}")
    started = time.perf_counter()
    keys = zotero.bulk(size)
    build_s = time.perf_counter() - started
    tracemalloc.start()
    started = time.perf_counter()
    papers = sum(isinstance(entry, Paper) for entry in read_zotero(zotero.root))
    read_s = time.perf_counter() - started
    read_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert papers == size, papers
    data = folder / f"data-{size}"
    first = timed_ingest(zotero.root, data)
    again = timed_ingest(zotero.root, data)
    for key in keys[:10]:
        zotero.set_field(key, "title", f"Edited title of {key}")
    for key in keys[10:20]:
        zotero.erase(key)
    synced = timed_ingest(zotero.root, data, "--prune")
    assert (again["added"], again["updated"]) == (0, 0), again
    assert (synced["updated"], synced["removed"]) == (10, 10), synced
    return {
        "items": size,
        "build_s": round(build_s, 2),
        "read_s": round(read_s, 2),
        "read_items_per_s": round(size / read_s),
        "read_peak_mb": round(read_peak / 2**20, 2),
        "ingest_s": first["wall_s"],
        "ingest_papers_per_s": round(size / first["wall_s"], 1),
        "ingest_peak_rss_mb": first["peak_rss_mb"],
        "chunks": first["chunks"],
        "reingest_s": again["wall_s"],
        "sync_s": synced["wall_s"],
        "sync": {key: synced[key] for key in ("added", "updated", "removed", "skipped")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-zotero-") as tmp:
        rows = []
        for size in args.sizes:
            rows.append(measure(size, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    small, large = rows[0], rows[-1]
    ratios = {
        "read_peak": round(large["read_peak_mb"] / small["read_peak_mb"], 2),
        "ingest_peak_rss": round(large["ingest_peak_rss_mb"] / small["ingest_peak_rss_mb"], 2),
    }
    results = PROJECT_DIR / "eval" / "results"
    (results / "zotero.json").write_text(json.dumps({"rows": rows, "peak_ratios": ratios}, indent=2) + "\n")
    header = (
        "| items | read s (items/s) | read peak MB | ingest s (papers/s) | ingest peak RSS MB | re-ingest s | sync s |"
    )
    lines = [
        "# Zotero data directory: read, ingest and sync",
        "",
        f"Measured by `eval/bench_zotero.py` on {os.cpu_count()} cores. Libraries built from Zotero 7's schema "
        "(journal articles, 120-word abstracts). Sync: 10 items edited and 10 erased, then `--prune`.",
        "",
        header,
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['items']:,} | {r['read_s']} ({r['read_items_per_s']:,}) | {r['read_peak_mb']} | {r['ingest_s']} "
            f"({r['ingest_papers_per_s']}) | {r['ingest_peak_rss_mb']} | {r['reingest_s']} | {r['sync_s']} |"
            for r in rows
        ),
        "",
        f"Peak ratios, {large['items']:,} against {small['items']:,} items: reader heap {ratios['read_peak']}×, "
        f"ingest RSS {ratios['ingest_peak_rss']}×.",
        "",
    ]
    (results / "zotero.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
