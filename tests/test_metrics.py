"""Metrics reproduce the slides' worked example: TN 1489, FP 11, FN 679, TP 821 with cat as the positive class."""

from __future__ import annotations

import numpy as np
import pytest

from study.metrics import classification_metrics
from study.names import BASE_METRICS

CLASSES = ("cat", "dog")  # cat = label 0 (the minority in the study), dog = label 1
TP, FN, FP, TN = 821, 679, 11, 1489  # cat positive: TP = cat -> cat, FN = cat -> dog, FP = dog -> cat, TN = dog -> dog


def worked_example(shuffle_seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.array([0] * (TP + FN) + [1] * (FP + TN))
    y_pred = np.array([0] * TP + [1] * FN + [0] * FP + [1] * TN)
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(y_true))
        y_true, y_pred = y_true[order], y_pred[order]
    return y_true, y_pred


@pytest.mark.parametrize("shuffle_seed", [None, 3])
def test_slides_worked_example(shuffle_seed: int | None) -> None:
    m = classification_metrics(*worked_example(shuffle_seed), CLASSES, minority=0)
    # the slides' figures, to their three decimals
    assert round(m["recall_cat"], 3) == 0.547
    assert round(m["precision_cat"], 3) == 0.987
    assert round(m["f1_cat"], 3) == 0.704
    # and exactly, from the counts
    assert m["recall_cat"] == pytest.approx(821 / 1500)
    assert m["precision_cat"] == pytest.approx(821 / 832)
    assert m["f1_cat"] == pytest.approx(2 * 821 / (2 * 821 + 11 + 679))
    assert m["recall_dog"] == pytest.approx(1489 / 1500)
    assert m["precision_dog"] == pytest.approx(1489 / 2168)
    assert m["f1_dog"] == pytest.approx(2 * 1489 / (2 * 1489 + 679 + 11))
    assert m["accuracy"] == pytest.approx((821 + 1489) / 3000)
    assert m["balanced_accuracy"] == pytest.approx((821 / 1500 + 1489 / 1500) / 2)
    assert m["macro_precision"] == pytest.approx((821 / 832 + 1489 / 2168) / 2)
    assert m["macro_recall"] == pytest.approx((821 / 1500 + 1489 / 1500) / 2)
    assert m["macro_f1"] == pytest.approx((m["f1_cat"] + m["f1_dog"]) / 2)
    assert m["macro_f1"] == pytest.approx(0.75800, abs=1e-5)
    assert m["minority_recall"] == m["recall_cat"] and m["minority_precision"] == m["precision_cat"]
    assert m["minority_f1"] == m["f1_cat"]
    assert m["confusion"] == [[TP, FN], [FP, TN]]  # rows = true class, columns = predicted, in label order


def test_minority_metrics_follow_the_minority_label() -> None:
    m = classification_metrics(*worked_example(), CLASSES, minority=1)
    assert m["minority_recall"] == pytest.approx(1489 / 1500)
    assert m["minority_precision"] == pytest.approx(1489 / 2168)
    assert m["minority_f1"] == pytest.approx(2 * 1489 / (2 * 1489 + 679 + 11))


def test_long_tail_minority_is_the_label_given_not_class_0() -> None:
    """digits_lt: class 9 has the fewest training images; its recall, not class 0's, is the minority recall."""
    classes = tuple(str(d) for d in range(10))
    y_true = np.repeat(np.arange(10), 10)
    y_pred = np.where(y_true == 9, 0, y_true)  # every 9 mistaken for a 0; everything else right
    m = classification_metrics(y_true, y_pred, classes, minority=9)
    assert m["recall_0"] == 1.0 and m["minority_recall"] == 0.0 and m["minority_f1"] == 0.0
    assert m["minority_precision"] == 0.0  # nothing predicted 9: zero, not a warning-NaN


def test_minority_is_required_and_must_be_a_label() -> None:
    with pytest.raises(TypeError, match="minority"):
        classification_metrics(*worked_example(), CLASSES)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match=r"minority must be a label in \[0, 1\], got 2"):
        classification_metrics(*worked_example(), CLASSES, minority=2)
    with pytest.raises(ValueError, match=r"minority must be a label in \[0, 1\], got -1"):
        classification_metrics(*worked_example(), CLASSES, minority=-1)


def test_keys_are_the_shared_base_names_without_a_split_prefix() -> None:
    m = classification_metrics(*worked_example(), CLASSES, minority=0)
    per_class = {f"{k}_{c}" for k in ("precision", "recall", "f1") for c in CLASSES}
    # loss comes from the epoch's result, expected_cost and brier from study.trainable.scored: every other is here
    assert set(m) == (set(BASE_METRICS) - {"loss", "expected_cost", "brier"}) | per_class | {"confusion"}


def test_balanced_accuracy_differs_from_accuracy_on_imbalanced_data() -> None:
    # 1 cat : 11 dogs, everything predicted dog: accuracy 11/12, balanced accuracy 0.5, cat recall 0
    y_true = np.array([0] * 10 + [1] * 110)
    m = classification_metrics(y_true, np.ones_like(y_true), CLASSES, minority=0)
    assert m["accuracy"] == pytest.approx(110 / 120)
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["minority_recall"] == 0.0
    assert m["precision_cat"] == 0.0 and m["f1_cat"] == 0.0  # no cat predicted: zero, not a warning-NaN
    assert m["macro_f1"] == pytest.approx((0 + 2 * 110 / (2 * 110 + 10)) / 2)
    assert m["confusion"] == [[0, 10], [0, 110]]


def test_three_classes_and_a_class_never_seen() -> None:
    classes = ("a", "b", "c")
    y_true, y_pred = [0, 0, 1, 1], [0, 1, 1, 1]
    m = classification_metrics(y_true, y_pred, classes, minority=2)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]  # every class has a row and a column
    assert m["recall_c"] == 0.0 and m["precision_c"] == 0.0 and m["minority_recall"] == 0.0
    assert m["recall_a"] == pytest.approx(0.5) and m["precision_b"] == pytest.approx(2 / 3)
    assert m["macro_recall"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert set(m) >= {f"{k}_{c}" for k in ("precision", "recall", "f1") for c in classes}
