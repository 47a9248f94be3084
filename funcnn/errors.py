"""funcnn's user-error types: one base class, so a caller can tell a user's mistake from a bug.

Every error funcnn raises for bad input (an argument, a config value, a data
file, a checkpoint) is a ``FuncnnError``. The concrete classes also derive from
the built-in type a Python user expects (``ValueError``, ``TypeError``), so
``except ValueError`` keeps working. The ``funcnn`` command reports a
``FuncnnError`` in one line and lets every other exception (a bug) keep its
traceback.
"""
from __future__ import annotations

__all__ = ["FuncnnError", "InvalidArgument", "InvalidType"]


class FuncnnError(Exception):
    """Base of every user error funcnn raises."""


class InvalidArgument(FuncnnError, ValueError):
    """A value that is not allowed: the message names it, what was given and what is allowed."""


class InvalidType(FuncnnError, TypeError):
    """A value of the wrong type or dtype."""
