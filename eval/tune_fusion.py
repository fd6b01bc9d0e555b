"""Choose the fusion of dense and BM25 rankings on SciFact's *train* split (never the test split).

Ingests SciFact once (idempotent), then scores every fusion mode and dense weight on the train claims and writes a
Markdown table to eval/results/fusion.md. The dev set is shown beside it for reference only; the choice is by train
nDCG@10. Usage: .venv/bin/python eval/tune_fusion.py [--scifact ../shared/benchmarks/scifact]
"""

import argparse
import sys
from pathlib import Path

from rag.eval.datasets import load_beir, load_question_set
from rag.eval.runners import score_retrievers
from rag.ingest import ingest
from rag.retrieve import PaperRetriever
from rag.settings import PROJECT_DIR, Settings

GRID = [("rrf", 0.5)] + [(mode, w) for mode in ("relative_score", "dist_based_score") for w in (0.4, 0.5, 0.6)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scifact", type=Path, default=PROJECT_DIR.parent / "shared" / "benchmarks" / "scifact")
    parser.add_argument("--dev", type=Path, default=PROJECT_DIR / "eval" / "datasets" / "dev.jsonl")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "eval" / "results" / "fusion.md")
    args = parser.parse_args()

    base = Settings()
    scifact = base.model_copy(update={"collection": "beir-scifact"})
    ingest(args.scifact, "beir", scifact)
    ingest(PROJECT_DIR / "rag" / "assets" / "trending_papers.txt", "seed", base)
    suites = [
        ("scifact-train", PaperRetriever(scifact), load_beir(args.scifact, "train"), True),
        ("dev (reference)", PaperRetriever(base), load_question_set(args.dev), False),
    ]
    rows = ["| fusion | dense weight | " + " | ".join(f"{name} nDCG@10 | {name} R@5" for name, *_ in suites) + " |"]
    rows.append("|---|---|" + "---|---|" * len(suites))
    train_ndcg: dict[str, float] = {}
    for mode, weight in GRID:
        cells = []
        for index, (_, retriever, questions, by_id) in enumerate(suites):
            retrieval = retriever.settings.retrieval.model_copy(update={"fusion": mode, "dense_weight": weight})
            retriever.settings = retriever.settings.model_copy(update={"retrieval": retrieval})
            result = score_retrievers(retriever, questions, ["hybrid"], 10, by_id)["hybrid"]
            cells += [f"{result['ndcg@10']:.4f}", f"{result['recall@5']:.4f}"]
            if index == 0:
                train_ndcg[f"{mode} {weight}"] = result["ndcg@10"]
        rows.append(f"| {mode} | {weight if mode != 'rrf' else '—'} | " + " | ".join(cells) + " |")
        print(rows[-1], file=sys.stderr, flush=True)
    top = max(train_ndcg.values())
    ties = ", ".join(name for name, value in train_ndcg.items() if top - value <= 0.002)
    table = "\n".join(rows) + f"\n\nBest on SciFact train nDCG@10: {top:.4f}; within 0.002 of it (a tie): {ties}.\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# Fusion tuning (SciFact train split; dev shown for reference)\n\n" + table)
    print(table)


if __name__ == "__main__":
    main()
