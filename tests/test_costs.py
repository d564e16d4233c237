"""study/costs.py: rescaling, consistency, minimum-cost decisions, the consistent generator; no arrow to costsens."""

from __future__ import annotations

import ast
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from studyutil import check_paper_constraints

from study import costs as C

PAPER_CV = np.array([1.0000, 0.8686, 0.5992])
ANN_TRAIN_COUNTS = [83, 184, 3333]
GLASS_COUNTS = [70, 76, 17, 13, 9, 29]

CONSISTENT = np.array([[0, 2, 4], [1, 0, 2], [1, 1, 0]], dtype=float)  # w = (4, 2, 1)
INCONSISTENT = np.array([[0, 2, 4], [1, 0, 2], [1, 2, 0]], dtype=float)  # w1/w2=2, w1/w3=4, but w2/w3=1


# ---------------------------------------------------------------- rescaling


def test_class_costs_are_row_sums() -> None:
    np.testing.assert_array_equal(C.class_costs(CONSISTENT), [6, 3, 2])


def test_rescaling_weights_hand_computed() -> None:
    # num = 100; sum_j num_j c_j = 10*3 + 90*1 = 120; w = 100*3/120, 100*1/120
    w = C.rescaling_weights([3, 1], [10, 90])
    np.testing.assert_allclose(w, [2.5, 100 / 120])
    assert np.dot(w, [10, 90]) == pytest.approx(100)  # the weighted set keeps its size


def test_rescaling_weights_three_classes_keep_total() -> None:
    counts = np.array(ANN_TRAIN_COUNTS)
    w = C.rescaling_weights(PAPER_CV, counts)
    np.testing.assert_allclose(w, counts.sum() * PAPER_CV / np.dot(counts, PAPER_CV))
    assert np.dot(w, counts) == pytest.approx(counts.sum())
    np.testing.assert_allclose(w / w.max(), PAPER_CV)


def test_rescaling_weights_reject_mismatch() -> None:
    with pytest.raises(ValueError, match="equal length"):
        C.rescaling_weights([1, 2, 3], [10, 20])
    with pytest.raises(ValueError, match="must be positive"):
        C.rescaling_weights([0, 0], [10, 20])


# ---------------------------------------------------------------- consistency


def test_coefficient_matrix_rows_are_pair_conditions() -> None:
    m = C.coefficient_matrix(CONSISTENT)
    # pair (i, j): w_i * cm[j][i] - w_j * cm[i][j] = 0
    np.testing.assert_array_equal(m, [[1, -2, 0], [1, 0, -4], [0, 1, -2]])
    assert np.linalg.matrix_rank(m) == 2


def test_consistent_3x3_rank_and_null_space() -> None:
    assert C.is_consistent(CONSISTENT)
    w = C.consistent_weights(CONSISTENT)
    np.testing.assert_allclose(w, [1.0, 0.5, 0.25])
    np.testing.assert_allclose(C.coefficient_matrix(CONSISTENT) @ w, 0, atol=1e-12)


def test_inconsistent_3x3_has_full_rank() -> None:
    assert np.linalg.matrix_rank(C.coefficient_matrix(INCONSISTENT)) == 3
    assert not C.is_consistent(INCONSISTENT)
    with pytest.raises(C.InconsistentCostError, match=r"rank\(M\) must be < k=3.*got rank 3"):
        C.consistent_weights(INCONSISTENT)


def test_every_2x2_matrix_is_consistent_with_row_sum_weights() -> None:
    cm = [[0, 7.5], [2.5, 0]]
    assert C.is_consistent(cm)
    np.testing.assert_allclose(C.consistent_weights(cm), C.class_costs(cm) / 7.5)


def test_paper_cost_vector_is_recovered_from_its_matrix() -> None:
    # any pair scales a_ij give cm[i][j] / cm[j][i] = cv_i / cv_j
    scale = {(0, 1): 3.0, (0, 2): 7.0, (1, 2): 1.5}
    cm = np.zeros((3, 3))
    for (i, j), a in scale.items():
        cm[i, j], cm[j, i] = a * PAPER_CV[i], a * PAPER_CV[j]
    assert C.is_consistent(cm)
    np.testing.assert_allclose(C.consistent_weights(cm), PAPER_CV, rtol=1e-12)
    # and direct rescaling then weighs each class proportionally to cv, keeping the set's size
    w = C.rescaled_class_weights(cm, ANN_TRAIN_COUNTS)
    np.testing.assert_allclose(w / w.max(), PAPER_CV, rtol=1e-12)
    assert np.dot(w, ANN_TRAIN_COUNTS) == pytest.approx(sum(ANN_TRAIN_COUNTS))


