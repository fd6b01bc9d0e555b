"""Token vectors of every row, computed when an index version is published, so the rerank stage can match a question
token by token against forty papers in milliseconds instead of running MiniLM over their abstracts per query.

Each row (title and chunk) is encoded sentence by sentence with the bundled MiniLM, as the relevance gate does. Only
the tokens a question can weigh are kept (no stopwords, no punctuation), one vector per distinct wordpiece of a row
(its occurrences averaged), projected onto the collection's top 128 principal directions and stored as int8: about
120-160 vectors and 15-20 KB a paper, memory-mapped by readers. On the dev set neither the pruning nor the projection
moved the rerank's nDCG@10. A republish encodes only the rows whose text has changed.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from llama_index.core.schema import BaseNode
from tqdm import tqdm

from rag.embedding import LocalMiniLMEmbedding, TokenStates
from rag.text import STOPWORDS, split_sentences

TOKENS_FILE = "tokens.npz"  # row keys, offsets and the projection
CODES_FILE = "token_codes.npy"  # the int8 vectors, memory-mapped by readers
DIMENSIONS = 128  # principal directions kept; 64 lost 0.006 nDCG@10 on dev, 128 lost nothing
_SAMPLE = 50_000  # token vectors the projection is fitted on (the first rows' tokens)
_ENOUGH = 2_000  # a projection fitted on fewer (under ~15 abstracts) is refitted by the next build
_BATCH = 32  # rows encoded per forward pass
_STOP = frozenset(word.lower() for word in STOPWORDS)


def row_key(node: BaseNode) -> str:
    """What a row's vectors were computed from: its id and text (a re-chunked or edited row is encoded afresh)."""
    title = str(node.metadata.get("title", ""))
    return hashlib.sha1(f"{node.node_id}\n{title}\n{node.get_content()}".encode()).hexdigest()[:20]


def row_texts(node: BaseNode) -> list[str]:
    """The texts a row is encoded as: its title and each of its sentences (encoded apart, as the gate reads them)."""
    return [str(node.metadata.get("title", "")), *split_sentences(node.get_content())]


def distinct_pieces(states: Sequence[TokenStates]) -> np.ndarray:
    """One unit vector per distinct content wordpiece of a row: the mean of its occurrences' vectors."""
    ids: list[int] = []
    vectors: list[np.ndarray] = []
    for text in states:
        keep = [i for i, word in enumerate(text.words) if word.isalnum() and word.lower() not in _STOP]
        ids += [text.ids[i] for i in keep]
        vectors.append(text.vectors[keep])
    if not ids:
        return np.zeros((0, 384), dtype=np.float32)
    unique, inverse = np.unique(np.array(ids), return_inverse=True)
    merged = np.zeros((len(unique), 384), dtype=np.float32)
    np.add.at(merged, inverse, np.concatenate(vectors))
    return _unit(merged)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class TokenVectors:
    """Every row's token vectors in the projected space, int8, with where each row's run begins."""

    keys: np.ndarray  # row_key per row
    paper_ids: np.ndarray  # the paper each row belongs to
    offsets: np.ndarray  # row i's vectors are codes[offsets[i]:offsets[i + 1]]
    codes: np.ndarray  # int8, unit vectors × 127; memory-mapped when loaded
    mean: np.ndarray  # the projection: (v - mean) @ basis, then unit length
    basis: np.ndarray
    fitted_on: int  # token vectors the projection was fitted on

    def project(self, vectors: np.ndarray) -> np.ndarray:
        return _unit((vectors - self.mean) @ self.basis)

    def rows_of(self) -> dict[str, list[int]]:
        rows: dict[str, list[int]] = {}
        for i, paper_id in enumerate(self.paper_ids.tolist()):
            rows.setdefault(str(paper_id), []).append(i)
        return rows

    def paper_vectors(self, rows: Sequence[int]) -> np.ndarray:
        """The rows' vectors, as unit float32 in the projected space."""
        parts = [self.codes[self.offsets[i] : self.offsets[i + 1]] for i in rows]
        if not parts:
            return np.zeros((0, self.basis.shape[1]), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32) / 127.0

    def save(self, folder: Path) -> None:
        np.save(folder / CODES_FILE, self.codes)
        np.savez(
            folder / TOKENS_FILE, keys=self.keys, paper_ids=self.paper_ids, offsets=self.offsets,
            mean=self.mean, basis=self.basis, fitted_on=np.array(self.fitted_on),
        )  # fmt: skip

    @classmethod
    def load(cls, folder: Path) -> "TokenVectors":
        with np.load(folder / TOKENS_FILE) as data:
            arrays = {name: data[name] for name in data.files}
        codes = np.load(folder / CODES_FILE, mmap_mode="r")  # read as searches touch it: RSS stays small
        return cls(**arrays | {"codes": codes, "fitted_on": int(arrays["fitted_on"])})


