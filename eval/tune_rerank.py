"""Choose the rerank stage on the dev set and SciFact's *train* split; report every candidate on held-out and SciFact
test beside them (never used to choose).

Each question's fused (hybrid) lists are retrieved once per depth with every paper's token-coverage score
(rag/rerank.py); every candidate — coverage alone, or mixed with the fused score at a weight, over the top
``depth`` — reorders those lists.
The choice maximises the mean of dev and SciFact-train nDCG@10. ``--rewrite`` also measures query rewriting with the
local chat model (a short hypothetical abstract appended to the question, HyDE-style) on dev and held-out. Writes
eval/results/rerank.md and rerank.png. Usage: .venv/bin/python eval/tune_rerank.py [--rewrite]
"""

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.eval.datasets import Question, load_beir, load_question_set
from rag.eval.metrics import ndcg_at, percentile, recall_at
from rag.ingest import ingest
from rag.readers import normalise_title
from rag.rerank import min_max
from rag.retrieve import Hit, PaperRetriever
from rag.settings import PROJECT_DIR, Settings

WEIGHTS = (0.3, 0.4, 0.5, 0.6, 0.7, 1.0)
DEPTHS = (20, 30, 40, 50)
CHOOSE_ON = ("dev", "scifact-train")
REPORT_ON = ("heldout", "scifact-test")
REWRITE_PROMPT = (
    "Write the first two sentences of a research abstract that answers the question below, using the technical "
    "terms a paper on it would use. Write only the two sentences.\n\nQuestion: {question}"
)


@dataclass
class Candidates:
    """One question's fused lists (the top 10, and the top ``depth`` for each depth tried: fusion normalises over
    what it retrieved, so each depth is its own list) and each paper's coverage score."""

    question: Question
    by_id: bool
    fused: dict[int, list[Hit]]
    coverage: dict[str, float]

    def keys(self, hits: list[Hit]) -> list[str]:
        return [hit.paper_id if self.by_id else normalise_title(hit.title) for hit in hits]


def collect(retriever: PaperRetriever, questions: list[Question], by_id: bool, label: str) -> list[Candidates]:
    local = retriever.reranker.local
    assert local is not None, "the local rerank stage is off (retrieval.reranker)"
    out = []
    for i, question in enumerate(questions, 1):
        fused = {depth: retriever.search(question.text, depth, "hybrid") for depth in (10, *DEPTHS)}
        papers = list({hit.paper_id: hit for hits in fused.values() for hit in hits}.values())
        coverage = dict(
            zip([hit.paper_id for hit in papers], local.scores(question.text, papers).tolist(), strict=True)
        )
        out.append(Candidates(question, by_id, fused, coverage))
        if i % 100 == 0:
            print(f"  {label}: {i}/{len(questions)}", file=sys.stderr, flush=True)
    return out


def ranked(candidates: Candidates, weight: float | None, depth: int, combine: str = "scores") -> list[str]:
    """The keys reordered: ``weight`` of coverage mixed with the fused score over the top ``depth`` (None: the
    fused top 10, as hybrid search returns it); ``combine`` mixes min-max normalised scores, or reciprocal ranks."""
    if weight is None:
        return candidates.keys(candidates.fused[10])
    hits = candidates.fused[depth]
    fused = np.array([hit.score for hit in hits])
    coverage = np.array([candidates.coverage[hit.paper_id] for hit in hits])
    if combine == "ranks":
        by_coverage = np.empty(len(hits))
        by_coverage[np.argsort(-coverage, kind="stable")] = np.arange(len(hits))
        mixed = weight / (60 + by_coverage) + (1 - weight) / (60 + np.arange(len(hits)))
    else:
        mixed = weight * min_max(coverage) + (1 - weight) * min_max(fused)
    return candidates.keys([hits[i] for i in np.argsort(-mixed, kind="stable")])