def test_rescaled_class_weights_for_a_binary_fn_fp_ratio() -> None:
    # image study: minority label 0 is positive, FN:FP = 4 -> class costs (4, 1)
    w = C.rescaled_class_weights(C.binary_cost_matrix(4, positive=0), [100, 1100])
    np.testing.assert_allclose(w, 1200 * np.array([4, 1]) / (100 * 4 + 1100 * 1))
    with pytest.raises(C.CostMatrixError, match=r"number of classes \(3\), but got 2x2"):
        C.rescaled_class_weights([[0, 1], [1, 0]], [1, 2, 3])


def test_undetermined_or_non_positive_weights_are_errors() -> None:
    # two unlinked blocks {0, 1} and {2, 3}: rank(M) = 2 < k - 1, no unique weight vector
    blocks = [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]
    with pytest.raises(C.CostMatrixError, match=r"weights undetermined: rank\(M\) must be k-1=3, but got 2"):
        C.consistent_weights(blocks)
    # cm[0][2] = cm[1][2] = 0 forces w_0 = w_1 = 0
    free = [[0, 1, 0], [1, 0, 0], [1, 1, 0]]
    with pytest.raises(C.CostMatrixError, match=r"must all be positive, but got \[0.0, 0.0, 1.0\]"):
        C.consistent_weights(free)


# ---------------------------------------------------------------- decisions and the metric


@pytest.mark.parametrize("positive", [0, 1])
def test_min_cost_decision_is_the_binary_threshold(positive: int) -> None:
    cm = C.binary_cost_matrix(3.0, positive=positive)  # C_FN = 3, C_FP = 1 -> t = C_FP / (C_FP + C_FN) = 1/4
    t = 0.25
    p_pos = np.arange(257) / 256  # dyadic: exact arithmetic, includes p = t exactly
    proba = np.zeros((257, 2))
    proba[:, positive], proba[:, 1 - positive] = p_pos, 1 - p_pos
    predicted_positive = C.min_cost_decision(proba, cm) == positive
    np.testing.assert_array_equal(predicted_positive, p_pos >= t)


def test_min_cost_decision_threshold_random_costs() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        c_fp, c_fn = rng.uniform(0.1, 10, 2)
        cm = np.array([[0, c_fp], [c_fn, 0]])  # positive = 1
        t = c_fp / (c_fp + c_fn)
        p = rng.uniform(0, 1, 50)
        p = p[np.abs(p - t) > 1e-9]
        pred = C.min_cost_decision(np.column_stack([1 - p, p]), cm)
        np.testing.assert_array_equal(pred == 1, p >= t)


def test_min_cost_decision_multiclass_by_hand() -> None:
    # risk_j = sum_i p_i cm[i][j]: p = (.2, .3, .5) -> (0.3+0.5, 0.4+0.5, 0.8+0.6) = (.8, .9, 1.4)
    np.testing.assert_array_equal(C.min_cost_decision([[0.2, 0.3, 0.5]], CONSISTENT), [0])
    # p = (0, .1, .9) -> (0.1+0.9, 0.9, 0.2) -> class 2
    np.testing.assert_array_equal(C.min_cost_decision([[0.0, 0.1, 0.9]], CONSISTENT), [2])
    with pytest.raises(ValueError, match=r"proba must be n x 3"):
        C.min_cost_decision([[0.5, 0.5]], CONSISTENT)


def test_binary_cost_matrix_layout() -> None:
    np.testing.assert_array_equal(C.binary_cost_matrix(5, positive=0), [[0, 5], [1, 0]])
    np.testing.assert_array_equal(C.binary_cost_matrix(5, positive=1), [[0, 1], [5, 0]])
    with pytest.raises(C.CostMatrixError, match="FN:FP cost ratio must be a positive number, but got -1"):
        C.binary_cost_matrix(-1, positive=0)
    with pytest.raises(ValueError, match="positive must be 0 or 1, but got 2"):
        C.binary_cost_matrix(2, positive=2)


