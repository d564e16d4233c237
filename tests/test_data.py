"""Data sets: one uint8 N x C x H x W form, documented counts, disjoint seeded splits, the folder
layout, the decode-once cache and every bad input of issue 2 as a clear error."""

from __future__ import annotations

import gzip
import os
import pickle
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from study import data
from study.data import DataError, Dataset, load_dataset, parse_counts, parse_ratio

SPLITS = ("train", "val", "test")
SOURCE_ANIMALS = ("bear", "bird", "cow", "elephant", "giraffe", "horse", "sheep", "zebra")


# ---------------------------------------------------------------- helpers


def rows(images: torch.Tensor) -> list[bytes]:
    return [r.tobytes() for r in images.reshape(len(images), -1).numpy()]


def assert_form(ds: Dataset, channels: int, size: int) -> None:
    for s in SPLITS:
        split = getattr(ds, s)
        assert split.images.dtype == torch.uint8 and split.images.ndim == 4
        assert tuple(split.images.shape[1:]) == (channels, size, size)
        assert split.labels.dtype == torch.int64 and split.labels.shape == (len(split.images),)
        assert set(split.labels.tolist()) <= set(range(ds.num_classes))


def assert_disjoint(ds: Dataset) -> None:
    """No image (by its exact pixels) is in two splits, and no split holds an image twice."""
    hashes = {s: rows(getattr(ds, s).images) for s in SPLITS}
    for s in ("val", "test"):
        assert len(set(hashes[s])) == len(hashes[s]), f"{s} holds an image twice"
    assert not set(hashes["train"]) & set(hashes["val"])
    assert not set(hashes["train"]) & set(hashes["test"])
    assert not set(hashes["val"]) & set(hashes["test"])


def same(a: Dataset, b: Dataset) -> bool:
    return a.classes == b.classes and all(
        torch.equal(getattr(a, s).images, getattr(b, s).images) and torch.equal(getattr(a, s).labels, getattr(b, s).labels)
        for s in SPLITS)


@pytest.fixture(scope="module")
def animal_raw() -> tuple[np.ndarray, np.ndarray]:
    """The package's 10 x 1000 silhouettes at 28 px, read independently of the split code."""
    return data._animal_arrays(data._animal_files())


# ---------------------------------------------------------------- animals


def test_animals_default_is_cat_vs_dog_balanced_eval_and_1_to_11_training(tmp_path: Path) -> None:
    ds = load_dataset("animals", image_size=16, cache_dir=tmp_path)
    assert ds.classes == ("cat", "dog")
    assert_form(ds, channels=1, size=16)
    assert ds.train.counts(2) == [64, 700]  # 700 / 11 = 63.6 -> 64 cats
    assert ds.val.counts(2) == [150, 150]
    assert ds.test.counts(2) == [150, 150]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_animals_splits_are_disjoint_real_cats_and_dogs(animal_raw, seed: int) -> None:
    images, labels = animal_raw
    by_pixels = {}
    for r, label in zip(rows(torch.from_numpy(images)), labels):
        by_pixels.setdefault(r, set()).add(data.ANIMALS[label])
    ds = load_dataset("animals", image_size=28, seed=seed, cache_dir=None)  # 28 px: the raw pixels, unresized
    assert_disjoint(ds)
    for s in SPLITS:
        split = getattr(ds, s)
        for r, label in zip(rows(split.images), split.labels.tolist()):
            assert by_pixels[r] == {ds.classes[label]}, "every image is a real silhouette of its labelled animal"


def test_animals_deterministic_for_a_seed(animal_raw) -> None:
    a = load_dataset("animals", image_size=8, seed=3, cache_dir=None)
    b = load_dataset("animals", image_size=8, seed=3, cache_dir=None)
    c = load_dataset("animals", image_size=8, seed=4, cache_dir=None)
    assert same(a, b)
    assert not torch.equal(a.train.images, c.train.images)
    assert not torch.equal(a.test.images, c.test.images)


@pytest.mark.parametrize(("ratio", "cats"), [(0.5, 350), (1.0, 700), (parse_ratio("1:20"), 35), (parse_ratio("0.1"), 70)])
def test_animals_ratio_sets_training_minority(tmp_path: Path, ratio: float, cats: int) -> None:
    ds = load_dataset("animals", image_size=8, ratio=ratio, cache_dir=tmp_path)
    assert ds.train.counts(2) == [cats, 700]
    assert ds.val.counts(2) == [150, 150] and ds.test.counts(2) == [150, 150]


