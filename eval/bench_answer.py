"""Answer latency through the API, against the bare model's own time for a prompt of the same length, in one run.

Starts `rag serve` (default settings: the local model) on a free loopback port and asks every question of the set
with the official `openai` client, streamed, one at a time, timing from the request to:
  * the first chunk (the response begins: the assistant's role);
  * the first cited sentence (the first piece of answer text: a verified sentence, or a refusal's text);
  * the whole answer (the last chunk).
Then, with the server idle, the bare model (llama.cpp in this process, the same GGUF and threads) prefills a
--prompt-tokens prompt from nothing and writes 25 tokens, --baseline-runs times: the medians of the answer times over
that baseline are the ratios a regression shows in. Writes eval/results/answer_latency.{md,json,png}.
Usage: .venv/bin/python eval/bench_answer.py [--suite heldout] [--prompt-tokens 450] [--baseline-runs 5]
"""

import argparse
import json
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib
import openai

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from serving import start_serve

from rag.eval.datasets import load_question_set
from rag.eval.metrics import percentile
from rag.model_files import verified_model
from rag.settings import PROJECT_DIR, Settings

RESULTS = PROJECT_DIR / "eval" / "results"
WRITTEN_TOKENS = 25
# The bars (issue 21), as ratios of the bare model's time: first cited sentence and whole answer, per kind.
TARGETS = {("fact", "first_cited_s"): 0.6, ("fact", "answer_s"): 1.0, ("topic", "first_cited_s"): 0.8}
KINDS = {"fact": "fact", "method": "fact", "topic": "topic", "compare": "compare", "unanswerable": "unanswerable"}
LABELS = {"fact": "fact + method", "topic": '"which papers"', "compare": "compare", "unanswerable": "unanswerable"}


def timed_answer(api: openai.OpenAI, question: str) -> dict[str, float]:
    started = time.perf_counter()
    times: dict[str, float] = {}
    stream = api.chat.completions.create(model="rag", messages=[{"role": "user", "content": question}], stream=True)
    for chunk in stream:
        now = time.perf_counter() - started
        times.setdefault("first_chunk_s", now)
        if chunk.choices and chunk.choices[0].delta.content:
            times.setdefault("first_cited_s", now)
    times["answer_s"] = time.perf_counter() - started
    times.setdefault("first_cited_s", times["answer_s"])
    return times


def api_times(suite: str) -> dict[str, list[dict[str, float]]]:
    """Each question's times, by kind (fact and method questions together), through a fresh `rag serve`."""
    questions = load_question_set(PROJECT_DIR / "eval" / "datasets" / f"{suite}.jsonl")
    process, url = start_serve({"RAG_LLM__PROVIDER": "local"})
    try:
        api = openai.OpenAI(base_url=f"{url}/v1", api_key=os.environ.get("RAG_API_KEY") or "unset", timeout=300)
        timed_answer(api, "How does KDEformer approximate attention?")  # the first request after start-up
        by_kind: dict[str, list[dict[str, float]]] = defaultdict(list)
        for number, question in enumerate(questions, 1):
            times = timed_answer(api, question.text)
            by_kind[KINDS[question.type]].append(times)
            print(f"{number}/{len(questions)} {question.type:12} " + " ".join(f"{k} {v:.2f}" for k, v in times.items()))
        return by_kind
    finally:
        process.terminate()
        process.wait(timeout=60)


def bare_model_s(prompt_tokens: int, runs: int) -> list[float]:
    """Seconds for the bare model to prefill ``prompt_tokens`` tokens of a real answer prompt from nothing (its state
    reset) and write 25 tokens."""
    from llama_cpp import Llama

    settings = Settings()
    llama = Llama(
        model_path=str(verified_model(settings.models_path, settings.llm.local_model)),
        n_ctx=settings.llm.context_tokens,
        n_threads=settings.llm.threads or os.cpu_count(),
        seed=settings.llm.seed,
        verbose=False,
    )
    text = (PROJECT_DIR / "README.md").read_text()  # any real prose, cut to the length asked
    tokens = llama.tokenize(text.encode(), add_bos=False)[:prompt_tokens]
    assert len(tokens) == prompt_tokens
    seconds = []
    for _ in range(runs):
        llama.reset()
        started = time.perf_counter()
        for written, _token in enumerate(llama.generate(tokens, temp=settings.llm.temperature), 1):
            if written == WRITTEN_TOKENS:
                break
        seconds.append(time.perf_counter() - started)
    return seconds


