"""Chat models behind one small interface: stream the reply to a list of messages, or raise LLMUnavailable.

``local`` runs a bundled GGUF with llama.cpp in-process; ``openai`` uses the official client against any
OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp's server); ``none`` has no model (evidence-only answers).
Every failure — a missing or tampered model file, a server that is down, slow or answers garbage — becomes an
:class:`LLMUnavailable` with a one-line reason, so the caller can fall back to the evidence.
"""

import ctypes
import os
from collections import OrderedDict
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

import httpx
import numpy as np

from rag.errors import BadInput
from rag.settings import Settings

Message = dict[str, str]


class LLMUnavailable(RuntimeError):
    """The chat model could not produce (the rest of) an answer."""


class LogprobsUnavailable(LLMUnavailable):
    """The model answers, but gives no log-probabilities for its first token (a server without ``logprobs``): the
    caller can still ask for a word."""


class ChatModel(Protocol):
    name: str
    context_tokens: int

    def stream(self, messages: list[Message], max_tokens: int, stop: Sequence[str] = ()) -> Generator[str]:
        """Text pieces of the reply as they are generated, ending before any ``stop`` string; closing the generator
        stops the generation."""
        ...


@runtime_checkable
class ScoresOptions(Protocol):
    def option_logprobs(self, messages: list[Message], options: Sequence[str]) -> dict[str, float]:
        """Each one-word option's log-probability as the reply's first token (its spellings summed); raises
        LogprobsUnavailable when the model gives none, LLMUnavailable when it cannot answer at all."""
        ...


@runtime_checkable
class KeepsPromptState(Protocol):
    def keep_fixed_part(self, messages: list[Message]) -> None:
        """Evaluate the fixed part of prompts that begin like ``messages`` now, so no answer waits for it."""
        ...


def spellings(option: str) -> set[str]:
    """How a one-word option can open a reply: "yes", "Yes", "YES", each also after a space."""
    forms = {option, option.lower(), option.capitalize(), option.upper()}
    return forms | {" " + form for form in forms}


