"""Multi-node studies on this machine: ray.cluster_utils.Cluster nodes, a real MLflow server on
127.0.0.1, a study joined with --address; then a node removed while its trials run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster
from studyutil import TIMEOUT, free_port, runs, study

pytestmark = pytest.mark.e2e

SPACE = """\
description: a short study for the cluster tests
defaults: {epochs: EPOCHS, num_samples: TRIALS, grace_period: EPOCHS, reduction_factor: 2, batch_size: 32}
fixed: {loss: ce, sampler: none, model: scratch}
params:
  lr: {type: float, low: 3.0e-4, high: 3.0e-3, log: true}
"""


@pytest.fixture()
def mlflow_server(tmp_path: Path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("the MLflow server did not start")
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # a loaded machine: gunicorn's workers can take longer to stop
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


@pytest.fixture()
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        workers = [c.add_node(num_cpus=1) for _ in range(2)]
        c.wait_for_nodes()
        yield c, workers
    finally:
        c.shutdown()  # also on failure: a dead cluster left behind makes the next ray.init hang


def write_space(tmp_path: Path, epochs: int, trials: int) -> Path:
    spaces = tmp_path / "spaces"
    spaces.mkdir()
    (spaces / "short.yaml").write_text(SPACE.replace("EPOCHS", str(epochs)).replace("TRIALS", str(trials)))
    return spaces


def check_runs(c: MlflowClient, trials: int) -> list:
    all_runs = runs(c, "short")
    parents = [r for r in all_runs if r.data.tags["role"] == "parent"]
    children = [r for r in all_runs if r.data.tags["role"] == "child"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == trials and len({r.data.tags["trial_id"] for r in children}) == trials
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    assert all(r.info.status == "FINISHED" for r in all_runs), [r.info.status for r in all_runs]
    for r in children:
        steps = [m.step for m in c.get_metric_history(r.info.run_id, "val_macro_f1")]
        assert steps == sorted(set(steps)) and steps
    return children


def test_multi_node_study_through_an_mlflow_server(tmp_path: Path, cluster, mlflow_server: str) -> None:
    c, _ = cluster
    storage = tmp_path / "storage"
    started = time.time()
    study(tmp_path, "--space", "short", "--spaces-dir", str(write_space(tmp_path, 2, 6)), "--data", "digits",
          "--address", c.address, "--tracking-uri", mlflow_server, "--storage-path", str(storage), "--confirm-seeds", "0")
    wall = time.time() - started
    children = check_runs(MlflowClient(tracking_uri=mlflow_server), 6)
    nodes = {r.data.tags["node_id"] for r in children}
    assert len(nodes) >= 2, f"trials ran on {len(nodes)} node(s)"
    checkpoints = list(storage.glob("short-*/short/*/checkpoint_*"))
    assert checkpoints, "checkpoints belong in the storage path"
    # the data was decoded once, by the driver; trials on every node got it from the object store
    assert len(list((tmp_path / "results" / "cache").glob("*.pt"))) == 1
    print(f"multi-node study: {wall:.0f} s wall, trials per node: "
          f"{ {n[:8]: sum(r.data.tags['node_id'] == n for r in children) for n in nodes} }")


def test_sqlite_tracking_on_a_multi_node_cluster_is_refused(tmp_path: Path, cluster) -> None:
    c, _ = cluster
    proc = subprocess.run([sys.executable, "-m", "study.tune", "--space", "baseline", "--smoke", "--address", c.address],
                          cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2
    assert "3-node cluster with tracking URI sqlite:" in proc.stderr and "start an MLflow tracking server" in proc.stderr


def test_a_node_removed_mid_study_restarts_its_trials_from_checkpoints(tmp_path: Path, cluster, mlflow_server: str) -> None:
    c, workers = cluster
    args = ["--space", "short", "--spaces-dir", str(write_space(tmp_path, 8, 3)), "--data", "digits",
            "--address", c.address, "--tracking-uri", mlflow_server, "--storage-path", str(tmp_path / "storage"),
            "--confirm-seeds", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "study.tune", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    client = MlflowClient(tracking_uri=mlflow_server)
    victim = workers[0]
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            time.sleep(1)
            exp = client.get_experiment_by_name("short")
            on_victim = exp and [r for r in runs(client, "short", "tags.role = 'child'")
                                 if r.data.tags.get("node_id") == victim.node_id and r.info.status == "RUNNING"
                                 and len(client.get_metric_history(r.info.run_id, "val_macro_f1")) >= 2]
            if on_victim:
                c.remove_node(victim)  # the node dies while its trial is mid-way
                break
        else:
            pytest.fail("no trial was seen running on the worker node")
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:]
    children = check_runs(client, 3)
    moved = [r for r in children if r.info.run_id == on_victim[0].info.run_id][0]
    assert int(moved.data.tags["resumed_from_epoch"]) >= 2, "restarted from its last checkpoint, not from scratch"
    assert moved.data.tags["node_id"] != victim.node_id
