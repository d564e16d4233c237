"""costsens/cli.py: both command lines check every flag before scikit-learn, Ray or MLflow load.

A bad value is one line ``error: ...`` on stderr, exit status 2, no traceback, nothing written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from costsens import cli
from costsens import report as R
from costsens import tune as T
from studyutil import free_port

ROOT = Path(__file__).resolve().parents[1]


def _python(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The interpreter in ``cwd`` with this checkout importable (the editable install may predate costsens)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture()
def blocker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A plain file where a folder would have to be; the working directory is the (otherwise empty) tmp_path."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "a-file"
    path.write_text("")
    return path


def _report_cases(f: Path) -> list[tuple[list[str], str]]:
    return [
        (["--datasets", "iris"], "unknown data set 'iris'; choose one of: hypothyroid, glass"),
        (["--repetitions", "0"], "--repetitions must be >= 2 (a standard deviation needs two), but got 0"),
        (["--repetitions", "two"], "argument --repetitions: invalid int value: 'two'"),
        (["--min-leaf-weight", "nan"], "--min-leaf-weight must be a finite number >= 0, but got nan"),
        (["--min-leaf-weight", "inf"], "--min-leaf-weight must be a finite number >= 0, but got inf"),
        (["--min-leaf-weight", "-1"], "--min-leaf-weight must be a finite number >= 0, but got -1.0"),
        (["--seed", "-1"], "--seed must be an integer in [0, 2147483647], but got -1"),
        (["--out", str(f / "r.md")], f"--out {f / 'r.md'} cannot be written: {f} is not a directory"),
        (["--out", str(f.parent)], f"--out {f.parent} cannot be written: it is a directory"),
        (["--datasets", "--ann-dir", "missing"], "ann thyroid path does not exist: missing"),
        (["--ann-dir"], "argument --ann-dir: expected one argument"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ]


def _tune_cases(f: Path) -> list[tuple[list[str], str]]:
    return [
        (["--dataset", "iris"], "unknown data set 'iris'; choose one of: hypothyroid, glass"),
        (["--ann-dir", "missing"], "ann thyroid path does not exist: missing"),
        (["--num-samples", "0"], "--num-samples must be >= 1, but got 0"),
        (["--repetitions", "-3"], "--repetitions must be >= 1, but got -3"),
        (["--seed", str(2**31)], "--seed must be an integer in [0, 2147483647], but got 2147483648"),
        (["--tracking-uri", "file:///tmp/mlruns"],
         "unsupported tracking URI 'file:///tmp/mlruns': use sqlite:///path.db or http(s)://host:port"),
        (["--tracking-uri", "sqlite:///"], "tracking URI 'sqlite:///' names no database file: use sqlite:///path.db"),
        (["--tracking-uri", f"sqlite:///{f}/m.db"], f"--tracking-uri {f}/m.db cannot be written: {f} is not a directory"),
        (["--storage-path", str(f / "ray")], f"--storage-path {f / 'ray'} cannot be written: {f} is not a directory"),
        (["--num-samples", "1.5"], "argument --num-samples: invalid int value: '1.5'"),
    ]


@pytest.mark.parametrize("case", range(len(_report_cases(Path("f")))))
def test_report_rejects_a_bad_flag_in_one_line(case: int, blocker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv, message = _report_cases(blocker)[case]
    assert R.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {message}\n" and captured.out == ""
    assert [p.name for p in blocker.parent.iterdir()] == [blocker.name]  # nothing written


@pytest.mark.parametrize("case", range(len(_tune_cases(Path("f")))))
def test_tune_rejects_a_bad_flag_in_one_line(case: int, blocker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv, message = _tune_cases(blocker)[case]
    assert T.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {message}\n" and captured.out == ""
    assert [p.name for p in blocker.parent.iterdir()] == [blocker.name]


def test_tune_rejects_a_tracking_server_that_does_not_answer(blocker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    assert T.main(["--tracking-uri", uri]) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot reach the MLflow tracking server at {uri}: ")


def test_writable_checks_accept_what_can_be_created(tmp_path: Path) -> None:
    cli.writable_file("--out", tmp_path / "new" / "deeper" / "r.md")
    cli.writable_dir("--storage-path", tmp_path / "ray")
    cli.tracking_uri(f"sqlite:///{tmp_path}/new/mlflow.db")
    assert list(tmp_path.iterdir()) == []  # checking creates nothing
    assert cli.sqlite_path("sqlite:///x/m.db") == Path("x/m.db").resolve()
    assert cli.sqlite_path("http://host:5000") is None


def test_checks_load_no_heavy_module(tmp_path: Path) -> None:
    code = ("import sys\n"
            "from costsens import report, tune\n"
            "codes = [report.main(['--min-leaf-weight', 'nan']), tune.main(['--tracking-uri', 'file:///x'])]\n"
            "heavy = sorted({'sklearn', 'ray', 'mlflow', 'torch'} & {m.split('.')[0] for m in sys.modules})\n"
            "print(codes, heavy)\n")
    proc = _python(tmp_path, "-c", code)
    assert proc.stdout == "[2, 2] []\n", proc.stderr


@pytest.mark.parametrize(("module", "argv", "message"), [
    ("costsens.report", ["--repetitions", "0"], "--repetitions must be >= 2 (a standard deviation needs two), but got 0"),
    ("costsens.tune", ["--dataset", "iris"], "unknown data set 'iris'; choose one of: hypothyroid, glass"),
])
def test_command_line_exits_2_with_one_line(tmp_path: Path, module: str, argv: list[str], message: str) -> None:
    proc = _python(tmp_path, "-m", module, *argv)
    assert (proc.returncode, proc.stderr, proc.stdout) == (2, f"error: {message}\n", "")
    assert list(tmp_path.iterdir()) == []
