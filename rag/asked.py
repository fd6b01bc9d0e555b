"""What a question asks for, read from its wording: a list of papers, a quantity, a name, or an explanation.

The answer step needs it twice. A question that asks for papers gets every paper that passes the gate, listed; a
question that asks for a number or a name is answerable only when some admitted sentence supplies one — a paper on
the topic whose abstract lacks the figure is named as on topic, and the answer says the figure is not stated,
instead of leaving a small model to invent it.
"""

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["papers", "quantity", "name", "explanation"]

_PAPERS = re.compile(
    r"^\s*(which|what|list|name|find|are there|is there|any)\b.{0,40}?\b"
    r"(papers?|works?(?! best)|studies|articles|publications|research)\b"
    r"|\bpapers? (on|about|that|which|discussing|studying|proposing)\b",
    re.IGNORECASE,
)
_QUANTITY = re.compile(
    r"\b(how (many|much|long|large|big|fast|often|quickly|well|small)|by how|what (percentage|fraction|share|proportion"
    r"|number|amount|size|speed-?up|ratio|rate|accuracy|score|f1|bleu|perplexity|throughput|latency|cost|budget)"
    r"|what (\S+ ){0,3}(accuracy|throughput|latency|perplexity|speed-?up|score|f1|bleu|rate|size|count|cost|budget"
    r"|memory|temperature|hyper-?parameters?|epochs|steps|dimensions?|length|ratio|percentage|level|range)"
    r"|(at|to|by) what (rate|factor|extent)|what (is|was|are|were) the (\w+ )?(accuracy|score|f1|bleu|perplexity"
    r"|throughput|latency|cost|budget|size|number|speed-?up|rate|percentage|count))\b",
    re.IGNORECASE,
)
# "In X, which ...", "On which ...", "Under what ..."
_LEAD = r"^\s*(?:(?:in|for|according to|on|at|under|when|among)\b[^?]*?,\s*)?(?:(?:on|in|under|with|from|for|by)\s+)?"
_NAME = re.compile(
    _LEAD + r"(which|what) (\w+ ){0,2}(dataset|datasets|benchmark|benchmarks|optimizer|hardware|gpus?|tpus?|licen[cs]e"
    r"|language|languages|model|models|library|framework|tokenizer|architecture|backbone|programming language)"
    r"\b(?! (papers?|works?|studies)\b)",
    re.IGNORECASE,
)
# what the asked-for fact is called, for "The corpus does not state <it>": the words after the question's head
_ASKED = re.compile(
    r"\b(?:how (?:many|much)|what|which)\s+(?:(?:is|was|are|were)\s+(?:the\s+)?)?((?:[\w-]+\s+){0,3}?[\w-]+)"
    r"(?=\s+(?:does|did|do|is|was|are|were|has|have|had|of|for|on|in|to|when|with|used|reported|needed|reach|than|and|per|at|from|by)\b|[?.,;]|$)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Asked:
    kind: Kind
    phrase: str  # what is asked for, in the question's words ("learning rate", "GPUs"); "" when unclear

    @property
    def wants_fact(self) -> bool:
        """A number or a name: something a sentence either states or does not."""
        return self.kind in ("quantity", "name")


def asked(question: str) -> Asked:
    """The kind of answer a question asks for, and what it calls the asked-for thing."""
    kind: Kind
    if _PAPERS.search(question):
        kind = "papers"
    elif _QUANTITY.search(question):
        kind = "quantity"
    elif _NAME.search(question):
        kind = "name"
    else:
        kind = "explanation"
    match = _ASKED.search(question)
    return Asked(kind, match.group(1).strip() if match else "")
