"""The house's one error type and its command-line door; standard library only.

Every user error (a bad flag, space, data set, weights file, loss option, report request...) derives
from :class:`StudyError`. Every command line parses with :class:`Parser` and runs through
:func:`cli`, so bad input is answered the same way everywhere: one ``error: ...`` line on stderr,
exit code 2, no traceback and nothing written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

USER_ERROR_EXIT = 2


class StudyError(ValueError):
    """A user error: its message names the problem and the fix; the command exits with code 2."""


class UsageError(StudyError):
    """A bad flag value (or a malformed command line)."""


class Parser(argparse.ArgumentParser):
    """argparse whose parse errors raise :class:`UsageError` (one line) instead of printing the usage block."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def one_line(err: BaseException, limit: int = 500) -> str:
    """The error's message on one bounded line (a message never echoes an expanded input at length)."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fail(err: BaseException) -> int:
    print(f"error: {one_line(err)}", file=sys.stderr)
    return USER_ERROR_EXIT


def cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a command's ``main``; a :class:`StudyError` becomes one ``error:`` line and exit code 2."""
    try:
        return main(argv)
    except StudyError as err:
        return fail(err)