@pytest.mark.parametrize("counts", ["cat=30,dog=500", {"cat": 30, "dog": 500}])
def test_animals_explicit_counts(tmp_path: Path, counts) -> None:
    ds = load_dataset("animals", image_size=8, counts=counts, cache_dir=tmp_path)
    assert ds.train.counts(2) == [30, 500]
    assert ds.val.counts(2) == [150, 150] and ds.test.counts(2) == [150, 150]


def test_animals_source_is_the_eight_other_animals(animal_raw) -> None:
    images, labels = animal_raw
    cat_dog = set(rows(torch.from_numpy(images[np.isin(labels, data.ANIMAL_TASK)])))
    ds = load_dataset("animals_source", image_size=28, cache_dir=None)
    assert ds.classes == SOURCE_ANIMALS
    assert_form(ds, channels=1, size=28)
    assert ds.train.counts(8) == [800] * 8
    assert ds.val.counts(8) == [100] * 8 and ds.test.counts(8) == [100] * 8
    assert_disjoint(ds)
    for s in SPLITS:
        assert not set(rows(getattr(ds, s).images)) & cat_dog, "no cat or dog in the source task"


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digit_sizes() -> np.ndarray:
    from sklearn.datasets import load_digits

    return np.bincount(load_digits().target)


def test_digits_binary_3_vs_8_at_1_to_11(digit_sizes) -> None:
    ds = load_dataset("digits", image_size=8, cache_dir=None)
    assert ds.classes == ("3", "8")
    assert_form(ds, channels=1, size=8)
    held = [int(digit_sizes[d] * 0.25) for d in (3, 8)]  # 25 % validation, 25 % test per class
    assert ds.val.counts(2) == held and ds.test.counts(2) == held
    eights = digit_sizes[8] - 2 * held[1]
    assert ds.train.counts(2) == [round(eights / 11), eights]
    assert_disjoint(ds)
    ratio = load_dataset("digits", image_size=8, ratio=0.5, cache_dir=None)
    assert ratio.train.counts(2) == [round(eights / 2), eights]


@pytest.mark.parametrize("ratio", [None, 0.5])
def test_digits_lt_long_tailed_profile(digit_sizes, ratio) -> None:
    ds = load_dataset("digits_lt", image_size=8, ratio=ratio, cache_dir=None)
    assert ds.classes == tuple(str(d) for d in range(10))
    assert_form(ds, channels=1, size=8)
    held = [int(n * 0.2) for n in digit_sizes]
    assert ds.val.counts(10) == held and ds.test.counts(10) == held
    n_max = min(n - 2 * h for n, h in zip(digit_sizes, held))
    r = 0.1 if ratio is None else ratio
    expected = [round(n_max * r ** (i / 9)) for i in range(10)]
    assert ds.train.counts(10) == expected
    assert expected[0] == n_max and expected == sorted(expected, reverse=True)
    assert_disjoint(ds)


# ---------------------------------------------------------------- folder (Kaggle layout)

SPLIT_CODE = {"train": 10, "validation": 20, "test": 30}
CLASS_CODE = {"cat": 0, "dog": 100}


