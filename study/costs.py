"""Misclassification cost matrices: what the image study uses of the third seed's decision system.

``cm[i][j]`` is the cost of predicting class ``j`` for a sample of class ``i`` (rows = true
class, ``cm[i][i] = 0``). This module holds the pure arithmetic the image study needs on such a
matrix: validation, class costs, rescaling weights, the consistency test (Zhou & Liu's
coefficient matrix), the minimum-expected-cost decision, the expected-cost metric and the
paper's random generator of consistent matrices. The tabular reproduction (one-vs-one voting,
inconsistent matrices, the decision tree) is the sibling package ``costsens``, which builds on
this module; nothing here imports it.

Labels are always integers ``0 .. k-1``; a cost matrix is ``k x k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from study.errors import StudyError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

PAPER_N = 10.0  # the paper's largest allowed cost entry (n = 10)
RANK_RTOL = 1e-9  # singular values below RANK_RTOL * largest count as zero (float round-off)


class CostMatrixError(StudyError):
    """A cost matrix breaks a rule; the message states the rule and the value received."""


class InconsistentCostError(CostMatrixError):
    """No single weight vector rescales all classes at once (rank(M) == k)."""


# ---------------------------------------------------------------- validation


def validate_cost_matrix(cm: ArrayLike, num_classes: int | None = None) -> FloatArray:
    """Check the rules of a cost matrix and return it as a float array.

    Square, at least 2x2, finite, non-negative, zero diagonal, at least one non-zero cost per
    row, and (when given) ``num_classes`` rows.
    """
    try:
        a = np.asarray(cm, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CostMatrixError(f"cost matrix must be a numeric k x k array, but got {cm!r}") from exc
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise CostMatrixError(f"cost matrix must be square (k x k), but got shape {a.shape}")
    k = a.shape[0]
    if k < 2:
        raise CostMatrixError(f"cost matrix needs at least 2 classes, but got shape {a.shape}")
    if num_classes is not None and k != num_classes:
        raise CostMatrixError(
            f"cost matrix size must match the number of classes ({num_classes}), but got {k}x{k}"
        )
    if not np.isfinite(a).all():
        i, j = np.argwhere(~np.isfinite(a))[0]
        raise CostMatrixError(f"cost matrix entries must be finite, but got cm[{i}][{j}]={a[i, j]}")
    if (a < 0).any():
        i, j = np.argwhere(a < 0)[0]
        raise CostMatrixError(f"cost matrix entries must be non-negative, but got cm[{i}][{j}]={a[i, j]:g}")
    diag = np.diag(a)
    if (diag != 0).any():
        i = int(np.flatnonzero(diag)[0])
        raise CostMatrixError(
            f"cost matrix diagonal must be zero (a correct prediction costs nothing), but got cm[{i}][{i}]={diag[i]:g}"
        )
    zero_rows = np.flatnonzero(a.sum(axis=1) == 0)
    if zero_rows.size:
        raise CostMatrixError(
            f"every row of the cost matrix needs a non-zero cost, but row {int(zero_rows[0])} is all zero"
        )
    return a


def check_labels(y: ArrayLike, k: int, what: str = "y") -> IntArray:
    """``y`` as a 1-D array of integer labels ``0 .. k-1``; a ``ValueError`` naming ``what`` otherwise."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D, but got shape {arr.shape}")
    if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() >= k):
        raise ValueError(f"{what} must hold integer labels 0..{k - 1}, but got values {np.unique(arr)[:10].tolist()}")
    return arr.astype(np.int64)


# ---------------------------------------------------------------- class costs and rescaling


def class_costs(cm: ArrayLike) -> FloatArray:
    """Class cost ``cm_i = sum_j cm[i][j]`` (the paper's formula 2)."""
    return validate_cost_matrix(cm).sum(axis=1)


