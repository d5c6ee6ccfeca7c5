"""Errors a user can act on. The CLI prints them in one line and exits with code 2."""

from __future__ import annotations


class TemtoolError(Exception):
    """Bad input: a file, folder or option the user can fix. The message says how."""


class ArchitectureError(TemtoolError, ValueError):
    """An architecture description that cannot be built."""


class ParameterError(TemtoolError):
    """A bad value of a library parameter, named as in the Python API (``batch_size``).

    The command line maps :attr:`param` to its option (``--batch``) when it prints the error,
    so library code never has to know the spelling of a flag.
    """

    def __init__(self, param: str, problem: str):
        self.param, self.problem = param, problem
        super().__init__(f"{param} {problem}")


def check_positive(name: str, value, allow_none: bool = True):
    """``value`` if it is a finite number > 0 (or None when allowed), else a
    :class:`ParameterError` naming ``name``."""
    import math

    if value is None and allow_none:
        return None
    ok = (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )
    if not ok:
        raise ParameterError(name, f"must be a finite number > 0, got {value}")
    return value
