"""costsens/costs.py: direct sample weights, the binary threshold, the generator's inconsistent kind."""

from __future__ import annotations

import numpy as np
import pytest
from studyutil import check_paper_constraints

from costsens import costs as CS
from study import costs as C

PAPER_CV = np.array([1.0000, 0.8686, 0.5992])
ANN_TRAIN_COUNTS = [83, 184, 3333]
GLASS_COUNTS = [70, 76, 17, 13, 9, 29]


def test_direct_sample_weights_follow_the_papers_cv() -> None:
    # any pair scales a_ij give cm[i][j] / cm[j][i] = cv_i / cv_j
    cm = np.zeros((3, 3))
    for (i, j), a in {(0, 1): 3.0, (0, 2): 7.0, (1, 2): 1.5}.items():
        cm[i, j], cm[j, i] = a * PAPER_CV[i], a * PAPER_CV[j]
    y = np.repeat([0, 1, 2], ANN_TRAIN_COUNTS)
    sw = CS.direct_sample_weights(y, cm)
    per_class = np.array([sw[y == c][0] for c in range(3)])
    np.testing.assert_allclose(per_class / per_class.max(), PAPER_CV, rtol=1e-12)
    assert sw.sum() == pytest.approx(len(y))
    with pytest.raises(ValueError, match=r"y must hold integer labels 0..2, but got values \[0, 3\]"):
        CS.direct_sample_weights([0, 3], cm)


@pytest.mark.parametrize("positive", [0, 1])
def test_binary_threshold_is_where_min_cost_decision_switches(positive: int) -> None:
    cm = C.binary_cost_matrix(3.0, positive=positive)  # C_FN = 3, C_FP = 1 -> t = 1/4
    t = CS.binary_threshold(cm, positive=positive)
    assert t == 0.25
    p_pos = np.arange(257) / 256  # dyadic: exact arithmetic, includes p = t exactly
    proba = np.zeros((257, 2))
    proba[:, positive], proba[:, 1 - positive] = p_pos, 1 - p_pos
    np.testing.assert_array_equal(C.min_cost_decision(proba, cm) == positive, p_pos >= t)


def test_binary_threshold_formula_and_errors() -> None:
    assert CS.binary_threshold(C.binary_cost_matrix(5, positive=0), positive=0) == pytest.approx(1 / 6)
    assert CS.binary_threshold([[0, 2.0], [6.0, 0]]) == pytest.approx(2 / 8)
    with pytest.raises(C.CostMatrixError, match=r"number of classes \(2\), but got 3x3"):
        CS.binary_threshold(np.ones((3, 3)) - np.eye(3))
    with pytest.raises(ValueError, match="positive must be 0 or 1, but got 2"):
        CS.binary_threshold([[0, 1], [1, 0]], positive=2)


@pytest.mark.parametrize("counts", [ANN_TRAIN_COUNTS, GLASS_COUNTS])
def test_generator_inconsistent_kind_over_1000_draws(counts: list[int]) -> None:
    rng = np.random.default_rng(2014)
    for _ in range(1000):
        cm = CS.random_cost_matrix(counts, rng, kind="inconsistent")
        check_paper_constraints(cm, counts, C.PAPER_N)
        assert not C.is_consistent(cm)


def test_generator_consistent_kind_is_the_image_studys() -> None:
    a = CS.random_cost_matrix(GLASS_COUNTS, np.random.default_rng(5), kind="consistent", n=4.0)
    b = C.random_cost_matrix(GLASS_COUNTS, np.random.default_rng(5), n=4.0)
    np.testing.assert_array_equal(a, b)


def test_generator_is_seeded_and_checks_its_arguments() -> None:
    a = CS.random_cost_matrix(GLASS_COUNTS, np.random.default_rng(7), kind="inconsistent")
    b = CS.random_cost_matrix(GLASS_COUNTS, np.random.default_rng(7), kind="inconsistent")
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown cost-matrix kind 'random'; choose one of: consistent, inconsistent"):
        CS.random_cost_matrix([1, 2, 3], rng, kind="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs at least 3 classes .* but got 2"):
        CS.random_cost_matrix([10, 90], rng, kind="inconsistent")
    with pytest.raises(ValueError, match=r"n \(largest cost\) must be > 1, but got 1"):
        CS.random_cost_matrix([10, 20, 90], rng, kind="inconsistent", n=1)