def rescaling_weights(costs: ArrayLike, counts: ArrayLike) -> FloatArray:
    """Per-class sample weight ``w_i = num * c_i / sum_j(num_j * c_j)`` (formula 3).

    The weighted training set keeps its size: ``sum_i num_i * w_i == num``.
    """
    c = np.asarray(costs, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    if c.shape != n.shape or c.ndim != 1:
        raise ValueError(f"costs and counts must be 1-D of equal length, but got {c.shape} and {n.shape}")
    if (c < 0).any() or (n < 0).any():
        raise ValueError(f"costs and counts must be non-negative, but got costs={c.tolist()} counts={n.tolist()}")
    total = float((n * c).sum())
    if total <= 0:
        raise ValueError(f"sum_j(num_j * c_j) must be positive, but got costs={c.tolist()} counts={n.tolist()}")
    return n.sum() * c / total


# ---------------------------------------------------------------- consistency (rank of M)


def coefficient_matrix(cm: ArrayLike) -> FloatArray:
    """Zhou & Liu's M: one row per pair i < j stating ``w_i * cm[j][i] - w_j * cm[i][j] = 0``."""
    a = validate_cost_matrix(cm)
    k = a.shape[0]
    pairs = list(combinations(range(k), 2))
    m = np.zeros((len(pairs), k))
    for r, (i, j) in enumerate(pairs):
        m[r, i] = a[j, i]
        m[r, j] = -a[i, j]
    return m


def _rank_and_null(cm: ArrayLike) -> tuple[int, FloatArray]:
    m = coefficient_matrix(cm)
    k = m.shape[1]
    # full_matrices so that Vt is k x k even when M has fewer rows than columns (k = 2)
    _, s, vt = np.linalg.svd(m, full_matrices=True)
    tol = RANK_RTOL * (s.max() if s.size else 0.0)
    rank = int((s > tol).sum())
    return rank, vt[rank:].T.reshape(k, k - rank)


def is_consistent(cm: ArrayLike) -> bool:
    """True iff rank(M) < k, i.e. one weight vector satisfies every pair's ratio."""
    rank, _ = _rank_and_null(cm)
    return rank < validate_cost_matrix(cm).shape[0]


def consistent_weights(cm: ArrayLike) -> FloatArray:
    """The positive vector spanning M's null space, scaled so its largest entry is 1.

    This is the paper's class-cost vector ``cv`` for direct rescaling (e.g. {1.0000; 0.8686;
    0.5992}). Raises :class:`InconsistentCostError` when rank(M) == k, and
    :class:`CostMatrixError` when the solution is not unique or not strictly positive.
    """
    a = validate_cost_matrix(cm)
    k = a.shape[0]
    rank, null = _rank_and_null(a)
    if rank == k:
        raise InconsistentCostError(
            f"cost matrix is inconsistent: rank(M) must be < k={k} for direct rescaling, but got rank {rank}; "
            "use one-vs-one"
        )
    if null.shape[1] > 1:
        raise CostMatrixError(
            f"cost matrix leaves the class weights undetermined: rank(M) must be k-1={k - 1}, but got {rank}"
        )
    v = null[:, 0]
    v = v if v.sum() >= 0 else -v
    if (v <= RANK_RTOL * np.abs(v).max()).any():
        raise CostMatrixError(
            f"consistent weights must all be positive, but got {np.round(v / np.abs(v).max(), 6).tolist()}"
        )
    return v / v.max()


def rescaled_class_weights(cm: ArrayLike, counts: ArrayLike) -> FloatArray:
    """Per-class weights for direct rescaling (e.g. a weighted loss): class costs from
    :func:`consistent_weights` (for two classes these equal the row sums ``cm_i``), then
    :func:`rescaling_weights` with the training class sizes."""
    a = validate_cost_matrix(cm)
    n = np.asarray(counts)
    if n.shape != (a.shape[0],):
        raise CostMatrixError(
            f"cost matrix size must match the number of classes ({n.size}), but got {a.shape[0]}x{a.shape[0]}"
        )
    return rescaling_weights(consistent_weights(a), n)


# ---------------------------------------------------------------- decisions and the cost metric


def min_cost_decision(proba: ArrayLike, cm: ArrayLike) -> IntArray:
    """Predict ``argmin_j sum_i p_i * cm[i][j]`` for each row of class probabilities.

    Tied expected costs go to the class whose mistakes cost more (larger :func:`class_costs`),
    then to the lowest label; so for two classes with ``C_FN >= C_FP`` this is exactly "predict
    the positive class when p >= C_FP / (C_FP + C_FN)".
    """
    a = validate_cost_matrix(cm)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != a.shape[0]:
        raise ValueError(f"proba must be n x {a.shape[0]} to match the cost matrix, but got shape {p.shape}")
    risk = p @ a  # risk[n, j] = sum_i p[n, i] * cm[i][j]
    tied = risk == risk.min(axis=1, keepdims=True)
    return np.where(tied, class_costs(a), -np.inf).argmax(axis=1).astype(np.int64)


def binary_cost_matrix(fn_fp_ratio: float, *, positive: int) -> FloatArray:
    """2x2 matrix for a false-negative : false-positive cost ratio (``C_FP = 1``, ``C_FN = ratio``).

    ``positive`` is the class whose misses cost ``ratio`` (in the image study: the minority,
    label 0).
    """
    if positive not in (0, 1):
        raise ValueError(f"positive must be 0 or 1, but got {positive!r}")
    if not np.isfinite(fn_fp_ratio) or fn_fp_ratio <= 0:
        raise CostMatrixError(f"FN:FP cost ratio must be a positive number, but got {fn_fp_ratio!r}")
    cm = np.zeros((2, 2))
    cm[positive, 1 - positive] = float(fn_fp_ratio)
    cm[1 - positive, positive] = 1.0
    return cm


def expected_cost(y_true: ArrayLike, y_pred: ArrayLike, cm: ArrayLike) -> float:
    """Mean misclassification cost per sample: ``mean(cm[y_true, y_pred])``."""
    a = validate_cost_matrix(cm)
    t = check_labels(y_true, a.shape[0], "y_true")
    p = check_labels(y_pred, a.shape[0], "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same length, but got {t.size} and {p.size}")
    return float(a[t, p].mean()) if t.size else 0.0


# ---------------------------------------------------------------- the paper's generator


def smallest_largest(class_counts: Sequence[int] | ArrayLike) -> tuple[int, int]:
    """(smallest class, largest class); with equal sizes the first and the last label."""
    c = np.asarray(class_counts)
    s = int(c.argmin())
    big = int(len(c) - 1 - c[::-1].argmax())
    return s, big


def random_cost_matrix(
    class_counts: Sequence[int] | ArrayLike,
    rng: np.random.Generator,
    *,
    kind: Literal["consistent"] = "consistent",
    n: float = PAPER_N,
) -> FloatArray:
    """The paper's random consistent cost matrix for classes of the given sizes.

    Off-diagonal entries in ``[1, n]`` (so in ``[0, n]``), with ``cm[L][S] = 1`` the cheapest
    and ``cm[S][L]`` the costliest entry (S = smallest class, L = largest). Draw a class-cost
    vector ``cv`` in ``[1, n]`` (S highest, L lowest), then every pair so that
    ``cm[i][j] / cm[j][i] = cv_i / cv_j`` — the paper keeps a random ``cv`` only if it solves M;
    building the pairs from it gets there without rejection. The image study draws only this
    kind; ``costsens.costs.random_cost_matrix`` adds the inconsistent one.
    """
    if kind != "consistent":
        raise ValueError(f"unknown cost-matrix kind {kind!r}; the image study draws only: consistent")
    counts = np.asarray(class_counts)
    k = counts.size
    if k < 2:
        raise ValueError(f"need at least 2 classes, but got class_counts={counts.tolist()}")
    if not n > 1:
        raise ValueError(f"n (largest cost) must be > 1, but got {n!r}")
    s, big = smallest_largest(counts)
    return _random_consistent(k, s, big, rng, n)


def _random_consistent(k: int, s: int, big: int, rng: np.random.Generator, n: float) -> FloatArray:
    vals = np.sort(rng.uniform(1.0, n, size=k))
    cv = np.empty(k)
    # the smallest class gets the highest class cost, the largest class the lowest
    cv[s], cv[big] = vals[-1], vals[0]
    others = [c for c in range(k) if c not in (s, big)]
    cv[others] = rng.permutation(vals[1:-1])
    top = cv[s] / cv[big]  # cm[S][L]; every entry lies in [1, top] and top <= n
    cm = np.zeros((k, k))
    for i, j in combinations(range(k), 2):
        # cm[i][j] = a * cv_i, cm[j][i] = a * cv_j with a chosen so both lie in [1, top]
        low, high = 1.0 / min(cv[i], cv[j]), top / max(cv[i], cv[j])
        a = 1.0 / cv[big] if {i, j} == {s, big} else rng.uniform(low, high)
        cm[i, j], cm[j, i] = a * cv[i], a * cv[j]
    cm[big, s] = 1.0  # exactly 1, not 0.9999999999999999
    return cm
