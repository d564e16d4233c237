"""Bad input to ``python -m study.tune``: one line, exit code 2, before Ray starts, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from study import tune
from studyutil import free_port


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_bad(argv: list[str], capsys: pytest.CaptureFixture, workdir: Path) -> str:
    code = tune.main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line, no traceback
    assert not any(workdir.iterdir()), "nothing may be written on bad input"
    return err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--space", "focl"], r"unknown space 'focl'; choose one of: all, baseline"),
        (["--space", "focal", "--num-samples", "0"], r"--num-samples must be >= 1, got 0"),
        (["--space", "focal", "--max-epochs", "-1"], r"--max-epochs must be >= 1, got -1"),
        (["--space", "focal", "--gpus-per-trial", "1"], r"--gpus-per-trial 1.0 asked for, but this machine has no GPU"),
        (["--space", "focal", "--gpus-per-trial", "1.5"], r"--gpus-per-trial must be a fraction in \[0, 1\] or a whole number"),
        (["--space", "focal", "--data", "cifar"], r"unknown data set 'cifar'; choose one of: animals, animals_source, digits"),
        (["--space", "focal", "--data", "./no/such/folder"], r"data path no/such/folder does not exist"),
        (["--space", "focal", "--ratio", "2"], r"ratio must be in \(0, 1\]"),
        (["--space", "focal", "--tracking-uri", "ftp://x"], r"unsupported tracking URI 'ftp://x'"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(argv, message, capsys, workdir, monkeypatch) -> None:
    monkeypatch.setattr(tune.torch.cuda, "is_available", lambda: False)
    import re

    assert re.search(message, run_bad(argv, capsys, workdir))


def test_unreachable_tracking_server(capsys, workdir) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    err = run_bad(["--space", "focal", "--tracking-uri", uri], capsys, workdir)
    assert f"cannot reach the MLflow tracking server at {uri}" in err


def test_malformed_yaml_names_file_and_line(capsys, workdir) -> None:
    spaces = workdir.parent / f"{workdir.name}-spaces"
    spaces.mkdir()
    (spaces / "broken.yaml").write_text("params:\n  lr: {type: float, low: 1\n")
    err = run_bad(["--space", "broken", "--spaces-dir", str(spaces)], capsys, workdir)
    assert "broken.yaml line 3: malformed YAML" in err


def test_resume_without_an_earlier_study(capsys, workdir) -> None:
    err = run_bad(["--space", "focal", "--resume"], capsys, workdir)
    assert "--resume: no earlier 'focal' study under" in err


def test_resume_on_storage_that_cannot_be_listed(capsys, workdir) -> None:
    err = run_bad(["--space", "focal", "--resume", "--storage-path", "nosuchfs://bucket/ray"], capsys, workdir)
    assert err.startswith("error: --resume: cannot list storage nosuchfs://bucket/ray: ")
    assert len(err.strip().splitlines()) == 1


def test_smote_with_too_few_minority_samples_fails_before_ray(capsys, workdir, monkeypatch) -> None:
    called = []
    monkeypatch.setattr("study.runner.run_study", lambda *a: called.append(a) or 0)
    assert tune.main(["--space", "sampling", "--data", "digits", "--counts", "3=4,8=80"]) == 2
    assert "SMOTE needs at least k_neighbors + 1 = 6 samples of class 0, got 4" in capsys.readouterr().err
    assert not called


def test_help_documents_every_flag(capsys) -> None:
    with pytest.raises(SystemExit):
        tune.main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--space", "--data", "--ratio", "--num-samples", "--max-epochs", "--seed", "--cpus-per-trial",
                 "--gpus-per-trial", "--max-concurrent", "--address", "--tracking-uri", "--storage-path", "--resume", "--smoke"):
        assert flag in out
