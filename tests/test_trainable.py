"""The trainable's parts: cost matrices from the config, minimum-cost decisions, epoch metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from study.loop import EpochResult
from study.spaces import TRIAL_DEFAULTS
from study.trainable import cost_matrix, epoch_metrics, scored


def config(**over):
    return {**TRIAL_DEFAULTS, "seed": 0, **over}


def test_no_cost_ratio_means_no_cost_matrix() -> None:
    assert cost_matrix(config(), [64, 700]) is None


def test_binary_cost_matrix_charges_missing_the_minority() -> None:
    cm = cost_matrix(config(cost_ratio=5.0), [64, 700])  # class 0 (cat) is the minority
    np.testing.assert_array_equal(cm, [[0, 5], [1, 0]])
    cm = cost_matrix(config(cost_ratio=5.0), [700, 64])
    np.testing.assert_array_equal(cm, [[0, 1], [5, 0]])


def test_multi_class_cost_matrix_is_the_papers_consistent_kind() -> None:
    from study.costs import is_consistent

    cm = cost_matrix(config(cost_ratio=10.0), [10, 50, 100])
    assert is_consistent(cm) and cm[0, 2] == cm.max() and cm[2, 0] == cm[cm > 0].min()


def test_min_cost_decisions_move_the_threshold() -> None:
    probs = torch.tensor([[0.3, 0.7], [0.25, 0.75], [0.6, 0.4]])
    result = EpochResult(0.0, torch.tensor([0, 1, 0]), probs.argmax(1), probs)
    plain = scored(result, ("cat", "dog"), None)
    assert plain["recall_cat"] == 0.5 and "expected_cost" not in plain
    costly = scored(result, ("cat", "dog"), np.array([[0.0, 4.0], [1.0, 0.0]]))  # cat if p_cat >= 1/5
    assert costly["recall_cat"] == 1.0 and costly["recall_dog"] == 0.0
    assert costly["expected_cost"] == pytest.approx(1 / 3)


def test_epoch_metrics_put_validation_macro_f1_first() -> None:
    out = epoch_metrics({"loss": 1.0, "macro_f1": 0.4, "confusion": [[1]]}, {"macro_f1": 0.7, "loss": 0.5})
    assert list(out)[0] == "macro_f1" and out["macro_f1"] == 0.7
    assert out == {"macro_f1": 0.7, "val_loss": 0.5, "train_loss": 1.0, "train_macro_f1": 0.4}
