"""The bundled embedder: MiniLM int8 ONNX on onnxruntime, verified by sha256, no torch, no download."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.embedding import EmbedderSpec, LocalMiniLMEmbedding, build_embedder, embedder_id
from rag.errors import BadInput
from rag.model_files import verified_file
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
    with pytest.raises(BadInput, match="is not the published"):
        verified_file(fake, "0" * 64)


def test_the_factory_builds_one_embedder_per_space_and_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    local = build_embedder(Settings())
    assert isinstance(local, LocalMiniLMEmbedding) and build_embedder(Settings()) is local
    assert embedder_id(Settings()) == "minilm-l6-int8"
    assert embedder_id(Settings(llm={"provider": "openai"})) == "minilm-l6-int8"  # the chat model never moves it
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    remote = Settings(embedding={"provider": "openai"}, openai={"embedding_model": "BGE/Small v1.5"})
    assert embedder_id(remote) == "oai-bge-small-v1.5"
    assert type(build_embedder(remote)).__name__ == "OpenAILikeEmbedding"
    recorded = EmbedderSpec.from_id("oai-bge-small-v1.5", "BGE/Small v1.5")  # as a collection records it
    assert build_embedder(Settings(), recorded) is build_embedder(remote)  # the spec decides, not the provider


def test_the_local_route_never_asks_for_torch() -> None:
    """Ingest, search and the gate import nothing from torch — checked by recording every import attempt, so the test
    holds whether or not torch is installed."""
    script = (
        "import sys\n"
        "class Recorder:\n"
        "    asked = []\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'sentence_transformers', 'transformers'):\n"
        "            Recorder.asked.append(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Recorder())\n"
        "from rag.embedding import build_embedder\n"
        "from rag.settings import Settings\n"
        "import rag.cli, rag.evidence, rag.ingest, rag.retrieve\n"
        "build_embedder(Settings()).get_text_embedding('graph neural networks')\n"
        "print(sorted(set(Recorder.asked)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
