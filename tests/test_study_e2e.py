"""Whole studies through the CLI, in a subprocess, in a scratch directory: smoke studies of every
approach with their confirmation runs, ASHA stopping trials early, Ctrl-C as a pause, two studies
started at once on a fresh tracking file, and a SIGKILLed driver resumed with --resume, its storage a
local path or S3 (a moto server on 127.0.0.1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs
import pytest
from mlflow.tracking import MlflowClient
from studyutil import free_port, runs, sigint_preexec, study

from study.engine import stored_trials
from study.spaces import load_spaces


def client(cwd: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'results' / 'mlflow.db'}")


def artifact_paths(c: MlflowClient, run_id: str) -> set[str]:
    return {a.path for a in c.list_artifacts(run_id)}


pytestmark = pytest.mark.e2e


def test_smoke_study_of_every_approach_with_confirmation(tmp_path: Path) -> None:
    proc = study(tmp_path, "--space", "all", "--smoke")  # racing as --smoke shrinks it: 1 candidate, 2 seeds
    c = client(tmp_path)
    approaches = [s.name for s in load_spaces("all")]
    parents = runs(c, "all", "tags.role = 'parent'")
    assert sorted(p.data.tags["approach"] for p in parents) == sorted(approaches)
    assert len({p.data.tags["study_id"] for p in parents}) == 1
    assert not [r for r in runs(c, "all") if r.info.status == "RUNNING"]
    for parent in parents:
        assert parent.info.status == "FINISHED"
        name = parent.info.run_name
        assert name.startswith(f"{parent.data.tags['approach']} · ") and name.endswith(parent.data.tags["study_id"])
        m = parent.data.metrics
        assert {"val_macro_f1", "test_macro_f1_mean", "test_macro_f1_ci_low", "test_macro_f1_ci_high",
                "test_expected_cost_mean"} <= set(m)
        assert m["test_macro_f1_ci_low"] <= m["test_macro_f1_mean"] <= m["test_macro_f1_ci_high"]
        assert "test macro-F1" in parent.data.tags["mlflow.note.content"]
        assert {"final_config.json", "eval_costs.json"} <= artifact_paths(c, parent.info.run_id)
        children = runs(c, "all", f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        search = [r for r in children if r.data.tags["phase"] == "search"]
        confirm = [r for r in children if r.data.tags["phase"] == "confirm"]
        assert len(search) == 2 and len(confirm) == 2  # --smoke: two trials (its first points), two seeds
        assert sorted(r.data.tags["confirm_seed"] for r in confirm) == ["0", "1"]
        assert {r.data.tags["round"] for r in confirm} == {"0"}  # a fixed seed count: one round
        for child in children:
            assert child.info.status == "FINISHED"
            assert child.data.tags["approach"] == parent.data.tags["approach"]
            steps = [m.step for m in c.get_metric_history(child.info.run_id, "val_macro_f1")]
            assert steps == list(range(1, len(steps) + 1)) and steps
            assert {"lr", "loss", "sampler", "model", "trial_seed"} <= set(child.data.params)
        for child in confirm:  # the full budget, never stopped early, test figures at its own best epoch
            assert child.data.tags["stopped_early"] == "false" and child.data.tags["epochs_run"] == "2"
            assert {"test_macro_f1", "test_minority_recall", "test_expected_cost", "selected_epoch"} <= set(child.data.metrics)
            assert "test_predictions.json" in artifact_paths(c, child.info.run_id)
        assert len({r.data.params["trial_seed"] for r in search}) == 2  # every trial its own seed
    # once trials have ended, only each approach's best search trial keeps checkpoints; confirmation runs none
    holders = {c.parent for c in (tmp_path / "results" / "ray").glob("all-*/*/*/checkpoint_*")}
    assert len(holders) == len(approaches) and all(h.parent.name == "all" for h in holders)
    summary = tmp_path / "results" / "all"
    assert {"summary.md", "summary.csv", "comparison.png"} <= {p.name for p in summary.iterdir()}
    header = (summary / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"test_macro_f1_mean", "test_macro_f1_ci_low", "test_macro_f1_ci_high", "delta_vs_baseline", "p_holm",
            "verdict", "p_better", "p_equivalent", "p_worse"} <= set(header)
    verdicts = {p.data.tags["approach"]: p.data.tags.get("verdict") for p in runs(c, "all", "tags.role = 'parent'")}
    assert all(v in ("better", "worse", "practically equivalent", "undecided at this budget")
               for a, v in verdicts.items() if a != "baseline"), verdicts
    for approach in approaches:
        assert approach in (summary / "summary.md").read_text()
        assert f"{approach}: test macro-F1" in proc.stdout
    # the report rebuilds the same table from MLflow alone
    (summary / "summary.csv").unlink()
    subprocess.run([sys.executable, "-m", "study.report", "--space", "all"], cwd=tmp_path, check=True, timeout=300)
    assert (summary / "summary.csv").read_text().count("\n") == len(approaches) + 1
    assert "#/experiments/" in proc.stdout.splitlines()[-1] and "searchFilter=" in proc.stdout.splitlines()[-1]


ASHA_SPACE = """\
description: a study built to show ASHA at work - learning rates from useless to good
defaults: {epochs: 6, num_samples: 8, grace_period: 1, reduction_factor: 2, batch_size: 32}
fixed: {loss: ce, sampler: none, model: scratch}
params:
  lr: {type: float, low: 1.0e-7, high: 3.0e-3, log: true}