def test_expected_cost_is_mean_of_cost_entries() -> None:
    y_true = [0, 0, 1, 2, 2]
    y_pred = [0, 2, 0, 1, 2]  # costs 0, 4, 1, 1, 0
    assert C.expected_cost(y_true, y_pred, CONSISTENT) == pytest.approx(6 / 5)
    with pytest.raises(ValueError, match=r"y_pred must hold integer labels 0..2"):
        C.expected_cost([0], [3], CONSISTENT)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("cm", "num_classes", "message"),
    [
        ([[0, 1, 2], [1, 0, 3]], None, r"must be square \(k x k\), but got shape \(2, 3\)"),
        ([1, 2, 3], None, r"must be square \(k x k\), but got shape \(3,\)"),
        ([[0]], None, r"at least 2 classes, but got shape \(1, 1\)"),
        ([[0, -1], [1, 0]], None, r"must be non-negative, but got cm\[0\]\[1\]=-1"),
        ([[0, 1], [1, 0.5]], None, r"diagonal must be zero .* but got cm\[1\]\[1\]=0.5"),
        ([[0, 1, 1], [0, 0, 0], [1, 1, 0]], None, r"needs a non-zero cost, but row 1 is all zero"),
        ([[0, 1], [1, 0]], 3, r"must match the number of classes \(3\), but got 2x2"),
        ([[0, np.nan], [1, 0]], None, r"must be finite, but got cm\[0\]\[1\]=nan"),
        ([["a", "b"], ["c", "d"]], None, r"must be a numeric k x k array"),
    ],
)
def test_bad_matrices_give_clear_errors(cm: object, num_classes: int | None, message: str) -> None:
    with pytest.raises(C.CostMatrixError, match=message):
        C.validate_cost_matrix(cm, num_classes)


def test_errors_are_value_errors_and_reach_every_entry_point() -> None:
    assert issubclass(C.CostMatrixError, ValueError)
    assert issubclass(C.InconsistentCostError, C.CostMatrixError)
    bad = [[0, 1], [-1, 0]]
    for call in (C.class_costs, C.is_consistent, C.consistent_weights, C.coefficient_matrix):
        with pytest.raises(C.CostMatrixError, match="non-negative"):
            call(bad)
    with pytest.raises(C.CostMatrixError, match="number of classes"):
        C.rescaled_class_weights(CONSISTENT, [10, 20])


# ---------------------------------------------------------------- generator


@pytest.mark.parametrize("counts", [ANN_TRAIN_COUNTS, GLASS_COUNTS, [30, 500]])
def test_generator_consistent_kind_over_1000_draws(counts: list[int]) -> None:
    rng = np.random.default_rng(2013)
    s, big = int(np.argmin(counts)), int(np.argmax(counts))
    for _ in range(1000):
        cm = C.random_cost_matrix(counts, rng, kind="consistent")
        check_paper_constraints(cm, counts, C.PAPER_N)
        assert C.is_consistent(cm)
        cv = C.consistent_weights(cm)
        assert cv[s] == 1.0 and cv[big] == cv.min() and (cv > 0).all()


def test_generator_is_seeded_and_checks_its_arguments() -> None:
    a = C.random_cost_matrix(GLASS_COUNTS, np.random.default_rng(7))
    b = C.random_cost_matrix(GLASS_COUNTS, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown cost-matrix kind 'inconsistent'; the image study draws only: consistent"):
        C.random_cost_matrix([1, 2, 3], rng, kind="inconsistent")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"need at least 2 classes, but got class_counts=\[5\]"):
        C.random_cost_matrix([5], rng)
    with pytest.raises(ValueError, match=r"n \(largest cost\) must be > 1, but got 1"):
        C.random_cost_matrix([10, 90], rng, n=1)


def test_generator_pairs_follow_cv_ratios() -> None:
    cm = C.random_cost_matrix(ANN_TRAIN_COUNTS, np.random.default_rng(3))
    cv = C.consistent_weights(cm)
    for i, j in combinations(range(3), 2):
        assert cm[i, j] / cm[j, i] == pytest.approx(cv[i] / cv[j], rel=1e-9)


def test_min_cost_tie_goes_to_costlier_class_then_lowest_label() -> None:
    np.testing.assert_array_equal(C.min_cost_decision([[0.5, 0.5]], [[0, 1], [1, 0]]), [0])
    np.testing.assert_array_equal(C.min_cost_decision([[0.25, 0.75]], [[0, 3], [1, 0]]), [0])


def test_check_labels_names_the_argument() -> None:
    np.testing.assert_array_equal(C.check_labels([2, 0], 3), [2, 0])
    with pytest.raises(ValueError, match=r"y_true must be 1-D, but got shape \(1, 2\)"):
        C.check_labels([[0, 1]], 2, "y_true")
    with pytest.raises(ValueError, match=r"y must hold integer labels 0..1, but got values \[0.5\]"):
        C.check_labels([0.5], 2)


# ---------------------------------------------------------------- package arrows


def test_the_image_study_never_imports_costsens() -> None:
    """costsens builds on study.costs; an import the other way would tie the image study to the tabular one."""
    study = Path(__file__).resolve().parents[1] / "study"
    for path in sorted(study.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "costsens" or n.startswith("costsens.") for n in names), f"{path.name} imports {names}"
