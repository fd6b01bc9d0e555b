"""Measure the claim-level support checker (rag/support.py) on labelled model sentences, and choose its coverage
threshold (answer.support_threshold) on the dev half only.

eval/datasets/support.jsonl holds real sentences of the local model's dev-set answers (the eval cache), each with the
sources it was checked against and a label read off the abstracts: "as_written" pairs are the model's own; in
"wrong_source" pairs a real sentence is cited to another paper on a close topic (the paper it came from is source 2);
in "altered" pairs one number or name of a real sentence is changed. Records are split by question id into a dev
half and a test half. A verdict is "unsupported" when the checker does not keep the citation as given (it moves it, or
drops the sentence); for an uncited sentence, when no source supports it. Precision and recall are those of the
"unsupported" verdicts. The threshold is the one of the best dev F1 (ties: the highest precision, then the lowest
threshold); the test half is reported with it, never used to choose. Writes eval/results/support.md.
Usage: .venv/bin/python eval/measure_support.py [--dataset eval/datasets/support.jsonl] [--data-dir DIR]
"""

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from rag.embedding import LocalMiniLMEmbedding, TokenStates
from rag.evidence import EvidenceFinder, Source
from rag.ingest import ingest
from rag.readers import BUNDLED_CORPUS, normalise_title, read_corpus
from rag.settings import PROJECT_DIR, Settings
from rag.support import Support, SupportChecker

GRID = [round(float(t), 2) for t in np.arange(0.40, 0.96, 0.01)]
ORIGINS = ("as_written", "wrong_source", "altered")


@dataclass(frozen=True)
class Record:
    id: str
    question_id: str
    split: str
    origin: str
    sentence: str
    cited: tuple[int, ...]
    sources: list[Source]
    unsupported: bool  # the label
    supported_by: tuple[int, ...]


def load(path: Path) -> list[Record]:
    """The labelled pairs, each source given its full abstract from the bundled corpus (matched by title)."""
    papers = {normalise_title(paper.title): paper for paper in read_corpus(BUNDLED_CORPUS)}
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        raw = json.loads(line)
        sources = []
        for source in raw["sources"]:
            paper = papers[normalise_title(source["title"])]
            sources.append(Source(source["n"], paper, 0.0))
        records.append(
            Record(
                raw["id"], raw["question_id"], raw["split"], raw["origin"], raw["sentence"], tuple(raw["cited"]),
                sources, raw["label"] == "unsupported", tuple(raw["supported_by"]),
            )
        )  # fmt: skip
    return records


class MemoEmbedder:
    """The real embedder with each text's token states kept, so the threshold sweep re-runs the real check without
    re-encoding the same sentences."""

    def __init__(self, embedder: LocalMiniLMEmbedding) -> None:
        self.embedder = embedder
        self.states: dict[str, TokenStates] = {}

    def encode_with_tokens(self, texts: list[str]) -> tuple[np.ndarray, list[TokenStates]]:
        fresh = [text for text in dict.fromkeys(texts) if text not in self.states]
        if fresh:
            self.states |= dict(zip(fresh, self.embedder.encode_with_tokens(fresh)[1], strict=True))
        return np.zeros((len(texts), 384), dtype=np.float32), [self.states[text] for text in texts]


def flagged(record: Record, support: Support) -> bool:
    """The checker's verdict on the pair as labelled: it did not keep the citation as given."""
    return support.cited != record.cited if record.cited else not support.cited


def scores(pairs: Sequence[tuple[bool, bool]]) -> dict[str, Any]:
    """Precision, recall and F1 of the "unsupported" verdicts over (label, verdict) pairs."""
    tp = sum(label and verdict for label, verdict in pairs)
    fp = sum(verdict and not label for label, verdict in pairs)
    fn = sum(label and not verdict for label, verdict in pairs)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "n": len(pairs), "unsupported": tp + fn}


def verdicts(records: Sequence[Record], check: Callable[[Record], Support]) -> list[tuple[Record, Support]]:
    return [(record, check(record)) for record in records]


def fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def table(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = ["| pairs | n | unsupported | precision | recall | F1 |", "|---|---|---|---|---|---|"]
    for name, s in rows:
        lines.append(
            f"| {name} | {s['n']} | {s['unsupported']} | {fmt(s['precision'])} | {fmt(s['recall'])} | {s['f1']:.3f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=PROJECT_DIR / "eval" / "datasets" / "support.jsonl")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "eval" / "results" / "support.md")
    parser.add_argument("--data-dir", help="data folder holding the bundled corpus (default: the configured one)")
    args = parser.parse_args()

    settings = Settings(data_dir=args.data_dir) if args.data_dir else Settings()
    ingest(BUNDLED_CORPUS, "seed", settings, progress=False)
    finder = EvidenceFinder(settings)
    records = load(args.dataset)
    halves = {half: [r for r in records if r.split == half] for half in ("dev", "test")}

    memo = cast(LocalMiniLMEmbedding, MemoEmbedder(finder.gate_embedder))

    def run(threshold: float, subset: Sequence[Record]) -> list[tuple[Record, Support]]:
        checker = SupportChecker(memo, finder.term_weights, threshold)
        return verdicts(subset, lambda r: checker.check(r.sentence, r.cited, r.sources))

    sweep = []
    for threshold in GRID:
        s = scores([(r.unsupported, flagged(r, v)) for r, v in run(threshold, halves["dev"])])
        sweep.append((threshold, s))
    chosen, _ = max(sweep, key=lambda item: (item[1]["f1"], item[1]["precision"] or 0.0, -item[0]))
    terms_only = -1.0  # coverage never fails: the number-and-name check alone

    lines = [
        "# Claim-level support checker (rag/support.py)",
        "",
        f"`eval/datasets/support.jsonl`: {len(records)} (sentence, cited sources) pairs from the local model's "
        "dev-set answers (eval/reports/dev/cache/answers-local.jsonl), labelled by reading the cited abstracts; "
        f"split by question id into dev ({len(halves['dev'])}) and test ({len(halves['test'])}). A verdict is "
        "*unsupported* when the checker does not keep the citation as written (it moves it or drops the sentence; "
        "an uncited sentence: no source supports it). Precision and recall are those of the unsupported verdicts.",
        "",
        f"Threshold chosen on dev only (best F1, then precision): **answer.support_threshold = {chosen}** "
        "(IDF-weighted token coverage of the claim by the cited title and abstract sentences).",
        "",
    ]
    for half in ("dev", "test"):
        judged = run(chosen, halves[half])
        bare = run(terms_only, halves[half])
        rows = [(f"all ({half})", scores([(r.unsupported, flagged(r, v)) for r, v in judged]))]
        for origin in ORIGINS:
            rows.append((origin, scores([(r.unsupported, flagged(r, v)) for r, v in judged if r.origin == origin])))
        rows.append(("all, numbers and names only", scores([(r.unsupported, flagged(r, v)) for r, v in bare])))
        moved = [(r, v) for r, v in judged if r.origin == "wrong_source" and flagged(r, v)]
        right = sum(v.cited == r.supported_by for r, v in moved)
        lines += [f"## {half} half", "", *table(rows), ""]
        lines.append(
            f"Wrong-source pairs flagged and re-attributed to the paper the sentence came from: {right} of "
            f"{len(moved)}; the rest dropped or moved elsewhere."
        )
        misses = [r for r, v in judged if r.unsupported and not flagged(r, v)]
        false = [(r, v) for r, v in judged if flagged(r, v) and not r.unsupported]
        lines += ["", f"Missed ({len(misses)}):", ""]
        lines += [f"- `{r.id}` {r.origin}: {r.sentence[:160]}" for r in misses]
        lines += ["", f"Flagged but supported ({len(false)}):", ""]
        lines += [
            f"- `{r.id}`: {r.sentence[:160]} (missing {list(v.missing)}, coverage {v.coverage:.3f})" for r, v in false
        ]
        lines.append("")

    lines += ["## Dev sweep", "", "| threshold | precision | recall | F1 |", "|---|---|---|---|"]
    lines += [f"| {t} | {fmt(s['precision'])} | {fmt(s['recall'])} | {s['f1']:.3f} |" for t, s in sweep[::5]]

    first: list[float] = []  # milliseconds: each answer's first check (it encodes the cited sources)
    later: list[float] = []  # and the checks after it
    for question in dict.fromkeys(r.question_id for r in records):  # a fresh checker per answer, as in a stream
        checker = SupportChecker(finder.gate_embedder, finder.term_weights, chosen)
        for i, record in enumerate(r for r in records if r.question_id == question):
            started = time.perf_counter()
            checker.check(record.sentence, record.cited, record.sources)
            (later if i else first).append((time.perf_counter() - started) * 1000)
    load_1m = os.getloadavg()[0]
    lines += [
        "",
        "## Latency",
        "",
        f"One check per sentence, a fresh checker per answer: p50 {statistics.median(first + later):.1f} ms over "
        f"{len(first + later)} checks; an answer's first check (it encodes the cited sources) p50 "
        f"{statistics.median(first):.1f} ms, max {max(first):.1f} ms; later checks p50 {statistics.median(later):.1f} "
        f"ms, p90 {statistics.quantiles(later, n=10)[8]:.1f} ms. Load average during the run: {load_1m:.1f} on "
        f"{os.cpu_count()} cores.",
        "",
    ]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
