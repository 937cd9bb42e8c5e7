"""User-facing errors.

Every problem caused by the user's input (a bad model string, a malformed suite, a corrupt
data row) is raised as :class:`EvalkitError`; the CLI prints its message as one line and
exits non-zero. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EvalkitError(Exception):
    """A clear, one-line problem with the user's input or environment."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split("\n")))
