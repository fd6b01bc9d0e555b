"""Numbers and names in text, one implementation for the claim checker (rag.support) and the gate (rag.gate).

A number is read with its value (magnitudes folded in: 117M = 117e6), its unit ("%" or "x", or the word after it:
"GPUs") and the words around it, so "8 GPUs for 10,000 steps" states 8 GPUs and 10,000 steps, not 10,000 GPUs. A name
is a token with capitals or digits (GPT-4, H100, WikiText-103). Matching forgives spelling, not content: "GPT4" is
"gpt-4", "45 %" is "45 percent", "1,000" is "1000" and "1k", "LLMs" is "LLM", "BERT's" is "BERT", and a capitalised
word is found lowercase ("Transformer" in "... a transformer ..."); "45%" is not "45 points".
"""

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from rag.text import STOPWORDS, strip_citations

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
class Stated:
    """A number a sentence states: its value, its "%" or "x", and the words around it (lowercase, singular)."""

    value: float
    symbol: str
    context: frozenset[str]


def stated_numbers(sentence: str, window: int = 6) -> list[Stated]:
    """The numbers a sentence states, each with the ``window`` words either side of it (and its unit word): what
    decides whether a sentence states *the* figure asked for ("8 GPUs for 10,000 steps" gives a GPU count and a step
    count), not merely some figure."""
    text = strip_citations(sentence)
    tokens = _tokens(text)

    def around(i: int) -> frozenset[str]:
        return frozenset(_word(token.text) for token in tokens[max(0, i - window) : i] + tokens[i + 1 : i + 1 + window])

    found = [
        Stated(number.value, number.symbol, around(i) | ({number.word} if number.word else set()))
        for i, number in _numbers(text, tokens, inside_names=True)
    ]
    return found + [
        Stated(_NUMBER_WORDS[lower], "x" if lower == "twice" else "", around(i))
        for i, token in enumerate(tokens)
        if (lower := token.text.lower()) in _NUMBER_WORDS and lower not in ("one", "zero")
    ]


def name_keys(sentence: str) -> set[str]:
    """The names a sentence states, as compared (lowercase letters and digits: "GPT-4's" → "gpt4")."""
    _, names = _claim(sentence)
    return {name.key for name in names}


def unit_word(word: str) -> str:
    """A word as number contexts hold it: lowercase, singular, possessive dropped ("GPUs" → "gpu")."""
    return _word(word)