def write_image(path: Path, split: str, cls: str, i: int, fmt: str = "PNG") -> None:
    """A solid image whose colour names its split, class and index (exact through PNG and resizing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20 + i % 3, 14), (SPLIT_CODE[split], CLASS_CODE[cls], i)).save(path, fmt)


def make_folder(root: Path, sizes: dict[str, dict[str, int]]) -> Path:
    for split, per_class in sizes.items():
        for cls, n in per_class.items():
            for i in range(n):
                fmt = "JPEG" if i == 0 and split == "train" else "PNG"
                write_image(root / split / cls / f"{i:03d}.{fmt.lower()}", split, cls, i, fmt)
    return root


def codes(images: torch.Tensor) -> list[tuple[int, int, int]]:
    return [tuple(int(v) for v in img[:, 4, 4]) for img in images]


def test_folder_with_test_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "cats_and_dogs", {
        "train": {"cat": 5, "dog": 12}, "validation": {"cat": 4, "dog": 6}, "test": {"cat": 3, "dog": 7}})
    ds = load_dataset(str(root), image_size=8, cache_dir=tmp_path / "cache")
    assert ds.classes == ("cat", "dog")
    assert_form(ds, channels=3, size=8)
    assert ds.train.counts(2) == [5, 12] and ds.val.counts(2) == [4, 6] and ds.test.counts(2) == [3, 7]
    for s, folder in (("train", "train"), ("val", "validation"), ("test", "test")):
        split = getattr(ds, s)
        for (r, g, _), label in zip(codes(split.images), split.labels.tolist()):  # JPEGs: colours +- a few
            assert abs(r - SPLIT_CODE[folder]) <= 4, f"{s} images come from {folder}/"
            assert abs(g - CLASS_CODE[ds.classes[label]]) <= 4, "labels follow the class folders"


def test_folder_without_test_holds_out_half_of_validation_deterministically(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"train": {"cat": 3, "dog": 9}, "validation": {"cat": 8, "dog": 10}})
    ds = load_dataset(str(root), image_size=8, seed=0, cache_dir=None)
    assert ds.val.counts(2) == [4, 5] and ds.test.counts(2) == [4, 5]
    val, test = set(codes(ds.val.images)), set(codes(ds.test.images))
    assert not val & test
    assert val | test == {(20, CLASS_CODE[c], i) for c, n in (("cat", 8), ("dog", 10)) for i in range(n)}
    assert same(ds, load_dataset(str(root), image_size=8, seed=0, cache_dir=None))
    other = load_dataset(str(root), image_size=8, seed=1, cache_dir=None)
    assert set(codes(other.test.images)) != test, "the hold-out follows the seed"


def test_folder_counts_and_ratio(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"train": {"cat": 5, "dog": 12}, "validation": {"cat": 2, "dog": 2}})
    ds = load_dataset(str(root), image_size=8, counts="cat=3,dog=9", cache_dir=None)
    assert ds.train.counts(2) == [3, 9]
    assert len(set(codes(ds.train.images))) == 12, "distinct training images"
    ds = load_dataset(str(root), image_size=8, ratio=0.25, cache_dir=None)
    assert ds.train.counts(2) == [3, 12]  # 0.25 x 12 dogs


def test_folder_any_class_names_sizes_and_modes(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for split in ("train", "validation"):
        for cls, mode in (("Ant", "L"), ("bee", "RGBA"), ("wasp", "RGB")):
            for i in range(2):
                (root / split / cls).mkdir(parents=True, exist_ok=True)
                Image.new(mode, (30 + 7 * i, 11 + i)).save(root / split / cls / f"{i}.png")
    ds = load_dataset(str(root), image_size=6, cache_dir=None)
    assert ds.classes == ("Ant", "bee", "wasp")
    assert_form(ds, channels=3, size=6)
    assert ds.train.counts(3) == [2, 2, 2] and ds.val.counts(3) == [1, 1, 1] and ds.test.counts(3) == [1, 1, 1]


def test_folder_skips_unreadable_files_in_one_warning(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"train": {"cat": 3, "dog": 4}, "validation": {"cat": 2, "dog": 2},
                                        "test": {"cat": 2, "dog": 2}})
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "train" / "cat" / "whole.jpg", quality=95)
    raw = (root / "train" / "cat" / "whole.jpg").read_bytes()
    (root / "train" / "cat" / "truncated.jpg").write_bytes(raw[: len(raw) // 2])
    (root / "train" / "dog" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (root / "validation" / "dog" / "notes.txt").write_text("not an image")
    (root / "test" / "cat" / "empty.jpg").write_bytes(b"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(str(root), image_size=8, cache_dir=None)
    skipped = [w for w in caught if "skipped" in str(w.message)]
    assert len(skipped) == 1, [str(w.message) for w in caught]
    assert re.search(rf"skipped 4 corrupt, truncated or non-image files under {re.escape(str(root))}",
                     str(skipped[0].message))
    assert ds.train.counts(2) == [4, 4]  # 3 + whole.jpg cats; the corrupt dog is gone
    assert ds.val.counts(2) == [2, 2] and ds.test.counts(2) == [2, 2]


def test_folder_class_with_no_readable_image_names_it(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"train": {"dog": 3}, "validation": {"cat": 2, "dog": 2}})
    (root / "train" / "cat").mkdir()
    (root / "train" / "cat" / "a.jpg").write_bytes(b"definitely not a jpeg")
    with pytest.raises(DataError, match=rf"class 'cat' has no readable image in the train split of {re.escape(str(root))}"):
        load_dataset(str(root), image_size=8, cache_dir=None)


def test_folder_empty_class_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"train": {"cat": 2, "dog": 2}, "validation": {"cat": 2, "dog": 2}})
    (root / "validation" / "bird").mkdir()
    with pytest.raises(DataError, match=rf"class folder {re.escape(str(root / 'validation' / 'bird'))} is empty"):
        load_dataset(str(root), image_size=8, cache_dir=None)


def test_folder_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=rf"data path {re.escape(str(missing))} does not exist"):
        load_dataset(str(missing), cache_dir=tmp_path)


def test_folder_without_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "train").mkdir(parents=True)
    (root / "train" / "loose.png").write_bytes(b"")
    with pytest.raises(DataError, match=rf"no class folders in {re.escape(str(root / 'train'))}"):
        load_dataset(str(root), cache_dir=None)


def test_folder_without_validation(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"train": {"cat": 2, "dog": 2}})
    with pytest.raises(DataError, match=rf"missing folder {re.escape(str(root / 'validation'))}"):
        load_dataset(str(root), cache_dir=None)


def test_folder_class_folders_must_match_train(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"train": {"cat": 2, "dog": 2}, "validation": {"cat": 2}})
    with pytest.raises(DataError, match=r"class folders of .*validation \(cat\) differ from train \(cat, dog\)"):
        load_dataset(str(root), cache_dir=None)


# ---------------------------------------------------------------- the on-disk cache


@pytest.fixture()
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file the folder loader decodes, in order."""
    calls: list[Path] = []
    real = data._decode

    def spy(path: Path, size: int):
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(data, "_decode", spy)
    return calls


