"""The relevance gate's measure: IDF-weighted term coverage from the bundled MiniLM's token vectors."""

from pathlib import Path

import numpy as np
import pytest

from rag import keyword_index
from rag.answer import refusal_text
from rag.embedding import LocalMiniLMEmbedding, minilm_tokenizer
from rag.errors import BadInput
from rag.evidence import EvidenceFinder
from rag.ingest import ingest
from rag.relevance import TermWeights, coverage
from rag.settings import Settings
from rag.store import StoredCollection, open_collection
from tests.conftest import make_settings, write_jsonl

PAPERS = [
    {"title": "Diffusion models design protein backbones", "abstract": "We design protein structures by diffusion."},
    {"title": "Video diffusion", "abstract": "We study diffusion models that generate video frames efficiently."},
    {"title": "Image diffusion", "abstract": "We train diffusion models that generate images at high resolution."},
]


@pytest.fixture(scope="module")
def embedder() -> LocalMiniLMEmbedding:
    return LocalMiniLMEmbedding()


def ingest_small(tmp_path: Path) -> tuple[StoredCollection, Settings]:
    """The three papers in a fresh store: its collection and the settings that ingested it."""
    settings = make_settings(tmp_path / "data")
    ingest(write_jsonl(tmp_path / "papers.jsonl", PAPERS), "jsonl", settings, progress=False)
    stored = open_collection(settings)
    assert stored is not None
    return stored, settings


@pytest.fixture
def small_index(tmp_path: Path) -> keyword_index.KeywordIndex:
    stored, settings = ingest_small(tmp_path)
    return keyword_index.load(stored, settings.data_path)


def piece(word: str) -> int:
    (token,) = minilm_tokenizer().encode(word, add_special_tokens=False).ids
    return token


def test_the_index_counts_the_rows_each_wordpiece_occurs_in(small_index: keyword_index.KeywordIndex) -> None:
    frequencies = small_index.piece_frequencies
    assert small_index.documents == 3
    assert (frequencies[piece("diffusion")], frequencies[piece("protein")], frequencies[piece("video")]) == (3, 1, 1)
    assert frequencies[piece("weather")] == 0


def test_rare_words_weigh_most_and_stopwords_nothing(
    small_index: keyword_index.KeywordIndex, embedder: LocalMiniLMEmbedding
) -> None:
    _, (question,) = embedder.encode_with_tokens(["Which papers use diffusion for protein weather?"])
    weights = dict(zip(question.words, TermWeights(small_index).per_token(question), strict=True))
    assert weights["papers"] == weights["for"] == weights["?"] == 0.0
    assert weights["diffusion"] == 0.0 < weights["protein"] < weights["weather"]  # every paper says diffusion


def test_a_paper_missing_the_decisive_term_covers_less_of_the_question(
    small_index: keyword_index.KeywordIndex, embedder: LocalMiniLMEmbedding
) -> None:
    texts = ["Which papers use diffusion models to design protein structures?", *(p["abstract"] for p in PAPERS)]
    _, (question, *papers) = embedder.encode_with_tokens(texts)
    weights = TermWeights(small_index).per_token(question)
    protein, video, image = (coverage(question, weights, [paper]) for paper in papers)
    assert protein > max(video, image) + 0.1
    assert coverage(question, weights, [question]) == pytest.approx(1.0, abs=1e-5)
    assert coverage(question, np.zeros_like(weights), papers) == 0.0  # a question of stopwords covers nothing


def test_words_no_paper_uses_are_found_whatever_their_inflection(small_index: keyword_index.KeywordIndex) -> None:
    weights = TermWeights(small_index)
    assert weights.unknown_words("Papers that design proteins with difusion for the weather?") == [
        "difusion",
        "weather",
    ]  # "proteins" is "protein" stemmed; "Papers", "that", "with", "for", "the" are stopwords
    assert weights.unknown_words("diffusion models generate video frames") == []


def test_the_gate_refuses_a_neighbouring_topic_naming_what_the_corpus_lacks(bundled_data: Path) -> None:
    finder = EvidenceFinder(make_settings(bundled_data))
    softmax = finder.find("Which papers discuss the softmax bottleneck?")
    assert {source.title.split("?")[0] for source in softmax.sources} >= {
        "Why do small language models underperform",
        "On Retrieval Augmentation and the Limitations of Language Model Training",
    }
    assert all(0 < source.score <= 1 for source in softmax.sources) and not softmax.unknown_words
    off_topic = finder.find("Which papers train diffusion models to generate drug-like molecules?")
    assert off_topic.refused and len(off_topic.nearest) == 3
    assert "No paper uses the word(s) 'drug', 'molecules'" in refusal_text(off_topic)
    absent = finder.find("Which papers measure the migration routes of monarch butterflies across North America?")
    assert absent.refused and "No paper uses the word(s) 'migration', 'butterflies'" in refusal_text(absent)


def test_an_index_built_before_wordpiece_counts_asks_for_the_ingest_that_rebuilds_it(tmp_path: Path) -> None:
    stored, settings = ingest_small(tmp_path)
    folder = keyword_index.index_dir(settings.data_path, stored.name)
    live = folder / (folder / keyword_index.CURRENT).read_text()
    (live / keyword_index.PIECES_FILE).unlink()  # as an index published by an older version would be
    (live / keyword_index.STATE_FILE).write_text('{"rows": 3, "tokenizer": "en+scholarly-1"}')
    with pytest.raises(BadInput, match="built by another version of rag"):
        keyword_index.load(stored, settings.data_path)  # a reader never builds
    assert keyword_index.current_id(settings.data_path, stored.name) == live.name
    ingest(tmp_path / "papers.jsonl", "jsonl", settings, progress=False)  # nothing changed in the store
    rebuilt = keyword_index.load(stored, settings.data_path)
    assert rebuilt.version.id != live.name and rebuilt.piece_frequencies[piece("protein")] == 1
