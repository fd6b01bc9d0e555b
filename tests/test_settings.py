"""Settings layering: default.toml < $RAG_CONFIG < RAG_* environment < explicit values; typos fail loudly."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from rag.settings import DEFAULT_CONFIG, PROJECT_DIR, Settings


def test_defaults_come_from_the_commented_toml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAG_DATA_DIR")
    settings = Settings()
    assert settings.retrieval.top_k == 10
    assert settings.llm.provider == "local"
    assert settings.data_path == PROJECT_DIR / "data"
    # every setting in the defaults file carries a comment line above it
    lines = DEFAULT_CONFIG.read_text().splitlines()
    for number, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[number - 1].startswith("#"), f"setting without a comment: {line}"


def test_config_file_then_environment_then_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "mine.toml"
    config.write_text('collection = "mine"\n[retrieval]\ntop_k = 3\ncandidates = 7\n')
    monkeypatch.setenv("RAG_CONFIG", str(config))
    monkeypatch.setenv("RAG_RETRIEVAL__CANDIDATES", "9")
    settings = Settings()
    assert (settings.collection, settings.retrieval.top_k, settings.retrieval.candidates) == ("mine", 3, 9)
    assert settings.retrieval.fusion == "relative_score"  # untouched keys keep their defaults
    assert Settings(collection="flag").collection == "flag"
    assert Settings().data_path == tmp_path / "data"


def test_bad_values_and_unknown_keys_are_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_RETRIEVAL__TOP_K", "0")
    with pytest.raises(ValidationError, match="top_k"):
        Settings()
    monkeypatch.delenv("RAG_RETRIEVAL__TOP_K")
    config = tmp_path / "typo.toml"
    config.write_text("[retrieval]\ntopk = 3\n")
    monkeypatch.setenv("RAG_CONFIG", str(config))
    with pytest.raises(ValidationError, match="topk"):
        Settings()
    monkeypatch.setenv("RAG_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(FileNotFoundError, match=r"missing\.toml"):
        Settings()
