"""python -m study.sweep: ratios checked before anything runs, the table and plot, a real two-ratio sweep."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from study import sweep
from studyutil import runs


@pytest.mark.parametrize(("argv", "message"), [
    (["--space", "baseline", "--ratios", "1:5"], r"--ratios needs at least two ratios"),
    (["--space", "baseline", "--ratios", "1:5,0.2"], r"--ratios lists a ratio twice"),
    (["--space", "baseline", "--ratios", "1:5,2"], r"ratio must be in \(0, 1\]"),
    (["--space", "baseline", "--ratios", "1:5,1:11", "--ratio", "1:3"], r"--ratio cannot be used in a sweep"),
    (["--space", "baseline", "--ratios", "1:5,1:11", "--resume"], r"--resume cannot be used in a sweep"),
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
    assert sweep.main(["--space", "baseline", "--smoke", "--data", "digits", "--ratios", "1:2,1:8", "--confirm-seeds", "2"]) == 0
    table = list(csv.DictReader(open(tmp_path / "results" / "sweep" / "summary.csv")))
    assert [(r["ratio"], r["approach"], r["n_seeds"]) for r in table] == [("1:2", "baseline", "2"), ("1:8", "baseline", "2")]
    assert (tmp_path / "results" / "sweep" / "sweep.png").exists()
    assert not (tmp_path / "mlruns").exists(), "artifacts belong under results/mlartifacts, not ./mlruns"
    c = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    ratio_runs = runs(c, "baseline", "tags.role = 'sweep'")
    assert sorted(r.data.tags["ratio"] for r in ratio_runs) == ["1:2", "1:8"]
    for r in ratio_runs:
        assert r.info.status == "FINISHED"
        parents = runs(c, "baseline", f"tags.mlflow.parentRunId = '{r.info.run_id}'")
        assert len(parents) == 1 and parents[0].data.tags["role"] == "parent"
