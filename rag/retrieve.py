"""Hybrid retrieval: dense (Chroma) + BM25, fused, grouped from chunks to papers, then reranked (rag/rerank.py)."""

from dataclasses import dataclass
from typing import Literal

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.llms import MockLLM
from llama_index.core.retrievers import QueryFusionRetriever
from llama_index.core.retrievers.fusion_retriever import FUSION_MODES
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters
from llama_index.retrievers.bm25 import BM25Retriever

from rag.errors import BadInput
from rag.library import Collection
from rag.papers import Hit, Paper, abstract_chunks, chunk_of
from rag.rerank import Ranking, Reranker
from rag.settings import Settings

Mode = Literal["rerank", "hybrid", "dense", "bm25"]  # "rerank": hybrid, then the rerank stage (the default)
MODES: tuple[Mode, ...] = ("rerank", "hybrid", "dense", "bm25")
CHUNKS_PER_PAPER = 3  # a full-text paper's best chunks that evidence reads beside its abstract
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
    """Searches one loaded collection; ``search`` is cheap and thread-safe to call."""

    def __init__(self, settings: Settings, collection: Collection | None = None) -> None:
        self.settings = settings
        self.collection = collection or Collection.open(settings)
        self.bm25 = self.collection.keywords.retriever
        keywords, encoder = self.collection.keywords, self.collection.token_encoder
        self.reranker = Reranker(settings.retrieval, keywords, encoder, self.collection.term_weights)

    def _retriever(self, mode: Mode, k: int, filters: MetadataFilters | None) -> BaseRetriever:
        # enough chunks that grouping them to papers still leaves k papers
        candidates = max(self.settings.retrieval.candidates, 2 * k)
        dense = self.collection.vectors.as_retriever(similarity_top_k=candidates, filters=filters)
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


def group_by_paper(nodes: list[NodeWithScore], k: int) -> list[Hit]:
    """Collapse chunks to papers, keeping each paper's best score and its best ``CHUNKS_PER_PAPER`` chunks."""
    hits: dict[str, Hit] = {}
    for node in sorted(nodes, key=lambda n: n.score or 0.0, reverse=True):
        meta = node.node.metadata
        paper_id = str(meta.get("paper_id"))
        chunk = chunk_of(meta, node.node.get_content())
        if paper_id in hits:
            hit = hits[paper_id]
            if len(hit.chunks) < CHUNKS_PER_PAPER:
                hit.chunks += (chunk,)
            continue
        if len(hits) == k:
            continue
        hits[paper_id] = Hit(
            rank=len(hits) + 1,
            paper=Paper.from_metadata(meta),
            score=round(float(node.score or 0.0), 6),
            chunks=(chunk,),
            abstract_chunks=abstract_chunks(meta),
        )
    return list(hits.values())
