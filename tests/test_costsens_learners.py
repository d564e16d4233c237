"""costsens/learners.py: the entropy tree, direct rescaling, one-vs-one voting, the paper's dispatch."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

from costsens import learners as L
from costsens.costs import direct_sample_weights
from study import costs as C

CONSISTENT = np.array([[0, 2, 4], [1, 0, 2], [1, 1, 0]], dtype=float)  # w = (4, 2, 1)
INCONSISTENT = np.array([[0, 2, 4], [1, 0, 2], [1, 2, 0]], dtype=float)  # w1/w2=2, w1/w3=4, but w2/w3=1


class ConstantLowest:
    """Stub learner: predicts the lowest label it was trained on; records the weights."""

    def __init__(self, log: list) -> None:
        self.log = log

    def fit(self, X, y, sample_weight=None):  # noqa: ANN001, ANN201 - sklearn signature
        self.label = int(np.min(y))
        self.log.append((tuple(np.unique(y)), np.asarray(y), np.asarray(sample_weight)))
        return self

    def predict(self, X):  # noqa: ANN001, ANN201
        return np.full(len(X), self.label)


def test_one_vs_one_trains_every_pair_with_its_2x2_rescaling() -> None:
    log: list = []
    y = np.repeat([0, 1, 2], [10, 20, 70])
    X = np.zeros((len(y), 1))
    model = L.OneVsOneCostClassifier(lambda: ConstantLowest(log), INCONSISTENT).fit(X, y)
    assert model.pairs_ == [(0, 1), (0, 2), (1, 2)]
    assert len(model.estimators_) == 3  # k(k-1)/2
    for (classes, ys, sw), (i, j) in zip(log, model.pairs_, strict=False):
        assert classes == (i, j)
        n_i, n_j = np.sum(ys == i), np.sum(ys == j)
        c_i, c_j = INCONSISTENT[i, j], INCONSISTENT[j, i]
        expected = C.rescaling_weights([c_i, c_j], [n_i, n_j])
        np.testing.assert_allclose(sw[ys == i], expected[0])
        np.testing.assert_allclose(sw[ys == j], expected[1])
    # votes: 0 wins (0,1) and (0,2), 1 wins (1,2) -> 0 everywhere
    np.testing.assert_array_equal(model.votes(X[:2]), [[2, 1, 0], [2, 1, 0]])
    np.testing.assert_array_equal(model.predict(X[:2]), [0, 0])


def test_one_vs_one_majority_vote_on_toy_set() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([0.0, 10.0, 20.0])
    y = np.repeat([0, 1, 2], [8, 15, 40])
    X = (centres[y] + rng.normal(0, 1, len(y)))[:, None]
    model = L.OneVsOneCostClassifier(
        lambda: DecisionTreeClassifier(criterion="entropy", random_state=0), INCONSISTENT
    ).fit(X, y)
    X_test = np.array([[0.2], [9.5], [20.7], [-3.0], [30.0]])
    np.testing.assert_array_equal(model.predict(X_test), [0, 1, 2, 0, 2])
    # the winner of each row has k-1 = 2 votes
    assert (model.votes(X_test).max(axis=1) == 2).all()


def test_one_vs_one_tie_goes_to_lowest_label() -> None:
    class Cyclic:  # (0,1) -> 1, (0,2) -> 0, (1,2) -> 2: one vote each
        def fit(self, X, y, sample_weight=None):  # noqa: ANN001, ANN201
            self.label = {(0, 1): 1, (0, 2): 0, (1, 2): 2}[tuple(np.unique(y))]
            return self

        def predict(self, X):  # noqa: ANN001, ANN201
            return np.full(len(X), self.label)

    y = np.array([0, 1, 2, 0, 1, 2])
    model = L.OneVsOneCostClassifier(Cyclic, INCONSISTENT).fit(np.zeros((6, 1)), y)
    np.testing.assert_array_equal(model.predict(np.zeros((1, 1))), [0])


def test_fit_cost_sensitive_dispatches_on_consistency() -> None:
    y = np.repeat([0, 1, 2], [5, 10, 20])
    X = np.arange(len(y), dtype=float)[:, None]
    make = lambda: DecisionTreeClassifier(criterion="entropy", random_state=0)  # noqa: E731
    assert isinstance(L.fit_cost_sensitive(make, X, y, CONSISTENT), DecisionTreeClassifier)
    assert isinstance(L.fit_cost_sensitive(make, X, y, INCONSISTENT), L.OneVsOneCostClassifier)
    with pytest.raises(C.InconsistentCostError):
        L.fit_rescaled(make, X, y, INCONSISTENT)


def test_fit_rescaled_passes_the_direct_weights() -> None:
    log: list = []
    y = np.repeat([0, 1, 2], [5, 10, 20])
    L.fit_rescaled(lambda: ConstantLowest(log), np.zeros((len(y), 1)), y, CONSISTENT)
    np.testing.assert_array_equal(log[0][2], direct_sample_weights(y, CONSISTENT))


def test_one_vs_one_predict_before_fit_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        L.OneVsOneCostClassifier(DecisionTreeClassifier, CONSISTENT).predict(np.zeros((1, 1)))


def test_entropy_tree_leaves_hold_the_minimum_weight() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] + rng.normal(0, 1, 200) > 0).astype(np.int64)
    grown = L.EntropyTree(0, min_leaf_weight=0).fit(X, y)
    pruned = L.EntropyTree(0, min_leaf_weight=20).fit(X, y)
    assert pruned.tree_.get_n_leaves() < grown.tree_.get_n_leaves()
    leaves = pruned.tree_.apply(X)
    assert min(np.bincount(leaves)[np.unique(leaves)]) >= 20  # unit weights: a leaf's weight is its count
    assert set(np.unique(pruned.predict(X))) <= {0, 1}
