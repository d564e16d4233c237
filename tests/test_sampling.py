"""Samplers: resulting class counts at the sampling ratio, training split only, real vs synthetic
samples, over_aug's flags, SMOTE's k, multi-class data, determinism and the pinned errors."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from study import names
from study.data import DataError, Dataset, Split, load_dataset
from study.sampling import SAMPLERS, build_sampler, resample
from study.spaces import TRIAL_DEFAULTS

NAMES = ("none", "under_random", "under_cluster", "over_dup", "over_aug", "over_smote")
UNDER = ("under_random", "under_cluster")
OVER = ("over_dup", "over_aug", "over_smote")


def make_split(sizes: list[int], shape: tuple[int, ...] = (1, 6, 6), seed: int = 0) -> Split:
    """Random (so distinct) uint8 images, ``sizes[c]`` of class c."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    images = rng.integers(0, 256, (len(labels), *shape), dtype=np.uint8)
    return Split(torch.from_numpy(images), torch.from_numpy(labels).long())


def rows(images: torch.Tensor) -> list[bytes]:
    return [r.tobytes() for r in images.reshape(len(images), -1).numpy()]


def counts(labels: torch.Tensor, k: int) -> list[int]:
    return torch.bincount(labels, minlength=k).tolist()


def expected_counts(name: str, sizes: list[int], ratio: float) -> list[int]:
    """The sampling ratio's meaning: minority / majority after resampling (over: grow the small
    classes to ratio x the largest; under: shrink the large ones to smallest / ratio)."""
    if name in UNDER:
        return [min(n, math.floor(min(sizes) / ratio)) for n in sizes]
    if name in OVER:
        return [max(n, math.ceil(ratio * max(sizes))) for n in sizes]
    return list(sizes)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", image_size=8, cache_dir=None)  # train 8 threes : 88 eights


def test_registry_holds_the_seeds_samplers() -> None:
    assert sorted(SAMPLERS) == sorted(NAMES)
    assert set(SAMPLERS) == set(names.SAMPLERS) == set(names.SAMPLER_OPTIONS)


