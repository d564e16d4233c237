"""study.sources: the torch-free checks the CLI runs before anything heavy loads (issue 10)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from study import sources
from study.sources import DataError, check_source, parse_counts, parse_ratio


def folder(root: Path, layout: dict[str, dict[str, list[str]]]) -> Path:
    """Files by name only: nothing here is decoded, so their bytes do not matter."""
    for split, per_class in layout.items():
        for cls, names in per_class.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for name in names:
                (root / split / cls / name).write_bytes(b"")
    return root


TWO = {"cat": ["a.jpg", "b.png"], "dog": ["c.JPEG"]}


def test_import_loads_neither_torch_nor_numpy() -> None:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import study.sources"],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent)
    loaded = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert "study" in loaded, out.stderr[-500:]
    assert not loaded & {"torch", "numpy", "PIL", "torchvision", "sklearn"}


@pytest.mark.parametrize(("text", "ratio"), [("1:11", 1 / 11), ("0.5", 0.5), ("1", 1.0), (None, None), (0.25, 0.25)])
def test_parse_ratio(text, ratio) -> None:
    assert parse_ratio(text) == ratio


@pytest.mark.parametrize(("text", "shown"), [("11:1", "11.0"), ("0", "0.0"), ("2", "2.0"), ("nan", "nan"),
                                             ("1e308:1e-308", "inf")])
def test_parse_ratio_out_of_range(text: str, shown: str) -> None:
    with pytest.raises(DataError, match=rf"^ratio must be in \(0, 1\] \(minority / majority\), got {shown}$"):
        parse_ratio(text)


@pytest.mark.parametrize("text", ["1e-320", "1:1e308", "0.00009"])
def test_parse_ratio_refuses_a_ratio_no_data_set_can_hold(text: str) -> None:
    """A denormal 1e-320 once asked for infinitely many majority images (an OverflowError deep in the data code)."""
    with pytest.raises(DataError, match=rf"^ratio {text} is below 0\.0001 \(one minority image per 10,000 of the "
                                        r"majority\)$"):
        parse_ratio(text)
    assert parse_ratio("1:10000") == 1e-4


@pytest.mark.parametrize("text", ["one:eleven", "1:0", "abc"])
def test_parse_ratio_malformed(text: str) -> None:
    with pytest.raises(DataError, match=r"ratio must be a number in \(0, 1\] or 'a:b'"):
        parse_ratio(text)


def test_parse_counts() -> None:
    assert parse_counts("cat=1000, dog=11000") == {"cat": 1000, "dog": 11000}
    assert parse_counts(None) is None


@pytest.mark.parametrize("text", ["cat:3", "cat=3,dog", "cat=-1", "cat=x"])
def test_parse_counts_malformed(text: str) -> None:
    with pytest.raises(DataError, match="per-class counts must look like 'cat=1000,dog=11000'"):
        parse_counts(text)


@pytest.mark.parametrize("name", sources.DATASETS)
def test_named_data_sets_pass(name: str) -> None:
    check_source(name)


def test_a_good_folder_passes_with_or_without_test(tmp_path: Path) -> None:
    root = folder(tmp_path / "d", {"train": TWO, "validation": TWO})
    check_source(str(root))
    folder(root, {"test": TWO})
    check_source(str(root), counts={"dog": 1})
    assert sources.source_classes(str(root)) == ("cat", "dog")


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(DataError, match=r"unknown data set 'imagenet'; choose one of: animals, animals_bird_bear, "
                                        r"animals_horse_zebra, animals_sheep_cow, animals_source, digits, digits_1_7, "
                                        r"digits_lt, or a folder path"):
        check_source("imagenet")


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"data path {re.escape(str(tmp_path / 'nowhere'))} does not exist"):
        check_source(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("present", ["train", "validation"])
def test_missing_train_or_validation(tmp_path: Path, present: str) -> None:
    root = folder(tmp_path / "d", {present: TWO})
    absent = "validation" if present == "train" else "train"
    with pytest.raises(DataError, match=rf"missing folder {re.escape(str(root / absent))} \(expected <root>/train/"):
        check_source(str(root))


def test_no_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "train").mkdir(parents=True)
    (root / "train" / "loose.png").write_bytes(b"")
    with pytest.raises(DataError, match=rf"no class folders in {re.escape(str(root / 'train'))}"):
        check_source(str(root))


@pytest.mark.parametrize("contents", [[], ["notes.txt", ".hidden.jpg"]])
def test_class_folder_without_image_files(tmp_path: Path, contents: list[str]) -> None:
    root = folder(tmp_path / "d", {"train": TWO, "validation": {**TWO, "dog": contents}})
    with pytest.raises(DataError, match=rf"class folder {re.escape(str(root / 'validation' / 'dog'))} is empty: "
                                        r"no image files \(\.bmp, \.gif, \.jpeg"):
        check_source(str(root))


def test_single_class_is_one_line(tmp_path: Path) -> None:
    root = folder(tmp_path / "d", {"train": {"cat": ["a.jpg"]}, "validation": {"cat": ["b.jpg"]}})
    with pytest.raises(DataError, match=rf"^data set {re.escape(str(root))} has a single class \('cat' in "
                                        rf"{re.escape(str(root / 'train'))}\); a classifier needs two or more$"):
        check_source(str(root))


def test_classes_must_match_train(tmp_path: Path) -> None:
    root = folder(tmp_path / "d", {"train": TWO, "validation": {"cat": ["x.png"]}})
    with pytest.raises(DataError, match=r"class folders of .*validation \(cat\) differ from train \(cat, dog\)"):
        check_source(str(root))
    folder(root, {"validation": TWO, "test": {**TWO, "cow": ["y.png"]}})
    with pytest.raises(DataError, match=r"class folders of .*test \(cat, cow, dog\) differ from train \(cat, dog\)"):
        check_source(str(root))


@pytest.mark.parametrize(("link", "target"), [
    ("validation/dog", "train/dog"),  # the same images in two splits
    ("validation/dog", "."),  # the data set inside itself: a loop
    ("validation", "train"),  # a whole split
    ("validation/dog", ".."),  # a folder that holds the data set
])
def test_symlinks_back_into_the_tree_are_refused(tmp_path: Path, link: str, target: str) -> None:
    layout = {"train": TWO} if link == "validation" else {"train": TWO, "validation": {"cat": ["v.png"]}}
    root = folder(tmp_path / "d", layout)
    (root / link).symlink_to((root / target).resolve(), target_is_directory=True)
    with pytest.raises(DataError, match=rf"folder {re.escape(str(root / link))} is a symlink back into the data set "
                                        r".*: refused"):
        check_source(str(root))


def test_symlink_to_a_folder_outside_is_fine(tmp_path: Path) -> None:
    elsewhere = folder(tmp_path / "store", {"dogs": {"all": ["d1.jpg", "d2.jpg"]}})
    root = folder(tmp_path / "d", {"train": TWO, "validation": {"cat": ["v.png"]}})
    (root / "validation" / "dog").symlink_to(elsewhere / "dogs" / "all", target_is_directory=True)
    check_source(str(root))


def test_counts_naming_unknown_classes(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"per-class counts name unknown classes \['cow', 'puma'\]; classes are: cat, dog"):
        check_source("animals", counts={"cat": 10, "cow": 5, "puma": 1})
    root = folder(tmp_path / "d", {"train": TWO, "validation": TWO})
    with pytest.raises(DataError, match=r"unknown classes \['cats'\]; classes are: cat, dog"):
        check_source(str(root), counts=parse_counts("cats=3"))


def test_animals_without_its_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "animal_mnist", None)
    with pytest.raises(DataError, match=r"needs the package animal-mnist: pip install --no-deps animal-mnist==0\.4"):
        check_source("animals_source")
