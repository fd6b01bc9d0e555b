"""Report rendering: Markdown tables and PNG plots of an eval's results, and the CLI's tables. No measuring here."""

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from rag.eval.metrics import GROUPS

RETRIEVAL_COLUMNS = ["recall@1", "recall@5", "recall@10", "recall@100", "mrr@10", "ndcg@10"]
ANSWER_COLUMNS = [
    "citation_precision",
    "citation_recall",
    "key_fact_recall",
    "refusal_accuracy",
    "cited_sentence_share",
    "support_p50",
    "evidence_s_p50",
    "first_token_s_p50",
    "answer_s_p50",
    "prompt_tokens_p50",
]


EVIDENCE_COLUMNS = ["citation_precision", "citation_recall", "key_fact_recall", "refusal_accuracy"]
SYNTHESIS_COLUMNS = [
    "answers",
    "sentences",
    "citation_precision",
    "citation_recall",
    "key_fact_recall",
    "dropped_share",
    "unsupported_terms",
]
BY_TYPE_COLUMNS = [  # (group, metric, header)
    ("evidence", "citation_recall", "evidence R"),
    ("answer", "citation_precision", "answer P"),
    ("answer", "citation_recall", "answer R"),
    ("answer", "key_fact_recall", "answer facts"),
    ("synthesis", "citation_precision", "synthesis P"),
    ("synthesis", "citation_recall", "synthesis R"),
    ("synthesis", "key_fact_recall", "synthesis facts"),
    ("answer", "refusal_accuracy", "refusal"),
]
LISTED_TERMS = 10  # unsupported-term sentences shown per mode; results.json holds them all


def answer_tables(scored: dict[str, dict[str, Any]]) -> list[str]:
    """The grounded-answer section: evidence, answer and synthesis tables per mode, the per-type table, the
    near-miss and refusal line per mode, and the synthesis sentences that carry unsupported numbers or names."""
    lines = ["### Evidence: what the gate admitted and quoted", ""]
    lines += _table(["answer mode", *EVIDENCE_COLUMNS], [
        [mode, *(r["evidence"].get(c) for c in EVIDENCE_COLUMNS)] for mode, r in scored.items()
    ])  # fmt: skip
    lines += ["", "### Answer: the text and citations the user sees", ""]
    lines += _table(["answer mode", "model", *ANSWER_COLUMNS], [
        [mode, r["model"], *(r.get(c) for c in ANSWER_COLUMNS)] for mode, r in scored.items()
    ])  # fmt: skip
    lines += [
        "",
        "Support: for each cited answer sentence, the share of its content words (lower-cased, stopwords out) "
        "found in the title and quoted sentences of the sources it cites; `support_p50` is the median over "
        "cited sentences. Cited-sentence share: answer sentences with a valid citation over all the model wrote "
        "(dropped unsupported sentences included).",
        "",
        "### Synthesis: the model's own verified sentences only",
        "",
    ]
    lines += _table(["answer mode", *SYNTHESIS_COLUMNS], [
        [mode, *(r["synthesis"].get(c) for c in SYNTHESIS_COLUMNS)] for mode, r in scored.items()
    ])  # fmt: skip
    lines += [
        "",
        "`answers`: answers the model was asked to write (refusals and evidence-only modes ask none); the citation "
        "and key-fact figures are over those with gold papers. `dropped_share`: the model's sentences dropped as "
        "unsupported over all it wrote. `unsupported_terms`: numbers and names in verified sentences that none of "
        "their cited sources (title and full abstract) contains; the target is 0.",
        "",
    ]
    for mode, r in scored.items():
        found = r["synthesis"]["unsupported_term_sentences"]
        lines += [
            f"- {mode} `{f['id']}`: {f['sentence']!r} lacks {', '.join(f['missing'])}" for f in found[:LISTED_TERMS]
        ]
        if len(found) > LISTED_TERMS:
            lines.append(f"- {mode}: {len(found) - LISTED_TERMS} more in results.json")
    kinds = sorted({kind for r in scored.values() for kind in r["by_type"]})
    lines += ["", "### Per question type", ""]
    lines += _table(["answer mode", "type", "n", *(header for _, _, header in BY_TYPE_COLUMNS)], [
        [mode, kind, r["by_type"][kind]["questions"],
         *(r["by_type"][kind][group].get(metric) for group, metric, _ in BY_TYPE_COLUMNS)]
        for mode, r in scored.items() for kind in kinds if kind in r["by_type"]
    ])  # fmt: skip
    lines += ["", "P / R: citation precision / recall; facts: key-fact recall.", ""]
    lines += [near_miss_line(mode, r["refusals"]) for mode, r in scored.items()]
    return lines


