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

from study import data, sources
from study.data import DataError, Dataset, DataWarning, load_dataset, parse_ratio

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
    for r, label in zip(rows(torch.from_numpy(images)), labels, strict=False):
        by_pixels.setdefault(r, set()).add(data.ANIMALS[label])
    ds = load_dataset("animals", image_size=28, seed=seed, cache_dir=None)  # 28 px: the raw pixels, unresized
    assert_disjoint(ds)
    for s in SPLITS:
        split = getattr(ds, s)
        for r, label in zip(rows(split.images), split.labels.tolist(), strict=False):
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
    n_max = min(n - 2 * h for n, h in zip(digit_sizes, held, strict=False))
    r = 0.1 if ratio is None else ratio
    expected = [round(n_max * r ** (i / 9)) for i in range(10)]
    assert ds.train.counts(10) == expected
    assert expected[0] == n_max and expected == sorted(expected, reverse=True)
    assert_disjoint(ds)


# ---------------------------------------------------------------- the minority and the training counts


@pytest.mark.parametrize(("available", "ratio", "expected"), [
    ({"horse": 850, "zebra": 38}, 1 / 11, {"horse": 418, "zebra": 38}),  # issue 9: the minority sorts last
    ({"cat": 700, "dog": 700}, 1 / 11, {"cat": 64, "dog": 700}),  # a tie: the lowest label is cut (animals)
    ({"cat": 5, "dog": 12}, 0.25, {"cat": 3, "dog": 12}),  # 12 dogs < 5 / 0.25: the minority is cut instead
    ({"a": 200, "b": 50, "c": 10}, 1 / 11, {"a": 110, "b": 50, "c": 10}),  # never more than available
    ({"a": 30, "b": 20}, 1.0, {"a": 20, "b": 20}),
])
def test_train_counts_keeps_the_fewest_image_class_whole_when_it_can(available, ratio, expected) -> None:
    assert data.train_counts(available, tuple(available), ratio, None) == expected


def test_train_counts_a_named_minority_is_the_one_cut() -> None:
    assert data.train_counts({"3": 93, "8": 88}, ("3", "8"), 0.5, None, minority="3") == {"3": 44, "8": 88}


def test_dataset_minority_is_the_fewest_training_images_lowest_label_on_a_tie() -> None:
    def split(counts: list[int]) -> data.Split:
        labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
        return data.Split(torch.zeros(len(labels), 1, 2, 2, dtype=torch.uint8), labels)

    ds = Dataset("t", ("a", "b", "c"), split([3, 2, 2]), split([1, 1, 9]), split([1, 1, 9]))
    assert (ds.minority, ds.minority_name) == (1, "b")


@pytest.mark.parametrize(("name", "minority"), [("animals", "cat"), ("digits", "3"), ("digits_lt", "9")])
def test_named_data_sets_report_their_smallest_training_class(name: str, minority: str) -> None:
    ds = load_dataset(name, image_size=8, cache_dir=None)
    counts = ds.train.counts(ds.num_classes)
    assert ds.minority == counts.index(min(counts)) and ds.minority_name == minority


@pytest.mark.parametrize("name", data.DATASETS)
def test_registry_matches_the_torch_free_names(name: str) -> None:
    assert sorted(data.BUILDERS) == sorted(data.DATASETS)
    assert load_dataset(name, image_size=4, cache_dir=None).classes == sources.CLASSES[name]


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
        for (r, g, _), label in zip(codes(split.images), split.labels.tolist(), strict=False):  # JPEGs: colours +- a few
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


def write_tiny(root: Path, sizes: dict[str, dict[str, int]]) -> Path:
    """Tiny solid PNGs: red = index, green = class position, blue = split position (all distinct)."""
    for s, (split, per_class) in enumerate(sizes.items()):
        for c, (cls, n) in enumerate(per_class.items()):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (4, 4), (i, 40 * c, 40 * s)).save(root / split / cls / f"{i:03d}.png")
    return root


def test_folder_ratio_keeps_every_image_of_a_minority_that_sorts_last(tmp_path: Path) -> None:
    root = write_tiny(tmp_path / "horse2zebra", {"train": {"horse": 120, "zebra": 10},
                                                  "validation": {"horse": 4, "zebra": 4}})
    ds = load_dataset(str(root), image_size=6, ratio=parse_ratio("1:11"), cache_dir=None)
    assert ds.classes == ("horse", "zebra")
    assert ds.train.counts(2) == [110, 10]
    assert (ds.minority, ds.minority_name) == (1, "zebra")
    zebras = {c for c, label in zip(codes(ds.train.images), ds.train.labels.tolist(), strict=False) if label == 1}
    assert zebras == {(i, 40, 0) for i in range(10)}, "every zebra is kept"
    assert len(set(codes(ds.train.images))) == 120, "distinct images"


