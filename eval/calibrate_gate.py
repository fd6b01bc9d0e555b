"""Calibrate the relevance gate (answer.gate_*) on the dev question set, and estimate it on questions it never saw;
then the "not stated" threshold (answer.stated_threshold) on the dev questions that ask for a number or a name.

Every dev question's candidates are scored once (term coverage, fused retrieval score); then each setting of
(threshold, margin, min_retrieval, strong_match) is evaluated without touching the models again. The chosen setting
reaches the product's bars (admitted precision >= 0.90, refusal accuracy >= 0.85) and then has the highest sum of
refusal accuracy, precision and recall: a setting at the very edge of a bar (the lowest threshold that still
refuses enough) falls off it on new questions. Because the same questions would otherwise both pick and
judge the setting, a 5-fold cross-validation repeats the choice on four fifths and scores the fifth left out.
The not-stated threshold separates the dev fact questions whose answer an admitted sentence states from the
near-miss ones (the paper is on topic, its abstract lacks the fact): each question's feature is the best coverage of
an admitted sentence that carries a number (or a name); the threshold is the midpoint of the widest gap among those
of the highest accuracy. Writes eval/results/gate.md and prints the chosen settings.
Usage: .venv/bin/python eval/calibrate_gate.py [--dev eval/datasets/dev.jsonl]
"""

import argparse
import itertools
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rag.asked import asked
from rag.eval.datasets import Question, load_question_set
from rag.evidence import EvidenceFinder, admit, sentences_of, states_a
from rag.evidence import Scored as CandidateScores
from rag.ingest import ingest
from rag.readers import BUNDLED_CORPUS, normalise_title
from rag.retrieve import Hit
from rag.settings import PROJECT_DIR, AnswerSettings, Settings

PRECISION_BAR, REFUSAL_BAR, FOLDS = 0.90, 0.85, 5
Setting = tuple[float, float, float, float]  # threshold, margin, min_retrieval, strong_match
GRID: list[Setting] = [
    (round(float(t), 3), m, r, s)
    for t, m, r, s in itertools.product(
        np.arange(0.30, 0.70, 0.01), (0.03, 0.05, 0.08, 0.12, 1.0), (0.7, 0.8, 0.85, 0.9, 0.95), (0.65, 0.7, 0.8, 2.0)
    )
]


@dataclass
class Scored:
    gold_count: int
    gold: list[bool]  # per candidate, in retrieval order: is it a gold paper
    candidates: list[tuple[float, float]]  # per candidate: relevance, fused retrieval score (what the gate reads)


class Gates:
    """Each gate setting as the answer settings that rag.evidence.admit reads, built once per setting."""

    NAMES = ("gate_threshold", "gate_margin", "gate_min_retrieval", "gate_strong_match")  # a Setting's order

    def __init__(self, base: AnswerSettings) -> None:
        self.base = base
        self._built: dict[Setting, AnswerSettings] = {}

    def current(self) -> Setting:
        threshold, margin, min_retrieval, strong = (getattr(self.base, name) for name in self.NAMES)
        return threshold, margin, min_retrieval, strong

    def __getitem__(self, setting: Setting) -> AnswerSettings:
        if setting not in self._built:
            self._built[setting] = self.base.model_copy(update=dict(zip(self.NAMES, setting, strict=True)))
        return self._built[setting]


def measure(judged: list[tuple[Setting, Scored]], gates: Gates) -> tuple[float, float, float]:
    """Refusal accuracy, admitted precision (over answered answerable questions, as the eval averages citation
    precision) and admitted recall, each question judged by the setting paired with it through the product's own
    gate (rag.evidence.admit) on precomputed scores."""
    refusal, precision, recall = [], [], []
    for setting, item in judged:
        admitted = [item.gold[i] for i in admit(item.candidates, gates[setting])]
        refusal.append(float((not admitted) == (item.gold_count == 0)))
        if item.gold_count and admitted:
            precision.append(sum(admitted) / len(admitted))
        if item.gold_count:
            recall.append(sum(admitted) / item.gold_count)
    return statistics.fmean(refusal), statistics.fmean(precision) if precision else 0.0, statistics.fmean(recall)


def under(setting: Setting, items: list[Scored]) -> list[tuple[Setting, Scored]]:
    return [(setting, item) for item in items]


