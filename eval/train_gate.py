"""Train the gate's relevance model (rag/assets/gate.json) and choose its thresholds (config/default.toml [answer]).

Labelled (question, paper) pairs come from the pipeline itself: every question's first ``--pool`` papers of the default
ranking, scored as ``rag.evidence.EvidenceFinder`` scores them, labelled by the question's gold papers:
- the dev set (eval/datasets/dev.jsonl; a near-miss question's on-topic papers count as bearing on it),
- SciFact's train claims (``qrels_train.tsv``) over its 5,183 abstracts,
- PubMedQA's dev questions (``qrels_dev.tsv``) over its 1,000 abstracts.
The held-out set is scored with the final model for the report only: it chooses nothing.

The model is a logistic regression (scikit-learn) over ``rag.gate.FEATURES``, which leave the question's intent out
(see ``rag.gate.features``); each source weighs as much as the dev set in total. Its figures are cross-validated by
question (5 folds, grouped): every probability reported for a training question comes from a model that never saw
it. The thresholds are chosen on the dev set's cross-validated
probabilities, running ``rag.gate.decide`` itself:
- ``gate_list_cite``: the best F1 of list questions' (topic, compare) citation precision and recall. Precision 0.80
  is reached on dev only up to recall 0.45 (eval/results/gate_pr.png): a bar there would cite a third of the papers
  a reader asked for;
- ``gate_cite``: the highest citation recall of single-answer questions (fact, method) at precision >= 0.90;
- ``gate_related``: the best F1 of the papers a list answer names, cited and related together;
- ``gate_cover``: the most plain unanswerable questions refused with at most one answerable question refused; then
  ``gate_min_coverage`` (the best candidate's term coverage) by the same rule;
- ``stated_threshold``: the best accuracy between fact questions and near-miss ones.
Writes rag/assets/gate.json, eval/results/gate.md and eval/results/gate_pr.png; prints the thresholds to set.
The shipped model: ``.venv/bin/python eval/train_gate.py --scifact 250 --pubmedqa 150`` (the benchmark collections are
ingested into the data folder, or read from ``--bench-data``; each question's pool is cached under
``<data>/gate-cache``, keyed by the code that computes it, so a retrain that changes only features or thresholds
takes seconds).
"""

import argparse
import hashlib
import inspect
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial

import matplotlib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from rag import gate
from rag.eval.datasets import Question, load_beir, load_question_set
from rag.evidence import EvidenceFinder, Scored
from rag.ingest import ingest
from rag.papers import evidence_sentences
from rag.readers import BUNDLED_CORPUS, normalise_title, read_corpus
from rag.settings import PROJECT_DIR, AnswerSettings, Settings

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RESULTS = PROJECT_DIR / "eval" / "results"
FOLDS, LIST_PRECISION, SINGLE_PRECISION = 5, 0.80, 0.90  # LIST_PRECISION: the bar drawn on the plot
GRID = [round(float(t), 3) for t in np.arange(0.02, 0.98, 0.01)]


@dataclass
class Pool:
    """One question's candidates as the gate sees them, with their labels."""

    source: str  # dev, heldout, scifact, pubmedqa
    id: str
    type: str  # the question set's type, "beir" for benchmark questions
    near_miss: bool
    kind: str
    compares: bool
    gold_count: int  # gold papers in all, retrieved or not: recall is over these
    signals: list[dict[str, float]]
    labels: list[bool]
    stated: list[float]  # per candidate: the best coverage of a sentence stating the asked fact (-1: none)
    sides: list[tuple[list[int], list[dict[str, float]]]]  # a comparison's sides: their papers' positions and signals
    expects: int = 0  # how many papers the question says it is about (read afresh from the question, not cached)

    @property
    def intent(self) -> gate.Intent:
        return gate.Intent(self.kind, "", self.compares, expects=self.expects)  # type: ignore[arg-type]

    @property
    def rows(self) -> np.ndarray:
        return gate.features([gate.Signals(**s) for s in self.signals])  # type: ignore[arg-type]

    def side_rows(self) -> list[tuple[list[int], np.ndarray]]:
        return [
            (positions, gate.features([gate.Signals(**s) for s in signals]))  # type: ignore[arg-type]
            for positions, signals in self.sides
        ]

    def judged(self, model: gate.RelevanceModel) -> np.ndarray:
        """As the finder judges them: each paper against the question, or against a comparison's side where higher."""
        main = model.probabilities(self.rows)
        return gate.side_merged(main, [(positions, model.probabilities(rows)) for positions, rows in self.side_rows()])


