"""Errors the CLI turns into exit codes: bad input is the user's to fix (exit 2), the rest exit 1."""


class BadInput(ValueError):
    """Input the user must fix: a malformed corpus, an unknown option, an over-long question."""


class CorpusError(BadInput):
    """A corpus file that cannot be read; the message names the file and, where there is one, the line."""

    def __init__(self, path: object, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class EmptyCollection(BadInput):
    """Nothing is ingested in the collection a question was asked of."""


class ServiceUnavailable(RuntimeError):
    """A server the command needs (Chroma, an OpenAI-compatible endpoint) did not answer."""