def near_miss_line(mode: str, refusals: dict[str, Any]) -> str:
    near_miss = (
        f'near-miss questions ({refusals["near_miss"]}) answered "not stated" '
        f"{_cell(refusals['not_stated_accuracy'])}, an on-topic paper among the nearest "
        f"{_cell(refusals['nearest_on_topic'])}"
        if refusals["near_miss"]
        else "no near-miss questions"
    )
    return (
        f"- {mode}: {near_miss}; refusal accuracy:"
        f" near-miss {_cell(refusals['refusal_accuracy_near_miss'])}"
        f" · plain unanswerable {_cell(refusals['refusal_accuracy_unanswerable'])}"
        f" · answerable {_cell(refusals['refusal_accuracy_answerable'])}"
    )


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.3g}" if isinstance(value, float) else str(value)  # 0.734, 34.5 ms, 413 tokens


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]


STRONGER_MODEL = (
    "RAG_LLM__PROVIDER=openai RAG_OPENAI__BASE_URL=http://HOST:PORT/v1 RAG_OPENAI__CHAT_MODEL=MODEL "
    "OPENAI_API_KEY=KEY .venv/bin/rag eval run pubmedqa --provider openai --provider none"
)


def verdict_tables(scored: dict[str, dict[str, Any]], published: dict[str, dict[str, float]]) -> list[str]:
    """PubMedQA's section: test figures with and without the dev-fitted calibration beside the published ones, the
    calibration, the dev figures, how verdicts were reached, and what the bundled models' figures mean."""

    def spread(counts: dict[str, int]) -> str:
        return " / ".join(str(counts[label]) for label in ("yes", "no", "maybe"))

    rows = []
    for mode, r in scored.items():
        who = f"{mode} ({r['model'] or 'no model'})"
        if r.get("calibration"):
            rows.append([f"{who}, calibrated on dev", r["accuracy"], r["macro_f1"], spread(r["predicted"]),
                         r["latency_s_p50"], r["prompt_tokens_p50"]])  # fmt: skip
        uncalibrated = r.get("uncalibrated", r)
        label = f"{who}, raw log-probabilities" if r.get("calibration") else who
        rows.append([label, uncalibrated["accuracy"], uncalibrated["macro_f1"], spread(uncalibrated["predicted"]),
                     r["latency_s_p50"], r["prompt_tokens_p50"]])  # fmt: skip
    rows += [[f"published: {who}", f["accuracy"], f.get("macro_f1"), None, None, None] for who, f in published.items()]
    header = ["answer mode", "accuracy", "macro-F1", "predicted yes / no / maybe", "p50 s", "prompt tokens p50"]
    lines = _table(header, rows)
    first = next(iter(scored.values()))
    if first.get("gold"):
        lines += ["", f"Gold answers in this test split: yes / no / maybe {spread(first['gold'])}."]
    lines += [
        "",
        "Verdicts are read from the log-probabilities of the words yes, no and maybe as the judge's first token, "
        "after the top retrieved study's quoted sentences and the question. Calibrated: the log-probabilities are "
        "scaled and shifted per class, with the scale and biases fitted by maximum likelihood on PubMedQA's dev "
        "split only (never on test), and the likeliest class wins.",
        "",
    ]
    for mode, r in scored.items():
        if "dev" not in r:
            continue
        dev = r["dev"]
        fitted = r["calibration"]
        biases = "no calibration (no log-probabilities)"
        if fitted:
            shifts = ", ".join(f"{label} {value:+.3g}" for label, value in fitted["biases"].items())
            biases = f"scale {fitted['scale']:.3g}, biases {shifts}"
        judges = ", ".join(f"{judge} {count}" for judge, count in r["judges"].items())
        own = r.get("evidence_own_abstract")
        lines.append(
            f"- {mode}: {biases}; dev ({dev['questions']} questions) accuracy "
            f"{dev['uncalibrated']['accuracy']:.3g} → {dev['calibrated']['accuracy']:.3g}, macro-F1 "
            f"{dev['uncalibrated']['macro_f1']:.3g} → {dev['calibrated']['macro_f1']:.3g}; verdicts by {judges}"
            + (f"; evidence from the question's own abstract for {own:.3g} of test questions" if own else "")
        )
        lines += [f"  - note: {note}" for note in r["notes"]]
    local, majority = scored.get("local"), scored.get("none")
    lines += [""]
    if local and majority:
        lines.append(
            f"**The bundled local model ({local['model']}) carries little signal here**: calibrated, it scores "
            f"accuracy {local['accuracy']:.3g} and macro-F1 {local['macro_f1']:.3g} on test, against "
            f"{majority['accuracy']:.3g} and {majority['macro_f1']:.3g} for always answering yes, and far below "
            "BioBERT and a single human. Calibration keeps its verdicts near that baseline instead of below it; it "
            "cannot add the biomedical judgement a small coding model lacks, so do not trust its yes / no verdicts."
        )
    lines += [
        "",
        "To measure a stronger model, point the suite at any OpenAI-compatible server that returns `logprobs` "
        "(vLLM, llama.cpp's server, OpenAI); a server without them is judged by the word it writes, and the notes "
        "above say so:",
        "",
        f"    {STRONGER_MODEL}",
    ]
    return lines