def collect(source: str, questions: list[Question], settings: Settings, pool: int, by_id: bool) -> list[Pool]:
    """Each question's first ``pool`` papers, scored and labelled."""
    finder = EvidenceFinder(settings)
    pools = []
    for question in tqdm(questions, desc=source, unit="q"):
        wanted = gate.intent(question.text)
        scored = finder.score(question.text, finder.retriever.rank(question.text, pool, "rerank").hits)
        sides = []
        for side in wanted.sides:
            side_scored = finder.score(side, finder.retriever.rank(side, settings.answer.candidates, "rerank").hits)
            at = {item.hit.paper_id: i for i, item in enumerate(scored)}
            for item in side_scored:
                if item.hit.paper_id not in at:
                    at[item.hit.paper_id] = len(scored)
                    scored += finder.score(question.text, [replace(item.hit, rank=len(scored) + 1)])
            sides.append(
                ([at[item.hit.paper_id] for item in side_scored], [asdict(item.signals) for item in side_scored])
            )
        positive = question.gold | question.about
        pools.append(
            Pool(
                source, question.id, question.type, question.near_miss, wanted.kind, wanted.compares,
                len(question.gold), [asdict(item.signals) for item in scored],
                [(item.hit.paper_id if by_id else normalise_title(item.hit.title)) in positive for item in scored],
                [
                    max(
                        (r.coverage for r in item.ranked if gate.states_asked(wanted, question.text, r.text)),
                        default=-1.0,
                    )
                    for item in scored
                ]
                if wanted.wants_fact
                else [],
                sides,
            )
        )  # fmt: skip
    return pools


def cached(
    name: str, settings: Settings, fresh: bool, compute: Callable[[], list[Pool]], key: str, questions: list[Question]
) -> list[Pool]:
    """The pools collected before under the same key (the code that computes them), else collected now; what the
    decision reads from the question's wording alone is read afresh."""
    path = settings.data_path / "gate-cache" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
    if path.is_file() and not fresh:
        pools = [Pool(**record) for record in json.loads(path.read_text())]
    else:
        pools = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([asdict(p) for p in pools]))
    texts = {question.id: question.text for question in questions}
    return [replace(pool, expects=gate.intent(texts[pool.id]).expects) for pool in pools]


def sample(questions: list[Question], n: int) -> list[Question]:
    """A fixed pseudo-random sample (by a digest of the id)."""
    return sorted(questions, key=lambda q: hashlib.sha256(q.id.encode()).hexdigest())[:n]


def gather(settings: Settings, args: argparse.Namespace) -> dict[str, list[Pool]]:
    ingest(BUNDLED_CORPUS, "seed", settings)
    titles = {paper.title for paper in read_corpus(BUNDLED_CORPUS)}
    # what a cached pool was computed by: the candidates' scoring, the signals, intent and "stated" (not the features)
    parts = (EvidenceFinder.score, Scored, evidence_sentences, gate.Signals, gate.sides, gate.states_asked)
    code = (PROJECT_DIR / "rag" / "terms.py").read_text() + "".join(inspect.getsource(part) for part in parts)
    code += inspect.getsource(gate.Intent.attribute.fget)  # type: ignore[union-attr]
    patterns = [
        p.pattern for p in (*gate._SIDES, gate._QUANTITY, gate._NAME, gate._PAPERS, gate._COMPARE, gate._HOW_LONG)
    ]
    classes = [(sorted(words), sorted(units)) for words, units in gate._UNIT_CLASSES]
    key = f"{args.pool}:{code}:{patterns}:{classes}"
    data: dict[str, list[Pool]] = {}
    for name in ("dev", "heldout"):
        questions = load_question_set(PROJECT_DIR / "eval" / "datasets" / f"{name}.jsonl", titles)
        data[name] = cached(
            name, settings, args.fresh, partial(collect, name, questions, settings, args.pool, False), key, questions
        )
    for name, split, n in (("scifact", "train", args.scifact), ("pubmedqa", "dev", args.pubmedqa)):
        if not n:
            continue
        folder = settings.benchmarks_path / name
        data_dir = args.bench_data or str(settings.data_path)
        beir = settings.model_copy(update={"collection": f"beir-{name}", "data_dir": data_dir})
        ingest(folder, "beir", beir)
        questions = sample(load_beir(folder, split), n)
        data[name] = cached(
            name, beir, args.fresh, partial(collect, name, questions, beir, args.pool, True), f"{key}:{n}", questions
        )
    return data