def summary(by_kind: dict[str, list[dict[str, float]]], baseline_s: float) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    for kind, rows in by_kind.items():
        entry: dict[str, Any] = {"n": len(rows)}
        for measure in ("first_chunk_s", "first_cited_s", "answer_s"):
            values = [row[measure] for row in rows]
            p50 = statistics.median(values)
            entry[measure] = {"p50": round(p50, 2), "p95": round(percentile(values, 95), 2),
                              "ratio_p50": round(p50 / baseline_s, 2)}  # fmt: skip
        result[kind] = entry
    return result


def report(result: dict[str, dict[str, Any]], baseline: list[float], prompt_tokens: int, suite: str) -> str:
    base = statistics.median(baseline)
    lines = [
        f"# Answer latency through the API ({suite} questions, streamed, official `openai` client)",
        "",
        f"Baseline, measured in the same run: the bare model prefilling a {prompt_tokens}-token prompt from nothing "
        f"and writing {WRITTEN_TOKENS} tokens: **{base:.2f} s** (median of {len(baseline)}: "
        + ", ".join(f"{s:.2f}" for s in baseline) + ").",
        "",
        "| kind | n | first chunk p50 | first cited sentence p50 / p95 (× base) | whole answer p50 / p95 (× base) |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    for kind in LABELS:
        if kind not in result:
            continue
        entry = result[kind]
        first, whole = entry["first_cited_s"], entry["answer_s"]
        lines.append(
            f"| {LABELS[kind]} | {entry['n']} | {entry['first_chunk_s']['p50']:.2f} s | "
            f"{first['p50']:.2f} / {first['p95']:.2f} s ({first['ratio_p50']:.2f}×) | "
            f"{whole['p50']:.2f} / {whole['p95']:.2f} s ({whole['ratio_p50']:.2f}×) |"
        )
    lines += ["", "| target (p50 over baseline) | bar | measured | |", "|---|---|---|---|"]
    for (kind, measure), bar in TARGETS.items():
        ratio = result[kind][measure]["ratio_p50"]
        what = "first cited sentence" if measure == "first_cited_s" else "whole answer"
        lines.append(f"| {LABELS[kind]}: {what} | ≤ {bar}× | {ratio:.2f}× | {'met' if ratio <= bar else 'missed'} |")
    return "\n".join(lines) + "\n"


def plot(by_kind: dict[str, list[dict[str, float]]], baseline_s: float, out: Path) -> None:
    kinds = [kind for kind in LABELS if kind in by_kind]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    panels = (("first_cited_s", "first cited sentence"), ("answer_s", "whole answer"))
    for axis, (measure, title) in zip(axes, panels, strict=True):
        values = [[row[measure] for row in by_kind[kind]] for kind in kinds]
        axis.boxplot(values, tick_labels=[LABELS[kind] for kind in kinds])
        axis.axhline(baseline_s, color="tab:red", linestyle="--", label="bare model: prefill + 25 tokens")
        axis.set_title(title)
        axis.set_ylabel("seconds")
    axes[0].legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="heldout")
    parser.add_argument("--prompt-tokens", type=int, default=450)
    parser.add_argument("--baseline-runs", type=int, default=5)
    args = parser.parse_args()
    by_kind = api_times(args.suite)
    baseline = bare_model_s(args.prompt_tokens, args.baseline_runs)
    result = summary(by_kind, statistics.median(baseline))
    text = report(result, baseline, args.prompt_tokens, args.suite)
    payload = {"suite": args.suite, "baseline_s": baseline, "prompt_tokens": args.prompt_tokens, "kinds": result}
    (RESULTS / "answer_latency.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / "answer_latency.md").write_text(text)
    plot(by_kind, statistics.median(baseline), RESULTS / "answer_latency.png")
    print(text)


if __name__ == "__main__":
    main()
