"""The bundled embedder: MiniLM int8 ONNX on onnxruntime, verified by sha256, no torch, no download."""

import sys
from pathlib import Path

import numpy as np
import pytest

from rag import models
from rag.errors import BadInput
from rag.models import LocalMiniLMEmbedding, build_embedder, embedder_id
from rag.settings import Settings


@pytest.fixture(scope="module")
def embedder() -> LocalMiniLMEmbedding:
    return LocalMiniLMEmbedding(max_tokens=256, embed_batch_size=4)


def test_vectors_are_unit_length_and_order_independent(embedder: LocalMiniLMEmbedding) -> None:
    texts = ["short", "a much longer sentence about transformers and attention " * 5, "graph neural networks"]
    vectors = embedder.encode(texts)
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    # batching and length-sorting must not change a text's vector
    assert np.allclose(embedder.encode(texts[::-1])[::-1], vectors, atol=1e-5)
    assert np.allclose(embedder.encode([texts[1]])[0], vectors[1], atol=1e-5)


def test_paraphrases_are_closer_than_unrelated_text(embedder: LocalMiniLMEmbedding) -> None:
    query = np.array(embedder.get_query_embedding("how do neural networks lose plasticity"))
    related = np.array(embedder.get_text_embedding("Deep networks gradually lose the ability to learn from new data."))
    unrelated = np.array(embedder.get_text_embedding("A recipe for sourdough bread with a long fermentation."))
    assert query @ related > query @ unrelated + 0.2


def test_long_texts_are_truncated_not_rejected(embedder: LocalMiniLMEmbedding) -> None:
    vector = embedder.encode(["word " * 5000])
    assert np.isfinite(vector).all()


def test_a_model_file_with_the_wrong_hash_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not the model")
    with pytest.raises(BadInput, match="does not match the expected"):
        models._verified(fake, "0" * 64)


def test_factory_follows_the_provider_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(build_embedder(Settings()), LocalMiniLMEmbedding)
    assert embedder_id(Settings()) == "minilm-l6-int8"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    remote = Settings(llm={"provider": "openai"}, openai={"embedding_model": "BGE/Small v1.5"})
    assert embedder_id(Settings(llm={"provider": "openai"}, embedding={"provider": "local"})) == "minilm-l6-int8"
    assert embedder_id(remote) == "oai-bge-small-v1.5"
    assert type(build_embedder(remote)).__name__ == "OpenAILikeEmbedding"


def test_the_local_route_needs_no_torch() -> None:
    assert "torch" not in sys.modules