def write_report(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plots = plot(results, out)
    retrieval = results["retrieval"]
    lines = [
        f"# Eval report: {results['suite']}",
        "",
        results["description"],
        "",
        f"{results['questions']} questions ({', '.join(f'{k} {v}' for k, v in results['by_type'].items())}) · "
        f"commit `{results['git_commit']}` · code `{results['code_version']}` · index `{results['index_version']}` · "
        f"{results['created']} · {results['elapsed_s']} s",
        "",
        "## Retrieval",
        "",
        *_table(
            ["retriever", *RETRIEVAL_COLUMNS, "p50 ms", "p95 ms", "published nDCG@10"],
            [
                [
                    mode,
                    *(r[c] for c in RETRIEVAL_COLUMNS),
                    r["latency_p50_ms"],
                    r["latency_p95_ms"],
                    results["published"].get(mode, {}).get("ndcg@10"),
                ]
                for mode, r in retrieval.items()
            ],
        ),
        "",
    ]
    kinds = sorted({kind for r in retrieval.values() for kind in r["by_type"]})
    if len(kinds) > 1:
        lines += ["nDCG@10 per question type:", ""]
        lines += _table(
            ["retriever", *(f"{k} ({retrieval['hybrid']['by_type'][k]['questions']})" for k in kinds)],
            [[mode, *(r["by_type"].get(k, {}).get("ndcg@10") for k in kinds)] for mode, r in retrieval.items()],
        )
        lines.append("")
    answers = results.get("answers", {})
    scored = {mode: r for mode, r in answers.items() if "skipped" not in r}
    if scored and "accuracy" in next(iter(scored.values())):
        lines += ["## Answers: yes / no / maybe", "", *verdict_tables(scored, results["published"])]
    elif scored:
        lines += ["## Answers", "", *answer_tables(scored)]
    for mode, r in answers.items():
        if "skipped" in r:
            lines.append(f"\n{mode}: skipped ({r['skipped']})")
    lines += ["", "## Plots", "", *(f"![{path.stem}]({path.name})" for path in plots), ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    """The report's figures; each is also linked from report.md."""
    written = []
    retrieval = results["retrieval"]

    figure, axis = plt.subplots(figsize=(6, 4))
    for mode, r in retrieval.items():
        axis.plot([int(k) for k in r["curve"]], list(r["curve"].values()), marker="o", label=mode)
    axis.set(xscale="log", xlabel="k (papers)", ylabel="recall@k", title=f"{results['suite']}: recall@k", ylim=(0, 1))
    axis.grid(alpha=0.3)
    axis.legend()
    written.append(_save(figure, out / "recall_at_k.png"))

    kinds = sorted({kind for r in retrieval.values() for kind in r["by_type"]})
    if kinds:
        figure, axis = plt.subplots(figsize=(7, 4))
        width = 0.8 / len(retrieval)
        for i, (mode, r) in enumerate(retrieval.items()):
            values = [r["by_type"].get(k, {}).get("ndcg@10", 0) for k in kinds]
            axis.bar([x + i * width for x in range(len(kinds))], values, width, label=mode)
        axis.set_xticks([x + width * (len(retrieval) - 1) / 2 for x in range(len(kinds))], kinds)
        axis.set(ylabel="nDCG@10", title=f"{results['suite']}: nDCG@10 per question type", ylim=(0, 1))
        axis.legend()
        written.append(_save(figure, out / "by_type.png"))

    figure, axis = plt.subplots(figsize=(6, 4))
    for mode, r in retrieval.items():
        axis.hist(r["latencies_ms"], bins=30, alpha=0.5, label=f"{mode} (p50 {r['latency_p50_ms']} ms)")
    axis.set(xlabel="search latency (ms)", ylabel="questions", title=f"{results['suite']}: retrieval latency")
    axis.legend()
    written.append(_save(figure, out / "retrieval_latency.png"))

    answers = {m: r for m, r in results.get("answers", {}).items() if "skipped" not in r}
    if answers and "latencies_s" in next(iter(answers.values())):
        figure, axes = plt.subplots(1, 2, figsize=(11, 4))
        metrics = ["citation_precision", "citation_recall", "key_fact_recall", "refusal_accuracy",
                   "cited_sentence_share"]  # fmt: skip
        width = 0.8 / len(answers)
        for i, (mode, r) in enumerate(answers.items()):
            axes[0].bar([x + i * width for x in range(len(metrics))], [r[m] or 0 for m in metrics], width, label=mode)
        axes[0].set_xticks([x + width * (len(answers) - 1) / 2 for x in range(len(metrics))],
                           [m.replace("_", "\n") for m in metrics], fontsize=8)  # fmt: skip
        axes[0].set(ylim=(0, 1), title="answer metrics per mode")
        axes[0].legend()
        for mode, r in answers.items():
            axes[1].hist(r["latencies_s"]["total"], bins=20, alpha=0.5, label=f"{mode}: whole answer")
            if r["latencies_s"]["first_token"] and r["model"]:
                axes[1].hist(r["latencies_s"]["first_token"], bins=20, alpha=0.5, label=f"{mode}: first token")
        axes[1].set(xlabel="seconds", ylabel="questions", title="answer latency")
        axes[1].legend()
        written.append(_save(figure, out / "answers.png"))
        written += answer_plots(results["suite"], answers, out)
    elif answers:
        figure, axis = plt.subplots(figsize=(6, 4))
        names = [*(f"{m}\n({r['model'] or 'no model'})" for m, r in answers.items()), *results["published"]]
        values = [*(r["accuracy"] for r in answers.values()), *(f["accuracy"] for f in results["published"].values())]
        colours = ["tab:blue"] * len(answers) + ["tab:grey"] * len(results["published"])
        axis.bar(names, values, color=colours)
        axis.set(ylim=(0, 1), ylabel="accuracy", title="PubMedQA test: ours (blue) and published (grey)")
        axis.tick_params(axis="x", labelsize=8)
        written.append(_save(figure, out / "pubmedqa_accuracy.png"))
    return written


def _grouped_bars(axis: Any, labels: list[str], series: dict[str, list[float | None]]) -> None:
    """Bars per label, one per series side by side, each marked with its value ("n/a": nothing to score)."""
    width = 0.8 / len(series)
    centre = width * (len(series) - 1) / 2
    for i, (name, values) in enumerate(series.items()):
        heights = [v or 0.0 for v in values]
        bars = axis.bar([x + i * width for x in range(len(labels))], heights, width, label=name)
        axis.bar_label(bars, ["n/a" if v is None else f"{v:.2f}" for v in values], fontsize=7)
    axis.set_xticks([x + centre for x in range(len(labels))], labels, fontsize=8)
    axis.set(xlim=(centre - 0.6, len(labels) - 0.4 + centre), ylim=(0, 1.05))
    axis.grid(axis="y", alpha=0.3)


def answer_plots(suite: str, answers: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    """Citation recall per question type for each group, modes side by side, and refusals by kind of question."""
    kinds = sorted({k for r in answers.values() for k, v in r["by_type"].items() if v["answer"]["citation_recall"]
                    is not None})  # fmt: skip
    figure, axes = plt.subplots(1, len(GROUPS), figsize=(4.5 * len(GROUPS), 4), sharey=True)
    for axis, group in zip(axes, GROUPS, strict=True):
        series = {mode: [r["by_type"][k][group]["citation_recall"] if k in r["by_type"] else None for k in kinds]
                  for mode, r in answers.items()}  # fmt: skip
        _grouped_bars(axis, kinds, series)
        axis.set_title(f"{group} citation recall")
    axes[0].set_ylabel("gold papers cited")
    axes[0].legend()
    figure.suptitle(f"{suite}: citation recall per question type")
    written = [_save(figure, out / "citation_recall_by_type.png")]

    bars = {
        'near-miss:\n"not stated"': "not_stated_accuracy",
        "near-miss:\nrefused": "refusal_accuracy_near_miss",
        "unanswerable:\nrefused": "refusal_accuracy_unanswerable",
        "answerable:\nanswered": "refusal_accuracy_answerable",
    }
    figure, axis = plt.subplots(figsize=(7, 4))
    _grouped_bars(
        axis, list(bars), {mode: [r["refusals"][key] for key in bars.values()] for mode, r in answers.items()}
    )
    axis.set(ylabel="share right", title=f"{suite}: refusals by kind of question")
    axis.legend()
    written.append(_save(figure, out / "refusals.png"))
    return written


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def format_retrieval(report: dict[str, Any]) -> str:
    """`rag eval retrieval` as a Markdown table, one row per retriever and per retriever × question type."""
    metrics = [key for key in next(iter(report.values())) if "@" in key]
    lines = ["| retriever | type | n | " + " | ".join(metrics) + " | p50 ms |"]
    lines.append("|" + "---|" * (len(metrics) + 4))
    for mode, result in report.items():
        rows = [("all", result), *result["by_type"].items()]
        for kind, scores in rows:
            values = " | ".join(f"{scores[m]:.3f}" for m in metrics)
            latency = result["latency_p50_ms"] if kind == "all" else ""
            lines.append(f"| {mode} | {kind} | {scores['questions']} | {values} | {latency} |")
    return "\n".join(lines)


def format_answers(report: dict[str, Any]) -> str:
    """`rag eval answers` as Markdown: a row of every figure per answer mode (a skipped mode says why), then the
    report's evidence / answer / synthesis, per-type and near-miss tables."""
    scored = {mode: r for mode, r in report.items() if "skipped" not in r}
    keys = [key for key, value in next(iter(scored.values()), {}).items()
            if key not in ("provider", "model", "fingerprint") and not isinstance(value, dict | list)]  # fmt: skip
    lines = ["| provider | model | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    lines += [
        f"| {mode} | {r['model'] or '—'} | " + " | ".join(str(r[k]) for k in keys) + " |" for mode, r in scored.items()
    ]
    lines += [f"{mode}: skipped ({r['skipped']})" for mode, r in report.items() if "skipped" in r]
    if scored:
        lines += ["", *answer_tables(scored)]
    return "\n".join(lines)
