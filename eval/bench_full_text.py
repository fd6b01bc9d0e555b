"""Full-text benchmark: PDF reading and ingest rates, the store per full-text paper, and search at N full-text papers.

The PDFs are generated here (fpdf2, two columns, four pages, a title, an abstract and numbered sections) from the
bundled abstracts' sentences, so every paper is distinct real-looking prose; each states one fact of its own ("the
batch size was N") on its third page, and the questions ask for those facts. Measured in one run:

- reading: pages/s and passages/s of rag/readers/pdf.py over all N PDFs (its worker process included);
- ingest: papers/s of `rag ingest FOLDER` (reading, chunking, embedding, the keyword index and token vectors);
- size: the token-vector store (tokens.npz + token_codes.npy) and the Chroma folder, per paper;
- search: p50/p95 of every retrieval mode over the fact questions at N full-text papers, against the same N papers
  ingested as abstracts only (the baseline, same run);
- memory: the reader worker's peak RSS reading a 50-page and a 500-page PDF, and this process's growth meanwhile
  (flat: about the same).

Writes eval/results/full_text.{md,json}. Usage: .venv/bin/python eval/bench_full_text.py [--papers 1000]
"""

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench_scale import search_latencies
from fpdf import FPDF

from rag.ingest import ingest
from rag.keyword_index import current_version, index_dir
from rag.readers import BUNDLED_CORPUS, read_corpus
from rag.readers.pdf import read_pdfs
from rag.settings import PROJECT_DIR, Settings
from rag.text import split_sentences

PAGES = 4


def sentences() -> list[str]:
    return [s for paper in read_corpus(BUNDLED_CORPUS) for s in split_sentences(paper.abstract) if s.isascii()]


def write_pdf(path: Path, title: str, abstract: str, sections: list[tuple[str, list[str]]]) -> None:
    """A two-column paper: the title across the top of page 1, then the abstract and numbered sections in columns;
    a section whose paragraph list holds "\\f" starts a new page there."""
    pdf = FPDF(format="letter")
    pdf.set_auto_page_break(True, margin=20)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.multi_cell(0, 8, title, align="C")
    pdf.ln(4)
    with pdf.text_columns(ncols=2, gutter=8) as columns:
        pdf.set_font("Helvetica", "B", 10)
        columns.write("Abstract\n")
        pdf.set_font("Helvetica", "", 9)
        columns.write(abstract + "\n\n")
        for number, (heading, paragraphs) in enumerate(sections, 1):
            pdf.set_font("Helvetica", "B", 10)
            columns.write(f"{number} {heading}\n")
            pdf.set_font("Helvetica", "", 9)
            for paragraph in paragraphs:
                if paragraph == "\f":
                    columns.new_column()
                    continue
                columns.write(paragraph + "\n\n")
    pdf.output(str(path))


