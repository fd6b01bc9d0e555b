"""Text primitives: the sentence splitter survives scientific abbreviations; citation markers parse one way."""

import pytest

from rag.text import cited_numbers, split_sentences, strip_citations


@pytest.mark.parametrize(
    ("text", "first"),
    [
        (
            "Deep networks do well when data streams are i.i.d. and labeled data is abundant. Challenges emerge.",
            "Deep networks do well when data streams are i.i.d. and labeled data is abundant.",
        ),
        (
            "As Smith et al. showed in prior work, models fail. Next.",
            "As Smith et al. showed in prior work, models fail.",
        ),
        ("Results are in Fig. 3 and Eq. 2 of the paper. Next.", "Results are in Fig. 3 and Eq. 2 of the paper."),
        (
            "Adapters, e.g. LoRA, help, i.e. they save memory. Done.",
            "Adapters, e.g. LoRA, help, i.e. they save memory.",
        ),
        ("We use approx. 3 GPUs vs. 4 CPUs. End.", "We use approx. 3 GPUs vs. 4 CPUs."),
    ],
)
def test_abbreviations_do_not_end_a_sentence(text: str, first: str) -> None:
    sentences = split_sentences(text)
    assert sentences[0] == first and len(sentences) == 2


def test_citation_markers_in_every_written_form() -> None:
    text = "A [2]. B [1, 3]. C [3; 4][2]."
    assert cited_numbers(text) == [2, 1, 3, 4]
    assert strip_citations(text) == "A . B . C ."
