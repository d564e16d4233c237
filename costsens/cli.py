"""Flag checks shared by the costsens command lines; standard library only.

``python -m costsens.report`` and ``python -m costsens.tune`` check every flag here (and their
output paths and tracking URI with study.paths) before scikit-learn, Ray or MLflow load: a bad
value costs a fraction of a second and gives one line ``error: ...`` on stderr, exit status 2,
no traceback and nothing written.
"""

from __future__ import annotations

import math

from study.errors import UsageError

SEED_MAX = 2**31 - 1  # scikit-learn's random_state takes < 2**32; the Tune study adds the repetition


class FlagError(UsageError):
    """A bad flag value: one line naming the flag, the rule and the value received."""


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