"""


def test_asha_stops_poor_trials_early(tmp_path: Path) -> None:
    spaces = tmp_path / "spaces"
    spaces.mkdir()
    (spaces / "asha.yaml").write_text(ASHA_SPACE)
    study(tmp_path, "--space", "asha", "--spaces-dir", str(spaces), "--data", "digits", "--ratio", "0.5", "--max-concurrent", "2",
          "--confirm-seeds", "0")
    children = runs(client(tmp_path), "asha", "tags.role = 'child'")
    assert len(children) == 8 and all(r.info.status == "FINISHED" for r in children)
    stopped = [r for r in children if r.data.tags["stopped_early"] == "true"]
    assert stopped, "ASHA stopped no trial"
    assert any(r.data.tags["stopped_early"] == "false" and r.data.tags["epochs_run"] == "6" for r in children)
    for r in stopped:
        assert int(r.data.tags["epochs_run"]) < 6


@pytest.fixture()
def s3_storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An S3 bucket on a moto server at 127.0.0.1; the study's subprocesses find it through AWS_* variables."""
    import boto3

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
        monkeypatch.setenv(key, value)
    try:
        for _ in range(60):
            try:
                boto3.client("s3").create_bucket(Bucket="studies")
                break
            except Exception:  # not listening yet
                time.sleep(0.5)
        else:
            pytest.fail("the moto S3 server did not start")
        yield "s3://studies/ray"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


# make test keeps the local case (60 s); the S3 one (100 s, a moto S3 server) runs in make test-slow
@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "storage") if request.param == "local" else request.getfixturevalue("s3_storage")


def filesystem(storage: str) -> tuple[pyarrow.fs.FileSystem, str]:
    return pyarrow.fs.FileSystem.from_uri(storage) if "://" in storage else (pyarrow.fs.LocalFileSystem(), storage)


def checkpoint_dirs(storage: str) -> list[str]:
    fs, root = filesystem(storage)
    found = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
    return [f.path for f in found if f.type == pyarrow.fs.FileType.Directory and f.base_name.startswith("checkpoint_")]


def stored_snapshot(storage: str, space: str) -> list[tuple[dict, dict]]:
    """The trials of the latest study's experiment snapshot on the storage, as --resume would find them."""
    fs, root = filesystem(storage)
    studies = sorted(f.path for f in fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
                     if f.base_name.startswith(f"{space}-") and f.type == pyarrow.fs.FileType.Directory)
    return stored_trials(fs, f"{studies[-1]}/{space}") if studies else []


