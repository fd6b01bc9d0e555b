"""Errors the CLI turns into exit codes: bad input is the user's to fix (exit 2), the rest exit 1."""

import errno


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


def storage_problem(error: BaseException) -> str | None:
    """A one-line explanation when an error is the disk's, not the program's: full, read-only or not writable."""
    text = str(error).lower()
    code = error.errno if isinstance(error, OSError) else None
    if code == errno.ENOSPC or "disk is full" in text or "no space left" in text:
        return "no space left on the device holding the data directory"
    if code == errno.EROFS or "readonly database" in text or "read-only file system" in text:
        return "the data directory is on a read-only file system"
    if isinstance(error, PermissionError):
        return f"no permission to write {error.filename or 'the data directory'}"
    return None


class ServiceUnavailable(RuntimeError):
    """A server the command needs (Chroma, an OpenAI-compatible endpoint) did not answer."""
