"""Helpers shared by the study tests: free ports, the CLI in a subprocess, MLflow look-ups."""

from __future__ import annotations

import functools
import signal
import socket
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

TIMEOUT = 540  # under pytest-timeout's 600 s (pyproject.toml): a hung study fails with its own output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def study(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m study.tune ARGS`` in ``cwd``; fails the test with its output if it fails."""
    proc = subprocess.run([sys.executable, "-m", "study.tune", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def runs(c: MlflowClient, experiment: str, query: str = "") -> list:
    exp = c.get_experiment_by_name(experiment)
    return c.search_runs([exp.experiment_id], query, max_results=1000)


def check_paper_constraints(cm, counts: list[int], n: float) -> None:
    """The third seed's generator constraints on a cost matrix for classes of sizes ``counts``."""
    import numpy as np

    from study.costs import validate_cost_matrix

    s, big = int(np.argmin(counts)), int(np.argmax(counts))
    off = ~np.eye(len(counts), dtype=bool)
    validate_cost_matrix(cm, len(counts))
    assert (cm >= 0).all() and (cm <= n).all()  # entries in [0, n]
    assert (cm == 1.0).any()  # at least one entry equal to 1
    assert cm[s, big] == cm.max()  # smallest -> largest: the costliest
    assert cm[big, s] == cm[off].min()  # largest -> smallest: the cheapest off-diagonal


def _set_sigint(handler: signal.Handlers) -> None:
    signal.signal(signal.SIGINT, handler)


def sigint_preexec(ignore: bool):
    """A driver's ``preexec_fn``: SIGINT ignored, as a shell does for a background job, or at its default, a
    foreground driver's, even when pytest itself runs as a background job and its children would inherit it ignored."""
    return functools.partial(_set_sigint, signal.SIG_IGN if ignore else signal.SIG_DFL)
