"""Confirmation splits: each confirmation seed redraws train / validation / test from the study's one decoded pool.

The search chose its candidates on the study split's validation images, so a later split's test set
must never hold them (a held search): they may land in training or validation only. Images with an
exact copy in the pool stay in training, as the data set builders keep them, so that no image is in
two splits. Every split keeps the study split's per-class sizes (the training imbalance included).
"""

from __future__ import annotations

import numpy as np
import torch

from study.data import Dataset, Split


def resplit(ds: Dataset, seed: int) -> Dataset:
    """``ds``'s images split anew for ``seed``, with the same per-class split sizes."""
    splits = (ds.train, ds.val, ds.test)
    images = torch.cat([s.images for s in splits])
    labels = torch.cat([s.labels for s in splits]).numpy()
    origin = np.repeat([0, 1, 2], [len(s) for s in splits])  # 1: the search's validation images
    _, inverse, counts = np.unique(images.reshape(len(images), -1).numpy(), axis=0, return_inverse=True,
                                   return_counts=True)
    copied = counts[inverse.reshape(-1)] > 1
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in range(ds.num_classes):
        idx = np.flatnonzero(labels == c)
        n_val, n_test = (int((s.labels == c).sum()) for s in (ds.val, ds.test))
        unique = rng.permutation(idx[~copied[idx]])
        test = unique[origin[unique] != 1][:n_test]
        rest = unique[~np.isin(unique, test)]
        parts["test"].append(test)
        parts["val"].append(rest[:n_val])
        parts["train"].append(np.concatenate([rest[n_val:], idx[copied[idx]]]))
    out = {k: np.sort(np.concatenate(v)) for k, v in parts.items()}
    made = {k: Split(images[v], torch.from_numpy(labels[v])) for k, v in out.items()}
    return Dataset(ds.name, ds.classes, **made, settings={**ds.settings, "resplit_seed": seed})


def overlap_rho(ds: Dataset) -> float:
    """The correlation of resplit estimates in Nadeau and Bengio's correction, as Corani and Benavoli's correlated
    t-test writes it: rho = n_test / (n_test + n_train), so that the variance factor rho / (1 - rho) = n_test / n_train."""
    return len(ds.test) / (len(ds.test) + len(ds.train))
