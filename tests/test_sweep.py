"""python -m study.sweep: ratios and outputs checked before anything runs, pause and resume, the table and plot,
a real two-ratio sweep.

Pause and resume are tested here at unit level (each ratio's study replaced by a fake that returns what
``study.runner.run_study`` returns, the MLflow store real); a real sweep's study pauses through
``study.runner``, whose signal tests are in the e2e suite.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import stat
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from studyutil import runs

from study import sweep

SWEEP = ["--space", "baseline", "--smoke", "--data", "digits", "--ratios", "1:2,1:8", "--confirm-seeds", "2"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--space", "baseline", "--ratios", "1:5"], r"--ratios needs at least two ratios"),
    (["--space", "baseline", "--ratios", "1:5,0.2"], r"--ratios lists a ratio twice"),
    (["--space", "baseline", "--ratios", "1:5,2"], r"ratio must be in \(0, 1\]"),
    (["--space", "baseline", "--ratios", "1:5,1:11", "--ratio", "1:3"], r"--ratio cannot be used in a sweep"),
    (["--space", "baseline", "--ratios", "1:5,1:11", "--resume"],
     r"--resume: no sweep to resume in \S+/results/sweep \(no sweep.json\); start it without --resume$"),
    (["--space", "baseline", "--ratios", "1:5,1:11", "--plan", "p.json"], r"--plan cannot be used in a sweep"),
    (["--space", "nope", "--ratios", "1:5,1:11"], r"unknown space 'nope'"),
    (["--space", "baseline"], r"the following arguments are required: --ratios"),
])
def test_bad_sweeps_are_one_line_exit_2(argv, message, capsys, tmp_path, monkeypatch) -> None:
    import re

    monkeypatch.chdir(tmp_path)
    assert sweep.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(message, err), err
    assert not any(tmp_path.iterdir())


def test_ratios_run_from_the_most_balanced() -> None:
    assert [label for label, _ in sweep.parse_ratios("1:50,1:5,1:11")] == ["1:5", "1:11", "1:50"]


@pytest.mark.e2e
def test_a_two_ratio_sweep_nests_each_ratios_studies_and_writes_the_table(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert sweep.main(SWEEP) == 0
    table = list(csv.DictReader(open(tmp_path / "results" / "sweep" / "summary.csv")))
    assert [(r["ratio"], r["approach"], r["n_seeds"]) for r in table] == [("1:2", "baseline", "2"),
                                                                          ("1:8", "baseline", "2")]
    assert (tmp_path / "results" / "sweep" / "sweep.png").exists()
    assert not (tmp_path / "mlruns").exists(), "artifacts belong under results/mlartifacts, not ./mlruns"
    c = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    ratio_runs = runs(c, "baseline", "tags.role = 'sweep'")
    assert sorted(r.data.tags["ratio"] for r in ratio_runs) == ["1:2", "1:8"]
    for r in ratio_runs:
        assert r.info.status == "FINISHED"
        parents = runs(c, "baseline", f"tags.mlflow.parentRunId = '{r.info.run_id}'")
        assert len(parents) == 1 and parents[0].data.tags["role"] == "parent"


def _one_error_line(capsys: pytest.CaptureFixture[str], message: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(message, err), err


def test_out_at_a_fifo_a_device_or_a_file_is_refused_untouched(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    os.mkfifo("fifo")
    os.symlink("loop", "loop")
    Path("file").write_text("mine")
    Path("sweep-out").mkdir()
    os.mkfifo("sweep-out/summary.csv")
    (Path("sweep-out") / "ratio-1-8").mkdir()
    Path("sweep-out/ratio-1-8/summary.md").mkdir()
    cases = {"fifo": r"--out fifo: \S+/fifo is not a folder \(a FIFO\)$",
             "loop": r"--out loop: a symlink loop$",
             "file": r"--out file: \S+/file is not a folder \(a regular file\)$",
             "sweep-out": r"--out \S+/sweep-out/summary.csv: \S+ is a FIFO, not a regular file: refused$"}
    try:
        os.mknod("chr", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null, in our own folder
        cases["chr"] = r"--out chr: \S+/chr is not a folder \(a character device\)$"
    except PermissionError:
        pass
    before = {p: os.lstat(p) for p in [*cases, "sweep-out/summary.csv"]}
    for out, message in cases.items():
        assert sweep.main([*SWEEP, "--out", out]) == 2
        _one_error_line(capsys, message)
    os.unlink("sweep-out/summary.csv")
    assert sweep.main([*SWEEP, "--out", "sweep-out"]) == 2  # the next ratio's report folder: a folder for a file
    _one_error_line(capsys, r"--out \S+/ratio-1-8/summary.md: \S+ is a folder, not a regular file: refused$")
    assert {p: (s.st_mode, s.st_ino) for p, s in before.items() if p != "sweep-out/summary.csv"} == {
        p: (os.lstat(p).st_mode, os.lstat(p).st_ino) for p in cases}
    assert Path("file").read_text() == "mine" and not Path("results").exists()


@pytest.fixture()
def studies(monkeypatch, tmp_path: Path):
    """Each ratio's study replaced by a fake that writes a summary and returns the next code given; the calls.
    The signal handlers and study.engine.SIGNALS are restored after the test."""
    from study import runner
    from study.engine import SIGNALS

    monkeypatch.chdir(tmp_path)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    calls: list[dict] = []
    codes: list = []

    def fake(plan) -> int:
        calls.append({"study_id": plan.study_id, "resume": plan.resume, "ratio": plan.ratio,
                      "parent_run": plan.parent_run})
        code = codes.pop(0)
        if callable(code):
            code = code()
        if code == 0:
            plan.report_dir.mkdir(parents=True, exist_ok=True)
            (plan.report_dir / "summary.csv").write_text(
                "approach,n_seeds,test_macro_f1_mean,test_macro_f1_ci_low,test_macro_f1_ci_high,"
                "test_minority_recall_mean,test_minority_recall_ci_low,test_minority_recall_ci_high\n"
                f"baseline,2,{plan.ratio:.3f},0.1,0.9,0.5,0.4,0.6\n")
        return code

    monkeypatch.setattr(runner, "run_study", fake)
    yield calls, codes
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    SIGNALS.received, SIGNALS.deferred, SIGNALS.in_fit = None, False, False


def _ratio_runs(tmp_path: Path) -> dict[str, str]:
    c = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    return {r.data.tags["ratio"]: r.info.status for r in runs(c, "baseline", "tags.role = 'sweep'")}


def test_a_paused_sweep_resumes_the_current_ratio_and_skips_finished_ones(studies, capsys, tmp_path: Path) -> None:
    calls, codes = studies
    codes += [0, 130]  # 1:2 finishes, 1:8 pauses (Ctrl-C in its study)
    assert sweep.main(SWEEP) == 130
    err = capsys.readouterr().err
    state = json.loads((tmp_path / "results" / "sweep" / "sweep.json").read_text())
    assert err.endswith(f"interrupted: sweep {state['sweep_id']} paused at ratio 1:8; finish it with the same "
                        "command and --resume (finished ratios are skipped, ratio 1:8 resumes)\n")
    assert _ratio_runs(tmp_path) == {"1:2": "FINISHED", "1:8": "KILLED"}
    assert not (tmp_path / "results" / "sweep" / "summary.md").exists()
    paused = calls[1]

    codes += [0]
    assert sweep.main([*SWEEP, "--resume"]) == 0
    assert len(calls) == 3  # 1:2 skipped, 1:8 once more
    assert calls[2] == {**paused, "resume": True}  # the same study under the same run
    assert _ratio_runs(tmp_path) == {"1:2": "FINISHED", "1:8": "FINISHED"}
    table = list(csv.DictReader(open(tmp_path / "results" / "sweep" / "summary.csv")))
    assert [(r["ratio"], r["test_macro_f1_mean"]) for r in table] == [("1:2", "0.500"), ("1:8", "0.125")]
    assert "sweep: ratio 1:2 done" in capsys.readouterr().out

    assert sweep.main([*SWEEP, "--resume"]) == 0  # finished: says so, runs nothing
    assert len(calls) == 3
    assert capsys.readouterr().out.endswith(f"sweep {state['sweep_id']} is already finished; nothing to resume "
                                       f"(summary: {tmp_path / 'results' / 'sweep' / 'summary.md'})\n")


def test_sigterm_in_a_ratio_pauses_the_sweep_with_143(studies, capsys, tmp_path: Path) -> None:
    calls, codes = studies

    def terminated() -> int:
        os.kill(os.getpid(), signal.SIGTERM)  # outside a fit: study.engine.SIGNALS raises the pause at once
        return 0

    codes += [terminated]
    assert sweep.main(SWEEP) == 143
    assert "interrupted: sweep " in capsys.readouterr().err
    assert _ratio_runs(tmp_path) == {"1:2": "KILLED"} and len(calls) == 1


def test_resume_with_other_flags_is_refused_naming_each(studies, capsys, tmp_path: Path) -> None:
    calls, codes = studies
    codes += [130]
    assert sweep.main(SWEEP) == 130
    state = (tmp_path / "results" / "sweep" / "sweep.json").read_text()
    capsys.readouterr()
    changed = [a if a != "1:2,1:8" else "1:2,1:4" for a in SWEEP] + ["--max-epochs", "3", "--resume"]
    assert sweep.main(changed) == 2
    _one_error_line(capsys, r"--resume: sweep sweep-\S+ ran with other flags: --ratios 1:2,1:4 \(was 1:2,1:8\); "
                            r"--max-epochs 3 \(was None\); resume it with the flags it started with$")
    assert (tmp_path / "results" / "sweep" / "sweep.json").read_text() == state and len(calls) == 1


def test_the_sweep_table_carries_each_ratios_verdict(tmp_path) -> None:
    ratio_csv = tmp_path / "summary.csv"
    with open(ratio_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["approach", "n_seeds", "test_macro_f1_mean", "delta_vs_baseline",
                                               "delta_low", "delta_high", "verdict", "verdict_needs", "config"])
        writer.writeheader()
        writer.writerow({"approach": "baseline", "n_seeds": "6", "test_macro_f1_mean": "0.8"})
        writer.writerow({"approach": "focal", "n_seeds": "4", "test_macro_f1_mean": "0.9", "delta_vs_baseline": "0.1",
                         "delta_low": "0.04", "delta_high": "0.16", "verdict": "better", "verdict_needs": "0.07"})
    rows = sweep.rows_of(ratio_csv, "1:22", 1 / 22, "s-1")
    assert rows[1]["verdict"] == "better" and rows[1]["imbalance"] == "22" and "config" not in rows[1]
    sweep.write_outputs(rows, tmp_path / "out", "python -m study.sweep ...")
    table = (tmp_path / "out" / "summary.md").read_text()
    assert "| 1:22 | focal | 4 | 0.900 | [–, –] | – | [–, –] | +0.100 [+0.040, +0.160] | better | 0.070 |" in table
    assert "| 1:22 | baseline | 6 | 0.800 | [–, –] | – | [–, –] | – | – | – |" in table
    with open(tmp_path / "out" / "summary.csv", newline="") as f:
        assert [r["verdict"] for r in csv.DictReader(f)] == ["", "better"]
