"""Write library.bib, library.ris and library.json: one small reference library in three exports, laid out the way
Zotero 7 writes them (BibTeX with LaTeX escapes and {Protected} capitals, RIS with CRLF line ends, CSL JSON indented
with tabs). The 20 papers' titles and abstracts are verbatim from the bundled corpus; everything else (authors,
venues, dates, keywords, URLs, DOIs under the 10.5555 example prefix) is SYNTHETIC. A 21st item has no abstract.

Run once from the project root, and again only to change the fixtures:
    .venv/bin/python tests/data/library/make_exports.py
"""

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from rag.readers import BUNDLED_CORPUS, read_corpus

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Item:
    title: str
    abstract: str | None
    kind: str  # the Zotero item type
    authors: tuple[str, ...]  # "Family, Given", or an institution's name alone
    venue: str | None  # publication / proceedings / book title
    publisher: str | None  # publisher, university, institution or repository
    date: tuple[int, int, int]
    doi: str | None
    keywords: tuple[str, ...]
    url: str | None = None
    note: str | None = None  # Zotero's Extra, e.g. the arXiv id of a preprint


# (title as in the corpus, Zotero item type, authors, venue, publisher, date, keywords, url, note)
PAPERS = [
    ("On Retrieval Augmentation and the Limitations of Language Model Training", "conferencePaper",
     ("Hoang, Minh-Thu", "Müller, Jörg"), "Proceedings of the Example Conference on Language Modeling",
     "Example Press", (2024, 6, 3), ("retrieval augmentation", "softmax bottleneck"), None, None),
    ("Why do small language models underperform? Studying Language Model Saturation via the Softmax Bottleneck",
     "journalArticle", ("Dvořák, Jan", "van der Berg, Anna", "Núñez, Lucía"),
     "Journal of Learning & Inference", None, (2024, 4, 11),
     ("Computer Science - Computation and Language", "softmax bottleneck", "language models"), None, None),
    ("DεpS: Delayed ε-Shrinking for Faster Once-For-All Training", "conferencePaper",
     ("Okafor, Chidi", "Lindqvist, Sara"), "Proceedings of the Synthetic Workshop on Efficient Training",
     "Example Press", (2024, 7, 22), ("efficient training",), None, None),
    ("Scaling Laws for Neural Language Models", "journalArticle",
     ("Tanaka, Hiroshi", "Fischer, Lena", "Adeyemi, Tunde"), "Transactions on Imaginary Language Models", None,
     (2020, 1, 23), ("scaling laws", "language models"), None, None),
    ("FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning", "preprint",
     ("Moreau, Élise",), None, "arXiv", (2023, 7, 17), ("Computer Science - Machine Learning", "attention"),
     "http://arxiv.org/abs/2307.99001", "arXiv:2307.99001 [cs]"),
    ("Cramming: Training a Language Model on a Single GPU in One Day", "conferencePaper",
     ("Kowalski, Piotr", "Haddad, Rania"), "Proceedings of the Example Conference on Machine Learning",
     "Example Press", (2023, 7, 23), ("efficient training", "language models"), None, None),
    ("Scaling Data-Constrained Language Models", "journalArticle",
     ("Silva, Beatriz", "O'Neill, Declan"), "Journal of Synthetic Learning Research", None, (2023, 5, 25),
     ("scaling laws", "data"), None, None),
    ("Cut Your Losses in Large-Vocabulary Language Models", "journalArticle",
     ("Ivanova, Daria",), "Revue Française d'Apprentissage Automatique", None, (2024, 11, 13),
     ("softmax", "memory"), None, None),
    ("Low-Rank Bottleneck in Multi-head Attention Models", "journalArticle",
     ("Reddy, Anil", "Schäfer, Tobias"), "Transactions on Imaginary Language Models", None, (2020, 2, 17),
     ("attention", "low-rank bottleneck"), None, None),
    ("Gradient Episodic Memory for Continual Learning", "bookSection",
     ("Ferreira, Joana",), "Advances in Synthetic Continual Learning", "Example Academic Publishers",
     (2017, 6, 26), ("continual learning",), None, None),
    ("MINE: Mutual Information Neural Estimation", "journalArticle",
     ("Nakamura, Yuki", "Petrov, Ivan"), "Journal of Synthetic Learning Research", None, (2018, 1, 12),
     ("mutual information",), None, None),
    ("Universal Sentence Encoder", "report", ("Synthetic Research Collective",), None,
     "Institute for Example Studies", (2018, 3, 29), ("sentence embeddings",), None, None),
    ("Cyclical Learning Rates for Training Neural Networks", "journalArticle",
     ("Andersson, Karl",), "Journal of Learning & Inference", None, (2015, 6, 3), ("learning rate",), None, None),
    ("Large Batch Training of Convolutional Networks", "journalArticle",
     ("Zhou, Mei", "García, Pablo"), "Journal of Synthetic Learning Research", None, (2017, 8, 13),
     ("large batch training",), None, None),
    ("Current Limitations of Language Models: What You Need is Retrieval", "thesis",
     ("Bianchi, Giulia",), None, "University of Example", (2020, 9, 10), ("retrieval", "language models"),
     None, None),
    ("Adaptive Gradient Methods with Dynamic Bound of Learning Rate", "conferencePaper",
     ("Kim, Seo-yeon", "Wright, Oliver"), "Proceedings of the Example Conference on Learning Representations",
     "Example Press", (2019, 2, 26), ("optimization", "learning rate"), None, None),
    ("An Empirical Model of Large-Batch Training", "journalArticle",
     ("Hughes, Amelia", "Mensah, Kofi"), "Transactions on Imaginary Language Models", None, (2018, 12, 14),
     ("large batch training",), None, None),
    ("Physics of Language Models: Part 3.3, Knowledge Capacity Scaling Laws", "book",
     ("Lefèvre, Antoine",), None, "Example Academic Publishers", (2024, 4, 8),
     ("scaling laws", "knowledge capacity"), None, None),
    ("Language models scale reliably with over-training and on downstream tasks", "journalArticle",
     ("Novak, Petra", "Suzuki, Kenta"), "Journal of Synthetic Learning Research", None, (2024, 3, 13),
     ("scaling laws",), None, None),
    ("Continual Pre-Training of Large Language Models: How to (re)warm your model?", "journalArticle",
     ("Dubois, Camille", "Osei, Ama"), "Revue Française d'Apprentissage Automatique", None, (2023, 8, 8),
     ("continual learning", "language models"), None, None),
]  # fmt: skip
NO_ABSTRACT = Item(
    title="Über die Grenzen neuronaler Netze",
    abstract=None,
    kind="journalArticle",
    authors=("Weiß, Günther",),
    venue="Zeitschrift für Beispielhafte Informatik",
    publisher=None,
    date=(2019, 5, 2),
    doi=None,
    keywords=("neural networks",),
)

