"""Learners with misclassification costs: the entropy tree, direct rescaling, one-vs-one voting.

Every learner here takes ``make_estimator()``, a factory of fresh scikit-learn-style estimators
whose ``fit`` takes ``sample_weight`` (:class:`EntropyTree` by default in the experiments).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from costsens.costs import direct_sample_weights
from study import costs as C

MIN_LEAF_WEIGHT = 2.0  # like J48's -M 2: a leaf needs a (weighted) count of at least 2


class Estimator(Protocol):
    """What one-vs-one and rescaling need from a learner: scikit-learn's fit/predict."""

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Any: ...

    def predict(self, X: Any) -> Any: ...


class EntropyTree:
    """C4.5-like learner: scikit-learn's CART with the entropy criterion and sample weights.

    Like J48's ``-M 2`` on weighted counts, every leaf must hold a sample weight of at least
    ``min_leaf_weight`` (as a fraction of the total, so it scales with the rescaled weights).
    """

    def __init__(self, random_state: int = 0, min_leaf_weight: float = MIN_LEAF_WEIGHT) -> None:
        self.random_state = random_state
        self.min_leaf_weight = min_leaf_weight

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> EntropyTree:
        # scikit-learn loads at the first fit, so the command lines check their flags without it
        from sklearn.tree import DecisionTreeClassifier

        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        fraction = min(0.5, self.min_leaf_weight / w.sum()) if self.min_leaf_weight > 0 else 0.0
        self.tree_ = DecisionTreeClassifier(
            criterion="entropy", min_weight_fraction_leaf=fraction, random_state=self.random_state
        ).fit(X, y, sample_weight=w)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.tree_.predict(X)


def fit_rescaled(make_estimator: Callable[[], Estimator], X: Any, y: ArrayLike, cm: ArrayLike) -> Estimator:
    """Direct rescaling: one model trained with :func:`costsens.costs.direct_sample_weights` (consistent ``cm`` only)."""
    return make_estimator().fit(X, y, sample_weight=direct_sample_weights(y, cm))


class OneVsOneCostClassifier:
    """One model per class pair, each rescaled with its 2x2 sub-matrix; majority vote.

    ``H(x) = argmax_y sum_{i<j} I(h_ij(x) = y)``; a tied vote goes to the lowest label.
    """

    def __init__(self, make_estimator: Callable[[], Estimator], cost_matrix: ArrayLike) -> None:
        self.make_estimator = make_estimator
        self.cost_matrix = C.validate_cost_matrix(cost_matrix)
        self.pairs_: list[tuple[int, int]] = []
        self.estimators_: list[Estimator] = []

    @property
    def num_classes(self) -> int:
        return self.cost_matrix.shape[0]

    def fit(self, X: Any, y: ArrayLike) -> OneVsOneCostClassifier:
        labels = C.check_labels(y, self.num_classes)
        X = np.asarray(X)
        self.pairs_, self.estimators_ = [], []
        for i, j in combinations(range(self.num_classes), 2):
            rows = np.flatnonzero((labels == i) | (labels == j))
            if rows.size == 0:
                continue  # neither class in the training set: this pair has no say
            sub = self.cost_matrix[np.ix_([i, j], [i, j])]
            y_pair = labels[rows]
            # 2x2 class costs are the row sums (formula 2), then the classic rescaling (formula 3)
            costs = sub.sum(axis=1)
            if not costs.any():  # both mistakes free: this pair is indifferent, train it unweighted
                costs = np.ones(2)
            w = C.rescaling_weights(costs, [np.sum(y_pair == i), np.sum(y_pair == j)])
            weights = np.where(y_pair == i, w[0], w[1])
            self.estimators_.append(self.make_estimator().fit(X[rows], y_pair, sample_weight=weights))
            self.pairs_.append((i, j))
        return self

    def votes(self, X: Any) -> C.IntArray:
        """n x k matrix of votes from the pairwise models."""
        if not self.estimators_:
            raise RuntimeError("OneVsOneCostClassifier is not fitted: call fit(X, y) first")
        X = np.asarray(X)
        v = np.zeros((X.shape[0], self.num_classes), dtype=np.int64)
        for est in self.estimators_:
            pred = np.asarray(est.predict(X)).astype(np.int64)
            np.add.at(v, (np.arange(X.shape[0]), pred), 1)
        return v

    def predict(self, X: Any) -> C.IntArray:
        return self.votes(X).argmax(axis=1)


def fit_cost_sensitive(
    make_estimator: Callable[[], Estimator], X: Any, y: ArrayLike, cm: ArrayLike
) -> Estimator | OneVsOneCostClassifier:
    """The paper's dispatch: direct rescaling when ``cm`` is consistent, else one-vs-one."""
    if C.is_consistent(cm):
        return fit_rescaled(make_estimator, X, y, cm)
    return OneVsOneCostClassifier(make_estimator, cm).fit(X, y)
