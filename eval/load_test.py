"""Load test: concurrent chat sessions against `rag serve`, half through `gradio_client`, half through the API.

Bounded on purpose: loopback only, a fixed number of sessions, a fixed duration, one request in flight per session.
Each session asks dev-set questions with follow-ups (the UI sessions carry their chat history, the API sessions send
earlier turns). Reports errors, throughput, p50/p95 latency per client kind, how evenly the sessions were served
(fairness: the fewest and most answers any session got) and the server's memory over the run (sampled RSS).
By default it starts its own `rag serve` over the bundled corpus on a free port.
Usage: .venv/bin/python eval/load_test.py [--sessions 20] [--duration 120] [--provider local] [--url URL]
Writes eval/results/load.{md,json}.
"""

import argparse
import json
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from gradio_client import Client
from serving import start_serve

from rag.eval.datasets import load_question_set
from rag.eval.metrics import percentile
from rag.settings import PROJECT_DIR

FOLLOW_UPS = ["and which of them is the most recent?", "what method does the first one use?", "any limitations?"]


@dataclass
class Session:
    kind: str  # "ui" or "api"
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    degraded: int = 0  # answered from the evidence alone (model busy or failed): not an error, but counted


def run_session(
    session: Session, url: str, questions: list[str], deadline: float, seed: int, key: str, provider: str
) -> None:
    rng = random.Random(seed)
    turns: list[dict[str, Any]] = []  # API conversation
    chat: list[dict[str, Any]] = []  # UI conversation
    client = Client(url, verbose=False) if session.kind == "ui" else None
    while time.monotonic() < deadline:
        question = rng.choice(FOLLOW_UPS) if (turns or chat) and rng.random() < 0.3 else rng.choice(questions)
        started = time.monotonic()
        try:
            if client is not None:
                inputs = (question, chat, 8, provider, "qwen2.5-coder-0.5b", "papers", None, None, [])  # no filters
                _, chat, _, notice, *_exports = client.predict(*inputs, api_name="/chat")
                answer = str(chat[-1]["content"]) if chat else ""
                degraded = "Evidence-only" in notice
                if "No corpus" in notice or "Store unavailable" in notice or "Cannot answer" in answer:
                    raise ValueError(f"not an answer: {answer[:120]}")
                if len(chat) > 8:
                    chat = []  # a new conversation now and then
            else:
                body = {"model": "rag", "messages": [*turns, {"role": "user", "content": question}]}
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                reply = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=600)
                reply.raise_for_status()
                data = reply.json()
                answer = data["choices"][0]["message"]["content"]
                degraded = bool(data.get("notice"))
                turns = [*turns, {"role": "user", "content": question}, {"role": "assistant", "content": answer}][-4:]
            if not answer:
                raise ValueError("empty answer")
            session.latencies.append(time.monotonic() - started)
            session.degraded += degraded
        except Exception as error:  # every failure is a finding: record it and go on
            session.errors.append(f"{type(error).__name__}: {str(error)[:200]}")
            time.sleep(1)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--duration", type=float, default=120)
    parser.add_argument("--provider", default=None, help="llm.provider of the server this script starts")
    parser.add_argument("--url", default=None, help="an already running `rag serve` (loopback only)")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "eval" / "results" / "load")
    args = parser.parse_args()
    if not 1 <= args.sessions <= 64 or not 1 <= args.duration <= 900:
        sys.exit("load_test: --sessions must be 1-64 and --duration 1-900 s")
    key = os.environ.get("RAG_API_KEY", "")
    server = None
    url = args.url
    if url is None:
        server, url = start_serve({"RAG_LLM__PROVIDER": args.provider} if args.provider else {})
    if urlparse(url).hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("load_test: loopback URLs only")
    questions = [q.text for q in load_question_set(PROJECT_DIR / "eval" / "datasets" / "dev.jsonl")]
    sessions = [Session("ui" if i % 2 == 0 else "api") for i in range(args.sessions)]
    memory: list[float] = []
    started = time.monotonic()
    deadline = started + args.duration
    provider = args.provider or "local"
    threads = [threading.Thread(target=run_session, args=(s, url, questions, deadline, i, key, provider))
               for i, s in enumerate(sessions)]  # fmt: skip
    try:
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            if server is not None:
                memory.append(round(rss_mb(server.pid), 1))
            time.sleep(2)
        for thread in threads:
            thread.join()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    elapsed = time.monotonic() - started
    report = summarise(sessions, elapsed, memory, args)
    write(report, args.out)


def summarise(sessions: list[Session], elapsed: float, memory: list[float], args: argparse.Namespace) -> dict[str, Any]:
    def stats(group: list[Session]) -> dict[str, Any]:
        latencies = [value for s in group for value in s.latencies]
        return {
            "sessions": len(group),
            "answers": len(latencies),
            "errors": sum(len(s.errors) for s in group),
            "degraded": sum(s.degraded for s in group),
            "p50_s": round(percentile(latencies, 50), 2) if latencies else None,
            "p95_s": round(percentile(latencies, 95), 2) if latencies else None,
            "answers_per_session_min_max": [min(len(s.latencies) for s in group), max(len(s.latencies) for s in group)],
        }

    answers = sum(len(s.latencies) for s in sessions)
    return {
        "sessions": args.sessions,
        "duration_s": args.duration,
        "elapsed_s": round(elapsed, 1),
        "provider": args.provider or "configured",
        "all": stats(sessions) | {"throughput_per_min": round(answers / elapsed * 60, 2)},
        "ui": stats([s for s in sessions if s.kind == "ui"]),
        "api": stats([s for s in sessions if s.kind == "api"]),
        "errors": sorted({error for s in sessions for error in s.errors})[:20],
        "server_rss_mb": {"first": memory[0], "max": max(memory), "last": memory[-1]} if memory else None,
    }


def write(report: dict[str, Any], out: Path) -> None:
    lines = [
        f"# Load: {report['sessions']} concurrent sessions for {report['duration_s']:.0f} s "
        f"(provider {report['provider']})",
        "",
        "| client | sessions | answers | errors | evidence-only | p50 s | p95 s | answers per session (min–max) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind in ("all", "ui", "api"):
        s = report[kind]
        low, high = s["answers_per_session_min_max"]
        lines.append(f"| {kind} | {s['sessions']} | {s['answers']} | {s['errors']} | {s['degraded']} | {s['p50_s']} | "
                     f"{s['p95_s']} | {low}–{high} |")  # fmt: skip
    lines += ["", f"Throughput: {report['all']['throughput_per_min']} answers/min over {report['elapsed_s']} s."]
    if report["server_rss_mb"]:
        rss = report["server_rss_mb"]
        lines.append(
            f"Server RSS: {rss['first']} MB at the start, {rss['max']} MB at most, {rss['last']} MB at the end."
        )
    if report["errors"]:
        lines += ["", "Errors:", *(f"- {error}" for error in report["errors"])]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
