"""What a data set is and whether it can be read: every check that needs no decoding.

Standard library only (no numpy, no torch): ``python -m study.tune`` calls :func:`check_source`
and the ``parse_*`` functions before anything heavy loads, so a mistyped name, a missing folder
or a one-class folder fails in a fraction of a second. ``study.data`` builds on these.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from study.errors import StudyError

ANIMALS = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
ANIMAL_TASK = (2, 4)  # cat (minority, label 0) vs dog (majority, label 1), as in the seed paper
DIGIT_PAIR = (3, 8)  # the binary digits task: 3 (the documented minority) vs 8
# more binary tasks that ship with the project, each at its own training imbalance (a board needs five data sets):
# name -> ((minority, majority) class indices, default minority:majority ratio)
ANIMAL_PAIRS: dict[str, tuple[tuple[int, int], float]] = {
    "animals_horse_zebra": ((7, 9), 1 / 5),  # 140 : 700 training images
    "animals_sheep_cow": ((8, 3), 1 / 22),  # 32 : 700
    "animals_bird_bear": ((1, 0), 1 / 50),  # 14 : 700
}
DIGIT_PAIRS: dict[str, tuple[tuple[int, int], float]] = {
    "digits_1_7": ((1, 7), 1 / 5),  # about 18 : 91
}

# name -> class names, in label order
CLASSES: dict[str, tuple[str, ...]] = {
    "animals": tuple(ANIMALS[i] for i in ANIMAL_TASK),
    "animals_source": tuple(a for i, a in enumerate(ANIMALS) if i not in ANIMAL_TASK),
    "digits": tuple(str(d) for d in DIGIT_PAIR),
    "digits_lt": tuple(str(d) for d in range(10)),
    **{name: tuple(ANIMALS[i] for i in pair) for name, (pair, _) in ANIMAL_PAIRS.items()},
    **{name: tuple(str(d) for d in pair) for name, (pair, _) in DIGIT_PAIRS.items()},
}
DATASETS = tuple(CLASSES)  # the named data sets; anything else must be a folder path
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})
FOLDER_SPLITS = ("train", "validation", "test")  # test/ is optional
MIN_RATIO = 1e-4  # one minority image per 10,000 of the majority


class DataError(StudyError):
    """Bad data input: a clear one-line message for the user."""


class DataWarning(UserWarning):
    """Data that was used despite a problem (unreadable files skipped, a cache entry rebuilt)."""


# ---------------------------------------------------------------- settings


def parse_ratio(value: str | float | None) -> float | None:
    """'1:11', '0.0909' or a float -> minority/majority in (0, 1]."""
    if value is None:
        return None
    try:
        if isinstance(value, str) and ":" in value:
            a, b = (float(v) for v in value.split(":"))
            ratio = a / b
        else:
            ratio = float(value)
    except (ValueError, ZeroDivisionError):
        raise DataError(f"ratio must be a number in (0, 1] or 'a:b', got {value!r}") from None
    check_ratio(ratio)
    if ratio < MIN_RATIO:  # a denormal 1e-320 would ask for infinitely many majority images
        raise DataError(f"ratio {value} is below {MIN_RATIO:g} (one minority image per {1 / MIN_RATIO:,.0f} of the "
                        "majority)")
    return ratio


def check_ratio(ratio: float) -> None:
    if not 0 < ratio <= 1:
        raise DataError(f"ratio must be in (0, 1] (minority / majority), got {ratio}")


def parse_counts(value: str | dict | None) -> dict[str, int] | None:
    """'cat=1000,dog=11000' -> {'cat': 1000, 'dog': 11000}."""
    if value is None or isinstance(value, dict):
        return value
    counts = {}
    for part in value.split(","):
        name, sep, num = part.partition("=")
        if not sep or not num.strip().isdigit():
            raise DataError(f"per-class counts must look like 'cat=1000,dog=11000', got {value!r}")
        counts[name.strip()] = int(num)
    return counts


# ---------------------------------------------------------------- sources


def is_folder(data: str) -> bool:
    """A ``--data`` value that is not a data set name is a folder path when it looks like one."""
    return data not in CLASSES and (os.sep in data or data.startswith(".") or Path(data).expanduser().exists())


def _refuse_links_into(path: Path, root: Path) -> None:
    """A linked folder that leads back into the data set would put one image in two places (or loop)."""
    if not path.is_symlink():
        return
    target = path.resolve()
    if target == root or root in target.parents or target in root.parents:
        raise DataError(f"folder {path} is a symlink back into the data set ({target}): refused, "
                        f"it would read the same images twice; copy them or link to a folder outside {root}")


def _class_dirs(split_dir: Path, root: Path) -> dict[str, list[Path]]:
    if not split_dir.is_dir():
        raise DataError(f"missing folder {split_dir} (expected <root>/train/<class>/, <root>/validation/<class>/)")
    _refuse_links_into(split_dir, root)
    dirs = sorted(d for d in split_dir.iterdir() if d.is_dir())
    if not dirs:
        raise DataError(f"no class folders in {split_dir}")
    files = {}
    for d in dirs:
        _refuse_links_into(d, root)
        # every non-hidden file: non-image files are decoded, fail and are counted as skipped
        found = sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in found):
            raise DataError(f"class folder {d} is empty: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        files[d.name] = found
    return files


def folder_layout(root: Path) -> dict[str, dict[str, list[Path]]]:
    """{split: {class: [files]}} of a Kaggle-layout folder (train/, validation/, optional test/), validated."""
    if not root.exists():
        raise DataError(f"data path {root} does not exist")
    real = root.resolve()
    layout = {s: _class_dirs(root / s, real) for s in FOLDER_SPLITS if s != "test" or (root / s).is_dir()}
    train = sorted(layout["train"])
    if len(train) < 2:
        raise DataError(
            f"data set {root} has a single class ('{train[0]}' in {root / 'train'}); a classifier needs two or more"
        )
    for split, per_class in layout.items():
        if sorted(per_class) != train:
            raise DataError(
                f"class folders of {root / split} ({', '.join(per_class)}) differ from train ({', '.join(train)})"
            )
    return layout


def source_classes(data: str) -> tuple[str, ...]:
    """The class names of a data set name or a folder path, in label order (folders: sorted)."""
    if data in CLASSES:
        return CLASSES[data]
    if is_folder(data):
        return tuple(sorted(folder_layout(Path(data).expanduser())["train"]))
    raise DataError(f"unknown data set '{data}'; choose one of: {', '.join(sorted(DATASETS))}, or a folder path")


def check_source(data: str, counts: dict[str, int] | None = None) -> None:
    """Every check of ``--data`` (and ``--counts``' class names) that needs no decoding; raises DataError."""
    classes = source_classes(data)
    if data.startswith("animals") and data in CLASSES and importlib.util.find_spec("animal_mnist") is None:
        raise DataError("the animals data set needs the package animal-mnist: pip install --no-deps animal-mnist==0.4")
    unknown = sorted(set(counts or ()) - set(classes))
    if unknown:
        raise DataError(f"per-class counts name unknown classes {unknown}; classes are: {', '.join(classes)}")
