"""Flag checks shared by the costsens command lines; standard library only.

``python -m costsens.report`` and ``python -m costsens.tune`` check every flag here before
scikit-learn, Ray or MLflow load: a bad value costs a fraction of a second and gives one line
``error: ...`` on stderr, exit status 2, no traceback and nothing written.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import NoReturn

PROBE_TIMEOUT_S = 5.0  # an MLflow server that does not answer /health in this long is an error
SEED_MAX = 2**31 - 1  # scikit-learn's random_state takes < 2**32; the Tune study adds the repetition


class FlagError(ValueError):
    """A bad flag value: one line naming the flag, the rule and the value received."""


class Parser(argparse.ArgumentParser):
    """argparse whose parse errors raise :class:`FlagError` (one line) instead of printing the usage."""

    def error(self, message: str) -> NoReturn:
        raise FlagError(message)


def fail(err: Exception) -> int:
    """Print ``error: <message>`` on stderr; the exit status of a bad flag or a bad data file."""
    print(f"error: {err}", file=sys.stderr)
    return 2


def at_least(flag: str, value: int, low: int, why: str = "") -> None:
    """A count (repetitions, trials) of at least ``low``; ``why`` explains the bound in the message."""
    if value < low:
        raise FlagError(f"{flag} must be >= {low}{why}, but got {value}")


def seed(value: int) -> None:
    """A seed every generator downstream takes."""
    if not 0 <= value <= SEED_MAX:
        raise FlagError(f"--seed must be an integer in [0, {SEED_MAX}], but got {value}")


def finite_non_negative(flag: str, value: float) -> None:
    """argparse's ``float`` takes 'nan' and 'inf'; the commands do not."""
    if not math.isfinite(value) or value < 0:
        raise FlagError(f"{flag} must be a finite number >= 0, but got {value}")


def _creatable(flag: str, path: Path, folder: Path) -> None:
    """``folder`` (``path`` or the folder ``path`` goes in) is, or can become, a folder we may write
    in: its nearest existing ancestor is a writable folder. Creates nothing."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise FlagError(f"{flag} {path} cannot be written: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FlagError(f"{flag} {path} cannot be written: no write permission in {existing}")


def writable_file(flag: str, path: Path) -> None:
    """A file the command may create or overwrite; checked before any work, creating nothing."""
    path = path.expanduser()
    if path.is_dir():
        raise FlagError(f"{flag} {path} cannot be written: it is a directory")
    if path.exists() and not os.access(path, os.W_OK):
        raise FlagError(f"{flag} {path} cannot be written: no write permission")
    _creatable(flag, path, path.parent)


def writable_dir(flag: str, path: Path) -> None:
    """A folder the command may create or write in; checked before any work, creating nothing."""
    path = path.expanduser()
    _creatable(flag, path, path)


def tracking_uri(uri: str) -> None:
    """A tracking URI MLflow can write to: a sqlite file we may create, or a server that answers /health."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S) as resp:
                if resp.status != 200:
                    raise FlagError(f"MLflow tracking server at {uri} answered HTTP {resp.status} on /health")
        except (urllib.error.URLError, OSError) as err:
            raise FlagError(f"cannot reach the MLflow tracking server at {uri}: {getattr(err, 'reason', err)}") from None
        return
    if not uri.startswith("sqlite:///"):
        raise FlagError(f"unsupported tracking URI {uri!r}: use sqlite:///path.db or http(s)://host:port")
    if not uri[len("sqlite:///"):]:
        raise FlagError(f"tracking URI {uri!r} names no database file: use sqlite:///path.db")
    writable_file("--tracking-uri", Path(uri[len("sqlite:///"):]))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, made absolute (Ray moves trials' working directories)."""
    return Path(uri[len("sqlite:///"):]).expanduser().resolve() if uri.startswith("sqlite:///") else None
