"""The trainable's parts: cost matrices and how each cost approach applies them, decisions, epoch metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from study.data import Dataset, Split
from study.loop import EpochResult
from study.spaces import TRIAL_DEFAULTS
from study.trainable import build_parts, cost_matrix, decide, epoch_metrics, scored


def config(**over):
    return {**TRIAL_DEFAULTS, "seed": 0, "trial_seed": 1, "epochs": 1, "batch_size": 8, **over}


def tiny(counts=(4, 20), size=16) -> Dataset:
    def split(ns):
        labels = torch.cat([torch.full((n,), c) for c, n in enumerate(ns)]).long()
        return Split(torch.randint(0, 255, (len(labels), 1, size, size), dtype=torch.uint8), labels)

    return Dataset("tiny", ("cat", "dog"), split(counts), split((5, 5)), split((5, 5)))


def test_no_cost_ratio_means_no_cost_matrix() -> None:
    assert cost_matrix(config(), [64, 700], 0) is None


def test_binary_cost_matrix_charges_missing_the_minority() -> None:
    np.testing.assert_array_equal(cost_matrix(config(cost_ratio=5.0), [64, 700], 0), [[0, 5], [1, 0]])
    np.testing.assert_array_equal(cost_matrix(config(cost_ratio=5.0), [700, 64], 1), [[0, 1], [5, 0]])


def test_multi_class_cost_matrix_is_the_papers_consistent_kind() -> None:
    from study.costs import is_consistent

    cm = cost_matrix(config(cost_ratio=10.0), [10, 50, 100], 0)
    assert is_consistent(cm) and cm[0, 2] == cm.max() and cm[2, 0] == cm[cm > 0].min()


def test_min_cost_decisions_move_the_threshold() -> None:
    probs = torch.tensor([[0.3, 0.7], [0.25, 0.75], [0.6, 0.4]])
    result = EpochResult(0.0, torch.tensor([0, 1, 0]), probs.argmax(1), probs)
    data, unit = tiny(), np.array([[0.0, 1.0], [1.0, 0.0]])
    plain = scored(decide(result, None), data, unit)
    assert plain["recall_cat"] == 0.5 and plain["expected_cost"] == pytest.approx(1 / 3)
    costly = scored(decide(result, np.array([[0.0, 4.0], [1.0, 0.0]])), data, unit)  # cat if p_cat >= 1/5
    assert costly["recall_cat"] == 1.0 and costly["recall_dog"] == 0.0 and costly["minority_recall"] == 1.0
    assert costly["expected_cost"] == pytest.approx(1 / 3)  # scored under the evaluation matrix, not the training one


@pytest.mark.parametrize(("loss", "use", "weighted", "thresholded"), [
    ("weighted_ce", "weights", True, False),  # cost_weights: the third seed's rescaling only
    ("ce", "threshold", False, True),  # cost_threshold: plain cross-entropy, minimum-expected-cost decisions
    ("weighted_ce", "both", True, True),  # cost: both
])
def test_the_three_cost_approaches_apply_the_matrix_as_named(loss, use, weighted, thresholded, one_thread) -> None:
    from study.costs import rescaled_class_weights

    parts = build_parts(config(loss=loss, cost_use=use, cost_ratio=6.0), tiny())
    assert (parts.decide is not None) == thresholded
    if thresholded:
        np.testing.assert_array_equal(parts.decide, [[0, 6], [1, 0]])
    if weighted:  # w_i = num * cm_i / sum_j num_j cm_j with cm_cat = 6, cm_dog = 1 on 4 cats : 20 dogs
        expected = rescaled_class_weights(np.array([[0, 6.0], [1, 0]]), [4, 20])
        np.testing.assert_allclose(parts.loss.weights.numpy(), expected, rtol=1e-6)
        np.testing.assert_allclose(expected, [24 * 6 / 44, 24 / 44])
    else:
        assert not hasattr(parts.loss, "weights") or parts.loss.weights is None


def test_the_minority_comes_from_the_data_set_not_the_first_class(one_thread) -> None:
    data = tiny(counts=(20, 4))
    assert data.minority == 1
    parts = build_parts(config(loss="weighted_ce", cost_use="weights", cost_ratio=6.0), data)
    assert parts.loss.weights[1] > parts.loss.weights[0]


def test_epoch_metrics_prefix_every_metric_with_its_split() -> None:
    out = epoch_metrics({"loss": 1.0, "macro_f1": 0.4, "confusion": [[1]]}, {"macro_f1": 0.7, "loss": 0.5, "confusion": [[2]]})
    assert out == {"val_macro_f1": 0.7, "val_loss": 0.5, "val_confusion": [[2]], "train_loss": 1.0, "train_macro_f1": 0.4}


def test_every_approach_is_scored_at_minimum_expected_cost_from_calibrated_probabilities(one_thread) -> None:
    """test_mec_* decide every approach's own test probabilities by one rule, after a temperature fitted on
    validation; calibration error is reported before and after, and the rule's cost without calibration."""
    from study.calibration import apply_temperature, fit_temperature, log_probs
    from study.costs import binary_cost_matrix, expected_cost, min_cost_decision
    from study.loop import evaluate
    from study.trainable import EVAL_BATCH, test_figures

    ds = tiny()
    p = build_parts(config(), ds)
    costs = binary_cost_matrix(6.0, positive=ds.minority)
    val = evaluate(p.model, ds.val.images, ds.val.labels, p.loss, batch_size=EVAL_BATCH, device=p.device)
    figures = test_figures(p, ds, costs, val)
    test = evaluate(p.model, ds.test.images, ds.test.labels, p.loss, batch_size=EVAL_BATCH, device=p.device)
    t = fit_temperature(log_probs(val.probs.numpy()), val.y_true.numpy())
    calibrated = apply_temperature(log_probs(test.probs.numpy().astype(np.float64)), t)
    y = test.y_true.numpy()
    assert figures["val_temperature"] == pytest.approx(t)
    assert figures["test_mec_expected_cost"] == pytest.approx(expected_cost(y, min_cost_decision(calibrated, costs), costs))
    assert figures["test_mec_uncalibrated_expected_cost"] == pytest.approx(
        expected_cost(y, min_cost_decision(test.probs.numpy(), costs), costs))
    assert {"test_ece", "test_brier", "test_calibrated_ece", "test_calibrated_brier", "test_expected_cost"} <= set(figures)
    assert test_figures(p, ds, costs)["val_temperature"] == 1.0  # no validation given: nothing to fit
