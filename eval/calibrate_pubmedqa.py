"""Choose how PubMedQA's verdicts are calibrated, on the dev split only: the product's maximum-likelihood fit
(rag.eval.runners.fit_calibration: one scale and per-class biases) against per-class biases found by grid search
for the best dev accuracy, the best macro-F1, or the best macro-F1 among those at least as accurate as the majority
class, and against likelihood biases without the scale.

Reads the dev records that `rag eval run pubmedqa` cached (each holds the judge's log-probabilities of yes / no /
maybe), so no model runs here. Each method is fitted on a random half of the dev questions and scored on the other
half, both ways, over many random splits: what it would score on questions it was not fitted on. Writes
eval/results/pubmedqa_calibration.md.
Usage: .venv/bin/python eval/calibrate_pubmedqa.py [--provider local] [--splits 20]
"""

import argparse
import json
from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from rag.eval.datasets import load_yes_no_maybe
from rag.eval.metrics import YES_NO_MAYBE, yes_no_maybe_scores
from rag.eval.runners import Calibration, fit_calibration
from rag.settings import PROJECT_DIR, Settings

GRID = 60  # bias values per class for the grid searches, spread over the quantiles of the margins to "yes"
Fit = Callable[[np.ndarray, np.ndarray], Calibration]


def as_calibration(scale: float, no: float, maybe: float) -> Calibration:
    return Calibration(scale, {"yes": 0.0, "no": no, "maybe": maybe})


def likelihood_biases(scores: np.ndarray, truth: np.ndarray) -> Calibration:
    """The likelihood fit with the scale held at 1: biases alone."""

    def loss(biases: np.ndarray) -> float:
        shifted = scores + np.array([0.0, *biases])
        return float(-log_softmax(shifted, axis=1)[np.arange(len(truth)), truth].mean())

    no, maybe = minimize(loss, np.zeros(2), method="L-BFGS-B", bounds=[(-20, 20)] * 2).x
    return as_calibration(1.0, float(no), float(maybe))


def grid_search(objective: str) -> Fit:
    """Biases that maximise an objective on the fitting half (ties: the middle of the tied points)."""

    def fit(scores: np.ndarray, truth: np.ndarray) -> Calibration:
        grids = [np.quantile(scores[:, 0] - scores[:, c], np.linspace(0, 1, GRID)) for c in (1, 2)]
        floor = np.bincount(truth, minlength=3).max() / len(truth)
        points, values = [], []
        for no in grids[0]:
            for maybe in grids[1]:
                predicted = (scores + np.array([0.0, no + 1e-9, maybe + 1e-9])).argmax(axis=1)
                accuracy = float((predicted == truth).mean())
                f1 = yes_no_maybe_scores([YES_NO_MAYBE[t] for t in truth], [YES_NO_MAYBE[p] for p in predicted])
                macro = f1["macro_f1"]
                floored = macro if accuracy >= floor else -1.0
                value = {"accuracy": (accuracy, macro), "macro-F1": (macro, accuracy),
                         "macro-F1, accuracy >= majority": (floored, accuracy)}  # fmt: skip
                points.append((float(no), float(maybe)))
                values.append(value[objective])
        best = max(values)
        tied = np.array([point for point, value in zip(points, values, strict=True) if value == best])
        no, maybe = tied[np.argmin(np.linalg.norm(tied - tied.mean(axis=0), axis=1))]
        return as_calibration(1.0, float(no), float(maybe))

    return fit


METHODS: dict[str, Fit] = {
    "likelihood: scale and biases (the product's)": lambda scores, truth: fit_calibration(
        [dict(zip(YES_NO_MAYBE, row, strict=True)) for row in scores.tolist()], [YES_NO_MAYBE[t] for t in truth]
    ),
    "likelihood: biases only": likelihood_biases,
    "grid search: best accuracy": grid_search("accuracy"),
    "grid search: best macro-F1": grid_search("macro-F1"),
    "grid search: best macro-F1 at accuracy >= majority": grid_search("macro-F1, accuracy >= majority"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", default="local")
    parser.add_argument("--splits", type=int, default=20)
    args = parser.parse_args()
    settings = Settings()
    cache = settings.reports_path / "pubmedqa" / "cache" / f"answers-{args.provider}-dev.jsonl"
    labels = load_yes_no_maybe(settings.benchmarks_path / "pubmedqa", "dev")
    records = [json.loads(line) for line in cache.read_text(encoding="utf-8").splitlines()[1:]]
    records = [r for r in records if r.get("logprobs")]
    scores = np.array([[r["logprobs"][label] for label in YES_NO_MAYBE] for r in records])
    truth = np.array([YES_NO_MAYBE.index(labels[r["id"]]) for r in records])
    rng = np.random.default_rng(0)
    found: dict[str, list[tuple[float, float, int, int]]] = {name: [] for name in METHODS}
    for _ in range(args.splits):
        order = rng.permutation(len(truth))
        halves = order[: len(order) // 2], order[len(order) // 2 :]
        for fit_on, score_on in (halves, halves[::-1]):
            majority = np.bincount(truth[score_on], minlength=3).max() / len(score_on)
            gold = [YES_NO_MAYBE[t] for t in truth[score_on]]
            for name, method in METHODS.items():
                calibration = method(scores[fit_on], truth[fit_on])
                predicted = [calibration.verdict(dict(zip(YES_NO_MAYBE, row, strict=True))) for row in scores[score_on]]
                result = yes_no_maybe_scores(gold, predicted)
                found[name].append((result["accuracy"] - majority, result["macro_f1"],
                                    result["predicted"]["no"], result["predicted"]["maybe"]))  # fmt: skip
    whole = fit_calibration([r["logprobs"] for r in records], [labels[r["id"]] for r in records]).as_json()
    lines = [
        "# PubMedQA: how the verdicts are calibrated (dev split only)",
        "",
        f"{len(records)} dev questions judged by `{args.provider}` (records cached by `rag eval run pubmedqa`); each "
        f"method fitted on a random half and scored on the other half, both ways, over {args.splits} splits. "
        "Accuracy is shown as the difference to the majority class of the scored half.",
        "",
        "| method | accuracy − majority (mean) | worst | macro-F1 (mean) | predicted no / maybe (per half) |",
        "|---|---|---|---|---|",
    ]
    for name, rows in found.items():
        values = np.array(rows)
        lines.append(f"| {name} | {values[:, 0].mean():+.3f} | {values[:, 0].min():+.3f} | {values[:, 1].mean():.3f} "
                     f"| {values[:, 2].mean():.0f} / {values[:, 3].mean():.0f} |")  # fmt: skip
    lines += ["", f"Fitted on the whole dev split (what the suite applies to test): {whole}.", ""]
    out = PROJECT_DIR / "eval" / "results" / "pubmedqa_calibration.md"
    out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