def figures(lists: list[list[str]], questions: list[Question]) -> dict[str, float]:
    ndcg = [ndcg_at(keys, q.gold, 10) for keys, q in zip(lists, questions, strict=True)]
    out = {"ndcg@10": statistics.fmean(ndcg), "recall@5": 0.0}
    out["recall@5"] = statistics.fmean(recall_at(keys, q.gold, 5) for keys, q in zip(lists, questions, strict=True))
    for kind in ("topic", "compare"):
        typed = [n for n, q in zip(ndcg, questions, strict=True) if q.type == kind]
        if typed:
            out[f"{kind} nDCG@10"] = statistics.fmean(typed)
    return out


def latency(retriever: PaperRetriever, questions: list[Question], mode: str) -> float:
    """Median milliseconds of one search (top 10) over the questions, after one warm-up."""
    retriever.search(questions[0].text, 10, mode)  # type: ignore[arg-type]
    times = []
    for question in questions:
        started = time.perf_counter()
        retriever.search(question.text, 10, mode)  # type: ignore[arg-type]
        times.append(1000 * (time.perf_counter() - started))
    return percentile(times, 50)


def rewrites(settings: Settings, questions: list[Question]) -> tuple[dict[str, str], float]:
    """A hypothetical abstract opening per question from the local chat model, and the median seconds per rewrite."""
    from rag.chat_models import build_chat_model

    model = build_chat_model(settings)
    assert model is not None, "no chat model configured (llm.provider)"
    out, seconds = {}, []
    for question in questions:
        started = time.perf_counter()
        messages = [{"role": "user", "content": REWRITE_PROMPT.format(question=question.text)}]
        out[question.id] = "".join(model.stream(messages, 60)).strip()
        seconds.append(time.perf_counter() - started)
    return out, percentile(seconds, 50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scifact", type=Path, default=PROJECT_DIR.parent / "shared" / "benchmarks" / "scifact")
    parser.add_argument("--rewrite", action="store_true", help="also measure HyDE-style rewriting (slow)")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "eval" / "results" / "rerank.md")
    args = parser.parse_args()

    base = Settings()  # type: ignore[call-arg]  # every field comes from config/default.toml
    scifact = base.model_copy(update={"collection": "beir-scifact"})
    ingest(PROJECT_DIR / "rag" / "assets" / "trending_papers.txt", "seed", base)
    ingest(args.scifact, "beir", scifact)
    bundled, beir = PaperRetriever(base), PaperRetriever(scifact)
    sets = {
        "dev": (bundled, [q for q in load_question_set(PROJECT_DIR / "eval/datasets/dev.jsonl") if q.gold], False),
        "heldout": (
            bundled, [q for q in load_question_set(PROJECT_DIR / "eval/datasets/heldout.jsonl") if q.gold], False,
        ),
        "scifact-train": (beir, load_beir(args.scifact, "train"), True),
        "scifact-test": (beir, load_beir(args.scifact, "test"), True),
    }  # fmt: skip
    pools = {name: collect(r, qs, by_id, name) for name, (r, qs, by_id) in sets.items()}

    grid: list[tuple[str, float | None, int, str]] = [("hybrid (fusion only)", None, 10, "scores")]
    grid += [(f"coverage × {w}, top {d}", w, d, "scores") for w in WEIGHTS for d in DEPTHS]
    grid += [(f"reciprocal ranks, coverage × {w}, top 40", w, 40, "ranks") for w in (0.5, 0.7)]
    table: dict[str, dict[str, dict[str, float]]] = {}
    for name, weight, depth, combine in grid:
        table[name] = {
            suite: figures([ranked(c, weight, depth, combine) for c in pool], [c.question for c in pool])
            for suite, pool in pools.items()
        }
    chosen = max((name for name, *_ in grid), key=lambda n: statistics.fmean(table[n][s]["ndcg@10"] for s in CHOOSE_ON))
    configured = base.retrieval
    default_name = f"coverage × {configured.rerank_weight}, top {configured.rerank_depth}"
    timings = {}
    for suite in ("dev", "scifact-test"):
        questions = [c.question for c in pools[suite]][:100]
        timings[suite] = {mode: latency(sets[suite][0], questions, mode) for mode in ("hybrid", "rerank")}

    lines = [
        "# Rerank stage: candidates side by side",
        "",
        f"Chosen on {' and '.join(CHOOSE_ON)} (mean nDCG@10); {', '.join(REPORT_ON)} are reported, never chosen on. "
        "Every candidate reorders hybrid search's top `depth` for each question. Command: `.venv/bin/python "
        "eval/tune_rerank.py" + (" --rewrite" if args.rewrite else "") + "`.",
        "",
        "| candidate | " + " | ".join(f"{s} nDCG@10 | {s} R@5" for s in pools) + " | dev topic | heldout topic |",
        "|---|" + "---|---|" * len(pools) + "---|---|",
    ]
    for name, *_ in grid:
        row = table[name]
        mark = " **(chosen)**" if name == chosen else (" (default)" if name == default_name else "")
        cells = [f"{row[s]['ndcg@10']:.3f} | {row[s]['recall@5']:.3f}" for s in pools]
        topics = [f"{row[s].get('topic nDCG@10', float('nan')):.3f}" for s in ("dev", "heldout")]
        lines.append(f"| {name}{mark} | " + " | ".join(cells) + " | " + " | ".join(topics) + " |")
    lines += [
        "",
        f"Best by the rule: **{chosen}**; the configured default is {default_name}.",
        "",
        "Search latency, top 10, median ms (model loaded, one warm-up):",
        "",
        "| collection | hybrid | hybrid + rerank |",
        "|---|---|---|",
        *(f"| {suite} | {t['hybrid']:.1f} | {t['rerank']:.1f} |" for suite, t in timings.items()),
    ]
    if args.rewrite:
        lines += rewrite_section(base, bundled, pools)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    plot(table, grid, pools, args.out.with_suffix(".png"))
    print("\n".join(lines))