@pytest.mark.parametrize("name", NAMES)
def test_each_factory_takes_exactly_its_options_with_the_trial_defaults(name: str) -> None:
    params = list(inspect.signature(SAMPLERS[name]).parameters.values())
    assert [p.name for p in params[:3]] == ["ratio", "labels", "seed"]
    assert tuple(p.name for p in params[3:]) == names.SAMPLER_OPTIONS[name]
    assert all(p.default == TRIAL_DEFAULTS[p.name] for p in params[3:])


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("over_dup", {"k_neighbors": 5}, r"sampler 'over_dup': unknown option 'k_neighbors'; it takes no options"),
        ("none", {"k_neighbors": 5}, r"sampler 'none': unknown option 'k_neighbors'; it takes no options"),
        ("over_smote", {"k": 3}, r"sampler 'over_smote': unknown option 'k'; it takes: k_neighbors"),
    ],
)
def test_unknown_options_are_rejected_with_the_known_ones(name: str, options: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        resample(make_split([8, 40]), name, 0.5, **options)
    with pytest.raises(DataError, match=message):
        build_sampler(name, 0.5, np.array([0] * 8 + [1] * 40), 0, **options)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_smote_k_neighbors_must_be_a_positive_integer(k: object) -> None:
    with pytest.raises(DataError, match=rf"SMOTE k_neighbors must be an integer >= 1, got {k!r}"):
        resample(make_split([8, 40]), "over_smote", 0.5, k_neighbors=k)


def test_build_sampler_checks_the_minority_before_any_training() -> None:
    """What the CLI calls on the training labels to fail fast: SMOTE's k against the minority's count."""
    labels = np.array([0] * 5 + [1] * 40)
    assert build_sampler("none", 1.0, labels, 0) is None
    assert build_sampler("over_smote", 1.0, labels, 0, k_neighbors=4) is not None
    with pytest.raises(DataError, match=r"SMOTE needs at least k_neighbors \+ 1 = 6 samples of class 0, got 5"):
        build_sampler("over_smote", 1.0, labels, 0, k_neighbors=5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("ratio", [0.25, 0.5, 1.0])
def test_counts_follow_the_sampling_ratio(digits: Dataset, name: str, ratio: float) -> None:
    sizes = digits.train.counts(2)
    out = resample(digits.train, name, ratio, seed=0)
    got = counts(out.labels, 2)
    assert got == expected_counts(name, sizes, ratio)
    assert len(out.images) == len(out.labels) == len(out.augment) == sum(got)
    assert out.images.dtype == torch.uint8 and out.images.shape[1:] == digits.train.images.shape[1:]
    if name != "none":
        assert ratio <= got[0] / got[1] < ratio + 1 / min(got), "minority / majority lands at the ratio"


def test_ratio_one_balances(digits: Dataset) -> None:
    for name in UNDER + OVER:
        a, b = counts(resample(digits.train, name, 1.0).labels, 2)
        assert a == b, name


@pytest.mark.parametrize("name", NAMES)
def test_only_the_training_split_is_resampled(digits: Dataset, name: str) -> None:
    before = {s: (getattr(digits, s).images.clone(), getattr(digits, s).labels.clone()) for s in ("train", "val", "test")}
    resample(digits.train, name, 0.5, seed=0)
    for s, (x, y) in before.items():
        split = getattr(digits, s)
        assert torch.equal(split.images, x) and torch.equal(split.labels, y), f"{s} untouched"


@pytest.mark.parametrize("name", ["none", "under_random", "under_cluster", "over_dup"])
def test_non_generative_samplers_keep_real_samples(name: str) -> None:
    train = make_split([8, 40])
    out = resample(train, name, 0.5, seed=0)
    originals = dict(zip(rows(train.images), train.labels.tolist(), strict=False))
    for r, label in zip(rows(out.images), out.labels.tolist(), strict=False):
        assert originals.get(r) == label, "every output image is an input image of the same class"
    if name in UNDER:
        assert len(set(rows(out.images))) == len(out.images), "under-sampling drops, never repeats"
        minority = {r for r, label in originals.items() if label == 0}
        assert minority <= set(rows(out.images)), "the minority is kept whole"


def test_under_cluster_is_not_random_under_sampling() -> None:
    """Two tight groups in the majority, one far bigger: KMeans keeps samples from both, while the
    prototypes it keeps are real images (hard voting)."""
    rng = np.random.default_rng(1)
    small = np.full((4, 1, 6, 6), 240, dtype=np.uint8)
    big = np.full((36, 1, 6, 6), 10, dtype=np.uint8)
    major = np.concatenate([big, small]) + rng.integers(0, 5, (40, 1, 6, 6), dtype=np.uint8)
    minor = rng.integers(100, 140, (4, 1, 6, 6), dtype=np.uint8)
    train = Split(torch.from_numpy(np.concatenate([minor, major])), torch.tensor([0] * 4 + [1] * 40))
    out = resample(train, "under_cluster", 1.0, seed=0)
    assert counts(out.labels, 2) == [4, 4]
    kept = out.images[out.labels == 1].float().mean(dim=(1, 2, 3))
    assert (kept > 200).any() and (kept < 50).any(), "both majority clusters keep a prototype"
    assert set(rows(out.images)) <= set(rows(train.images))


def test_over_smote_makes_new_minority_images_between_minority_neighbours() -> None:
    train = make_split([8, 40])
    out = resample(train, "over_smote", 0.5, seed=0)
    assert counts(out.labels, 2) == [20, 40]
    inputs = rows(train.images)
    assert set(inputs) <= set(rows(out.images)), "originals are kept"
    new = [i for i, r in enumerate(rows(out.images)) if r not in set(inputs)]
    assert len(new) == 12 and (out.labels[new] == 0).all(), "12 synthetic minority images"
    assert not out.augment.any()
    minority = train.images[train.labels == 0].reshape(8, -1).double()
    for i in new:
        assert on_a_segment(out.images[i].reshape(-1).double(), minority), f"synthetic image {i} interpolates two minority images"


def on_a_segment(x: torch.Tensor, points: torch.Tensor, pairs: list[tuple[int, int]] | None = None) -> bool:
    """Is x = a + g (b - a) for some g in [0, 1] and points a, b (to within pixel rounding)?"""
    n = len(points)
    for a, b in pairs or [(a, b) for a in range(n) for b in range(n) if a != b]:
        d = points[b] - points[a]
        g = float(((x - points[a]) @ d) / (d @ d)) if (d @ d) > 0 else 0.0
        g = min(1.0, max(0.0, g))
        if (x - (points[a] + g * d)).abs().max() <= 1.0:
            return True
    return False


def test_over_smote_k_is_five_by_default_and_settable() -> None:
    five = make_split([5, 20])
    with pytest.raises(DataError, match=r"SMOTE needs at least k_neighbors \+ 1 = 6 samples of class 0, got 5"):
        resample(five, "over_smote", 1.0)
    assert counts(resample(five, "over_smote", 1.0, k_neighbors=4).labels, 2) == [20, 20]
    with pytest.raises(DataError, match=r"k_neighbors \+ 1 = 4 samples of class 0, got 3"):
        resample(make_split([3, 20]), "over_smote", 1.0, k_neighbors=3)

    # k = 1: every synthetic image lies between a minority image and its single nearest minority neighbour
    train = make_split([8, 40], seed=4)
    out = resample(train, "over_smote", 1.0, seed=0, k_neighbors=1)
    minority = train.images[train.labels == 0].reshape(8, -1).double()
    dist = torch.cdist(minority, minority).fill_diagonal_(float("inf"))
    nearest = [(a, int(dist[a].argmin())) for a in range(8)]
    new = synthetic(out.images, train.images)
    assert len(new) == 32 and all(on_a_segment(x, minority, nearest) for x in new)
    default = synthetic(resample(train, "over_smote", 1.0, seed=0).images, train.images)
    assert len(default) == 32 and all(on_a_segment(x, minority) for x in default)
    assert not all(on_a_segment(x, minority, nearest) for x in default), "k = 5 reaches beyond the nearest"


def synthetic(out: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """The output images that are not input images, flattened."""
    known = set(rows(inputs))
    return torch.stack([x for x, r in zip(out, rows(out), strict=False) if r not in known]).reshape(-1, inputs[0].numel()).double()


def test_over_smote_with_a_few_minority_samples_is_fine_when_nothing_grows() -> None:
    train = make_split([3, 20])  # already above the ratio: SMOTE has nothing to make
    out = resample(train, "over_smote", 0.1)
    assert counts(out.labels, 2) == [3, 20]


def test_over_aug_flags_the_duplicated_minority_rows() -> None:
    train = make_split([8, 40])
    out = resample(train, "over_aug", 0.5, seed=0)
    assert counts(out.labels, 2) == [20, 40]
    assert out.augment.dtype == torch.bool and int(out.augment.sum()) == 12
    flagged, kept = out.augment, ~out.augment
    assert (out.labels[flagged] == 0).all(), "only minority copies are flagged"
    minority = set(rows(train.images[train.labels == 0]))
    assert set(rows(out.images[flagged])) <= minority, "flagged rows are duplicates of real minority images"
    assert sorted(rows(out.images[kept])) == sorted(rows(train.images)), "the unflagged rows are the input, once each"
    dup = resample(train, "over_dup", 0.5, seed=0)
    assert torch.equal(dup.images, out.images) and not dup.augment.any(), "over_dup: the same copies, never augmented"


@pytest.mark.parametrize("name", ["none", "under_random", "under_cluster", "over_dup", "over_smote"])
def test_only_over_aug_flags_rows(name: str) -> None:
    assert not resample(make_split([8, 40]), name, 0.5).augment.any()


@pytest.mark.parametrize("name", NAMES)
def test_multi_class_ratio_is_relative_to_the_largest_class(name: str) -> None:
    sizes = [30, 12, 6]
    out = resample(make_split(sizes), name, 0.5, seed=0)
    got = counts(out.labels, 3)
    assert got == expected_counts(name, sizes, 0.5)
    assert got == {"none": [30, 12, 6], "under_random": [12, 12, 6], "under_cluster": [12, 12, 6],
                   "over_dup": [30, 15, 15], "over_aug": [30, 15, 15], "over_smote": [30, 15, 15]}[name]
    if name != "none":
        assert min(got) / max(got) == 0.5


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed(name: str) -> None:
    train = make_split([8, 40])
    a, b = (resample(train, name, 0.5, seed=7) for _ in range(2))
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and torch.equal(a.augment, b.augment)


@pytest.mark.parametrize("name", ["under_random", "over_dup", "over_aug", "over_smote"])
def test_the_seed_matters(name: str) -> None:
    train = make_split([8, 40])
    assert not torch.equal(resample(train, name, 0.5, seed=1).images, resample(train, name, 0.5, seed=2).images)


@pytest.mark.parametrize("ratio", [0, -0.5, 1.01, 11])
@pytest.mark.parametrize("name", NAMES)
def test_ratio_outside_0_1_is_an_error(name: str, ratio: float) -> None:
    with pytest.raises(DataError, match=r"ratio must be in \(0, 1\] \(minority / majority\), got"):
        resample(make_split([4, 8]), name, ratio)


def test_unknown_sampler_lists_the_choices() -> None:
    with pytest.raises(DataError, match=r"unknown sampler 'smote'; choose one of: none, over_aug, over_dup, over_smote, "
                                        r"under_cluster, under_random"):
        resample(make_split([4, 8]), "smote", 0.5)
