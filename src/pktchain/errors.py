"""Errors that every layer may raise about what it was asked to do.

These are the caller's mistakes (h11's ``LocalProtocolError``), not the
wire's: a bad packet from the network is a counted drop, never an exception.
They sit at the bottom of the layers so that any module can raise them
without importing the command line or a subsystem above it.

* :class:`UsageError`: a mistake on the command line, printed as one line with
  exit status 2;
* :class:`ConfigError`: a configuration with one or more wrong fields, each a
  :class:`FieldError` with its dotted path, all reported together.
"""

from __future__ import annotations

import dataclasses

__all__ = ["ConfigError", "FieldError", "PktchainError", "UsageError"]


class PktchainError(Exception):
    """Base of the errors pktchain raises about what it was asked to do."""


class UsageError(PktchainError):
    """A mistake in what the user asked for: printed as one line, exit status 2."""


@dataclasses.dataclass(frozen=True, slots=True)
class FieldError:
    """One wrong field: where (dotted path, ``""`` for the whole) and what is wrong."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class ConfigError(PktchainError, ValueError):
    """A configuration with one or more wrong fields; ``errors`` lists them all."""

    def __init__(self, errors: list[FieldError], *, subject: str = "configuration") -> None:
        self.errors = errors
        self.subject = subject
        super().__init__(f"invalid {subject}: " + "; ".join(str(e) for e in errors))
