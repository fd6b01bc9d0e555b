"""Calibrate how a "which papers" question admits its papers (answer.gate_topic_*) on the dev topic questions.

A topic question wants every paper on its topic, so its gate is looser than the gate of a question one paper
answers. Each dev topic question's first three candidate pools (what the growing pool reaches) are scored once; then
each (margin, min_retrieval) setting is judged by the product's own gate (rag.evidence.admit with topic=True,
at most answer.max_topic_sources papers): admitted precision and recall against the gold lists. The choice is the
highest F1 among settings whose precision stays >= 0.85, and a 5-fold cross-validation repeats it on four fifths and
scores the fifth left out. Writes eval/results/topics.md.
Usage: .venv/bin/python eval/calibrate_topics.py [--dev eval/datasets/dev.jsonl]
"""

import argparse
import itertools
import statistics
from pathlib import Path

from tqdm import tqdm

from rag.eval.datasets import load_question_set
from rag.evidence import EvidenceFinder, admit
from rag.ingest import ingest
from rag.readers import BUNDLED_CORPUS, normalise_title
from rag.settings import PROJECT_DIR, AnswerSettings, Settings

PRECISION_BAR, FOLDS, POOLS = 0.85, 5, 3
GRID = list(
    itertools.product(
        (0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3, 1.0),
        (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
    )
)
Setting = tuple[float, float]  # margin, min_retrieval
Item = tuple[int, list[bool], list[tuple[float, float]]]  # gold count, per candidate: gold?, (relevance, score)


def measure(items: list[Item], setting: Setting, base: AnswerSettings) -> tuple[float, float, float]:
    names = ("gate_topic_margin", "gate_topic_min_retrieval")
    config = base.model_copy(update=dict(zip(names, setting, strict=True)))
    precision, recall = [], []
    for gold_count, gold, candidates in items:
        admitted = [gold[i] for i in admit(candidates, config, config.max_topic_sources, topic=True)]
        precision.append(sum(admitted) / len(admitted) if admitted else 0.0)
        recall.append(sum(admitted) / gold_count)
    p, r = statistics.fmean(precision), statistics.fmean(recall)
    return p, r, 2 * p * r / (p + r) if p + r else 0.0


def choose(items: list[Item], base: AnswerSettings) -> Setting:
    def rank(setting: Setting) -> tuple[bool, float]:
        precision, _, f1 = measure(items, setting, base)
        return precision >= PRECISION_BAR, f1

    return max(GRID, key=rank)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", type=Path, default=PROJECT_DIR / "eval" / "datasets" / "dev.jsonl")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "eval" / "results" / "topics.md")
    args = parser.parse_args()

    settings = Settings()
    ingest(BUNDLED_CORPUS, "seed", settings, progress=False)
    finder = EvidenceFinder(settings)
    depth = POOLS * settings.answer.candidates
    items: list[Item] = []
    questions = [q for q in load_question_set(args.dev) if q.type == "topic"]
    for question in tqdm(questions, desc="scoring dev topic questions", unit="q"):
        scored = finder.score(question.text, finder.retriever.search(question.text, depth))
        gold = [normalise_title(item.hit.title) in question.gold for item in scored]
        items.append((len(question.gold), gold, [(item.relevance, item.hit.score) for item in scored]))

    base = settings.answer
    chosen = choose(items, base)
    folds = [(choose([x for i, x in enumerate(items) if i % FOLDS != f], base), items[f::FOLDS]) for f in range(FOLDS)]
    pooled = [measure(test, setting, base) for setting, test in folds]
    current = (base.gate_topic_margin, base.gate_topic_min_retrieval)

    def row(name: str, setting: tuple[object, ...], figures: tuple[float, ...]) -> str:
        return f"| {name} | {' | '.join(str(v) for v in setting)} | {' | '.join(f'{v:.3f}' for v in figures)} |"

    lines = [
        "# Topic-list gate calibration (dev topic questions)",
        "",
        f"{len(items)} topic questions, {depth} candidates each, at most {base.max_topic_sources} admitted. Choice: "
        f"precision >= {PRECISION_BAR}, then the highest F1; cross-validated over {FOLDS} folds.",
        "",
        "| setting | margin | min_retrieval | admitted precision | admitted recall | F1 |",
        "|---|---|---|---|---|---|",
        row("chosen (all topic questions)", chosen, measure(items, chosen, base)),
        row("config/default.toml now", current, measure(items, current, base)),
        row(
            "the single-answer gate's margin and retrieval ratio",
            (base.gate_margin, base.gate_min_retrieval),
            measure(items, (base.gate_margin, base.gate_min_retrieval), base),
        ),
        *(
            row(f"fold {f + 1} choice, on its fifth", s, m)
            for f, ((s, _), m) in enumerate(zip(folds, pooled, strict=True))
        ),
        row(
            "cross-validated (mean of folds)",
            ("-", "-"),
            tuple(statistics.fmean(m[i] for m in pooled) for i in range(3)),
        ),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
