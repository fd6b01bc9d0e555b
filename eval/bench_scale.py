"""Scale benchmark: ingest and query latency from 231 to 100,000 abstracts, on a `chroma run` server (or embedded).

The corpus is built here from real text: the bundled abstracts (and SciFact's, when present) repeated with rotated
sentences and numbered titles, so every paper is distinct. Ingest runs the bundled MiniLM twice over every paper (the
chunk vectors, then, at publish, every row's token vectors for the rerank stage); over 100,000 abstracts that would take
hours on 2 cores, so both passes' rates are measured on real encodes of the bundled papers and the index itself is
filled through the real ingest path (reading, chunking, manifest, Chroma upserts, the BM25 rebuild, the token-vector
build and its projection) with derived vectors: a real chunk's vector plus noise, and per token a fixed random vector of
its wordpiece plus noise over MiniLM's real tokenisation — latency depends on the index's size and shape, not on what
the vectors mean. The ingest time a user would see is then papers / encode rate + papers / store rate (the store rate
still includes tokenising the rows, so it is slightly pessimistic).

At each size: the store rate of that step, search p50 and p95 over the dev questions for the default pipeline
(rerank: hybrid, then the rerank stage on the stored token vectors, real query encoding) and hybrid, dense and BM25
alone, and the ratio to the 231-paper baseline of the same run. At the end: the peak RSS of `rag serve` over the 100k
collection against the same server over the 231 papers. Writes eval/results/scale.{md,json,png}.
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
from llama_index.core.schema import MetadataMode

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from serving import free_port, start_serve, wait_until_up

import rag.ingest
from rag import late_interaction
from rag.embedding import TokenStates, local_embedder, minilm_tokenizer
from rag.eval.datasets import load_question_set
from rag.eval.metrics import percentile
from rag.ingest import ingest, make_splitter, paper_nodes
from rag.readers import BUNDLED_CORPUS, Paper, read_corpus
from rag.retrieve import MODES, PaperRetriever
from rag.settings import PROJECT_DIR, Settings

CHROMA = str(Path(sys.executable).with_name("chroma"))
DEFAULT = "rerank"  # PaperRetriever.search's default: what `rag search` and answers run


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


class DerivedTokens:
    """Token vectors of real shape without the encode cost, for the token-vector pass publishing runs: MiniLM's real
    tokenisation (so the same wordpieces and words are kept), each token a fixed random unit vector of its wordpiece
    plus a little noise, and the text's vector their normalised mean."""

    def __init__(self, max_tokens: int, seed: int = 0) -> None:
        self._tokenizer = minilm_tokenizer(max_tokens)
        self._rng = np.random.default_rng(seed)
        table = self._rng.standard_normal((self._tokenizer.get_vocab_size(), 384), dtype=np.float32)
        self._table = table / np.linalg.norm(table, axis=1, keepdims=True)

    def encode_with_tokens(self, texts: list[str]) -> tuple[np.ndarray, list[TokenStates]]:
        encodings = self._tokenizer.encode_batch(texts)
        ids = [encoding.ids for encoding in encodings]
        starts = np.cumsum([0] + [len(text_ids) for text_ids in ids[:-1]])
        hidden = self._table[np.concatenate(ids)]
        hidden += 0.2 / 384**0.5 * self._rng.standard_normal(hidden.shape, dtype=np.float32)
        pooled = np.add.reduceat(hidden, starts)
        vectors = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        parts = np.split(hidden, starts[1:])
        return vectors, [TokenStates.of(*args) for args in zip(texts, encodings, parts, strict=True)]


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

    base_settings = Settings()  # type: ignore[call-arg]  # every field comes from config/default.toml
    papers = base_papers(base_settings)
    questions = [q.text for q in load_question_set(PROJECT_DIR / "eval" / "datasets" / "dev.jsonl")]
    encoder = local_embedder(base_settings)  # the instance ingest uses
    sample = papers[:231]
    splitter = make_splitter(base_settings)
    nodes = [node for paper in sample for node in paper_nodes(paper, splitter, "v")]
    started = time.perf_counter()
    anchors = np.array(encoder.get_text_embedding_batch([node.get_content(MetadataMode.EMBED) for node in nodes]))
    embed_rate = len(sample) / (time.perf_counter() - started)
    started = time.perf_counter()
    late_interaction.build_token_vectors(nodes, encoder)
    token_rate = len(sample) / (time.perf_counter() - started)
    encode_rate = 1 / (1 / embed_rate + 1 / token_rate)
    print(f"raw rates (papers/s): vectors {embed_rate:.1f}, token vectors {token_rate:.1f}, both {encode_rate:.1f}",
          file=sys.stderr)  # fmt: skip
    rag.ingest.build_embedder = lambda settings: DerivedEmbedding(anchors)  # type: ignore[assignment,misc]
    tokens = DerivedTokens(base_settings.embedding.max_tokens)
    rag.ingest.local_embedder = lambda settings: tokens  # type: ignore[assignment,return-value]

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
        settings = Settings(  # type: ignore[call-arg]  # the rest comes from config/default.toml
            data_dir=env["RAG_DATA_DIR"],
            chroma={"server_url": env.get("RAG_CHROMA__SERVER_URL", "")},  # type: ignore[arg-type]
            ingest={"batch_papers": 1000},  # type: ignore[arg-type]  # validated into IngestSettings
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
                row: dict[str, Any] = {"papers": report.papers, "added": report.added, "ingest_s": round(elapsed, 1),
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
    result = {
        "store": args.store, "embed_rate": round(embed_rate, 1), "token_rate": round(token_rate, 1),
        "encode_rate": round(encode_rate, 1), "rows": rows, "serve_peak_rss_mb": rss,
    }  # fmt: skip
    write(result, args.out)


def write(result: dict[str, Any], out: Path) -> None:
    rows = result["rows"]
    lines = [
        f"# Scale: ingest and search from {rows[0]['papers']:,} to {rows[-1]['papers']:,} abstracts "
        f"({result['store']} Chroma)",
        "",
        f"Raw encode rate of the bundled embedder on this machine, both passes ingest makes: **{result['encode_rate']} "
        f"papers/s** ({result['embed_rate']} for the chunk vectors, {result['token_rate']} for the token vectors) — "
        "the ingest limit; the store rate below is everything else (chunking, manifest, upserts, BM25 rebuild, "
        "tokenising the rows and building their token vectors from derived ones).",
        "",
        "| papers | added | store rate (papers/s) | rerank (default) p50 / p95 ms | hybrid p50 / p95 ms "
        "| dense p50 / p95 ms | BM25 p50 / p95 ms | rerank p50 ÷ baseline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lat = row["latency"]
        lines.append(
            f"| {row['papers']:,} | {row['added']:,} | {row['store_rate']} | "
            + " | ".join(f"{lat[m]['p50_ms']} / {lat[m]['p95_ms']}" for m in MODES)
            + f" | {row['ratio_to_baseline'][DEFAULT]} |"
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
    for mode in MODES:
        (p50,) = axis.plot(
            [r["papers"] for r in rows], [r["latency"][mode]["p50_ms"] for r in rows], marker="o", label=f"{mode} p50"
        )
        axis.plot([r["papers"] for r in rows], [r["latency"][mode]["p95_ms"] for r in rows], linestyle="--", alpha=0.6,
                  color=p50.get_color(), label=f"{mode} p95")  # fmt: skip
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