BIBTEX_TYPES = {"journalArticle": "article", "conferencePaper": "inproceedings", "bookSection": "incollection",
                "book": "book", "thesis": "phdthesis", "report": "techreport", "preprint": "misc"}  # fmt: skip
RIS_TYPES = {"journalArticle": "JOUR", "conferencePaper": "CPAPER", "bookSection": "CHAP", "book": "BOOK",
             "thesis": "THES", "report": "RPRT", "preprint": "UNPB"}  # fmt: skip
CSL_TYPES = {"journalArticle": "article-journal", "conferencePaper": "paper-conference", "bookSection": "chapter",
             "book": "book", "thesis": "thesis", "report": "report", "preprint": "article"}  # fmt: skip
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]

# What Zotero's BibTeX export writes for characters that LaTeX treats specially or that are not ASCII.
LATEX = {
    "\\": "{\\textbackslash}", "{": "\\{", "}": "\\}", "%": "\\%", "&": "\\&", "$": "\\$", "#": "\\#", "_": "\\_",
    "~": "{\\textasciitilde}", "^": "{\\textasciicircum}", "<": "{\\textless}", ">": "{\\textgreater}",
    "ü": '{\\"u}', "ö": '{\\"o}', "ä": '{\\"a}', "Ü": '{\\"U}', "é": "{\\'e}", "É": "{\\'E}", "á": "{\\'a}",
    "í": "{\\'i}", "ú": "{\\'u}", "ñ": "{\\~n}", "è": "{\\`e}", "ç": "{\\c c}", "ř": "{\\v r}", "ß": "{\\ss}",
    "ε": "{$\\varepsilon$}",
}  # fmt: skip


def latex(text: str) -> str:
    unmapped = {char for char in text if ord(char) > 127 and char not in LATEX}
    assert not unmapped, f"add a LaTeX escape for {unmapped}"
    return "".join(LATEX.get(char, char) for char in text)


def protected_title(title: str) -> str:
    """Zotero keeps capitals as typed by bracing each capitalised word after the first."""
    words = re.split(r"(\s+)", title)
    out = []
    for i, word in enumerate(words):
        encoded = latex(word)
        capital = any(c.isupper() for c in word) and (i > 0 or any(c.isupper() for c in word[1:]))
        out.append("{" + encoded + "}" if capital and not word.isspace() else encoded)
    return "".join(out)


def ascii_word(text: str) -> str:
    return re.sub(r"[^a-z]", "", unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower())


def citation_key(item: Item) -> str:
    """Zotero's default key: first author's family name, first title word that is not a stop word, year."""
    stop = {"a", "an", "the", "on", "of", "why", "do", "die", "how", "what", "is"}
    word = next(w for w in map(ascii_word, item.title.split()) if w and w not in stop)
    return f"{ascii_word(item.authors[0].split(',')[0].split()[-1])}_{word}_{item.date[0]}"


