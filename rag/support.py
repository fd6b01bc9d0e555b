"""Claim-level support: does the source a sentence cites say what the sentence says?

A valid ``[n]`` proves only that source n exists. A small model writes a perplexity, a parameter count or another
system's name under it, so every sentence it writes is checked against the whole title and abstract of the sources
it cites, in two ways:

- **Terms.** Every number (with its unit or %) and every name (a token with capitals or digits: GPT-4, H100,
  WikiText-103) must occur in a cited source. Matching forgives spelling, not content: "GPT4" is "gpt-4", "45 %" is
  "45 percent", "1,000" is "1000" and "1k", "LLMs" is "LLM", "BERT's" is "BERT", and a capitalised word is found
  lowercase ("Transformer" in "... a transformer ..."); "45%" is not "45 points".
- **Content.** The sentence's content words must be covered by the sources: IDF-weighted token matching of the claim
  against the title and every abstract sentence (``rag.relevance.coverage`` with the claim in the question's role:
  BERTScore precision of the claim against the source). A faithful paraphrase scores high; a sentence about another
  paper's method scores low even when it shares the topic's words.

A sentence its cited sources fail is re-attributed to the one source that passes with the best coverage, or left
with no citation. ``answer.support_threshold`` is the coverage bar, measured by ``eval/measure_support.py``
(eval/results/support.md).
"""

import math
import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from rag.embedding import LocalMiniLMEmbedding, TokenStates
from rag.evidence import Source
from rag.keyword_index import STOPWORDS
from rag.relevance import TermWeights, coverage
from rag.text import split_sentences, strip_citations

