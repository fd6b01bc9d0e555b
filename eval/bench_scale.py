"""Scale benchmark: ingest and query latency from 231 to 100,000 abstracts, on a `chroma run` server (or embedded).

The corpus is built here from real text: the bundled abstracts (and SciFact's, when present) repeated with rotated
sentences and numbered titles, so every paper is distinct. Encoding 100,000 abstracts with the bundled embedder takes
~75 minutes on 2 cores, so its rate is measured on real encodes and the index itself is filled through the real
ingest path (reading, chunking, manifest, Chroma upserts, the BM25 rebuild) with vectors derived from real ones
(a real abstract's vector plus noise) — latency depends on the index's size and shape, not on what the vectors mean.
The ingest time a user would see is then papers / min(encode rate, store rate).

At each size: the store rate of that step, hybrid/dense/BM25 search p50 and p95 over the dev questions, and the ratio
to the 231-paper baseline of the same run. At the end: the peak RSS of `rag serve` over the 100k collection against
the same server over the 231 papers. Writes eval/results/scale.{md,json,png}.
Usage: .venv/bin/python eval/bench_scale.py [--sizes 231,5000,25000,100000] [--store server|embedded]
"""

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from serving import free_port, start_serve, wait_until_up

import rag.ingest
from rag.corpus import BUNDLED_CORPUS, Paper, read_corpus
from rag.embedding import LocalMiniLMEmbedding
from rag.eval.datasets import load_question_set
from rag.eval.metrics import percentile
from rag.ingest import ingest
from rag.retrieve import MODES, PaperRetriever
from rag.settings import PROJECT_DIR, Settings

CHROMA = str(Path(sys.executable).with_name("chroma"))


def base_papers(settings: Settings) -> list[Paper]:
    papers = list(read_corpus(BUNDLED_CORPUS))
    scifact = settings.benchmarks_path / "scifact"
    if scifact.is_dir():
        papers += list(read_corpus(scifact, "beir"))
    return papers


