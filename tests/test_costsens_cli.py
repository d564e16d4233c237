"""costsens/cli.py: both command lines check every flag before scikit-learn, Ray or MLflow load.

A bad value is one line ``error: ...`` on stderr, exit status 2, no traceback, nothing written.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from studyutil import free_port

from costsens import report as R
from costsens import tune as T

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
        (["--out", str(f / "r.md")], f"--out {f / 'r.md'}: {f} is not a folder"),
        (["--out", str(f.parent)], f"--out {f.parent}: {f.parent} is a folder, not a regular file: refused"),
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
        (["--tracking-uri", f"sqlite:///{f}/m.db"], f"tracking URI sqlite:///{f}/m.db: {f}/m.db: {f} is not a folder"),
        (["--storage-path", str(f / "ray")], f"--storage-path {f / 'ray'}: {f} is not a folder"),
        (["--storage-path", str(f)], f"--storage-path {f}: {f} is not a folder (a regular file)"),
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
    port = free_port()
    assert T.main(["--tracking-uri", f"http://user:s3cret@127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach the MLflow tracking server at http://user:***@127.0.0.1:{port}: ")
    assert "s3cret" not in err


def test_tune_rejects_a_tracking_file_that_is_not_a_database(blocker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker.write_text("not a database")
    assert T.main(["--tracking-uri", f"sqlite:///{blocker}"]) == 2
    assert capsys.readouterr().err == (f"error: tracking URI sqlite:///{blocker}: {blocker} is not an SQLite database; "
                                       "name a new file or an MLflow database\n")
    assert blocker.read_text() == "not a database"


def _special_files(folder: Path) -> dict[str, str]:
    """A FIFO, a character device (like /dev/null: 1, 3) and a symlink loop made in ``folder``; name -> its kind."""
    os.mkfifo(folder / "fifo")
    made = {"fifo": "a FIFO"}
    try:
        os.mknod(folder / "chr", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        made["chr"] = "a character device"
    except PermissionError:  # not root: the FIFO and the loop still run
        pass
    os.symlink("loop", folder / "loop")
    made["loop"] = "a symlink loop"
    return made


@pytest.mark.parametrize(("main", "flag"), [(R.main, "--out"), (T.main, "--storage-path"), (T.main, "--tracking-uri")],
                         ids=["report-out", "tune-storage", "tune-tracking"])
def test_outputs_at_a_fifo_a_device_or_a_loop_are_refused_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str], main,
                                                                   flag: str) -> None:
    monkeypatch.chdir(tmp_path)
    made = _special_files(tmp_path)
    before = {name: os.lstat(name) for name in made}
    for name, kind in made.items():
        value = f"sqlite:///{name}" if flag == "--tracking-uri" else name
        assert main([flag, value]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and kind in err, err
    after = {name: os.lstat(name) for name in made}
    assert {n: (s.st_mode, s.st_ino, s.st_rdev) for n, s in after.items()} == {
        n: (s.st_mode, s.st_ino, s.st_rdev) for n, s in before.items()}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(made)  # nothing written beside them


def test_checks_accept_what_can_be_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args, _ = T.checked(["--tracking-uri", "sqlite:///new/deeper/m.db", "--storage-path", "new/ray"])
    assert args.tracking_uri == f"sqlite:///{tmp_path}/new/deeper/m.db"  # absolute: Ray moves trials' folders
    assert args.storage_path == tmp_path / "new" / "ray"
    assert R.checked(["--out", "new/r.md"])[0].out == tmp_path / "new" / "r.md"
    assert list(tmp_path.iterdir()) == []  # checking creates nothing


def test_checks_load_no_heavy_module(tmp_path: Path) -> None:
    code = ("import sys\n"
            "from costsens import report, tune\n"
            "codes = [report.main(['--min-leaf-weight', 'nan']), tune.main(['--tracking-uri', 'file:///x'])]\n"
            "heavy = sorted({'sklearn', 'ray', 'mlflow', 'torch'} & {m.split('.')[0] for m in sys.modules})\n"
            "print(codes, heavy)\n")
    proc = _python(tmp_path, "-c", code)
    assert proc.stdout == "[2, 2] []\n", proc.stderr


@pytest.mark.parametrize(("module", "argv", "message"), [
    ("costsens.report", ["--repetitions", "0"],
     "--repetitions must be >= 2 (a standard deviation needs two), but got 0"),
    ("costsens.tune", ["--dataset", "iris"], "unknown data set 'iris'; choose one of: hypothyroid, glass"),
])
def test_command_line_exits_2_with_one_line(tmp_path: Path, module: str, argv: list[str], message: str) -> None:
    proc = _python(tmp_path, "-m", module, *argv)
    assert (proc.returncode, proc.stderr, proc.stdout) == (2, f"error: {message}\n", "")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("content", "message"), [
    (b"0.7 " + b"0 " * 20 + b"1\n\xff 1\n", r"ann-train.data: not UTF-8 text \(byte 46\)"),
    (b"0.7 " + b"0 " * 19 + b"inf 1\n", r"ann-train.data:1: expected finite numbers, but got 'inf'"),
])
@pytest.mark.parametrize("main", [R.main, T.main], ids=["report", "tune"])
def test_bad_data_file_is_one_line_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str], main, content: bytes,
                                                      message: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "ann-train.data").write_bytes(content)
    argv = ["--ann-dir", "ann"] + (["--datasets"] if main is R.main else [])
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and re.fullmatch(rf"error: (data file )?ann/{message}\n", captured.err), captured.err
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["ann", "ann/ann-train.data"]
