"""Data approaches: name -> imbalanced-learn sampler factory, applied to the TRAIN split only.

Each sampler takes a sampling ratio (minority / majority after resampling, in (0, 1]).
Index samplers (random under/over) return real samples by index (``sample_indices_``);
generative ones (SMOTE) and ClusterCentroids return new arrays, which are turned back into
uint8 images. ``over_aug`` duplicates the minority and flags the copies, so the loop gives
each copy a fresh random flip / rotation / colour change every time it is drawn. The options each
sampler takes are the trial-config keys in ``study.names.SAMPLER_OPTIONS``; anything else is an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from study.data import DataError, Split, check_ratio
from study.names import SAMPLER_OPTIONS


@dataclass(frozen=True)
class Resampled:
    images: torch.Tensor  # uint8 N x C x H x W
    labels: torch.Tensor  # int64 N
    augment: torch.Tensor  # bool N: draw a fresh random augmentation for this sample each time


def over_targets(labels: np.ndarray, ratio: float) -> dict[int, int]:
    """Grow every class to at least ``ratio`` x the largest class."""
    sizes = np.bincount(labels)
    goal = math.ceil(ratio * sizes.max())
    return {c: max(int(n), goal) for c, n in enumerate(sizes) if n > 0}


def under_targets(labels: np.ndarray, ratio: float) -> dict[int, int]:
    """Shrink every class to at most smallest / ``ratio``."""
    sizes = np.bincount(labels)
    cap = math.floor(sizes[sizes > 0].min() / ratio)
    return {c: min(int(n), cap) for c, n in enumerate(sizes) if n > 0}


def _random_under(ratio: float, labels: np.ndarray, seed: int):
    from imblearn.under_sampling import RandomUnderSampler

    return RandomUnderSampler(sampling_strategy=under_targets(labels, ratio), random_state=seed)


def _cluster_under(ratio: float, labels: np.ndarray, seed: int):
    from imblearn.under_sampling import ClusterCentroids
    from sklearn.cluster import KMeans

    # voting="hard": keep the real sample nearest each KMeans centroid, never a synthetic mean image
    return ClusterCentroids(
        sampling_strategy=under_targets(labels, ratio),
        estimator=KMeans(n_init=1, random_state=seed),
        voting="hard",
        random_state=seed,
    )


def _random_over(ratio: float, labels: np.ndarray, seed: int):
    from imblearn.over_sampling import RandomOverSampler

    return RandomOverSampler(sampling_strategy=over_targets(labels, ratio), random_state=seed)


def _smote(ratio: float, labels: np.ndarray, seed: int, k_neighbors: int = 5):
    from imblearn.over_sampling import SMOTE

    if isinstance(k_neighbors, bool) or not isinstance(k_neighbors, int) or k_neighbors < 1:
        raise DataError(f"SMOTE k_neighbors must be an integer >= 1, got {k_neighbors!r}")
    targets = over_targets(labels, ratio)
    sizes = np.bincount(labels)
    for c, goal in targets.items():
        if goal > sizes[c] and sizes[c] < k_neighbors + 1:
            raise DataError(
                f"SMOTE needs at least k_neighbors + 1 = {k_neighbors + 1} samples of class {c}, got {sizes[c]}"
            )
    return SMOTE(sampling_strategy=targets, k_neighbors=k_neighbors, random_state=seed)


def _none(ratio: float, labels: np.ndarray, seed: int) -> None:
    return None


# name -> factory(ratio, labels, seed, **options) -> imbalanced-learn sampler (None: keep the data)
SAMPLERS: dict[str, Callable[..., object]] = {
    "none": _none,
    "under_random": _random_under,
    "under_cluster": _cluster_under,
    "over_dup": _random_over,
    "over_aug": _random_over,
    "over_smote": _smote,
}


def check_sampler(name: str) -> None:
    if name not in SAMPLERS:
        raise DataError(f"unknown sampler '{name}'; choose one of: {', '.join(sorted(SAMPLERS))}")


def build_sampler(name: str, ratio: float, labels: np.ndarray, seed: int, **options: object) -> object:
    """The named imbalanced-learn sampler for these training labels (None for ``none``); the options
    are checked against ``SAMPLER_OPTIONS``, so a sampler that cannot work here fails before training."""
    check_sampler(name)
    check_ratio(ratio)
    known = SAMPLER_OPTIONS[name]
    for key in options:
        if key not in known:
            raise DataError(f"sampler '{name}': unknown option '{key}'; "
                            + (f"it takes: {', '.join(known)}" if known else "it takes no options"))
    return SAMPLERS[name](ratio, labels, seed, **options)


def resample(train: Split, name: str = "none", ratio: float = 1.0, seed: int = 0, **options: object) -> Resampled:
    """Resample the training split with the named approach. Validation and test never come here."""
    labels = train.labels.numpy()
    sampler = build_sampler(name, ratio, labels, seed, **options)
    if sampler is None:
        return Resampled(train.images, train.labels, torch.zeros(len(train), dtype=torch.bool))
    flat = train.images.reshape(len(train), -1).numpy()
    if name == "over_smote":  # imbalanced-learn interpolates in the input dtype: uint8 differences wrap around
        flat = flat.astype(np.float32)
    x, y = sampler.fit_resample(flat, labels)
    if hasattr(sampler, "sample_indices_"):  # index samplers: real samples, no copy of pixels needed
        idx = torch.from_numpy(sampler.sample_indices_).long()
        augment = torch.arange(len(idx)) >= len(train) if name == "over_aug" else torch.zeros(len(idx), dtype=torch.bool)
        return Resampled(train.images[idx], train.labels[idx], augment)
    images = torch.from_numpy(np.clip(np.rint(x), 0, 255).astype(np.uint8)).reshape(-1, *train.images.shape[1:])
    return Resampled(images, torch.from_numpy(np.asarray(y)).long(), torch.zeros(len(y), dtype=torch.bool))
