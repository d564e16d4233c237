"""study.stats against scipy on fixed numbers, and Holm's step-down against a worked example."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from study.stats import holm, macro_f1, paired_bootstrap, paired_tests, t_interval

SCORES = [0.712, 0.698, 0.731, 0.705, 0.690]


def test_t_interval_matches_the_textbook_formula():
    mean, sd, low, high = t_interval(SCORES)
    x = np.array(SCORES)
    half = stats.t.ppf(0.975, df=4) * x.std(ddof=1) / math.sqrt(5)
    assert (mean, sd) == pytest.approx((x.mean(), x.std(ddof=1)))
    assert (low, high) == pytest.approx((x.mean() - half, x.mean() + half))
    assert t_interval(SCORES, confidence=0.99)[2] < low  # a wider interval at higher confidence


def test_t_interval_of_one_value_or_equal_values():
    mean, sd, low, high = t_interval([0.7])
    assert mean == 0.7 and math.isnan(sd) and math.isnan(low) and math.isnan(high)
    assert t_interval([0.5, 0.5, 0.5]) == (0.5, 0.0, 0.5, 0.5)


def test_t_interval_rejects_nothing_and_bad_confidence():
    with pytest.raises(ValueError, match="at least one value, but got none"):
        t_interval([])
    with pytest.raises(ValueError, match=r"`0 < confidence < 1` must hold, but got confidence=95"):
        t_interval(SCORES, confidence=95)


def test_paired_tests_match_scipy():
    other = [0.650, 0.661, 0.702, 0.640, 0.671]
    p_t, p_w = paired_tests(SCORES, other)
    assert p_t == pytest.approx(stats.ttest_rel(SCORES, other).pvalue)
    assert p_w == pytest.approx(stats.wilcoxon(np.subtract(SCORES, other)).pvalue)
    assert p_w == pytest.approx(0.0625)  # 5 pairs, all one sign: the exact test's floor


@pytest.mark.parametrize(("a", "b"), [([0.7], [0.6]), (SCORES, SCORES), ([], [])])
def test_paired_tests_undefined_give_nan(a, b):
    assert all(math.isnan(p) for p in paired_tests(a, b))


def test_paired_tests_need_pairs():
    with pytest.raises(ValueError, match="as many values in a as in b, but got 2 and 3"):
        paired_tests([0.1, 0.2], [0.1, 0.2, 0.3])


def test_holm_worked_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> raised to 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_leaves_nan_out_of_the_family():
    out = holm([0.5, float("nan"), 0.6])
    assert out[0] == out[2] == 1.0 and math.isnan(out[1])  # m = 2: 0.5*2 = 1.0, then max(1.0, 0.6)
    assert holm([0.02]) == [0.02] and holm([]) == []
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\], but got \[1.5\]"):
        holm([1.5])


def _predictions(n: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < 0.85, y, 1 - y)
    b = np.where(rng.random(n) < 0.70, y, 1 - y)
    return y, a, b


def test_macro_f1_matches_sklearn_also_with_an_absent_class():
    y, a, _ = _predictions()
    assert macro_f1(y, a) == pytest.approx(f1_score(y, a, average="macro"))
    labels = [0, 1, 2]  # class 2 never occurs: scores 0, like sklearn's zero_division=0
    assert macro_f1(y, a, labels) == pytest.approx(f1_score(y, a, labels=labels, average="macro", zero_division=0))


def test_paired_bootstrap_interval_around_the_pooled_difference():
    y, a, b = _predictions()
    delta, low, high = paired_bootstrap(y, a, b, n_boot=500)
    assert delta == pytest.approx(f1_score(y, a, average="macro") - f1_score(y, b, average="macro"))
    assert 0 < low < delta < high
    assert paired_bootstrap(y, a, b, n_boot=500) == (delta, low, high)  # seeded
    assert paired_bootstrap(y, a, b, n_boot=500, seed=1) != (delta, low, high)


def test_paired_bootstrap_resamples_the_same_indices_for_both():
    y, a, _ = _predictions()
    assert paired_bootstrap(y, a, a.copy(), n_boot=200) == (0.0, 0.0, 0.0)  # unpaired resampling would spread


def test_paired_bootstrap_rejects_misaligned_predictions():
    with pytest.raises(ValueError, match=r"1-d of one length, but got \(3,\), \(2,\), \(3,\)"):
        paired_bootstrap([0, 1, 1], [0, 1], [0, 1, 0])
