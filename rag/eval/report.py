"""Report rendering: Markdown tables and PNG plots of an eval's results, and the CLI's tables. No measuring here."""

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

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


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        if value is None:
            return "—"
        return f"{value:.3g}" if isinstance(value, float) else str(value)  # 0.734, 34.5 ms, 413 tokens

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


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
        lines += ["## Answers: yes / no / maybe", ""]
        rows = [[f"{m} ({r['model'] or 'no model'})", r["accuracy"], r["macro_f1"], r["latency_s_p50"]]
                for m, r in scored.items()]  # fmt: skip
        rows += [[f"published: {who}", f["accuracy"], None, None] for who, f in results["published"].items()]
        lines += _table(["answer mode", "accuracy", "macro-F1", "p50 s"], rows)
    elif scored:
        lines += ["## Answers", ""]
        lines += _table(["answer mode", "model", *ANSWER_COLUMNS], [
            [mode, r["model"], *(r.get(c) for c in ANSWER_COLUMNS)] for mode, r in scored.items()
        ])  # fmt: skip
        lines += [
            "",
            "Support: for each cited answer sentence, the share of its content words (lower-cased, stopwords out) "
            "found in the title and quoted sentences of the sources it cites; `support_p50` is the median over "
            "cited sentences. Cited-sentence share: answer sentences with a valid citation over all the model wrote "
            "(dropped unsupported sentences included).",
        ]
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
    """`rag eval answers` as a Markdown table, one row per answer mode (a skipped mode says why)."""
    scored = {mode: r for mode, r in report.items() if "skipped" not in r}
    keys = [key for key in next(iter(scored.values()), {}) if key not in ("provider", "model", "fingerprint")]
    lines = ["| provider | model | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    lines += [
        f"| {mode} | {r['model'] or '—'} | " + " | ".join(str(r[k]) for k in keys) + " |" for mode, r in scored.items()
    ]
    lines += [f"{mode}: skipped ({r['skipped']})" for mode, r in report.items() if "skipped" in r]
    return "\n".join(lines)