# A word-like token: starts with a letter or digit; may hold . ' + % × - inside, and a comma only as a thousands
# separator ("10,000"). Trailing punctuation is trimmed by _tokens.
_TOKEN = re.compile(r"[^\W_](?:[\w.'’+%×-]|,(?=\d{3}(?!\d)))*")
_TRAILING = ".'’+-"
_POSSESSIVE = re.compile(r"['’]s?$")
_NUMBER = re.compile(r"(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)([A-Za-z%×]*)")
_RANGE = re.compile(r"(?<![eE])[-–](?=\d)|-(?=[A-Za-z])")  # "2-3x" → 2, 3x; "3-fold" → 3, fold
_SYMBOL_AFTER = re.compile(r"\s*(%|×)")
_MAGNITUDES = {"k": 1e3, "thousand": 1e3, "m": 1e6, "million": 1e6, "b": 1e9, "bn": 1e9, "billion": 1e9}
_MAGNITUDES |= {"t": 1e12, "trillion": 1e12}
_UNITS = {"%": "%", "percent": "%", "x": "x", "×": "x", "times": "x", "fold": "x"}
_COUNTS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
_NUMBER_WORDS = {word: float(i) for i, word in enumerate(f"{_COUNTS} seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS |= {"hundred": 100.0, "thousand": 1e3, "million": 1e6, "billion": 1e9, "dozen": 12.0, "twice": 2.0}
_STOPWORDS = frozenset(STOPWORDS) | {"than", "over", "up", "about", "around", "nearly", "from", "per", "each"}
_WINDOW = (
    3  # a number's unit word may sit this many words after it in the source ("10,000 NVIDIA GPUs"), or just before
)


@dataclass(frozen=True)
class _Token:
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class _Number:
    """A number as a claim states it: its value (magnitudes folded in: 117M = 117e6) and its unit — "%" or "x", or
    the word that follows it ("GPUs"), or none."""

    surface: str
    value: float
    symbol: str
    word: str


@dataclass(frozen=True)
class _Name:
    surface: str
    key: str
    parts: tuple[str, ...]  # a compound of capitalised words ("Transformer-based"): its capitalised parts' keys
    joined: str  # the key of this token run together with the next one ("Flash Attention" → "flashattention")


def _tokens(text: str) -> list[_Token]:
    tokens = []
    for match in _TOKEN.finditer(text):
        word = match.group().rstrip(_TRAILING)
        if word:
            tokens.append(_Token(word, match.start(), match.start() + len(word)))
    return tokens


def _key(word: str) -> str:
    """A name as compared: lowercase letters and digits only, possessive dropped ("GPT-4's" → "gpt4")."""
    return re.sub(r"[\W_]+", "", _POSSESSIVE.sub("", word).lower())


def _forms(key: str) -> set[str]:
    """A key and its singular ("llms" → "llm")."""
    return {key, key[:-1]} if key.endswith("s") and len(key) > 2 else {key}


def _word(word: str) -> str:
    """A unit word as compared: lowercase and singular."""
    lower = _POSSESSIVE.sub("", word).lower()
    return lower[:-1] if lower.endswith("s") and len(lower) > 2 else lower


def _is_name(word: str, first: bool) -> bool:
    """Capitals or digits make a name; a capitalised ordinary word opening the sentence does not, nor a capitalised
    stopword anywhere ("(iii) The ...")."""
    if len(_key(word)) < 2 or not any(c.isupper() or c.isdigit() for c in word) or word.lower() in _STOPWORDS:
        return False
    return not (first and word[0].isupper() and word[1:].replace("-", "").islower())


def _numbers(text: str, tokens: list[_Token], inside_names: bool = False) -> Iterator[tuple[int, _Number]]:
    """Each number in the text with the index of its token; a range gives one number per end ("2-3x"). With
    ``inside_names`` the numbers within names count too ("Llama-2-7B" offers 7B): a source may state a size so."""
    for i, token in enumerate(tokens):
        if not token.text[0].isdigit() and not (inside_names and "-" in token.text):
            continue
        pieces = _RANGE.split(token.text)
        offset = token.start
        for j, piece in enumerate(pieces):
            begin = text.index(piece, offset)
            offset = begin + len(piece)
            match = _NUMBER.fullmatch(piece.replace(",", ""))
            if match is None:
                continue
            value, suffix = float(match.group(1)), match.group(2).lower()
            number = _Number(piece, value, _UNITS.get(suffix, ""), "" if suffix in _UNITS else _word(suffix))
            if suffix in _MAGNITUDES:
                number = _Number(piece, value * _MAGNITUDES[suffix], "", "")
            if not number.symbol and not number.word:
                follower = pieces[j + 1] if j + 1 < len(pieces) and not pieces[j + 1][0].isdigit() else None
                if follower is not None or j == len(pieces) - 1:
                    number = _unit_after(text, tokens, i, number, offset, follower)
            yield i, number


def _unit_after(text: str, tokens: list[_Token], i: int, number: _Number, end: int, follower: str | None) -> _Number:
    """A bare number with the unit written after it: the rest of its hyphenated token ("3-fold", "7B-parameter"),
    a "%" or "×", a magnitude word ("2.7 billion"), "percent"/"times"/"fold", or the next content word."""
    begin = end - len(number.surface)
    if follower is not None:
        end += 1 + len(follower)
        lower = follower.lower()
        if lower in _MAGNITUDES and lower.isalpha() and len(lower) > 1:  # "1-trillion"
            return _Number(text[begin:end], number.value * _MAGNITUDES[lower], "", "")
        return replace(
            number,
            surface=text[begin:end],
            symbol=_UNITS.get(lower, ""),
            word="" if lower in _UNITS else _word(follower),
        )
    following = tokens[i + 1 : i + 3]
    if symbol := _SYMBOL_AFTER.match(text, end):
        return replace(number, surface=text[begin : symbol.end()], symbol=_UNITS[symbol.group(1)])
    value = number.value
    if following and text[end : following[0].start].isspace() and following[0].text.lower() in _MAGNITUDES:
        value *= _MAGNITUDES[following[0].text.lower()]
        end = following[0].end
        following = following[1:]
        if symbol := _SYMBOL_AFTER.match(text, end):
            return _Number(text[begin : symbol.end()], value, _UNITS[symbol.group(1)], "")
    if following and text[end : following[0].start].isspace() and following[0].text.isalpha():
        lower = following[0].text.lower()
        if lower in _UNITS:
            return _Number(text[begin : following[0].end], value, _UNITS[lower], "")
        if lower not in _STOPWORDS:
            return _Number(text[begin : following[0].end], value, "", _word(lower))
    return _Number(text[begin:end], value, "", "")


def _claim(sentence: str) -> tuple[list[_Number], list[_Name]]:
    text = strip_citations(sentence)
    tokens = _tokens(text)
    numbers = list(dict((number.surface, number) for _, number in _numbers(text, tokens)).values())
    names: dict[str, _Name] = {}
    for i, token in enumerate(tokens):
        word = token.text
        if word[0].isdigit() or not _is_name(word, i == 0):
            continue
        pieces = word.split("-")
        plain = all(piece.isalpha() and piece[1:].islower() for piece in pieces)  # "Self-Attention", not "GR-KAN"
        parts = tuple(_key(piece) for piece in pieces if _is_name(piece, False)) if plain and len(pieces) > 1 else ()
        joined = _key(word + tokens[i + 1].text) if i + 1 < len(tokens) else ""
        names.setdefault(_key(word), _Name(_POSSESSIVE.sub("", word), _key(word), parts, joined))
    return numbers, list(names.values())


@dataclass(frozen=True)
class _Index:
    """What a source text offers to match: its numbers (value, unit, the words around them) and its name keys."""

    numbers: tuple[tuple[float, str, frozenset[str]], ...]
    keys: frozenset[str]


@lru_cache(maxsize=512)
def _index(text: str) -> _Index:
    tokens = _tokens(text)

    def around(i: int) -> set[str]:
        return {_word(token.text) for token in tokens[max(0, i - 1) : i] + tokens[i + 1 : i + 1 + _WINDOW]}

    numbers = [
        (number.value, number.symbol, frozenset(around(i) | {number.word}))
        for i, number in _numbers(text, tokens, inside_names=True)
    ]
    for i, token in enumerate(tokens):
        if (lower := token.text.lower()) in _NUMBER_WORDS:
            numbers.append((_NUMBER_WORDS[lower], "x" if lower == "twice" else "", frozenset(around(i))))
    keys: set[str] = set()
    words = [_key(token.text) for token in tokens]
    for i, token in enumerate(tokens):
        parts = [_key(part) for part in token.text.split("-")]
        for a in range(len(parts)):  # every run of a hyphenated token's parts: "Llama-2-7B" → llama2, 27b, ...
            for b in range(a + 1, len(parts) + 1):
                keys |= _forms("".join(parts[a:b]))
        for width in (2, 3):  # names written apart: "GPT 4"
            if i + width <= len(words):
                keys |= _forms("".join(words[i : i + width]))
    return _Index(tuple(numbers), frozenset(keys))


def _has_number(index: _Index, number: _Number) -> bool:
    """The value, with the same "%" or "x". A unit word counts only against a source that gives it to another number
    ("8 GPUs for 10,000 steps" does not state "10,000 GPUs"); otherwise it is the model's wording ("a 117M model" for
    "117 million parameters", "4 passes" for "4 epochs"), though never for a value the source gives a "%" or "x"."""
    same = [(symbol, near) for value, symbol, near in index.numbers if math.isclose(value, number.value, rel_tol=1e-9)]
    elsewhere = any(number.word in near for value, _, near in index.numbers if not math.isclose(value, number.value))
    return any(
        (not number.symbol or symbol == number.symbol)
        and (not number.word or number.word in near or not (elsewhere or symbol))
        for symbol, near in same
    )


def _has_name(index: _Index, name: _Name) -> bool:
    if _forms(name.key) & index.keys or (name.joined and _forms(name.joined) & index.keys):
        return True
    return bool(name.parts) and all(_forms(part) & index.keys for part in name.parts)


def claim_terms(sentence: str) -> list[str]:
    """The numbers (with their unit) and names a sentence states, as written, citation markers left out."""
    numbers, names = _claim(sentence)
    return [number.surface for number in numbers] + [name.surface for name in names]


def missing_terms(sentence: str, texts: Sequence[str]) -> list[str]:
    """The sentence's numbers and names that none of the texts contains (spelling normalised, see the module)."""
    numbers, names = _claim(sentence)
    indexes = [_index(text) for text in texts]
    missing = [number.surface for number in numbers if not any(_has_number(index, number) for index in indexes)]
    return missing + [name.surface for name in names if not any(_has_name(index, name) for index in indexes)]


@dataclass(frozen=True)
class Support:
    """The verdict on one sentence: the sources that support it (none: unsupported), the terms the sources it was
    checked against lack, and how much of its content they cover."""

    cited: tuple[int, ...]
    missing: tuple[str, ...]
    coverage: float

    @property
    def supported(self) -> bool:
        return bool(self.cited)


class SupportChecker:
    """Checks sentences against sources, with each source's token states kept for the next sentence (an answer's
    sentences cite the same few sources): one forward pass per sentence, a second only to re-attribute one."""

    CACHED_SOURCES = 64

    def __init__(self, embedder: LocalMiniLMEmbedding, term_weights: TermWeights, threshold: float) -> None:
        self.embedder = embedder
        self.term_weights = term_weights
        self.threshold = threshold
        self._states: OrderedDict[str, list[TokenStates]] = OrderedDict()

    def check(self, sentence: str, cited: Sequence[int], sources: Sequence[Source]) -> Support:
        """Whether the cited sources (jointly) support the sentence; if not, the single source that does, best
        coverage first; if none does, no citation. An uncited sentence is checked against every source."""
        claim = strip_citations(sentence)
        by_n = {source.n: source for source in sources}
        cited = tuple(n for n in dict.fromkeys(cited) if n in by_n)
        given_sources = [by_n[n] for n in cited]
        others = [source for source in sources if source.n not in cited]
        (claim_states,) = self._encode([claim], given_sources or others)
        weights = self.term_weights.per_token(claim_states)

        def judge(chosen: Sequence[Source]) -> Support:
            missing = missing_terms(claim, [source.checkable_text for source in chosen])
            pieces = [piece for source in chosen for piece in self._states[source.checkable_text]]
            return Support(tuple(s.n for s in chosen), tuple(missing), coverage(claim_states, weights, pieces))

        def passes(support: Support) -> bool:
            return not support.missing and support.coverage >= self.threshold

        if given_sources:
            given = judge(given_sources)
            if passes(given):
                return given
            self._encode([], others)
        verdicts = [judge([source]) for source in others]
        if passing := [support for support in verdicts if passes(support)]:
            return max(passing, key=lambda support: support.coverage)
        if given_sources:
            return Support((), given.missing, given.coverage)
        best = max((support.coverage for support in verdicts), default=0.0)
        return Support((), tuple(missing_terms(claim, [source.checkable_text for source in sources])), best)

    def _encode(self, texts: list[str], sources: Sequence[Source]) -> list[TokenStates]:
        """The texts' token states, and the sources' kept for judging (title, then every abstract sentence: the
        embedder truncates long texts, and an abstract outruns it); one forward pass for the texts and the sources
        not kept yet."""
        needed = list(dict.fromkeys(source.checkable_text for source in sources))
        fresh = {source.checkable_text: source for source in sources if source.checkable_text not in self._states}
        pieces = [[source.title, *split_sentences(source.abstract)] for source in fresh.values()]
        flat = [*texts, *(piece for group in pieces for piece in group)]
        states = self.embedder.encode_with_tokens(flat)[1] if flat else []
        start = len(texts)
        for text, group in zip(fresh, pieces, strict=True):
            self._states[text] = states[start : start + len(group)]
            start += len(group)
        for text in needed:
            self._states.move_to_end(text)
        while len(self._states) > max(self.CACHED_SOURCES, len(needed)):
            self._states.popitem(last=False)
        return states[: len(texts)]