def fit(pools: list[Pool], weights: dict[str, float]) -> tuple[StandardScaler, LogisticRegression]:
    """Every (question, paper) pair, and every (comparison side, paper) pair, weighted by its source."""
    parts = [(p.rows, p.labels, p.source) for p in pools]
    parts += [(rows, [p.labels[i] for i in positions], p.source) for p in pools for positions, rows in p.side_rows()]
    rows = np.concatenate([part[0] for part in parts])
    labels = np.concatenate([part[1] for part in parts])
    sample_weight = np.concatenate([[weights[source]] * len(part_labels) for _, part_labels, source in parts])
    scaler = StandardScaler().fit(rows)
    model = LogisticRegression(C=1.0, max_iter=2000).fit(scaler.transform(rows), labels, sample_weight=sample_weight)
    return scaler, model


def as_model(scaler: StandardScaler, model: LogisticRegression, version: str) -> gate.RelevanceModel:
    return gate.RelevanceModel(
        version, gate.FEATURES, scaler.mean_, scaler.scale_, model.coef_[0], float(model.intercept_[0])
    )


def cross_validated(pools: list[Pool], weights: dict[str, float]) -> list[np.ndarray]:
    """Each pool's probabilities from a model trained on the folds without its question."""
    groups = np.arange(len(pools))
    out: list[np.ndarray] = [np.zeros(0)] * len(pools)
    for train, test in GroupKFold(FOLDS, shuffle=True, random_state=0).split(groups, groups=groups):
        model = as_model(*fit([pools[i] for i in train], weights), "fold")
        for i in test:
            out[i] = pools[i].judged(model)
    return out


@dataclass
class Outcome:
    cited: set[int]
    related: set[int]
    refused: bool


def outcomes(pools: list[Pool], probabilities: list[np.ndarray], config: AnswerSettings) -> list[Outcome]:
    found = []
    for pool, p in zip(pools, probabilities, strict=True):
        coverage = max((s["relevance"] for s in pool.signals), default=0.0)
        decision = gate.decide(p.tolist(), coverage, pool.intent, config)
        refused = not decision.covered
        if decision.covered and pool.intent.wants_fact:
            best = max((pool.stated[i] for i in decision.cited), default=-1.0)
            refused = best < config.stated_threshold
        found.append(Outcome(set(decision.cited), set(decision.related), refused))
    return found


def figures(pools: list[Pool], found: list[Outcome], kinds: Sequence[str]) -> dict[str, float]:
    """Macro citation precision / recall (recall over all gold papers, retrieved or not) of the answered questions
    of these types, the related list's gold share, and refusals."""
    chosen = [(p, o) for p, o in zip(pools, found, strict=True) if p.type in kinds]
    answered = [(p, o) for p, o in chosen if p.gold_count and not o.refused and o.cited]
    precision = [sum(p.labels[i] for i in o.cited) / len(o.cited) for p, o in answered]
    recall = [
        sum(p.labels[i] for i in o.cited) / p.gold_count if not o.refused else 0.0 for p, o in chosen if p.gold_count
    ]
    listed = [sum(p.labels[i] for i in o.cited | o.related) / p.gold_count for p, o in chosen if p.gold_count]
    named = [sum(p.labels[i] for i in o.cited | o.related) / len(o.cited | o.related) for p, o in answered]
    related = [i for p, o in chosen for i in o.related]
    related_gold = [p.labels[i] for p, o in chosen for i in o.related]
    return {
        "questions": len(chosen),
        "precision": statistics.fmean(precision) if precision else float("nan"),
        "recall": statistics.fmean(recall) if recall else float("nan"),
        "recall_with_related": statistics.fmean(listed) if listed else float("nan"),
        "named_precision": statistics.fmean(named) if named else float("nan"),
        "related_per_question": len(related) / len(chosen) if chosen else float("nan"),
        "related_gold_share": statistics.fmean(related_gold) if related_gold else float("nan"),
        "answerable_refused": sum(o.refused for p, o in chosen if p.gold_count),
        "unanswerable_refused": sum(o.refused for p, o in chosen if not p.gold_count),
    }


LISTS, SINGLES = ("topic", "compare"), ("fact", "method")