def titles(hits: list[Hit]) -> list[str]:
    return [normalise_title(hit.title) for hit in hits]


def rewrite_section(settings: Settings, retriever: PaperRetriever, pools: dict[str, list[Candidates]]) -> list[str]:
    """Query rewriting measured with the configured default stage: the question alone against question + rewrite."""
    lines = ["", "## Query rewriting (HyDE-style, local chat model)", "", f"Prompt: `{REWRITE_PROMPT!r}`", ""]
    lines += [
        "| set | question alone nDCG@10 | with rewrite nDCG@10 | topic alone | topic with rewrite | s / rewrite |"
    ]
    lines += ["|---|---|---|---|---|---|"]
    for suite in ("dev", "heldout"):
        questions = [c.question for c in pools[suite]]
        extra, seconds = rewrites(settings, questions)
        alone = [titles(retriever.search(q.text, 10)) for q in questions]
        both = [titles(retriever.search(f"{q.text} {extra[q.id]}"[:1900], 10)) for q in questions]
        a, b = figures(alone, questions), figures(both, questions)
        lines.append(
            f"| {suite} | {a['ndcg@10']:.3f} | {b['ndcg@10']:.3f} | {a.get('topic nDCG@10', 0):.3f} | "
            f"{b.get('topic nDCG@10', 0):.3f} | {seconds:.2f} |"
        )
    return lines


def plot(
    table: dict[str, dict[str, dict[str, float]]],
    grid: list[tuple[str, float | None, int, str]],
    pools: dict[str, list[Candidates]],
    path: Path,
) -> None:
    """nDCG@10 against the coverage weight (top 40), one line per question set, fusion alone as weight 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for suite in pools:
        curve = [(w, name) for name, w, d, how in grid if w is not None and d == 40 and how == "scores"]
        xs = [0.0] + [w for w, _ in curve]
        ys = [table[grid[0][0]][suite]["ndcg@10"]] + [table[name][suite]["ndcg@10"] for _, name in curve]
        style = "--" if suite in REPORT_ON else "-"
        axes.plot(xs, ys, style, marker="o", label=suite + (" (reported only)" if suite in REPORT_ON else ""))
    axes.set_xlabel("coverage weight in the mix (0 = fusion only), top 40 reordered")
    axes.set_ylabel("nDCG@10")
    axes.set_title("Rerank stage: token coverage mixed with the fused score")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
