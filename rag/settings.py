"""One typed settings object; defaults come from ``config/default.toml`` and nowhere else."""

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_DIR / "config" / "default.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChromaSettings(_Section):
    server_url: str
    connect_timeout_s: float = Field(gt=0)


class LLMSettings(_Section):
    provider: Literal["local", "openai", "none"]
    local_model: str
    models_dir: str
    context_tokens: int = Field(ge=512)
    max_answer_tokens: int = Field(ge=16)
    temperature: float = Field(ge=0, le=2)
    seed: int = Field(ge=0)
    threads: int = Field(ge=0)


class EmbeddingSettings(_Section):
    provider: Literal["local", "openai"]
    batch_size: int = Field(ge=1)
    max_tokens: int = Field(ge=8, le=512)
    threads: int = Field(ge=0)


class OpenAISettings(_Section):
    base_url: str
    chat_model: str
    embedding_model: str
    timeout_s: float = Field(gt=0)


class ChunkingSettings(_Section):
    chunk_size: int = Field(ge=32)
    chunk_overlap: int = Field(ge=0)


class IngestSettings(_Section):
    batch_papers: int = Field(ge=1)


class PdfSettings(_Section):
    max_pages: int = Field(ge=1)
    timeout_s: float = Field(gt=0)
    max_memory_mb: int = Field(ge=16)


class RetrievalSettings(_Section):
    top_k: int = Field(ge=1)
    candidates: int = Field(ge=1)
    fusion: Literal["rrf", "relative_score", "dist_based_score"]
    dense_weight: float = Field(ge=0, le=1)
    reranker: Literal["coverage", "remote", "none"]
    rerank_depth: int = Field(ge=2, le=200)
    rerank_weight: float = Field(ge=0, le=1)
    rerank_url: str
    rerank_model: str
    rerank_timeout_s: float = Field(gt=0)


class AnswerSettings(_Section):
    candidates: int = Field(ge=1)
    max_sources: int = Field(ge=1)
    max_topic_sources: int = Field(ge=1)
    evidence_tokens: int = Field(ge=1)
    prompt_evidence_tokens: int = Field(ge=0)
    max_topic_candidates: int = Field(ge=1)
    max_related: int = Field(ge=0)
    gate_cover: float = Field(ge=0, le=1)
    gate_min_coverage: float = Field(ge=0, le=1)
    gate_cite: float = Field(ge=0, le=1)
    gate_list_cite: float = Field(ge=0, le=1)
    gate_related: float = Field(ge=0, le=1)
    support_threshold: float = Field(ge=-1, le=1)
    stated_threshold: float = Field(ge=-1, le=1)
    nearest_papers: int = Field(ge=0)


class ChatSettings(_Section):
    history_tokens: int = Field(ge=0)
    rewrite_tokens: int = Field(ge=8)


class PromptSettings(_Section):
    answer: str = Field(min_length=1)
    topic: str = Field(min_length=1)
    closing: str = Field(min_length=1)
    topic_closing: str = Field(min_length=1)
    rewrite: str = Field(min_length=1)


class ServerSettings(_Section):
    host: str
    port: int = Field(ge=0, le=65535)
    ui_auth: SecretStr
    concurrency: int = Field(ge=1)
    model_wait_s: float = Field(gt=0)
    max_upload_mb: float = Field(gt=0)

    def ui_logins(self) -> list[tuple[str, str]]:
        """The "user:password" pairs of ``ui_auth``."""
        pairs = [pair for pair in self.ui_auth.get_secret_value().split(",") if pair.strip()]
        if any(":" not in pair for pair in pairs):
            raise ValueError('server.ui_auth must be "user:password" pairs separated by ","')
        return [tuple(pair.strip().split(":", 1)) for pair in pairs]  # type: ignore[misc]


class EvalSettings(_Section):
    benchmarks_dir: str
    reports_dir: str
    verdict_prompt: str = Field(min_length=1)
    verdict_evidence_tokens: int = Field(ge=1)


class LimitSettings(_Section):
    max_question_chars: int = Field(ge=1)


class Settings(BaseSettings):
    """Everything configurable. Layers: default.toml < $RAG_CONFIG < RAG_* env < constructor (CLI flags)."""

    model_config = SettingsConfigDict(env_prefix="RAG_", env_nested_delimiter="__", extra="forbid")

    data_dir: str
    collection: str
    api_key: SecretStr
    server: ServerSettings
    llm: LLMSettings
    chroma: ChromaSettings
    embedding: EmbeddingSettings
    openai: OpenAISettings
    chunking: ChunkingSettings
    ingest: IngestSettings
    pdf: PdfSettings
    retrieval: RetrievalSettings
    answer: AnswerSettings
    chat: ChatSettings
    prompts: PromptSettings
    eval: EvalSettings
    limits: LimitSettings

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        user_config = os.environ.get("RAG_CONFIG")
        if user_config:
            path = Path(user_config)
            if not path.is_file():
                raise FileNotFoundError(f"RAG_CONFIG={user_config}: no such file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        sources.append(TomlConfigSettingsSource(settings_cls, toml_file=DEFAULT_CONFIG))
        return tuple(sources)

    @property
    def models_path(self) -> Path:
        return Path(self.llm.models_dir).expanduser().resolve() if self.llm.models_dir else PROJECT_DIR / "models"

    @property
    def benchmarks_path(self) -> Path:
        folder = self.eval.benchmarks_dir or "../shared/benchmarks"
        return (PROJECT_DIR / Path(folder).expanduser()).resolve()

    @property
    def reports_path(self) -> Path:
        return (PROJECT_DIR / Path(self.eval.reports_dir).expanduser()).resolve()

    @property
    def data_path(self) -> Path:
        """The resolved data directory (created on demand by the store)."""
        return Path(self.data_dir).expanduser().resolve() if self.data_dir else PROJECT_DIR / "data"