def test_cache_hit_skips_decoding_and_changes_invalidate(tmp_path: Path, decodes: list[Path]) -> None:
    root = make_folder(tmp_path / "d", {"train": {"cat": 3, "dog": 6}, "validation": {"cat": 2, "dog": 2}})
    cache = tmp_path / "cache"
    first = load_dataset(str(root), image_size=8, cache_dir=cache)
    assert len(decodes) == 13
    files = sorted(cache.iterdir())
    assert [f.suffix for f in files] == [".pt"] and first.settings["cache"] == str(files[0])

    decodes.clear()
    second = load_dataset(str(root), image_size=8, cache_dir=cache)
    assert decodes == [], "a re-run reads the cache instead of decoding"
    assert same(first, second) and second.settings["cache"] == str(files[0])

    write_image(root / "train" / "dog" / "002.png", "train", "dog", 77)  # a changed file
    changed = load_dataset(str(root), image_size=8, cache_dir=cache)
    assert len(decodes) == 13 and len(list(cache.iterdir())) == 2
    assert (10, 100, 77) in codes(changed.train.images) and (10, 100, 2) not in codes(changed.train.images)

    decodes.clear()
    reseeded = load_dataset(str(root), image_size=8, seed=5, cache_dir=cache)  # a changed setting
    assert len(decodes) == 13 and len(list(cache.iterdir())) == 3
    assert reseeded.settings["cache"] not in {str(f) for f in files}
    decodes.clear()
    load_dataset(str(root), image_size=6, seed=5, cache_dir=cache)
    assert len(decodes) == 13 and len(list(cache.iterdir())) == 4


def test_animals_cache_hit_and_setting_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = data._animal_arrays
    monkeypatch.setattr(data, "_animal_arrays", lambda raw: calls.append(1) or real(raw))
    a = load_dataset("animals", image_size=8, cache_dir=tmp_path)
    b = load_dataset("animals", image_size=8, cache_dir=tmp_path)
    assert len(calls) == 1 and same(a, b)
    c = load_dataset("animals", image_size=8, ratio=0.5, cache_dir=tmp_path)
    assert len(calls) == 2 and c.train.counts(2) == [350, 700]
    assert len(list(tmp_path.glob("animals-*.pt"))) == 2


def test_no_cache_dir_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    load_dataset("digits", image_size=8, cache_dir=None)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the restricted unpickler


class _Evil:
    def __init__(self, func, arg) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def test_unpickler_reads_a_numpy_array() -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    for protocol in (3, 4):  # the package's files are protocol 4
        out = data.read_numpy_pickle(gzip.compress(pickle.dumps(array, protocol=protocol)))
        assert out.dtype == np.uint8 and np.array_equal(out, array)