def items() -> list[Item]:
    corpus = {paper.title: paper for paper in read_corpus(BUNDLED_CORPUS)}
    library = []
    for number, (title, kind, authors, venue, publisher, date, keywords, url, note) in enumerate(PAPERS, start=1):
        paper = corpus[title]  # KeyError: the corpus no longer holds this title verbatim
        doi = f"10.5555/synthetic.{date[0]}.{number:03d}"
        library.append(
            Item(
                title,
                paper.abstract,
                kind,
                authors,
                venue,
                publisher,
                date,
                doi,
                keywords,
                url or f"https://example.org/library/{number:03d}",
                note,
            )
        )
    library.insert(7, NO_ABSTRACT)  # somewhere in the middle, as a real library has it
    return library


def bibtex(library: list[Item]) -> str:
    out = ["@comment{Synthetic library for tests: titles and abstracts from rag/assets/trending_papers.txt; "
           "authors, venues, dates, keywords and DOIs (10.5555 example prefix) are invented.}\n"]  # fmt: skip
    for item in library:
        kind = BIBTEX_TYPES[item.kind]
        fields = [("title", protected_title(item.title))]
        if item.url:
            fields.append(("url", item.url))
        if item.doi:
            fields.append(("doi", item.doi))
        if item.abstract:
            fields.append(("abstract", latex(item.abstract)))
        if item.venue:
            fields.append(({"article": "journal"}.get(kind, "booktitle"), latex(item.venue)))
        if item.publisher:
            key = {"phdthesis": "school", "techreport": "institution"}.get(kind, "publisher")
            fields.append((key, latex(item.publisher)))
        if kind == "phdthesis":
            fields.append(("type", "{PhD} {Thesis}"))
        fields.append(("author", " and ".join(latex(a) if "," in a else "{" + latex(a) + "}" for a in item.authors)))
        body = [f"\t{key} = {{{value}}}," for key, value in fields]
        body.append(f"\tmonth = {MONTHS[item.date[1] - 1]},")
        body.append(f"\tyear = {{{item.date[0]}}},")
        if item.note:
            body.append(f"\tnote = {{{latex(item.note)}}},")
        body.append(f"\tkeywords = {{{latex(', '.join(item.keywords))}}},")
        out.append(f"\n@{kind}{{{citation_key(item)},\n" + "\n".join(body) + "\n}\n")
    return "".join(out)


def ris(library: list[Item]) -> str:
    records = []
    for item in library:
        tags = [("TY", RIS_TYPES[item.kind]), ("TI", item.title)]
        tags += [("AU", author) for author in item.authors]
        if item.venue:
            tags.append(("T2", item.venue))
        if item.abstract:
            tags.append(("AB", item.abstract))
        year, month, day = item.date
        tags += [("DA", f"{year}/{month:02d}/{day:02d}/"), ("PY", str(year))]
        if item.doi:
            tags.append(("DO", item.doi))
        if item.publisher:
            tags.append(("PB", item.publisher))
        if item.kind == "thesis":
            tags.append(("M3", "PhD Thesis"))
        if item.url:
            tags.append(("UR", item.url))
        tags += [("KW", keyword) for keyword in item.keywords]
        if item.note:
            tags.append(("N1", item.note))
        records.append("".join(f"{tag}  - {value}\r\n" for tag, value in tags) + "ER  - \r\n\r\n")
    return "".join(records)


def csl_json(library: list[Item]) -> str:
    objects = []
    for number, item in enumerate(library, start=1):
        year, month, day = item.date
        data: dict[str, object] = {"id": f"http://zotero.org/users/local/Xq7Rb2Lk/items/SYN{number:05d}",
                                   "type": CSL_TYPES[item.kind]}  # fmt: skip
        if item.abstract:
            data["abstract"] = item.abstract
        if item.venue:
            data["container-title"] = item.venue
        if item.doi:
            data["DOI"] = item.doi
        if item.kind == "thesis":
            data["genre"] = "PhD Thesis"
        if item.note:
            data["number"] = item.note.split()[0]
        if item.publisher:
            data["publisher"] = item.publisher
        data["title"] = item.title
        if item.url:
            data["URL"] = item.url
        data["author"] = [
            {"family": family.strip(), "given": given.strip()} if given else {"literal": family}
            for family, _, given in (author.partition(",") for author in item.authors)
        ]
        data["issued"] = {"date-parts": [[str(year), month, day]]}
        data["keyword"] = ", ".join(item.keywords)
        objects.append(data)
    return json.dumps(objects, indent="\t", ensure_ascii=False) + "\n"


def main() -> None:
    library = items()
    (HERE / "library.bib").write_text(bibtex(library), encoding="utf-8")
    (HERE / "library.ris").write_bytes(ris(library).encode("utf-8"))  # bytes: keep the CRLF line ends
    (HERE / "library.json").write_text(csl_json(library), encoding="utf-8")
    print(f"wrote {len(library)} items ({sum(1 for i in library if i.abstract)} with abstracts) to {HERE}")


if __name__ == "__main__":
    main()