def build_token_vectors(
    nodes: Sequence[BaseNode],
    embedder: LocalMiniLMEmbedding,
    previous: TokenVectors | None = None,
    progress: bool = False,
) -> TokenVectors:
    """The token vectors of every row, encoding only the rows the previous version does not hold (same key).

    The previous version's projection is kept when it was fitted on enough tokens; otherwise (a first build, or a
    tiny previous collection) every row is encoded and the projection is fitted on the first rows' tokens. Rows are
    quantised batch by batch, so memory stays flat at any size.
    """
    keys = [row_key(node) for node in nodes]
    reuse = previous is not None and previous.fitted_on >= _ENOUGH
    old = {str(key): i for i, key in enumerate(previous.keys.tolist())} if reuse and previous is not None else {}
    projection = (previous.mean, previous.basis, previous.fitted_on) if reuse and previous is not None else None
    todo = [i for i, key in enumerate(keys) if key not in old]
    codes: dict[int, np.ndarray] = {}
    pending: list[tuple[int, np.ndarray]] = []  # encoded rows waiting for the projection to be fitted
    with tqdm(total=len(todo), unit="row", desc="token vectors", disable=None if progress else True) as bar:
        for start in range(0, len(todo), _BATCH):
            batch = todo[start : start + _BATCH]
            texts = [row_texts(nodes[i]) for i in batch]
            _, states = embedder.encode_with_tokens([text for row in texts for text in row])
            at = 0
            for i, row in zip(batch, texts, strict=True):
                pending.append((i, distinct_pieces(states[at : at + len(row)])))
                at += len(row)
            last = start + _BATCH >= len(todo)
            if projection is None and (last or sum(len(run) for _, run in pending) >= _SAMPLE):
                sample = np.concatenate([run for _, run in pending])
                projection = (*fit_projection(sample), len(sample))
            if projection is not None:
                mean, basis, _ = projection
                codes |= {i: np.round(_unit((run - mean) @ basis) * 127).astype(np.int8) for i, run in pending}
                pending.clear()
            bar.update(len(batch))
    assert projection is not None  # rows to encode, or a projection kept
    runs = [codes[i] if i in codes else _run(previous, old[key]) for i, key in enumerate(keys)]
    offsets = np.zeros(len(runs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(run) for run in runs])
    mean, basis, fitted_on = projection
    return TokenVectors(
        keys=np.array(keys),
        paper_ids=np.array([str(node.metadata.get("paper_id")) for node in nodes]),
        offsets=offsets,
        codes=np.concatenate(runs) if runs else np.zeros((0, DIMENSIONS), dtype=np.int8),
        mean=mean,
        basis=basis,
        fitted_on=fitted_on,
    )


def _run(vectors: TokenVectors | None, row: int) -> np.ndarray:
    assert vectors is not None
    return np.asarray(vectors.codes[vectors.offsets[row] : vectors.offsets[row + 1]])


def fit_projection(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean and top principal directions of the token vectors (eigenvectors of their 384×384 covariance)."""
    mean = vectors.mean(axis=0).astype(np.float32)
    centred = vectors - mean
    _, eigenvectors = np.linalg.eigh(centred.T @ centred)
    return mean, np.ascontiguousarray(eigenvectors[:, ::-1][:, :DIMENSIONS]).astype(np.float32)


def coverage(question: np.ndarray, weights: np.ndarray, paper: np.ndarray) -> float:
    """IDF-weighted mean over the question's (projected) tokens of each one's best cosine with the paper's tokens:
    the gate's measure (rag.relevance.coverage) on the stored vectors."""
    total = float(weights.sum())
    if total <= 0 or not len(paper):
        return 0.0
    return float((question @ paper.T).max(axis=1) @ weights / total)
