"""Load (slow suite): 20 concurrent chat sessions for two minutes against a real `rag serve`, half through
`gradio_client` and half through the API, must finish without a single error and with memory bounded."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag.settings import PROJECT_DIR

pytestmark = pytest.mark.slow


def test_twenty_sessions_for_two_minutes_without_errors(bundled_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "load"
    env = {"RAG_DATA_DIR": str(bundled_data), "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "eval" / "load_test.py"), "--sessions", "20", "--duration", "120",
         "--out", str(out)],
        capture_output=True, text=True, timeout=900, env={**os.environ, **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["all"]["errors"] == 0, report["errors"]
    assert report["ui"]["answers"] > 0 and report["api"]["answers"] > 0
    low, _ = report["all"]["answers_per_session_min_max"]
    assert low >= 1  # every session was served: the queue is fair, nobody starves
    rss = report["server_rss_mb"]
    assert rss["max"] < 4096 and rss["last"] < 1.5 * rss["first"] + 500  # bounded, no runaway growth
