"""The paper's cost-matrix arithmetic beyond what the image study needs.

Per-sample weights for direct rescaling, the two-class decision threshold, and the random
generator with both of the paper's kinds (``study.costs`` draws only consistent matrices).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from study import costs as C


def direct_sample_weights(y: ArrayLike, cm: ArrayLike) -> C.FloatArray:
    """Per-sample weights for direct rescaling: :func:`study.costs.rescaled_class_weights` of each label."""
    a = C.validate_cost_matrix(cm)
    labels = C.check_labels(y, a.shape[0])
    return C.rescaled_class_weights(a, np.bincount(labels, minlength=a.shape[0]))[labels]


def binary_threshold(cm: ArrayLike, *, positive: int = 1) -> float:
    """Probability of ``positive`` above which :func:`study.costs.min_cost_decision` predicts it:
    ``C_FP / (C_FP + C_FN)``."""
    a = C.validate_cost_matrix(cm, num_classes=2)
    if positive not in (0, 1):
        raise ValueError(f"positive must be 0 or 1, but got {positive!r}")
    c_fn = a[positive, 1 - positive]  # a positive sample predicted negative
    c_fp = a[1 - positive, positive]
    return float(c_fp / (c_fp + c_fn))


def random_cost_matrix(
    class_counts: Sequence[int] | ArrayLike,
    rng: np.random.Generator,
    *,
    kind: Literal["consistent", "inconsistent"] = "consistent",
    n: float = C.PAPER_N,
) -> C.FloatArray:
    """The paper's random cost matrix for classes of the given sizes.

    ``consistent``: :func:`study.costs.random_cost_matrix`. ``inconsistent``: the same
    constraints (off-diagonal entries in ``[1, n]``, ``cm[L][S] = 1`` the cheapest, ``cm[S][L]``
    the costliest; S = smallest class, L = largest) with independent entries, redrawn until
    rank(M) == k (needs k >= 3).
    """
    if kind == "consistent":
        return C.random_cost_matrix(class_counts, rng, n=n)
    if kind != "inconsistent":
        raise ValueError(f"unknown cost-matrix kind {kind!r}; choose one of: consistent, inconsistent")
    counts = np.asarray(class_counts)
    k = counts.size
    if k < 3:
        raise ValueError(f"an inconsistent cost matrix needs at least 3 classes (every 2x2 matrix is consistent), but got {k}")
    if not n > 1:
        raise ValueError(f"n (largest cost) must be > 1, but got {n!r}")
    s, big = C.smallest_largest(counts)
    for _ in range(1000):
        cm = _random_inconsistent(k, s, big, rng, n)
        if not C.is_consistent(cm):
            return cm
    raise RuntimeError("could not draw an inconsistent cost matrix in 1000 tries")  # pragma: no cover


def _random_inconsistent(k: int, s: int, big: int, rng: np.random.Generator, n: float) -> C.FloatArray:
    cm = rng.uniform(1.0, n, size=(k, k))
    np.fill_diagonal(cm, 0.0)
    # the costliest mistake, the smallest class called the largest: swap the largest draw there
    i, j = np.unravel_index(cm.argmax(), cm.shape)
    cm[s, big], cm[i, j] = cm[i, j], cm[s, big]
    cm[big, s] = 1.0  # the cheapest: the largest class called the smallest (at least one entry 1)
    return cm
