"""How long `make run` takes, on a machine where set-up is done, until the served app answers a question.

Each run starts `make run` on a free port, then polls the app's OpenAI-compatible API until the softmax-bottleneck
question comes back with citations; the figure is the time from the command to that answer. Medians of --runs.
Usage: .venv/bin/python eval/bench_serve.py [--runs 3] [--out eval/results/serve.md]
"""

import argparse
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

import httpx
from serving import free_port

PROJECT = Path(__file__).resolve().parents[1]
QUESTION = "Which papers discuss the softmax bottleneck?"


def one_run(timeout_s: float) -> tuple[float, float]:
    """Seconds from `make run` to the UI page answering, and to the first cited answer."""
    port = free_port()
    env = {**os.environ, "RAG_SERVER__PORT": str(port)}
    started = time.perf_counter()
    process = subprocess.Popen(
        ["make", "-s", "run"], cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    page_s = None
    try:
        while time.perf_counter() - started < timeout_s:
            try:
                if page_s is None and httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    page_s = time.perf_counter() - started
                if page_s is not None:
                    reply = httpx.post(
                        f"http://127.0.0.1:{port}/v1/chat/completions",
                        json={"model": "rag", "messages": [{"role": "user", "content": QUESTION}]},
                        timeout=120,
                    ).json()
                    if reply.get("citations"):
                        return page_s, time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"no cited answer within {timeout_s} s")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--out", type=Path, default=PROJECT / "eval" / "results" / "serve.md")
    args = parser.parse_args()
    runs = [one_run(args.timeout) for _ in range(args.runs)]
    page, answer = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
    lines = [
        "# `make run` to a served answer (set-up already done)",
        "",
        "| run | UI page up (s) | first cited answer (s) |",
        "|---|---|---|",
        *(f"| {i} | {p:.1f} | {a:.1f} |" for i, (p, a) in enumerate(runs, 1)),
        f"| **median** | **{page:.1f}** | **{answer:.1f}** |",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
