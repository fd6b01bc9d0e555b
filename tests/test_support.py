"""Claim-level support: numbers and names a sentence states must be in the sources it cites, and its content covered
by them (real bundled MiniLM, the bundled corpus and its IDF weights, the configured threshold)."""

from functools import cache
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from rag.embedding import LocalMiniLMEmbedding, TokenStates
from rag.evidence import EvidenceFinder
from rag.papers import ABSTRACT, Paper, Passage, Source
from rag.readers import BUNDLED_CORPUS, normalise_title, read_corpus
from rag.support import SupportChecker
from rag.terms import claim_terms, missing_terms
from tests.conftest import make_settings

MEGATRON = "Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM"
FLASH2 = "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning"
KDEFORMER = "KDEformer: Accelerating Transformers via Kernel Density Estimation"
LEMON = "LEMON: Lossless model expansion"


@cache
def paper_source(n: int, title: str) -> Source:
    """Source n: a bundled paper with its whole abstract, as the evidence finder builds it."""
    paper = next(p for p in read_corpus(BUNDLED_CORPUS) if normalise_title(p.title) == normalise_title(title))
    return Source(n, paper, 0.0)


@pytest.fixture(scope="module")
def checker(bundled_data: Path) -> SupportChecker:
    return EvidenceFinder(make_settings(bundled_data)).support


def test_an_invented_number_under_a_valid_citation_is_unsupported(checker: SupportChecker) -> None:
    sources = [paper_source(1, MEGATRON)]
    stated = "Megatron-LM trains a 1 trillion parameter model at 502 petaFLOP/s on 3072 GPUs [1]."
    invented = "Megatron-LM trains a 1 trillion parameter model at 502 petaFLOP/s on 4096 GPUs [1]."
    assert checker.check(stated, (1,), sources).cited == (1,)
    verdict = checker.check(invented, (1,), sources)
    assert not verdict.supported
    assert verdict.missing == ("4096 GPUs",)


def test_a_name_from_another_paper_is_reattributed_to_that_paper(checker: SupportChecker) -> None:
    sources = [paper_source(1, FLASH2), paper_source(2, KDEFORMER)]
    sentence = "KDEformer approximates attention in sub-quadratic time with provable spectral norm bounds [1]."
    assert checker.check(sentence, (1,), sources).cited == (2,)
    assert checker.check(sentence, (), sources).cited == (2,)  # an uncited claim is checked against every source


def test_a_faithful_paraphrase_is_supported_and_a_claim_on_the_topic_is_not(checker: SupportChecker) -> None:
    sources = [paper_source(1, LEMON)]
    paraphrase = (
        "LEMON initialises a scaled-up model from the weights of its smaller pre-trained counterpart, cutting the "
        "computational cost by 56.7% for Vision Transformers compared with training from scratch [1]."
    )
    verdict = checker.check(paraphrase, (1,), sources)
    assert verdict.cited == (1,) and verdict.coverage >= checker.threshold
    unrelated = "LEMON halves the memory used at inference by quantising the attention cache [1]."
    assert not checker.check(unrelated, (1,), sources).supported


@pytest.mark.parametrize(
    ("claim", "source"),
    [
        ("It beats GPT4.", "We compare with GPT-4."),
        ("It beats gpt-4.", "We compare with GPT-4."),
        ("It reaches 45 % accuracy.", "It reaches 45% accuracy."),
        ("It reaches 45 percent accuracy.", "It reaches 45% accuracy."),
        ("It runs on 1,000 GPUs.", "We train on 1000 GPUs."),
        ("It runs on 1k GPUs.", "We train on 1000 GPUs."),
        ("It improves LLMs.", "It improves any LLM."),
        ("BERT's heads matter.", "We probe BERT heads."),
        ("The Transformer wins.", "A transformer wins."),
        ("A 117M model.", "A model with 117 million parameters."),
        ("A 2.7 B model.", "A 2.7B model."),
        ("It is 3.5x faster.", "It is 3.5× faster."),
        ("It is 3.5x faster.", "It is 3.5 times faster."),
        ("The rate is 1e-4.", "The rate is 0.0001."),
        ("It uses 10,000 GPUs.", "It uses 10,000 NVIDIA GPUs."),
        ("It trains for 4 passes.", "It trains for 4 epochs."),
        ("A Transformer-based model.", "We use a transformer."),
    ],
)
def test_spellings_of_the_same_term_match(claim: str, source: str) -> None:
    assert missing_terms(claim, [source]) == []


