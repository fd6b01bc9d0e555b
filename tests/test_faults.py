"""Storage faults for real: a data directory on a full disk and on a read-only file system (small tmpfs mounts).

Each gives one clear line and a non-zero exit, and leaves nothing half-written: the store answers exactly as before.
Mounting needs root (as in CI); elsewhere these tests skip and say why.
"""

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_rag, synthetic_papers, write_jsonl

pytestmark = pytest.mark.slow  # real faults and several processes: minutes, run by `make test-slow`


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def ingest_first(disk: Path, tmp_path: Path) -> tuple[dict[str, str], str, str]:
    env = {"RAG_DATA_DIR": str(disk / "data")}
    first = write_jsonl(tmp_path / "first.jsonl", synthetic_papers(30))
    assert run_rag("ingest", str(first), env=env).returncode == 0
    return (
        env,
        run_rag("stats", "--json", env=env).stdout,
        run_rag("search", "protein folding", "--json", env=env).stdout,
    )


def test_a_full_disk_is_a_clear_error_and_leaves_the_store_as_it_was(small_disk: Path, tmp_path: Path) -> None:
    env, stats, _ = ingest_first(small_disk, tmp_path)
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler = small_disk / "filler"
    with filler.open("wb") as handle:  # leave a few KiB: the next write runs out of space
        handle.write(b"\0" * max(0, free - 16 * 1024))
    more = write_jsonl(tmp_path / "more.jsonl", synthetic_papers(400, start=30))
    result = run_rag("ingest", str(more), env=env)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("rag: error: ") and "no space left" in line.lower() and "Traceback" not in result.stderr
    filler.unlink()
    after = json.loads(run_rag("stats", "--json", "--verify", env=env).stdout)
    assert after["incomplete"] == 0 and after["papers"] == after["chunks"]  # no paper half-written
    # with space again, the same command finishes the job exactly
    assert run_rag("ingest", str(more), env=env).returncode == 0
    final = json.loads(run_rag("stats", "--json", "--verify", env=env).stdout)
    assert (final["papers"], final["chunks"], final["incomplete"]) == (430, 430, 0)
    assert json.loads(stats)["papers"] == 30


def test_a_read_only_data_directory_is_a_clear_error_and_the_store_survives(small_disk: Path, tmp_path: Path) -> None:
    env, stats, search = ingest_first(small_disk, tmp_path)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        more = write_jsonl(tmp_path / "more.jsonl", synthetic_papers(5, start=30))
        # Chroma opens its SQLite store for writing even to read, so every command says so, in one line
        for command in (["ingest", str(more)], ["stats"], ["search", "protein folding"]):
            result = run_rag(*command, env=env)
            assert result.returncode == 1, result.stderr
            (line,) = result.stderr.strip().splitlines()
            assert line.startswith("rag: error: ") and "read-only file system" in line
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert run_rag("stats", "--json", env=env).stdout == stats
    assert run_rag("search", "protein folding", "--json", env=env).stdout == search