def test_folder_with_a_single_class_is_an_error(tmp_path: Path) -> None:
    root = write_tiny(tmp_path / "d", {"train": {"cat": 3}, "validation": {"cat": 2}})
    with pytest.raises(DataError, match=rf"data set {re.escape(str(root))} has a single class \('cat' in .*train\)"):
        load_dataset(str(root), cache_dir=None)


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
    assert re.search(rf"skipped 4 corrupt, truncated, oversized or non-image files under "
                     rf"{re.escape(str(root))}", str(skipped[0].message))
    assert ds.train.counts(2) == [4, 4]  # 3 + whole.jpg cats; the corrupt dog is gone
    assert ds.val.counts(2) == [2, 2] and ds.test.counts(2) == [2, 2]


@pytest.mark.parametrize("workers", [1, 2])
def test_decompression_bombs_and_oversized_files_are_skipped_like_unreadable_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """PIL's DecompressionBombError (over twice MAX_IMAGE_PIXELS), its warning (between once and twice) and files over
    MAX_IMAGE_BYTES: each skipped with the warning, never a traceback. The limits are shrunk so the files stay small."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    monkeypatch.setattr(data, "MAX_IMAGE_BYTES", 4000)
    root = tmp_path / "d"
    (root / "train" / "dog").mkdir(parents=True)
    for i, side in enumerate((20, 20, 20, 40, 100)):  # 400 px (kept), 1600 px (warning), 10,000 px (error)
        Image.new("RGB", (side, side), (1, 2, 3)).save(root / "train" / "dog" / f"{i}.png")
    (root / "train" / "dog" / "big.bmp").write_bytes(b"BM" + bytes(5000))  # over MAX_IMAGE_BYTES: never opened
    files = sorted((p, 0) for p in (root / "train" / "dog").iterdir())
    images, labels, skipped = data.decode_files(files, 8, "test", workers=workers)
    assert sorted(p.name for p in skipped) == ["3.png", "4.png", "big.bmp"] and len(labels) == 3


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


# ---------------------------------------------------------------- decoding


@pytest.fixture(scope="module")
def mixed_files(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, int]]:
    """Noise JPEGs and PNGs of assorted sizes and modes, a truncated JPEG and a text file, labelled 0-2."""
    folder = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    files = []
    for i in range(30):
        path = folder / f"{i:02d}.{'jpg' if i % 3 else 'png'}"
        shape = (20 + i, 30 + 2 * i, 3) if i % 4 else (25, 25)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path, quality=90) if i % 3 else \
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        files.append((path, i % 3))
    raw = files[1][0].read_bytes()
    (folder / "truncated.jpg").write_bytes(raw[: len(raw) // 2])
    (folder / "notes.txt").write_text("not an image")
    return files[:10] + [(folder / "truncated.jpg", 1)] + files[10:20] + [(folder / "notes.txt", 2)] + files[20:]


def test_parallel_decode_equals_one_process_in_file_order(mixed_files) -> None:
    one = data.decode_files(mixed_files, 12, "test", workers=1)
    many = data.decode_files(mixed_files, 12, "test", workers=2, chunk=4)  # 8 chunks over 2 processes
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1]) and one[2] == many[2]
    assert [p.name for p in one[2]] == ["truncated.jpg", "notes.txt"]
    kept = [(p, label) for p, label in mixed_files if p not in one[2]]
    assert one[1].tolist() == [label for _, label in kept]
    assert one[0].shape == (len(kept), 3, 12, 12) and one[0].dtype == torch.uint8
    by_itself = data._decode(kept[5][0], 12)
    assert torch.equal(one[0][5], torch.from_numpy(by_itself.copy())), "row i is file i"


def test_torchvision_jpeg_batches_match_pil_closely_and_skip_the_same_files(
    mixed_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The nvjpeg path, run here on the CPU decoder: the same files skipped, pixels within a few levels."""
    garbage = tmp_path / "garbage.jpg"  # whole-looking (SOI ... EOI): the decoder refuses its batch, then it alone
    garbage.write_bytes(b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9")
    images = [p for p, _ in mixed_files if p.suffix != ".txt"] + [garbage]
    pil, tv = (np.zeros((len(images), 3, 12, 12), dtype=np.uint8) for _ in range(2))
    pil_ok = data._decode_into(pil, 0, images)
    by_pil: list[str] = []
    real = data._decode_into
    monkeypatch.setattr(data, "_decode_into", lambda out, start, paths: by_pil.extend(p.name for p in paths)
                        or real(out, start, paths))
    tv_ok = data._decode_jpegs(images, tv, "cpu", lambda n: None)
    pngs = [p.name for p in images if p.suffix == ".png"]
    assert len(pngs) == 10 and sorted(by_pil) == sorted([*pngs, "garbage.jpg", "truncated.jpg"]), \
        "only what torchvision cannot decode goes to PIL"
    assert (pil_ok == tv_ok).all() and tv_ok.sum() == len(images) - 2
    assert not tv_ok[images.index(garbage)] and not tv_ok[[p.name for p in images].index("truncated.jpg")]
    diff = np.abs(pil[pil_ok].astype(int) - tv[tv_ok].astype(int))
    assert diff.mean() < 0.5 and diff.max() <= 2, (diff.mean(), diff.max())  # measured: mean 0.1, max 1


def test_decode_device_is_cuda_only_for_jpegs_on_a_gpu_with_few_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(data.os, "cpu_count", lambda: 4)
    assert data.decode_device([Path("a.jpg"), Path("b.JPEG")]) == "cuda"
    assert data.decode_device([Path("a.jpg"), Path("b.png")]) == "cpu"
    monkeypatch.setattr(data.os, "cpu_count", lambda: 16)  # a pool over 16 cores outran nvjpeg on an H200
    assert data.decode_device([Path("a.jpg")]) == "cpu"
    monkeypatch.setattr(data.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert data.decode_device([Path("a.jpg")]) == "cpu"


# ---------------------------------------------------------------- the on-disk cache


@pytest.fixture()
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file the folder loader decodes, in order (seen in this process, whatever the worker count)."""
    calls: list[Path] = []
    real = data.decode_files

    def spy(files, size, what, **kwargs):
        calls.extend(path for path, _ in files)
        return real(files, size, what, **kwargs)

    monkeypatch.setattr(data, "decode_files", spy)
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


def test_skipped_files_are_warned_on_every_cache_hit(tmp_path: Path, decodes: list[Path]) -> None:
    root = make_folder(tmp_path / "d", {"train": {"cat": 3, "dog": 4}, "validation": {"cat": 2, "dog": 2}})
    (root / "train" / "dog" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    for attempt in range(3):
        decodes.clear()
        with pytest.warns(DataWarning, match=rf"skipped 1 corrupt, truncated, oversized or non-image files under "
                                             rf"{re.escape(str(root))} \(first: .*corrupt\.png\)"):
            ds = load_dataset(str(root), image_size=8, cache_dir=tmp_path / "cache")
        assert len(decodes) == (12 if attempt == 0 else 0), "decoded once, then read from the cache"
        assert ds.train.counts(2) == [3, 4] and ds.settings["skipped"] == [str(root / "train" / "dog" / "corrupt.png")]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "foreign"])
def test_corrupt_cache_entry_is_rebuilt_with_a_warning(tmp_path: Path, decodes: list[Path], damage: str) -> None:
    root = make_folder(tmp_path / "d", {"train": {"cat": 3, "dog": 6}, "validation": {"cat": 2, "dog": 2}})
    cache = tmp_path / "cache"
    first = load_dataset(str(root), image_size=8, cache_dir=cache)
    entry = Path(first.settings["cache"])
    raw = entry.read_bytes()
    if damage == "foreign":
        torch.save({"name": "x", "classes": ["a"]}, entry)  # a readable file without the splits
    else:
        entry.write_bytes({"truncated": raw[: len(raw) // 2], "garbage": b"not a cache entry" * 50, "empty": b""}[damage])
    decodes.clear()
    with pytest.warns(DataWarning, match=rf"cache entry {re.escape(str(entry))} is unreadable \(.*\); rebuilding it"):
        rebuilt = load_dataset(str(root), image_size=8, cache_dir=cache)
    assert len(decodes) == 13 and same(first, rebuilt)
    decodes.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten entry reads cleanly
        again = load_dataset(str(root), image_size=8, cache_dir=cache)
    assert decodes == [] and same(first, again)


def test_cache_goes_where_cache_dir_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("digits", image_size=8, cache_dir=tmp_path / "run" / "cache")
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert Path(ds.settings["cache"]).parent == tmp_path / "run" / "cache"


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
    with pytest.raises(DataError, match=r"unknown data set 'imagenet'; choose one of: animals, animals_bird_bear, "
                                        r"animals_horse_zebra, animals_sheep_cow, animals_source, digits, digits_1_7, "
                                        r"digits_lt, or a folder path"):
        load_dataset("imagenet", cache_dir=tmp_path)


@pytest.mark.parametrize("ratio", [0, -0.5, 1.5, 11])
def test_ratio_outside_0_1(tmp_path: Path, ratio: float) -> None:
    with pytest.raises(DataError, match=r"ratio must be in \(0, 1\] \(minority / majority\), got"):
        load_dataset("digits", ratio=ratio, cache_dir=tmp_path)


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


def test_ratio_keeps_a_small_minority_whole_and_cuts_the_other_class(tmp_path: Path) -> None:
    # changed rule (issue 9): this used to fail ("ratio 0.5 asks for 6 training images of 'cat'"); now the 2 cats
    # stay and the dogs are cut to 2 / 0.5 = 4
    root = make_folder(tmp_path / "few_cats", {"train": {"cat": 2, "dog": 12}, "validation": {"cat": 2, "dog": 2}})
    ds = load_dataset(str(root), ratio=0.5, image_size=8, cache_dir=None)
    assert ds.train.counts(2) == [2, 4]
    assert ds.minority_name == "cat"


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
