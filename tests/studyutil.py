"""Helpers shared by the study tests: free ports, the CLI in a subprocess, MLflow look-ups."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

TIMEOUT = 900


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