def choose(pools: list[Pool], probabilities: list[np.ndarray], base: AnswerSettings) -> AnswerSettings:
    """The thresholds, one after another, each on the dev set's cross-validated probabilities (see the module)."""

    def best(name: str, kinds: Sequence[str], bar: float | None, config: AnswerSettings) -> float:
        """With a ``bar``: the highest recall at precision >= bar (the lowest such threshold on a tie); without one:
        the best F1 of precision and recall."""
        scored = []
        for t in GRID:
            f = figures(pools, outcomes(pools, probabilities, config.model_copy(update={name: t})), kinds)
            f1 = 2 * f["precision"] * f["recall"] / (f["precision"] + f["recall"]) if f["recall"] else 0.0
            meets = bar is not None and f["precision"] >= bar
            scored.append((meets, f["recall"] if meets else f1, f["precision"], -t))
        return -max(scored)[3]

    config = base.model_copy(
        update={"gate_cover": 0.0, "gate_min_coverage": 0.0, "gate_related": 1.0, "stated_threshold": -1.0}
    )
    config = config.model_copy(update={"gate_list_cite": best("gate_list_cite", LISTS, None, config)})
    config = config.model_copy(update={"gate_cite": best("gate_cite", SINGLES, SINGLE_PRECISION, config)})

    def related_f1(t: float) -> float:
        """F1 of the papers a list answer names, cited and related together."""
        f = figures(pools, outcomes(pools, probabilities, config.model_copy(update={"gate_related": t})), LISTS)
        r, p = f["recall_with_related"], f["named_precision"]
        return 2 * r * p / (p + r) if r + p else 0.0

    cut = max((t for t in GRID if t < config.gate_list_cite), key=related_f1, default=config.gate_list_cite)
    config = config.model_copy(update={"gate_related": cut})

    def cover_score(t: float, extra: dict[str, float] | None = None) -> tuple[bool, int, float]:
        found = outcomes(pools, probabilities, config.model_copy(update={"gate_cover": t} | (extra or {})))
        answerable = sum(o.refused for p, o in zip(pools, found, strict=True) if p.gold_count)
        plain = sum(
            o.refused for p, o in zip(pools, found, strict=True) if p.type == "unanswerable" and not p.near_miss
        )
        return answerable <= 1, plain - answerable, -t

    cover = max(GRID, key=cover_score)
    config = config.model_copy(update={"gate_cover": cover})

    def coverage_score(t: float) -> tuple[bool, int, float]:
        return cover_score(config.gate_cover, {"gate_min_coverage": t})

    config = config.model_copy(update={"gate_min_coverage": max(GRID, key=coverage_score)})

    def stated_accuracy(t: float) -> float:
        found = outcomes(pools, probabilities, config.model_copy(update={"stated_threshold": t}))
        judged = [(p, o) for p, o in zip(pools, found, strict=True) if p.stated and (p.type in SINGLES or p.near_miss)]
        return statistics.fmean(o.refused == p.near_miss for p, o in judged) if judged else 0.0

    stated = [round(float(t), 3) for t in np.arange(0.2, 0.9, 0.01)]
    best = max(stated_accuracy(t) for t in stated)
    tied = [t for t in stated if stated_accuracy(t) == best]
    return config.model_copy(update={"stated_threshold": round((tied[0] + tied[-1]) / 2, 3)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=20, help="papers per question the gate sees")
    parser.add_argument("--scifact", type=int, default=250, help="SciFact train claims (0: none)")
    parser.add_argument("--pubmedqa", type=int, default=150, help="PubMedQA dev questions (0: none)")
    parser.add_argument("--bench-data", help="data folder of the benchmark collections (default: RAG_DATA_DIR's)")
    parser.add_argument("--fresh", action="store_true", help="recollect the candidates instead of reading the cache")
    args = parser.parse_args()
    settings = Settings()
    data = gather(settings, args)
    training = [p for name, pools in data.items() if name != "heldout" for p in pools]
    rows = {name: sum(len(p.labels) for p in pools) for name, pools in data.items()}
    weights = {name: rows["dev"] / rows[name] for name in data}
    folds = cross_validated(training, weights)
    dev = [i for i, p in enumerate(training) if p.source == "dev"]
    dev_pools, dev_p = [training[i] for i in dev], [folds[i] for i in dev]
    config = choose(dev_pools, dev_p, settings.answer)
    final = as_model(*fit(training, weights), "")
    final = replace(final, version=hashlib.sha256(json.dumps(final.to_json()).encode()).hexdigest()[:12])
    trained_on = {name: len(pools) for name, pools in data.items() if name != "heldout"}
    gate.MODEL_FILE.write_text(json.dumps(final.to_json() | {"trained_on": trained_on}, indent=1) + "\n")
    held = data["heldout"]
    held_p = [p.judged(final) for p in held]
    report(data, training, folds, dev_pools, dev_p, held, held_p, config, settings.answer, final)


def ranking_figures(pools: list[Pool], probabilities: list[np.ndarray]) -> tuple[float, float]:
    labels = np.concatenate([p.labels for p in pools])
    scores = np.concatenate(probabilities)
    return roc_auc_score(labels, scores), average_precision_score(labels, scores)


def report(
    data: dict[str, list[Pool]],
    training: list[Pool],
    folds: list[np.ndarray],
    dev_pools: list[Pool],
    dev_p: list[np.ndarray],
    held: list[Pool],
    held_p: list[np.ndarray],
    config: AnswerSettings,
    before: AnswerSettings,
    model: gate.RelevanceModel,
) -> None:
    names = ("gate_cover", "gate_min_coverage", "gate_cite", "gate_list_cite", "gate_related", "stated_threshold")
    lines = [
        "# The gate's relevance model",
        "",
        "Written by `eval/train_gate.py`. Pairs: each question's first papers of the default ranking, labelled by its "
        "gold papers. Figures for training questions are cross-validated (5 folds grouped by question): every "
        "probability comes from a model that did not see that question. The held-out set is scored by the final model "
        "and chose nothing.",
        "",
        "| source | questions | pairs | positives | AUC | average precision |",
        "|---|---|---|---|---|---|",
    ]
    for name in data:
        chosen = [i for i, p in enumerate(training) if p.source == name]
        pools = [training[i] for i in chosen] if name != "heldout" else held
        probabilities = [folds[i] for i in chosen] if name != "heldout" else held_p
        auc, ap = ranking_figures(pools, probabilities)
        label = f"{name} ({'final model' if name == 'heldout' else 'cross-validated'})"
        lines.append(
            f"| {label} | {len(pools)} | {sum(len(p.labels) for p in pools)} | "
            f"{sum(sum(p.labels) for p in pools)} | {auc:.3f} | {ap:.3f} |"
        )
    lines += [
        "",
        "## Thresholds (chosen on the dev set's cross-validated probabilities)",
        "",
        "| setting | chosen |",
        "|---|---|",
    ]
    lines += [f"| `answer.{n}` | {getattr(config, n)} |" for n in names]
    lines += [
        "",
        "## The gate's decisions with these thresholds",
        "",
        "On each question's ranking pool as collected (the answers' own figures are in eval/reports).",
        "",
        "| split | kinds | questions | precision | recall | recall with related | related per question | "
        "related gold share | answerable refused | unanswerable refused |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for split, pools, probabilities in (("dev (cross-validated)", dev_pools, dev_p), ("heldout", held, held_p)):
        found = outcomes(pools, probabilities, config)
        for kinds in (LISTS, SINGLES, ("unanswerable",)):
            f = figures(pools, found, kinds)
            lines.append(
                f"| {split} | {', '.join(kinds)} | {f['questions']} | {f['precision']:.3f} | {f['recall']:.3f} | "
                f"{f['recall_with_related']:.3f} | {f['related_per_question']:.2f} | {f['related_gold_share']:.3f} | "
                f"{f['answerable_refused']} | {f['unanswerable_refused']} |"
            )
    lines += ["", "## Model", "", "| feature | weight (standardised) |", "|---|---|"]
    lines += [f"| {n} | {w:+.3f} |" for n, w in zip(model.features, model.coef, strict=True)]
    lines += ["", f"Version `{model.version}`.", "", "![precision-recall of list questions](gate_pr.png)"]
    plot(dev_pools, dev_p, held, held_p, config)
    (RESULTS / "gate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("\nSet in config/default.toml [answer]: " + ", ".join(f"{n} = {getattr(config, n)}" for n in names))


def plot(
    dev: list[Pool], dev_p: list[np.ndarray], held: list[Pool], held_p: list[np.ndarray], config: AnswerSettings
) -> None:
    """Precision against recall of list questions' citations as ``gate_list_cite`` moves, dev and held-out."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, pools, probabilities in (("dev (cross-validated)", dev, dev_p), ("held-out", held, held_p)):
        points = []
        for t in GRID:
            f = figures(pools, outcomes(pools, probabilities, config.model_copy(update={"gate_list_cite": t})), LISTS)
            points.append((f["recall"], f["precision"]))
        ax.plot(*zip(*points, strict=True), marker=".", label=label)
        f = figures(pools, outcomes(pools, probabilities, config), LISTS)
        ax.scatter([f["recall"]], [f["precision"]], s=80, zorder=3)
    ax.axhline(LIST_PRECISION, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="citation recall (topic + compare)", ylabel="citation precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title("Gate on list questions, as gate_list_cite moves (dot: chosen)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "gate_pr.png", dpi=110)


if __name__ == "__main__":
    main()