def synthetic(papers: list[Paper], count: int) -> Iterator[dict[str, Any]]:
    """Distinct papers from real text: the bundled corpus first (so dev questions keep their gold), then variants."""
    for i in range(count):
        paper = papers[i % len(papers)]
        if i < len(papers):
            yield {"id": paper.paper_id, "title": paper.title, "abstract": paper.abstract}
            continue
        sentences = paper.abstract.split(". ")
        turn = (i // len(papers)) % max(1, len(sentences))
        abstract = ". ".join(sentences[turn:] + sentences[:turn])
        yield {"id": f"syn-{i}", "title": f"{paper.title} (variant {i // len(papers)})", "abstract": abstract}


class DerivedEmbedding:
    """Vectors of real shape without the encode cost: a real abstract's vector plus noise, fixed by the text.
    Ingest only calls ``get_text_embedding_batch``; queries still go through the real embedder."""

    def __init__(self, anchors: np.ndarray) -> None:
        self._anchors = anchors

    def get_text_embedding_batch(self, texts: list[str], **_: Any) -> list[list[float]]:
        vectors = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            rng = np.random.default_rng(seed)
            vector = self._anchors[seed % len(self._anchors)] + 0.35 * rng.standard_normal(self._anchors.shape[1]) / 20
            vectors.append((vector / np.linalg.norm(vector)).tolist())
        return vectors


def search_latencies(settings: Settings, questions: list[str]) -> dict[str, dict[str, float]]:
    retriever = PaperRetriever(settings)
    retriever.search(questions[0], 10)
    timings: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(2):
        for question in questions:
            for mode in MODES:
                started = time.perf_counter()
                retriever.search(question, 10, mode)
                timings[mode].append(1000 * (time.perf_counter() - started))
    return {
        m: {"p50_ms": round(percentile(t, 50), 1), "p95_ms": round(percentile(t, 95), 1)} for m, t in timings.items()
    }


def serve_peak_rss_mb(settings_env: dict[str, str], questions: list[str]) -> float:
    """Peak resident memory of `rag serve` (evidence-only answers) after answering the questions through the API."""
    process, url = start_serve({**settings_env, "RAG_LLM__PROVIDER": "none"})
    try:
        for question in questions:
            body = {"model": "rag", "messages": [{"role": "user", "content": question}]}
            httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120).raise_for_status()
        status = Path(f"/proc/{process.pid}/status").read_text()
        return round(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024, 1)
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="231,5000,25000,100000")
    parser.add_argument("--store", choices=["server", "embedded"], default="server")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "eval" / "results" / "scale")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]

    base_settings = Settings()
    papers = base_papers(base_settings)
    questions = [q.text for q in load_question_set(PROJECT_DIR / "eval" / "datasets" / "dev.jsonl")]
    encoder = LocalMiniLMEmbedding()
    sample = [f"{p.title}\n\n{p.abstract}" for p in papers[:231]]
    started = time.perf_counter()
    anchors = np.array(encoder.get_text_embedding_batch(sample))
    encode_rate = len(sample) / (time.perf_counter() - started)
    print(f"raw encode rate: {encode_rate:.1f} papers/s", file=sys.stderr)
    rag.ingest.build_embedder = lambda settings: DerivedEmbedding(anchors)  # type: ignore[assignment,misc]

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        env = {"RAG_DATA_DIR": str(folder / "data")}
        server = None
        if args.store == "server":
            port = free_port()
            server = subprocess.Popen(
                [CHROMA, "run", "--path", str(folder / "chroma"), "--host", "127.0.0.1", "--port", str(port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            env["RAG_CHROMA__SERVER_URL"] = f"http://127.0.0.1:{port}"
            wait_until_up(f"{env['RAG_CHROMA__SERVER_URL']}/api/v2/heartbeat", server)
        settings = Settings(
            data_dir=env["RAG_DATA_DIR"],
            chroma={"server_url": env.get("RAG_CHROMA__SERVER_URL", "")},
            ingest={"batch_papers": 1000},
        )
        rss = {}
        try:
            corpus = folder / "corpus.jsonl"
            for size in sizes:
                with corpus.open("w", encoding="utf-8") as handle:
                    handle.writelines(json.dumps(record) + "\n" for record in synthetic(papers, size))
                started = time.perf_counter()
                report = ingest(corpus, "jsonl", settings, progress=True)
                elapsed = time.perf_counter() - started
                latencies = search_latencies(settings, questions)
                row = {"papers": report.papers, "added": report.added, "ingest_s": round(elapsed, 1),
                       "store_rate": round(report.added / elapsed, 1), "latency": latencies}  # fmt: skip
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
                if size in (sizes[0], sizes[-1]):
                    rss[size] = serve_peak_rss_mb(env, questions[:20])
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)

    baseline = rows[0]["latency"]
    for row in rows:
        row["ratio_to_baseline"] = {m: round(row["latency"][m]["p50_ms"] / baseline[m]["p50_ms"], 2) for m in MODES}
    result = {"store": args.store, "encode_rate": round(encode_rate, 1), "rows": rows, "serve_peak_rss_mb": rss}
    write(result, args.out)


def write(result: dict[str, Any], out: Path) -> None:
    rows = result["rows"]
    lines = [
        f"# Scale: ingest and search from {rows[0]['papers']:,} to {rows[-1]['papers']:,} abstracts "
        f"({result['store']} Chroma)",
        "",
        f"Raw encode rate of the bundled embedder on this machine: **{result['encode_rate']} papers/s** — the "
        "ingest limit; the store rate below is everything else (chunking, manifest, upserts, BM25 rebuild).",
        "",
        "| papers | added | store rate (papers/s) | hybrid p50 / p95 ms | dense p50 / p95 ms | BM25 p50 / p95 ms "
        "| hybrid p50 ÷ baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lat = row["latency"]
        lines.append(
            f"| {row['papers']:,} | {row['added']:,} | {row['store_rate']} | "
            + " | ".join(f"{lat[m]['p50_ms']} / {lat[m]['p95_ms']}" for m in ("hybrid", "dense", "bm25"))
            + f" | {row['ratio_to_baseline']['hybrid']} |"
        )
    rss = result["serve_peak_rss_mb"]
    if len(rss) == 2:
        small, large = (rss[k] for k in sorted(rss))
        lines += ["", f"Peak RSS of `rag serve` (evidence-only answers to 20 questions): {small} MB at "
                  f"{min(rss):,} papers, {large} MB at {max(rss):,} papers (×{large / small:.2f})."]  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    figure, axis = plt.subplots(figsize=(6, 4))
    for mode in ("hybrid", "dense", "bm25"):
        axis.plot(
            [r["papers"] for r in rows], [r["latency"][mode]["p50_ms"] for r in rows], marker="o", label=f"{mode} p50"
        )
        axis.plot([r["papers"] for r in rows], [r["latency"][mode]["p95_ms"] for r in rows], linestyle="--", alpha=0.6,
                  label=f"{mode} p95")  # fmt: skip
    axis.set(
        xscale="log", xlabel="abstracts", ylabel="search latency (ms)", title=f"Search latency ({result['store']})"
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out.with_suffix(".png"), dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