class LocalChatModel:
    """A bundled GGUF run by llama.cpp in this process, with the chat template stored in the file.

    On two cores, evaluating the prompt (prefill) is most of an answer's wait; the fixed part of each kind of prompt
    (the system prompt: answers, lists, follow-up rewrites, verdicts) is evaluated once and its state restored.
    """

    FIXED_STATES = 8  # kinds of prompt whose fixed part is kept (each about 1 MB for the 0.5B model)

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
        self._fixed_states: OrderedDict[tuple[int, ...], bytes] = OrderedDict()

    def stream(self, messages: list[Message], max_tokens: int, stop: Sequence[str] = ()) -> Generator[str]:
        tokens = self._from_fixed_part(messages)
        chunks: Any = self._llama.create_completion(
            prompt=tokens,
            max_tokens=max_tokens,
            stop=list(stop),
            temperature=self.temperature,
            seed=self.seed,  # per call: otherwise llama.cpp moves its seed on, and a repeated question changes answer
            stream=True,
        )
        for chunk in chunks:
            piece = chunk["choices"][0]["text"]
            if piece:
                yield piece

    def keep_fixed_part(self, messages: list[Message]) -> None:
        self._from_fixed_part(messages)

    def _from_fixed_part(self, messages: list[Message]) -> list[int]:
        """The chat-templated prompt's tokens, with the model's state set to the end of its fixed part (every message
        but the last, and the last one's header), so that only the rest is evaluated.

        The fixed part is evaluated alone once and its state kept; every prompt then starts from that same state and
        evaluates its own rest in the same batches, so a repeated prompt gets the same logits bit for bit and an
        earlier prompt leaves nothing behind. (Reusing whatever prefix the previous prompt happened to share would
        change the batch shapes, and with them the logits' last bits.)
        """
        import llama_cpp

        tokens = self._tokens(messages)
        if len(tokens) + 1 >= self.context_tokens:
            raise LLMUnavailable(f"the prompt ({len(tokens)} tokens) does not fit the context ({self.context_tokens})")
        header = self._tokens([*messages[:-1], {**messages[-1], "content": ""}])
        fixed = 0
        while fixed < min(len(header), len(tokens) - 1) and header[fixed] == tokens[fixed]:
            fixed += 1
        key = tuple(tokens[:fixed])
        context = self._llama.ctx
        try:
            if (state := self._fixed_states.pop(key, None)) is None:
                self._llama.reset()
                self._llama.eval(list(key))
                size = llama_cpp.llama_state_get_size(context)
                buffer = (ctypes.c_uint8 * size)()
                state = bytes(buffer[: llama_cpp.llama_state_get_data(context, buffer, size)])
            else:
                buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
                if llama_cpp.llama_state_set_data(context, buffer, len(state)) != len(state):
                    raise RuntimeError("llama_state_set_data restored less than it was given")
                self._llama.input_ids[:fixed] = key
                self._llama.n_tokens = fixed
        except RuntimeError as error:  # llama_decode failed
            self._llama.reset()
            raise LLMUnavailable(f"{self.name} could not evaluate the prompt ({error})") from None
        self._fixed_states[key] = state  # most recent last
        while len(self._fixed_states) > self.FIXED_STATES:
            self._fixed_states.popitem(last=False)
        return tokens

    def _tokens(self, messages: list[Message]) -> list[int]:
        prompt = self._formatter(messages=messages).prompt
        return self._llama.tokenize(prompt.encode(), add_bos=False, special=True)

    @cached_property
    def _formatter(self) -> Any:
        """The file's own chat template: the prompt that both answers and option scores evaluate."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise LLMUnavailable(f"{self.name} has no chat template")

        def text(token: int) -> str:
            return self._llama.detokenize([token], special=True).decode(errors="ignore") if token != -1 else ""

        return Jinja2ChatFormatter(template, text(self._llama.token_eos()), text(self._llama.token_bos()))

    def option_logprobs(self, messages: list[Message], options: Sequence[str]) -> dict[str, float]:
        """The next-token distribution after the chat-templated prompt, read for each option's one-token spellings.

        The prompt's fixed part is restored as :meth:`stream` does, so a repeated prompt gets the same figures.
        """
        import llama_cpp

        tokens = self._from_fixed_part(messages)
        try:
            self._llama.eval(tokens[self._llama.n_tokens :])
        except RuntimeError as error:  # llama_decode failed
            self._llama.reset()
            raise LLMUnavailable(f"{self.name} could not evaluate the prompt ({error})") from None
        vocabulary = self._llama.n_vocab()
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._llama.ctx, -1), shape=(vocabulary,))
        logprobs = logits.astype(np.float64) - np.logaddexp.reduce(logits.astype(np.float64))
        scores = {}
        for option in options:
            pieces = [self._llama.tokenize(form.encode(), add_bos=False, special=False) for form in spellings(option)]
            # spellings that are one token each: a longer one's first token ("MAY" of "MAYBE") is another word
            ids = sorted({p[0] for p in pieces if len(p) == 1} or {min(pieces, key=len)[0]})
            scores[option] = float(np.logaddexp.reduce(logprobs[ids]))
        return scores


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

    def stream(self, messages: list[Message], max_tokens: int, stop: Sequence[str] = ()) -> Generator[str]:
        with self._failures():
            response: Any = self._client.chat.completions.create(
                model=self.name,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens,
                stop=list(stop)[:4] or None,  # OpenAI takes at most four
                temperature=self.temperature,
                stream=True,
            )
            for chunk in response:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

    def option_logprobs(self, messages: list[Message], options: Sequence[str]) -> dict[str, float]:
        """Read from the first token's top 20 log-probabilities (the most the API gives). An option none of whose
        spellings is listed gets the lowest listed figure: an upper bound on its own, and finite."""
        with self._failures():
            try:
                response: Any = self._client.chat.completions.create(
                    model=self.name,
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=1,
                    temperature=0,
                    logprobs=True,
                    top_logprobs=20,
                )
            except (self._openai.BadRequestError, self._openai.UnprocessableEntityError) as error:
                raise LogprobsUnavailable(
                    f"the chat server at {self._where} refused a logprobs request (HTTP {error.status_code})"
                ) from None
            choice = response.choices[0] if response.choices else None
            first = choice.logprobs.content[0] if choice and choice.logprobs and choice.logprobs.content else None
            if first is None or not first.top_logprobs:
                raise LogprobsUnavailable(f"the chat server at {self._where} returned no logprobs")
            listed = [(top.token, top.logprob) for top in first.top_logprobs]
        floor = min(logprob for _, logprob in listed)
        scores = {}
        for option in options:
            found = [logprob for token, logprob in listed if token in spellings(option)]
            scores[option] = float(np.logaddexp.reduce(found)) if found else floor
        return scores

    @contextmanager
    def _failures(self) -> Iterator[None]:
        """Every way a request can fail, as LLMUnavailable with a one-line reason."""
        try:
            yield
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