def corpus(folder: Path, count: int, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` PDFs in ``folder`` and, per paper, its title, abstract and the fact question about its page 3."""
    pool = sentences()
    rng = random.Random(seed)
    papers = []
    for i in range(count):
        picked = rng.sample(pool, 60)
        title = f"{picked[0].split(',')[0][:70].rstrip('.')} (study {i})"
        abstract = " ".join(picked[1:4])
        fact = f"For study {i} the batch size was {1000 + 7 * i} sequences."
        body = [" ".join(picked[k : k + 4]) for k in range(4, 60, 4)]
        sections = [
            ("Introduction", body[0:3]),
            ("Method", [*body[3:6], "\f"]),
            ("Experiments", [*body[6:8], "\f", fact, body[8]]),
            ("Results", body[9:14]),
        ]
        write_pdf(folder / f"paper-{i:04d}.pdf", title, abstract, sections)
        papers.append({"id": f"p{i}", "title": title, "abstract": abstract,
                       "question": f"What batch size was used for study {i}?"})  # fmt: skip
    return papers


def size_mb(paths: list[Path]) -> float:
    return sum(f.stat().st_size for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()) / 1e6


def reading_peak_mb(path: Path, settings: Settings) -> dict[str, float]:
    """The reader worker's peak RSS while it reads one PDF (its VmHWM, sampled until it exits) and how much this
    process's own RSS grew meanwhile: the parsing happens in the worker, bounded by pdf.max_memory_mb."""
    peak = 0.0
    reading = threading.Event()

    def sample() -> None:
        nonlocal peak
        while reading.is_set():
            children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
            for child in children:
                try:  # a child between fork and exec still has this process's pages: only the worker counts
                    worker = b"serve()" in Path(f"/proc/{child}/cmdline").read_bytes()
                except OSError:
                    continue
                if worker:
                    peak = max(peak, _kb(Path(f"/proc/{child}/status"), "VmHWM") / 1024)
            time.sleep(0.01)

    before = _kb(Path("/proc/self/status"), "VmRSS") / 1024
    reading.set()
    sampler = threading.Thread(target=sample)
    sampler.start()
    list(read_pdfs([path], settings.pdf))
    reading.clear()
    sampler.join()
    grown = _kb(Path("/proc/self/status"), "VmRSS") / 1024 - before
    return {"worker_peak_mb": round(peak, 1), "parent_growth_mb": round(grown, 1)}


def _kb(status: Path, field: str) -> float:
    try:
        return float(next(line.split()[1] for line in status.read_text().splitlines() if line.startswith(field)))
    except (OSError, StopIteration):
        return 0.0


def long_pdf(path: Path, pages: int) -> Path:
    text = " ".join(sentences()[:400])
    pdf = FPDF(format="letter")
    pdf.set_font("Helvetica", "", 9)
    for _ in range(pages):
        pdf.add_page()
        pdf.multi_cell(0, 4, text[:3500])
    pdf.output(str(path))
    return path


def memory(root: Path, settings: Settings) -> dict[str, dict[str, float]]:
    return {f"{n}_pages": reading_peak_mb(long_pdf(root / f"long-{n}.pdf", n), settings) for n in (50, 500)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "eval" / "results" / "full_text")
    parser.add_argument("--memory-only", action="store_true", help="Measure memory again, keep the other figures.")
    args = parser.parse_args()
    if args.memory_only:
        result = json.loads(args.out.with_suffix(".json").read_text())
        with tempfile.TemporaryDirectory(prefix="bench-full-text-") as tmp:
            result["memory"] = memory(Path(tmp), Settings(data_dir=str(Path(tmp) / "data")))
        write(result, args.out)
        return
    result: dict[str, Any] = {"papers": args.papers}
    with tempfile.TemporaryDirectory(prefix="bench-full-text-") as tmp:
        root = Path(tmp)
        (root / "pdfs").mkdir()
        started = time.perf_counter()
        papers = corpus(root / "pdfs", args.papers)
        result["generate_s"] = round(time.perf_counter() - started, 1)
        files = sorted((root / "pdfs").glob("*.pdf"))
        settings = Settings(data_dir=str(root / "data"))

        started = time.perf_counter()
        read = [entry for entry in read_pdfs(files, settings.pdf) if not hasattr(entry, "reason")]
        seconds = time.perf_counter() - started
        pages = sum(max((p.page or 0) for p in paper.passages) for paper in read)  # type: ignore[union-attr]
        passages = sum(len(paper.passages) for paper in read)  # type: ignore[union-attr]
        result["reading"] = {"papers_read": len(read), "pages": pages, "passages": passages,
                             "seconds": round(seconds, 1), "pages_per_s": round(pages / seconds, 1),
                             "passages_per_s": round(passages / seconds, 1)}  # fmt: skip
        print(json.dumps(result["reading"]), file=sys.stderr)

        full = settings.model_copy(update={"collection": "full"})
        started = time.perf_counter()
        report = ingest(root / "pdfs", "auto", full, progress=True)
        seconds = time.perf_counter() - started
        result["ingest"] = {"papers": report.papers, "chunks": report.chunks, "seconds": round(seconds, 1),
                            "papers_per_s": round(report.papers / seconds, 2),
                            "pages_per_s": round(report.pages / seconds, 2)}  # fmt: skip
        version = current_version(full.data_path, "full")
        assert version is not None
        live = index_dir(full.data_path, "full") / version.id
        tokens = size_mb([live / "tokens.npz", live / "token_codes.npy"])
        per_paper = 1000 / report.papers
        result["size"] = {
            "token_vectors_kb_per_paper": round(tokens * per_paper, 1),
            "keyword_index_kb_per_paper": round(size_mb([live]) * per_paper, 1),
            "chroma_kb_per_paper": round(size_mb([full.data_path / "chroma"]) * per_paper, 1),
        }
        print(json.dumps(result["size"]), file=sys.stderr)

        abstracts = settings.model_copy(update={"collection": "abstracts"})
        records = root / "abstracts.jsonl"
        records.write_text("".join(json.dumps({k: p[k] for k in ("id", "title", "abstract")}) + "\n" for p in papers))
        ingest(records, "jsonl", abstracts, progress=False)
        questions = [paper["question"] for paper in random.Random(3).sample(papers, min(50, len(papers)))]
        result["search_full_text"] = search_latencies(full, questions)
        result["search_abstracts"] = search_latencies(abstracts, questions)
        result["search_ratio_p50"] = {
            mode: round(result["search_full_text"][mode]["p50_ms"] / result["search_abstracts"][mode]["p50_ms"], 2)
            for mode in result["search_full_text"]
        }
        result["memory"] = memory(root, settings)
    write(result, args.out)


def write(result: dict[str, Any], out: Path) -> None:
    reading, ingested, size, memory = result["reading"], result["ingest"], result["size"], result["memory"]
    lines = [
        f"# Full text at {result['papers']:,} papers",
        "",
        "Generated by `eval/bench_full_text.py` (two-column four-page PDFs written with fpdf2 from the bundled "
        "abstracts' sentences; 2 CPU cores).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| PDF reading | {reading['pages_per_s']} pages/s, {reading['passages_per_s']} passages/s "
        f"({reading['pages']:,} pages in {reading['seconds']} s) |",
        f"| `rag ingest FOLDER` | {ingested['papers_per_s']} papers/s, {ingested['pages_per_s']} pages/s "
        f"({ingested['papers']:,} papers, {ingested['chunks']:,} chunks in {ingested['seconds']} s) |",
        f"| token-vector store per full-text paper | {size['token_vectors_kb_per_paper']} KB |",
        f"| keyword index version per paper (BM25, IDF, token vectors) | {size['keyword_index_kb_per_paper']} KB |",
        f"| Chroma store per paper | {size['chroma_kb_per_paper']} KB |",
        f"| reader worker's peak RSS, 50-page / 500-page PDF | {memory['50_pages']['worker_peak_mb']} MB / "
        f"{memory['500_pages']['worker_peak_mb']} MB |",
        f"| this process's RSS growth meanwhile | {memory['50_pages']['parent_growth_mb']} MB / "
        f"{memory['500_pages']['parent_growth_mb']} MB |",
        "",
        f"Search over {result['papers']:,} full-text papers against the same papers as abstracts only (same run):",
        "",
        "| mode | full text p50 / p95 | abstracts p50 / p95 | p50 ratio |",
        "|---|---|---|---|",
    ]
    for mode, full in result["search_full_text"].items():
        base = result["search_abstracts"][mode]
        lines.append(
            f"| {mode} | {full['p50_ms']} / {full['p95_ms']} ms | {base['p50_ms']} / {base['p95_ms']} ms | "
            f"{result['search_ratio_p50'][mode]} |"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
