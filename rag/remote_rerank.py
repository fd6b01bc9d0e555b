"""A client for the ``/rerank`` API of a reranker server the user runs or rents.

No cross-encoder ships inside a PyPI package, so the package cannot bundle one; users who serve one with TEI, vLLM,
llama.cpp's server, Jina or Cohere get it through this client. Every way the server can fail — down, slow, an HTTP
error, a body that is not the API's, scores that do not match the documents — is a :class:`RerankUnavailable` naming
the URL, so the caller can keep its own order and say why.
"""

from collections import Counter

import httpx
from pydantic import BaseModel, ConfigDict, FiniteFloat, StrictInt, TypeAdapter, ValidationError


class RerankUnavailable(Exception):
    """The reranker server gave no usable scores; the message says what went wrong and with which URL."""


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True)  # a score sent as a string or an index as a float is not the API's


class _Result(_Strict):
    index: StrictInt
    relevance_score: FiniteFloat


class _Results(_Strict):
    """The Cohere shape, also spoken by Jina, vLLM and llama.cpp's server."""

    results: list[_Result]


class _TeiResult(_Strict):
    index: StrictInt
    score: FiniteFloat


_TEI_REPLY = TypeAdapter(list[_TeiResult])  # text-embeddings-inference answers a bare list


class RemoteReranker:
    """Scores documents against a query with the server at ``url``, the full endpoint (``.../v1/rerank``)."""

    def __init__(self, url: str, model: str, timeout_s: float, api_key: str | None = None) -> None:
        self.url = url
        self.model = model
        self.timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout_s)  # kept: reuses the connection per query
        self._tei = False  # TEI wants the documents as "texts" and Cohere refuses unknown fields: learned once

    def scores(self, query: str, documents: list[str]) -> list[float]:
        """One score per document, in the documents' order (servers answer best first, by index)."""
        if not documents:
            return []
        response = self._post(query, documents)
        if not self._tei and response.status_code == 422 and "texts" in response.text:
            self._tei = True  # TEI's "missing field `texts`": ask again in its own words
            response = self._post(query, documents)
        if not response.is_success:
            raise RerankUnavailable(
                f"the reranker at {self.url} answered HTTP {response.status_code}: {_excerpt(response.text)}"
            )
        try:
            body = response.json()
        except ValueError:
            raise RerankUnavailable(
                f"the reranker at {self.url} sent a body that is not JSON: {_excerpt(response.text)}"
            ) from None
        try:
            if isinstance(body, list):
                ranked = [(result.index, result.score) for result in _TEI_REPLY.validate_python(body)]
            else:
                ranked = [(result.index, result.relevance_score) for result in _Results.model_validate(body).results]
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the body"
            raise RerankUnavailable(
                f"the reranker at {self.url} sent a reply that is not the rerank API's: {where}: {first['msg']}"
            ) from None
        return self._in_document_order(ranked, len(documents))

    def _post(self, query: str, documents: list[str]) -> httpx.Response:
        if self._tei:
            payload: dict[str, object] = {"query": query, "texts": documents}
        else:
            payload = {"model": self.model, "query": query, "documents": documents, "top_n": len(documents)}
        try:
            return self._client.post(self.url, json=payload)
        except httpx.TimeoutException:
            raise RerankUnavailable(f"the reranker at {self.url} timed out after {self.timeout_s:g} s") from None
        except httpx.ConnectError as error:
            raise RerankUnavailable(f"the reranker at {self.url} is not reachable ({error})") from None
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raise RerankUnavailable(f"the request to the reranker at {self.url} failed: {error}") from None

    def _in_document_order(self, ranked: list[tuple[int, float]], count: int) -> list[float]:
        if len(ranked) != count:
            raise RerankUnavailable(f"the reranker at {self.url} returned {len(ranked)} scores for {count} documents")
        indices = Counter(index for index, _ in ranked)
        outside = sorted(index for index in indices if not 0 <= index < count)
        if outside:
            raise RerankUnavailable(
                f"the reranker at {self.url} returned index {outside[0]} for {count} documents (0 to {count - 1})"
            )
        repeated = sorted(index for index, times in indices.items() if times > 1)
        if repeated:
            raise RerankUnavailable(f"the reranker at {self.url} returned index {repeated[0]} more than once")
        by_index = dict(ranked)
        return [by_index[index] for index in range(count)]


def _excerpt(text: str, limit: int = 200) -> str:
    """The start of a body on one line, enough to recognise an error page."""
    flat = " ".join(text.split())
    return (flat[:limit] + "…") if len(flat) > limit else flat or "(empty body)"
