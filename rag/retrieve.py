"""Hybrid retrieval: dense (Chroma) + BM25, fused, grouped from chunks to papers, then reranked (rag/rerank.py)."""

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

from chromadb.api.types import Where
from llama_index.core import VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.retrievers import QueryFusionRetriever
from llama_index.core.retrievers.fusion_retriever import FUSION_MODES
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters
from llama_index.retrievers.bm25 import BM25Retriever
from llama_index.vector_stores.chroma import ChromaVectorStore

from rag import keyword_index
from rag.embedding import LocalMiniLMEmbedding, build_embedder, local_embedder
from rag.errors import BadInput, EmptyCollection
from rag.relevance import TermWeights
from rag.rerank import Ranking, Reranker
from rag.settings import Settings
from rag.store import open_collection

Mode = Literal["rerank", "hybrid", "dense", "bm25"]  # "rerank": hybrid, then the rerank stage (the default)
MODES: tuple[Mode, ...] = ("rerank", "hybrid", "dense", "bm25")
_FUSION = {
    "rrf": FUSION_MODES.RECIPROCAL_RANK,
    "relative_score": FUSION_MODES.RELATIVE_SCORE,
    "dist_based_score": FUSION_MODES.DIST_BASED_SCORE,
}


@dataclass(frozen=True)
class Filters:
    """Metadata restrictions; papers without the field (no year, no categories) never match a restriction."""

    year_from: int | None = None
    year_to: int | None = None
    categories: tuple[str, ...] = ()

    def to_llama(self) -> MetadataFilters | None:
        filters: list[MetadataFilter | MetadataFilters] = []
        if self.year_from is not None:
            filters.append(MetadataFilter(key="year", value=self.year_from, operator=FilterOperator.GTE))
        if self.year_to is not None:
            filters.append(MetadataFilter(key="year", value=self.year_to, operator=FilterOperator.LTE))
        filters += [MetadataFilter(key=f"cat:{c}", value=1, operator=FilterOperator.EQ) for c in self.categories]
        return MetadataFilters(filters=filters) if filters else None


@dataclass
class Hit:
    """One paper in a result list; ``text`` is its best-matching chunk."""

    rank: int
    paper_id: str
    title: str
    score: float  # fused (or single retriever's) score: what the relevance gate's retrieval ratio reads
    text: str
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)
    rerank_score: float | None = None  # the rerank stage's score, when it ordered the list

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "metadata"}


class KeywordRetriever(BM25Retriever):
    """BM25 that returns only documents sharing a term with the query.

    bm25s fills its top-k with zero-score documents, including ones a filter masked out; those are not matches.
    """

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [node for node in super()._retrieve(query_bundle) if (node.score or 0.0) > 0.0]


def check_question(question: str, settings: Settings) -> str:
    """Reject empty or over-long questions with a message that names the limit."""
    question = question.strip()
    if not question:
        raise BadInput("the question is empty")
    limit = settings.limits.max_question_chars
    if len(question) > limit:
        raise BadInput(
            f"the question is {len(question):,} characters; the limit is {limit:,} (limits.max_question_chars)"
        )
    return question


