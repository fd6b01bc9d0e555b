"""Chat models behind one small interface: stream the reply to a list of messages, or raise LLMUnavailable.

``local`` runs a bundled GGUF with llama.cpp in-process; ``openai`` uses the official client against any
OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp's server); ``none`` has no model (evidence-only answers).
Every failure — a missing or tampered model file, a server that is down, slow or answers garbage — becomes an
:class:`LLMUnavailable` with a one-line reason, so the caller can fall back to the evidence.
"""

import os
from collections.abc import Generator
from typing import Any, Protocol

import httpx

from rag.errors import BadInput
from rag.settings import Settings

Message = dict[str, str]


class LLMUnavailable(RuntimeError):
    """The chat model could not produce (the rest of) an answer."""


class ChatModel(Protocol):
    name: str
    context_tokens: int

    def stream(self, messages: list[Message], max_tokens: int) -> Generator[str]:
        """Text pieces of the reply as they are generated; closing the generator stops the generation."""
        ...


class LocalChatModel:
    """A bundled GGUF run by llama.cpp in this process, with the chat template stored in the file."""

    def __init__(self, settings: Settings) -> None:
        from rag.model_files import verified_model

        path = verified_model(settings.models_path, settings.llm.local_model)
        try:
            from llama_cpp import Llama
        except ImportError:
            raise LLMUnavailable("llama-cpp-python is not installed: run `make install`") from None
        self.name = settings.llm.local_model
        self.context_tokens = settings.llm.context_tokens
        self.temperature = settings.llm.temperature
        self.seed = settings.llm.seed
        self._llama = Llama(
            model_path=str(path),
            n_ctx=settings.llm.context_tokens,
            n_threads=settings.llm.threads or os.cpu_count(),
            seed=settings.llm.seed,
            verbose=False,
        )

    def stream(self, messages: list[Message], max_tokens: int) -> Generator[str]:
        # Evaluate every prompt from scratch: reusing the previous prompt's cached prefix changes the batch shapes, and
        # with them the logits' last bits, so a repeated question could get another answer despite the fixed seed.
        self._llama.reset()
        chunks: Any = self._llama.create_chat_completion(
            messages=messages,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=self.temperature,
            seed=self.seed,  # per call: otherwise llama.cpp moves its seed on, and a repeated question changes answer
            stream=True,
        )
        for chunk in chunks:
            piece = chunk["choices"][0]["delta"].get("content")
            if piece:
                yield piece


class OpenAIChatModel:
    """Any OpenAI-compatible chat endpoint through the official client; the key comes from OPENAI_API_KEY."""

    def __init__(self, settings: Settings) -> None:
        import openai

        self._openai = openai
        self.name = settings.openai.chat_model
        self.context_tokens = settings.llm.context_tokens
        self.temperature = settings.llm.temperature
        self._client = openai.OpenAI(
            base_url=settings.openai.base_url or None,
            api_key=os.environ.get("OPENAI_API_KEY") or "unset",  # local servers ignore it; the client needs one
            timeout=settings.openai.timeout_s,
            max_retries=1,
        )
        self._where = settings.openai.base_url or "api.openai.com"

    def stream(self, messages: list[Message], max_tokens: int) -> Generator[str]:
        try:
            response: Any = self._client.chat.completions.create(
                model=self.name,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=self.temperature,
                stream=True,
            )
            for chunk in response:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        except httpx.HTTPError as error:  # the connection broke while the reply was streaming
            raise LLMUnavailable(
                f"the chat server at {self._where} stopped mid-answer ({type(error).__name__})"
            ) from None
        except self._openai.APITimeoutError:
            raise LLMUnavailable(f"the chat server at {self._where} did not answer in time") from None
        except self._openai.APIConnectionError:
            raise LLMUnavailable(f"the chat server at {self._where} is not reachable") from None
        except self._openai.APIStatusError as error:
            raise LLMUnavailable(f"the chat server at {self._where} answered HTTP {error.status_code}") from None
        except (self._openai.OpenAIError, ValueError, KeyError, AttributeError, TypeError) as error:
            raise LLMUnavailable(
                f"the chat server at {self._where} sent a malformed reply ({type(error).__name__})"
            ) from None


def build_chat_model(settings: Settings) -> ChatModel | None:
    """The chat model for ``llm.provider``; None for "none". Loading problems raise LLMUnavailable."""
    if settings.llm.provider == "none":
        return None
    if settings.llm.provider == "openai":
        return OpenAIChatModel(settings)
    try:
        return LocalChatModel(settings)
    except BadInput as error:
        raise LLMUnavailable(str(error)) from None
