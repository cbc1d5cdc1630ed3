"""The one exception tree of ATM.

Every error ATM raises on purpose derives from :class:`ATMError`; the leaves also
derive from the matching builtin so callers that catch ``KeyError`` or
``ValueError`` keep working.
"""


class ATMError(Exception):
    """Base class of every error ATM raises on purpose."""


class InvalidInputError(ATMError, ValueError):
    """Input from a user (a CSV, an option, a request body) is unusable.

    The message names the bad value and, where possible, how to fix it.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFoundError(ATMError, KeyError):
    """A row (dataset, datarun, hyperpartition, classifier) does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConflictError(ATMError):
    """The requested change does not fit the current state of a row."""


class DatabaseUnavailableError(ATMError):
    """The database could not be reached after bounded retries."""


class ClassifierError(ATMError):
    """Training or evaluating one classifier failed."""


class StorageError(ATMError, OSError):
    """A model or metrics file could not be written or read."""