class PaperRetriever:
    """Searches one collection. Models and indexes load once; ``search`` is cheap and thread-safe to call."""

    def __init__(self, settings: Settings, embedder: BaseEmbedding | None = None) -> None:
        self.settings = settings
        stored = open_collection(settings)
        if stored is None:
            raise EmptyCollection(f"collection {settings.collection!r} is empty: run `rag ingest` first")
        self.keywords = keyword_index.load(stored, settings.data_path)  # the published version, never built here
        self.version = self.keywords.version
        self.bm25 = self.keywords.retriever
        self.embedder = embedder or build_embedder(settings, stored.info.embedder)  # the collection's own
        self.collection = stored.collection
        self.index = VectorStoreIndex.from_vector_store(
            ChromaVectorStore(chroma_collection=stored.collection), embed_model=self.embedder
        )
        self.term_weights = TermWeights(self.keywords)
        # The gate and the rerank read the bundled MiniLM's token vectors, whatever embedder built the collection.
        self.token_encoder = (
            self.embedder if isinstance(self.embedder, LocalMiniLMEmbedding) else local_embedder(settings)
        )
        self.reranker = Reranker(settings.retrieval, self.keywords, self.token_encoder, self.term_weights)

    def _retriever(self, mode: Mode, k: int, filters: MetadataFilters | None) -> BaseRetriever:
        # enough chunks that grouping them to papers still leaves k papers
        candidates = max(self.settings.retrieval.candidates, 2 * k)
        dense = self.index.as_retriever(similarity_top_k=candidates, filters=filters)
        sparse = KeywordRetriever(
            existing_bm25=self.bm25.bm25,
            similarity_top_k=min(candidates, len(self.bm25.corpus)),
            filters=filters,
        )
        if mode == "dense":
            return dense
        if mode == "bm25":
            return sparse
        weight = self.settings.retrieval.dense_weight
        return QueryFusionRetriever(
            [dense, sparse],
            llm=MockLLM(),  # never called: num_queries=1 means no generated query variants
            mode=_FUSION[self.settings.retrieval.fusion],
            similarity_top_k=2 * candidates,
            num_queries=1,
            use_async=False,
            retriever_weights=[weight, 1 - weight],
        )

    def search(
        self, question: str, k: int | None = None, mode: Mode = "rerank", filters: Filters | None = None
    ) -> list[Hit]:
        """The top ``k`` papers for the question, best first."""
        return self.rank(question, k, mode, filters).hits

    def rank(
        self, question: str, k: int | None = None, mode: Mode = "rerank", filters: Filters | None = None
    ) -> Ranking:
        """The top ``k`` papers, and the rerank stage's notice when it could not rank as configured."""
        question = check_question(question, self.settings)
        k = k or self.settings.retrieval.top_k
        reranks = mode == "rerank" and self.settings.retrieval.reranker != "none"
        # fusion normalises over the candidates retrieved, so the fused order depends on how deep it looks
        depth = max(k, self.settings.retrieval.rerank_depth) if reranks else k
        llama_filters = filters.to_llama() if filters else None
        try:
            nodes = self._retriever("hybrid" if mode == "rerank" else mode, depth, llama_filters).retrieve(question)
        except ValueError as error:
            if "filtered out" in str(error):  # BM25Retriever's way of saying no paper matches the filters
                return Ranking([])
            raise
        hits = group_by_paper(nodes, depth)
        return self.reranker.rerank(question, hits, k) if mode == "rerank" else Ranking(hits)

    def full_texts(self, hits: list[Hit]) -> dict[str, str]:
        """Each hit's whole abstract: a hit carries its best chunk, so papers of several chunks are read back and
        their chunks joined, the overlap between consecutive chunks removed."""
        texts = {hit.paper_id: hit.text for hit in hits}
        split = [hit.paper_id for hit in hits if int(hit.metadata.get("n_chunks", 1)) > 1]
        if split:
            rows = self.collection.get(
                where=cast(Where, {"paper_id": {"$in": split}}), include=["documents", "metadatas"]
            )
            chunks: dict[str, list[tuple[int, str]]] = {}
            for document, meta in zip(rows["documents"] or [], rows["metadatas"] or [], strict=True):
                chunks.setdefault(str(meta["paper_id"]), []).append((int(str(meta.get("chunk", 0))), document))
            for paper_id, parts in chunks.items():
                texts[paper_id] = join_chunks([text for _, text in sorted(parts)])
        return texts


def join_chunks(chunks: list[str]) -> str:
    """Consecutive chunks joined into the text they were cut from (each may begin with the previous one's end)."""
    text = chunks[0] if chunks else ""
    for chunk in chunks[1:]:
        overlap = next((k for k in range(min(len(text), len(chunk)), 0, -1) if text.endswith(chunk[:k])), 0)
        text += (" " if not overlap else "") + chunk[overlap:]
    return text


def group_by_paper(nodes: list[NodeWithScore], k: int) -> list[Hit]:
    """Collapse chunks to papers, keeping each paper's best chunk and score."""
    hits: dict[str, Hit] = {}
    for node in sorted(nodes, key=lambda n: n.score or 0.0, reverse=True):
        meta = node.node.metadata
        paper_id = str(meta.get("paper_id"))
        if paper_id in hits:
            continue
        hits[paper_id] = Hit(
            rank=len(hits) + 1,
            paper_id=paper_id,
            title=str(meta.get("title", "")),
            score=round(float(node.score or 0.0), 6),
            text=node.node.get_content(),
            metadata=dict(meta),
        )
        if len(hits) == k:
            break
    return list(hits.values())