@pytest.mark.parametrize("func", [os.system, eval])
def test_unpickler_refuses_non_numpy_globals(tmp_path: Path, func) -> None:
    marker = tmp_path / "pwned"
    arg = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w')"
    blob = gzip.compress(pickle.dumps(_Evil(func, arg)))
    with pytest.raises(pickle.UnpicklingError, match=rf"refusing to load \w+\.{func.__name__} from a data file"):
        data.read_numpy_pickle(blob)
    assert not marker.exists(), "nothing ran"


def test_unpickler_wants_an_array() -> None:
    with pytest.raises(DataError, match="expected a numpy array in the data file, got list"):
        data.read_numpy_pickle(gzip.compress(pickle.dumps([1, 2, 3])))


# ---------------------------------------------------------------- bad input


def test_unknown_data_set_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown data set 'imagenet'; choose one of: animals, animals_source, digits, "
                                        r"digits_lt, or a folder path"):
        load_dataset("imagenet", cache_dir=tmp_path)


@pytest.mark.parametrize("ratio", [0, -0.5, 1.5, 11])
def test_ratio_outside_0_1(tmp_path: Path, ratio: float) -> None:
    with pytest.raises(DataError, match=r"ratio must be in \(0, 1\] \(minority / majority\), got"):
        load_dataset("digits", ratio=ratio, cache_dir=tmp_path)


@pytest.mark.parametrize("text", ["11:1", "0", "2"])
def test_parse_ratio_out_of_range(text: str) -> None:
    with pytest.raises(DataError, match=r"ratio must be in \(0, 1\]"):
        parse_ratio(text)


@pytest.mark.parametrize("text", ["one:eleven", "1:0", "abc"])
def test_parse_ratio_malformed(text: str) -> None:
    with pytest.raises(DataError, match=r"ratio must be a number in \(0, 1\] or 'a:b'"):
        parse_ratio(text)


@pytest.mark.parametrize("text", ["cat:3", "cat=3,dog", "cat=-1", "cat=x"])
def test_parse_counts_malformed(text: str) -> None:
    with pytest.raises(DataError, match="per-class counts must look like 'cat=1000,dog=11000'"):
        parse_counts(text)


def test_counts_larger_than_available(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"per-class count dog=701 is out of range: 700 training images available"):
        load_dataset("animals", image_size=8, counts="cat=10,dog=701", cache_dir=tmp_path)
    root = make_folder(tmp_path / "d", {"train": {"cat": 2, "dog": 3}, "validation": {"cat": 2, "dog": 2}})
    with pytest.raises(DataError, match=r"per-class count cat=3 is out of range: 2 training images available"):
        load_dataset(str(root), counts="cat=3", cache_dir=None)


def test_counts_naming_unknown_classes(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"per-class counts name unknown classes \['cow', 'puma'\]; classes are: cat, dog"):
        load_dataset("animals", image_size=8, counts="cat=10,cow=5,puma=1", cache_dir=tmp_path)


def test_animals_package_missing_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "animal_mnist", None)  # import animal_mnist -> ModuleNotFoundError
    for name in ("animals", "animals_source"):
        with pytest.raises(DataError, match=r"needs the package animal-mnist: pip install --no-deps animal-mnist==0\.4"):
            load_dataset(name, cache_dir=tmp_path)


def test_ratio_asking_for_more_minority_images_than_exist(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "few_cats", {"train": {"cat": 2, "dog": 12}, "validation": {"cat": 2, "dog": 2}})
    with pytest.raises(DataError, match=r"ratio 0\.5 asks for 6 training images of 'cat' \(12 of the largest class\), "
                                        r"but only 2 are available"):
        load_dataset(str(root), ratio=0.5, image_size=8, cache_dir=tmp_path / "cache")


def test_folder_hold_out_splits_the_readable_validation_images(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"train": {"cat": 2, "dog": 4}, "validation": {"cat": 2, "dog": 4}})
    for i in range(4):  # unreadable files that a split of file names could all send to one half
        (root / "validation" / "cat" / f"junk{i}.jpg").write_bytes(b"not a jpeg")
    for seed in range(6):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = load_dataset(str(root), image_size=8, seed=seed, cache_dir=None)
        assert ds.val.counts(2) == [1, 2] and ds.test.counts(2) == [1, 2]


def test_folder_hold_out_needs_two_readable_validation_images_per_class(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"train": {"cat": 2, "dog": 4}, "validation": {"cat": 1, "dog": 4}})
    with pytest.raises(DataError, match=r"class 'cat' has one readable validation image in .*: too few to hold out a test half"):
        load_dataset(str(root), image_size=8, cache_dir=None)