def test_sigkilled_study_resumes_without_duplicates(tmp_path: Path, storage: str) -> None:
    spaces = tmp_path / "spaces"
    spaces.mkdir()
    # two approaches side by side in one Tuner: the resumed searcher state holds both searches
    for name, loss in (("slow_ce", "ce"), ("slow_focal", "focal")):
        (spaces / f"{name}.yaml").write_text(ASHA_SPACE.replace("1.0e-7", "1.0e-3").replace("loss: ce", f"loss: {loss}"))
    (spaces / "slow.yaml").write_text("description: two approaches, two trials each\napproaches: [slow_ce, slow_focal]\n"
                                      "defaults: {epochs: 6, num_samples: 2, grace_period: 1, reduction_factor: 2, batch_size: 32}\n")
    args = ["--space", "slow", "--spaces-dir", str(spaces), "--data", "digits", "--ratio", "0.5", "--max-concurrent", "1",
            "--storage-path", storage, "--confirm-seeds", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "study.tune", *args], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # Kill the driver once the experiment snapshot on the storage (what --resume restores) has a trial
    # ended and another under way past epoch 2. (Killed earlier, a trial that started after the last
    # snapshot reached the storage is lost; its MLflow run ends KILLED and a new trial replaces it.)
    try:
        while time.time() < deadline:
            time.sleep(0.25)
            try:
                stored = stored_snapshot(storage, "slow")
            except (OSError, ValueError):  # mid-write
                continue
            ended = any(t["status"] == "TERMINATED" for t, _ in stored)
            if ended and any(t["status"] == "RUNNING" and m.get("last_result", {}).get("training_iteration", 0) >= 2
                             for t, m in stored):
                time.sleep(0.5)  # not in the middle of that snapshot's upload, file by file (README: --resume)
                break
        assert proc.poll() is None, "the study ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    c = client(tmp_path)
    assert any(r.info.status == "RUNNING" for r in runs(c, "slow")), "the kill should leave something RUNNING"
    study(tmp_path, *args, "--resume")
    all_runs = runs(c, "slow")
    assert [r.info.status for r in all_runs if r.info.status == "RUNNING"] == []
    parents = [r for r in all_runs if r.data.tags["role"] == "parent"]
    children = [r for r in all_runs if r.data.tags["role"] == "child"]
    assert sorted(p.data.tags["approach"] for p in parents) == ["slow_ce", "slow_focal"]
    assert all(p.info.status == "FINISHED" for p in parents)
    assert len(children) == 4 and len({r.data.tags["trial_id"] for r in children}) == 4
    for parent in parents:  # each approach kept its own two trials
        mine = [r for r in children if r.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert len(mine) == 2 and all(r.data.params["approach"] == parent.data.tags["approach"] for r in mine)
    for r in children:
        steps = [m.step for m in c.get_metric_history(r.info.run_id, "val_macro_f1")]
        assert len(steps) == len(set(steps)), f"duplicated epochs in {r.data.tags['trial_id']}: {steps}"
    resumed = [int(r.data.tags["resumed_from_epoch"]) for r in children if "resumed_from_epoch" in r.data.tags]
    assert resumed and min(resumed) >= 1, "the trial under way restarts from its checkpoint, not from scratch"
    # the storage holds the study; of its ended trials only each approach's best kept checkpoints
    holders = {path.rsplit("/", 2)[-2] for path in checkpoint_dirs(storage)}
    assert len(holders) == 2 and not (tmp_path / "results" / "ray").exists()


def _start(tmp_path: Path, args: list[str], ignore_sigint: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "study.tune", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_preexec(ignore_sigint))


def _signal_when(proc: subprocess.Popen, c: MlflowClient, experiment: str, phase: str, signum: int) -> tuple[str, str]:
    """Send ``signum`` once a run of ``phase`` has reported an epoch; the driver's output."""
    deadline = time.time() + 400
    try:
        while time.time() < deadline:
            time.sleep(0.5)
            try:
                reported = [r for r in runs(c, experiment, f"tags.phase = '{phase}'")
                            if c.get_metric_history(r.info.run_id, "val_macro_f1")]
            except Exception:  # the experiment does not exist yet
                continue
            if reported:
                break
        assert proc.poll() is None, f"the study ended before {phase} could be interrupted"
        proc.send_signal(signum)
        return proc.communicate(timeout=180)
    finally:
        proc.kill()


def test_every_interrupt_pauses_a_study_and_resume_finishes_it(tmp_path: Path) -> None:
    """At the default concurrency: SIGINT with every search trial running (both fit on two CPUs), a second driver
    refused while one holds the study, SIGTERM in the confirmation with SIGINT ignored, then --resume to the end
    with exact counts, none RUNNING and no epoch logged twice."""
    import fcntl

    spaces = tmp_path / "spaces"
    spaces.mkdir()
    (spaces / "pause.yaml").write_text(ASHA_SPACE.replace("1.0e-7", "1.0e-3").replace("num_samples: 8", "num_samples: 2"))
    args = ["--space", "pause", "--spaces-dir", str(spaces), "--data", "digits", "--ratio", "0.5", "--confirm-seeds", "2",
            "--confirm-top", "1", "--max-epochs", "4"]  # no race within the approach: the rounds are what is tested
    c = client(tmp_path)
    first = _start(tmp_path, args)
    out, err = _signal_when(first, c, "pause", "search", signal.SIGINT)
    assert first.returncode == 130 and "--resume" in (err.strip().splitlines() or [""])[-1], (first.returncode, out[-2000:],
                                                                                             err[-2000:])
    assert not (tmp_path / "results" / "pause").exists(), "no summary for a paused study"
    paused = runs(c, "pause")
    assert all(r.info.status == "KILLED" for r in paused if r.data.tags["role"] == "parent")
    assert not [r for r in paused if r.data.tags.get("phase") == "confirm"], "a paused search never goes on"
    [held] = (tmp_path / "results" / "ray").glob("pause-*/driver.lock")
    with open(held, "a") as f:  # another driver holds the study: a second --resume is refused
        fcntl.flock(f, fcntl.LOCK_EX)
        refused = subprocess.run([sys.executable, "-m", "study.tune", *args, "--resume"], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and refused.stderr.count("error:") == 1
    assert "is already running" in refused.stderr
    proc = _start(tmp_path, [*args, "--resume"], ignore_sigint=True)
    out, err = _signal_when(proc, c, "pause", "confirm", signal.SIGTERM)
    assert proc.returncode == 143, out[-2000:] + err[-2000:]
    assert "--resume" in err.strip().splitlines()[-1]
    study(tmp_path, *args, "--resume")
    done = runs(c, "pause")
    assert not [r for r in done if r.info.status == "RUNNING"]
    [parent] = [r for r in done if r.data.tags["role"] == "parent"]
    assert parent.info.status == "FINISHED"
    search = [r for r in done if r.data.tags.get("phase") == "search"]
    confirm = [r for r in done if r.data.tags.get("phase") == "confirm" and r.info.status == "FINISHED"]
    assert len(search) == 2 and len({r.data.tags["trial_id"] for r in search}) == 2
    assert sorted(r.data.tags["confirm_seed"] for r in confirm) == ["0", "1"]
    for r in search + confirm:
        steps = [m.step for m in c.get_metric_history(r.info.run_id, "val_macro_f1")]
        assert len(steps) == len(set(steps)), f"epochs logged twice in {r.data.tags['trial_id']}: {steps}"
    assert (tmp_path / "results" / "pause" / "summary.csv").exists()
    again = subprocess.run([sys.executable, "-m", "study.tune", *args, "--resume"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and "finished" in again.stdout + again.stderr


def test_two_studies_started_at_once_on_a_fresh_tracking_file_stay_apart(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "study.tune", "--space", "baseline", "--smoke", "--data", "digits", "--confirm-seeds", "0",
            "--tracking-uri", f"sqlite:///{tmp_path / 'shared.db'}", "--storage-path", str(tmp_path / "ray")]
    procs = [subprocess.Popen(args + ["--results-dir", str(tmp_path / f"r{i}")], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    c = MlflowClient(f"sqlite:///{tmp_path / 'shared.db'}")
    parents = runs(c, "baseline", "tags.role = 'parent'")
    assert len(parents) == 2 and len({p.data.tags["study_id"] for p in parents}) == 2
    for parent in parents:
        assert parent.info.status == "FINISHED"
        assert len(runs(c, "baseline", f"tags.mlflow.parentRunId = '{parent.info.run_id}'")) == 2
    assert len([d for d in (tmp_path / "ray").iterdir() if d.is_dir()]) == 2


def test_imagenet_transfer_against_scratch_of_the_same_backbone_smoke(tmp_path: Path) -> None:
    study(tmp_path, "--space", "transfer_imagenet", "--smoke", "--confirm-seeds", "0")
    parents = runs(client(tmp_path), "transfer_imagenet", "tags.role = 'parent'")
    assert sorted(p.data.tags["approach"] for p in parents) == ["baseline", "mnv2_imagenet"]  # scratch is the baseline
    for parent in parents:
        assert parent.info.status == "FINISHED" and parent.data.params["best.backbone"] == "mobilenet_v2"
    pretrained = next(p for p in parents if p.data.tags["approach"] == "mnv2_imagenet")
    assert pretrained.data.params["best.weights"] == "imagenet" and pretrained.data.params["best.image_size"] == "64"
