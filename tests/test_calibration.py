"""study.calibration: ECE and Brier against hand-computed values, temperature scaling recovering a known temperature,
and the reliability diagram drawn from the same bins."""

from __future__ import annotations

import numpy as np
import pytest

from study.calibration import (
    apply_temperature,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    log_probs,
    nll,
    reliability_bins,
    reliability_diagram,
)

# top-label confidences 0.9, 0.8, 0.6, 0.7; predictions 0, 0, 1, 1; correct, wrong, correct, correct
PROBS = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
Y = np.array([0, 1, 1, 1])


def test_ece_by_hand() -> None:
    # 5 bins of 0.2, right-closed: (0.4, 0.6] holds 0.6 (right, gap 0.4); (0.6, 0.8] holds 0.8 (wrong) and 0.7
    # (right): accuracy 0.5 at confidence 0.75, gap 0.25; (0.8, 1] holds 0.9 (right, gap 0.1)
    assert expected_calibration_error(PROBS, Y, n_bins=5) == pytest.approx((0.4 + 2 * 0.25 + 0.1) / 4)
    # one bin: accuracy 3/4 equals the mean confidence 0.75, so nothing shows
    assert expected_calibration_error(PROBS, Y, n_bins=1) == pytest.approx(0.0, abs=1e-12)
    b = reliability_bins(PROBS, Y, n_bins=5)
    assert b["count"].tolist() == [0, 0, 1, 2, 1]
    assert np.allclose(b["accuracy"][2:], [1.0, 0.5, 1.0]) and np.allclose(b["confidence"][2:], [0.6, 0.75, 0.9])
    assert np.isnan(b["accuracy"][:2]).all()  # empty bins: no accuracy, and no weight in the ECE


def test_ece_of_a_perfectly_calibrated_and_of_an_overconfident_model() -> None:
    # 10 answers at confidence 0.7, 7 of them right: calibrated; all at 0.95 with 7 right: ECE 0.25
    y = np.array([0] * 7 + [1] * 3)
    calibrated = np.tile([0.7, 0.3], (10, 1))
    assert expected_calibration_error(calibrated, y) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(np.tile([0.95, 0.05], (10, 1)), y) == pytest.approx(0.25)


def test_brier_by_hand() -> None:
    # (0.1² + 0.1²) + (0.8² + 0.8²) + (0.4² + 0.4²) + (0.3² + 0.3²) = 0.02 + 1.28 + 0.32 + 0.18 = 1.8, over 4
    assert brier_score(PROBS, Y) == pytest.approx(0.45)
    # three classes: (0.5 - 0)² + (0.3 - 0)² + (0.2 - 1)² = 0.25 + 0.09 + 0.64
    assert brier_score([[0.5, 0.3, 0.2]], [2]) == pytest.approx(0.98)
    assert brier_score(np.eye(3), [0, 1, 2]) == 0.0 and brier_score(np.eye(3)[[1, 2, 0]], [0, 1, 2]) == 2.0


def synthetic(temperature: float, n: int = 20000, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); the model reports z * temperature, so dividing by ``temperature`` calibrates it."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, (n, k))
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = (rng.random((n, 1)) > p.cumsum(1)).sum(1)
    return z * temperature, y


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_a_known_temperature(true_t: float) -> None:
    logits, y = synthetic(true_t)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(true_t, rel=0.05)
    assert nll(logits, y, t) <= nll(logits, y, 1.0) + 1e-12
    # log-probabilities are logits shifted per row: the same temperature
    assert fit_temperature(log_probs(apply_temperature(logits, 1.0)), y) == pytest.approx(t, rel=1e-4)
    if true_t != 1.0:  # calibrating lowers the ECE of a miscalibrated model
        before = expected_calibration_error(apply_temperature(logits, 1.0), y)
        after = expected_calibration_error(apply_temperature(logits, t), y)
        assert after < before / 3 and after < 0.015, (before, after)


def test_a_perfectly_separated_split_gets_a_temperature_near_the_lowest() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 3.0]])
    t = fit_temperature(logits, [0, 1])  # NLL falls towards 0 as T -> 0, flat below float precision near the bound
    assert 0.01 <= t < 0.05 and nll(logits, [0, 1], t) < 1e-15


def test_apply_temperature_is_softmax_at_one_and_flattens_above() -> None:
    z = np.array([[1.0, 2.0, 4.0]])
    soft = np.exp(z) / np.exp(z).sum()
    assert np.allclose(apply_temperature(z, 1.0), soft)
    flat = apply_temperature(z, 100.0)
    assert np.allclose(flat.sum(1), 1) and flat.max() - flat.min() < 0.05
    assert np.isfinite(log_probs([[1.0, 0.0]])).all()  # a probability rounded to 0 stays finite


@pytest.mark.parametrize(("call", "match"), [
    (lambda: expected_calibration_error(PROBS, Y[:3]), r"one label per row of probs \(4\)"),
    (lambda: expected_calibration_error(PROBS[:, 0], Y), r"probs must be n x k"),
    (lambda: expected_calibration_error(PROBS, [0, 1, 2, 1]), r"integer labels in \[0, 1\]"),
    (lambda: expected_calibration_error(PROBS, Y, n_bins=0), r"n_bins must be at least 1"),
    (lambda: brier_score(PROBS * 2, Y), r"rows summing to 1"),
    (lambda: brier_score(PROBS, Y.astype(float)), r"integer labels"),
    (lambda: apply_temperature(PROBS, 0.0), r"temperature must be > 0, got 0.0"),
    (lambda: fit_temperature([[0.0, -np.inf]], [1]), r"logits must be finite"),
])
def test_bad_input_is_refused(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_reliability_diagram_draws_the_filled_bins_and_names_the_ece() -> None:
    fig = reliability_diagram(PROBS, Y, n_bins=5, title="baseline")
    top, bottom = fig.axes
    assert top.get_title() == "baseline: ECE 0.250"
    accuracy_bars = top.containers[0]
    assert [round(r.get_height(), 3) for r in accuracy_bars] == [1.0, 0.5, 1.0]
    assert [round(r.get_height(), 3) for r in bottom.containers[0]] == [0.0, 0.0, 0.25, 0.5, 0.25]
