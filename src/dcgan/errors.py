"""Errors a user's input causes: the entry points print their message in one line and exit with status 2."""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """Base of the mistakes a user can fix (a missing file, a bad config value); the message says how."""


class DivergenceError(UserError):
    """A loss became NaN or inf; the message names the loss, the step and the checkpoint to resume from."""


def _show(value: Any) -> str:
    return "null" if value is None else str(value)


class ArgumentError(UserError, ValueError):
    """A constructor argument that cannot work: ``n_critic=0: expected an integer >= 1 (...). Fix: n_critic=1``.

    The library names the argument; whoever built the object from a config names where it sits with
    :meth:`at` (``model.schedule`` -> ``model.schedule.n_critic=0: ...``), so the message gives the key a
    user types. Also a ValueError, for Python callers that catch those.
    """

    def __init__(self, argument: str, value: Any, expected: str, fix: Any | None = None) -> None:
        self.argument, self.value, self.expected, self.fix = argument, value, expected, fix
        fix_text = f" Fix: {argument}={fix}" if fix is not None else ""
        super().__init__(f"{argument}={_show(value)}: expected {expected}.{fix_text}")

    def at(self, prefix: str) -> ArgumentError:
        """The same error with the argument under ``prefix`` (a config path)."""
        argument = f"{prefix}.{self.argument}" if prefix else self.argument
        return ArgumentError(argument, self.value, self.expected, self.fix)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(argument: str, value: Any, low: int, what: str, fix: Any) -> None:
    """Raise ArgumentError unless ``value`` is an integer >= ``low``; ``what`` says what it counts."""
    if not is_int(value) or value < low:
        raise ArgumentError(argument, value, f"an integer >= {low} ({what})", fix)