def choose(items: list[Scored], gates: Gates) -> tuple[Setting, tuple[float, float, float]]:
    def rank(setting: Setting) -> tuple[int, float]:
        refusal, precision, recall = measure(under(setting, items), gates)
        return (precision >= PRECISION_BAR) + (refusal >= REFUSAL_BAR), refusal + precision + recall

    best = max(GRID, key=rank)
    return best, measure(under(best, items), gates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", type=Path, default=PROJECT_DIR / "eval" / "datasets" / "dev.jsonl")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "eval" / "results" / "gate.md")
    args = parser.parse_args()

    settings = Settings()
    ingest(BUNDLED_CORPUS, "seed", settings, progress=False)
    finder = EvidenceFinder(settings)
    gates = Gates(settings.answer)
    measures: dict[str, list[Scored]] = {"term coverage (rag/relevance.py)": [], "pooled cosine (replaced)": []}
    stated: list[tuple[float, bool]] = []  # per fact question: its not-stated feature, whether it is answerable
    for question in tqdm(load_question_set(args.dev), desc="scoring dev questions", unit="q"):
        hits = finder.retriever.search(question.text, settings.answer.candidates)
        gold = [normalise_title(h.title) in question.gold for h in hits]
        scored = finder.score(question.text, hits)
        coverage = [item.relevance for item in scored]
        feature = stated_feature(question, scored, settings) if question.gold or question.near_miss else None
        if feature is not None:
            stated.append((feature, bool(question.gold)))
        if question.near_miss:  # on topic: the gate should admit its papers and "not stated" decline it
            continue
        for measure_items, relevances in zip(
            measures.values(), (coverage, pooled_cosines(finder, question.text, hits)), strict=True
        ):
            scores = list(zip(relevances, (h.score for h in hits), strict=True))
            measure_items.append(Scored(len(question.gold), gold, scores))

    current = gates.current()
    lines = [
        "# Relevance-gate calibration (dev set)",
        "",
        f"{len(measures['pooled cosine (replaced)'])} questions, {settings.answer.candidates} candidates each. "
        f"Choice: precision >= {PRECISION_BAR} and refusal accuracy >= {REFUSAL_BAR}, then the highest sum of the "
        f"three. Cross-validated: {FOLDS} folds, every question judged by a setting chosen without it.",
    ]
    for name, items in measures.items():
        chosen, figures = choose(items, gates)
        folds = [
            (choose([x for i, x in enumerate(items) if i % FOLDS != fold], gates)[0], items[fold::FOLDS])
            for fold in range(FOLDS)
        ]
        held_out = [pair for setting, test in folds for pair in under(setting, test)]
        lines += [
            "",
            f"## Relevance: {name}",
            "",
            "| setting | threshold | margin | min_retrieval | strong_match | refusal acc. | admitted precision | "
            "admitted recall |",
            "|---|---|---|---|---|---|---|---|",
            row("chosen (all questions)", chosen, figures),
            *(
                [row("config/default.toml now", current, measure(under(current, items), gates))]
                if name.startswith("term")
                else []
            ),
            *(
                row(
                    f"fold {fold + 1} choice, on its held-out fifth",
                    setting,
                    measure(under(setting, test), gates),
                )
                for fold, (setting, test) in enumerate(folds)
            ),
            row("cross-validated (all folds pooled)", ("-",) * 4, measure(held_out, gates)),
        ]
    lines += stated_section(stated, settings.answer.stated_threshold)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def stated_feature(question: Question, scored: list[CandidateScores], settings: Settings) -> float | None:
    """The best coverage of an admitted sentence that can state the asked fact; None when the question asks no fact
    or the gate admits nothing (a refusal either way)."""
    wanted = asked(question.text)
    if not wanted.wants_fact:
        return None
    chosen = admit([(item.relevance, item.hit.score) for item in scored], settings.answer)
    sentences = [s for i in chosen for s in scored[i].ranked if states_a(wanted.kind, s.text)]
    return max((s.coverage for s in sentences), default=0.0) if chosen else None


def stated_section(pairs: list[tuple[float, bool]], current: float) -> list[str]:
    """The not-stated threshold of the highest accuracy on (feature, answerable) pairs, centred in its tie range."""
    if not pairs:
        return []
    values = sorted({feature for feature, _ in pairs})
    cuts = [0.0] + [(a + b) / 2 for a, b in itertools.pairwise(values)] + [values[-1] + 0.01]

    def accuracy(cut: float) -> float:
        return statistics.fmean((feature >= cut) == answerable for feature, answerable in pairs)

    best = max(accuracy(cut) for cut in cuts)
    tied = [cut for cut in cuts if accuracy(cut) == best]
    chosen = round((tied[0] + tied[-1]) / 2, 3)
    answerable = sum(a for _, a in pairs)
    return [
        "",
        "## Not stated: answer.stated_threshold",
        "",
        f"{len(pairs)} dev questions ask for a number or a name and get a source past the gate: {answerable} "
        f"answerable, {len(pairs) - answerable} near-miss.",
        "",
        "| setting | threshold | accuracy | answerable answered | near-miss declined |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {cut} | {accuracy(cut):.3f} | "
            f"{sum(f >= cut for f, a in pairs if a)}/{answerable} | "
            f"{sum(f < cut for f, a in pairs if not a)}/{len(pairs) - answerable} |"
            for name, cut in (("chosen", chosen), ("config/default.toml now", current))
        ),
    ]


def row(name: str, setting: tuple[object, ...], figures: tuple[float, float, float]) -> str:
    return f"| {name} | {' | '.join(str(v) for v in setting)} | {' | '.join(f'{v:.3f}' for v in figures)} |"


def pooled_cosines(finder: EvidenceFinder, question: str, hits: list[Hit]) -> list[float]:
    """The relevance the gate used before: the best MiniLM cosine of the question with the title or a sentence."""
    texts = [[hit.title, *(sentences_of(hit.text) or [hit.text])] for hit in hits]
    vectors = finder.gate_embedder.encode([question, *(text for paper in texts for text in paper)])
    similarities, start, best = vectors[1:] @ vectors[0], 0, []
    for paper in texts:
        best.append(float(similarities[start : start + len(paper)].max()))
        start += len(paper)
    return best


if __name__ == "__main__":
    main()