@pytest.mark.parametrize(
    ("claim", "source", "missing"),
    [
        ("It beats GPT-5.", "We compare with GPT-4.", ["GPT-5"]),
        ("It scores 45 points.", "It reaches 45% accuracy.", ["45 points"]),
        ("It uses 10,000 GPUs.", "It uses 8 GPUs for 10,000 steps.", ["10,000 GPUs"]),
        ("It beats RoBERTa.", "It beats BERT.", ["RoBERTa"]),
        ("It is 4x faster.", "It is 3.5x faster.", ["4x"]),
        ("A 7B model.", "A 1.3B model.", ["7B model"]),
        ("GR-MLP is slow.", "GR-KAN and MLP layers are slow.", ["GR-MLP"]),
    ],
)
def test_a_different_number_or_name_is_missing(claim: str, source: str, missing: list[str]) -> None:
    assert missing_terms(claim, [source]) == missing


def test_claim_terms_are_numbers_with_units_and_names() -> None:
    sentence = "FlashAttention-3 runs 3.5x faster on H100 GPUs, 45% above WikiText-103 baselines [1][2]."
    assert claim_terms(sentence) == ["3.5x", "45%", "FlashAttention-3", "H100", "GPUs", "WikiText-103"]
    assert claim_terms("Transformers use 117M parameters and 2.7 B tokens [3].") == ["117M parameters", "2.7 B tokens"]
    assert claim_terms("The LoRA adapters of BERT train at 1e-4 on 10,000 GPUs.") == [
        "1e-4",
        "10,000 GPUs",
        "LoRA",
        "BERT",
        "GPUs",
    ]


def test_a_term_is_found_in_any_of_the_cited_texts() -> None:
    claim = "GPT-4 and Llama-2 reach 45% [1][2]."
    assert missing_terms(claim, ["GPT-4 reaches 45%.", "Llama 2 is open."]) == []
    assert missing_terms(claim, ["GPT-4 reaches 45%."]) == ["Llama-2"]


@pytest.mark.parametrize("abstract", ["", "We run attention kernels on H100 GPUs."])
def test_a_source_with_an_empty_or_one_sentence_abstract_is_checkable(checker: SupportChecker, abstract: str) -> None:
    passages = (Passage(abstract, None, ABSTRACT),) if abstract else ()
    sources = [Source(1, Paper("p-1", "FlashAttention-3: fast and accurate attention on H100 GPUs", passages), 0.0)]
    assert checker.check(
        "FlashAttention-3 gives fast and accurate attention on H100 GPUs [1].", (1,), sources
    ).supported
    verdict = checker.check("FlashAttention-3 gives fast and accurate attention on A100 GPUs [1].", (1,), sources)
    assert not verdict.supported and verdict.missing == ("A100",)


class CountingEmbedder:
    """The bundled embedder, counting the texts of each forward pass."""

    def __init__(self, embedder: LocalMiniLMEmbedding) -> None:
        self.embedder = embedder
        self.encoded: list[int] = []

    def encode_with_tokens(self, texts: list[str]) -> tuple[np.ndarray, list[TokenStates]]:
        self.encoded.append(len(texts))
        return self.embedder.encode_with_tokens(texts)


def test_sources_are_encoded_once_per_checker(checker: SupportChecker) -> None:
    counting = CountingEmbedder(checker.embedder)
    fresh = SupportChecker(cast(LocalMiniLMEmbedding, counting), checker.term_weights, checker.threshold)
    sources = [paper_source(1, FLASH2), paper_source(2, KDEFORMER)]
    fresh.check("FlashAttention-2 partitions work between warps [1].", (1,), sources)
    fresh.check("FlashAttention-2 reaches 225 TFLOPs/s per A100 GPU [1].", (1,), sources)
    assert counting.encoded[1] == 1  # the second sentence: only itself
    fresh.check("KDEformer shows over 18times speedup on ImageNet [1].", (1,), sources)  # re-attributed: one more pass
    assert len(counting.encoded) == 4 and counting.encoded[3] > 1
