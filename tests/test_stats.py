"""study.stats against scipy on fixed numbers and by hand, Holm against a worked example, and the two null-rate
simulations the verdict rests on (the two-level bootstrap's and the race's)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from study.stats import (
    BETTER,
    EQUIVALENT,
    UNDECIDED,
    WORSE,
    bounded_interval,
    holm,
    macro_f1,
    min_detectable_difference,
    paired_tests,
    race_open,
    t_interval,
    test_sampling_error,
    two_level_bootstrap,
    verdict,
    verdict_needs,
)

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


def _posterior_by_hand(d: list[float], rope: float, rho: float) -> tuple[float, float, float]:
    n, mean, sd = len(d), float(np.mean(d)), float(np.std(d, ddof=1))
    scale = sd * math.sqrt(1 / n + rho / (1 - rho))
    worse = stats.t.cdf(-rope, n - 1, loc=mean, scale=scale)
    better = 1 - stats.t.cdf(rope, n - 1, loc=mean, scale=scale)
    return better, 1 - better - worse, worse


@pytest.mark.parametrize("rho", [0.0, 0.25])
def test_verdict_is_the_closed_form_student_t_posterior(rho):
    d = [0.05, 0.01, 0.03, -0.01, 0.04]
    v = verdict(d, rope=0.02, rho=rho)
    assert (v.p_better, v.p_equivalent, v.p_worse) == pytest.approx(_posterior_by_hand(d, 0.02, rho), abs=1e-12)
    scale = np.std(d, ddof=1) * math.sqrt(1 / 5 + rho / (1 - rho))
    assert (v.low, v.high) == pytest.approx(stats.t.interval(0.95, 4, loc=np.mean(d), scale=scale))
    assert v.mean == pytest.approx(0.024) and v.n == 5 and v.verdict == UNDECIDED  # P(better) 0.5-0.6: open


def test_overlapping_resplits_widen_the_posterior():
    d = [0.05, 0.06, 0.04, 0.07, 0.05, 0.06]
    assert verdict(d).verdict == BETTER
    assert verdict(d, rho=0.5).p_better < verdict(d).p_better


@pytest.mark.parametrize(("diffs", "word"), [
    ([0.08, 0.06, 0.07, 0.09], BETTER),
    ([-0.08, -0.06, -0.07, -0.09], WORSE),
    ([0.002, -0.003, 0.001, 0.0, -0.001], EQUIVALENT),
    ([0.1, -0.1, 0.05, -0.02], UNDECIDED),
])
def test_verdict_words(diffs, word):
    v = verdict(diffs)
    assert v.verdict == word
    assert v.p_better + v.p_equivalent + v.p_worse == pytest.approx(1)
    decided = {BETTER: v.p_better, WORSE: v.p_worse, EQUIVALENT: v.p_equivalent}
    assert (max(decided.values()) >= 0.95) is (word != UNDECIDED)


def test_identical_configs_are_equivalent_never_nan():
    v = verdict([0.0, 0.0, 0.0])
    assert (v.verdict, v.p_better, v.p_equivalent, v.p_worse, v.low, v.high) == (EQUIVALENT, 0, 1, 0, 0, 0)
    assert verdict([0.03, 0.03, 0.03]).verdict == BETTER  # sd 0, mean outside the ROPE: a point mass there
    assert verdict([-0.01, -0.01]).verdict == EQUIVALENT


def test_fewer_than_two_pairs_are_undecided():
    for d in ([], [0.5]):
        v = verdict(d)
        assert v.verdict == UNDECIDED and math.isnan(v.p_better) and v.n == len(d)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rope": -0.01}, r"ROPE half-width must be a finite number >= 0, but got rope=-0.01"),
    ({"threshold": 0.5}, r"`0.5 < threshold < 1` must hold .*, but got 0.5"),
    ({"rho": 1.0}, r"`0 <= rho < 1` must hold \(rho = n_test / n_train\), but got rho=1.0"),
])
def test_verdict_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        verdict([0.1, 0.2], **kwargs)


def test_race_opens_until_min_then_while_undecided_until_max():
    clear = [0.1, 0.11, 0.09, 0.1]
    assert race_open(clear[:2], min_seeds=3, max_seeds=12)  # decided, but not before min_seeds
    assert not race_open(clear[:3], min_seeds=3, max_seeds=12)
    noisy = [0.1, -0.1, 0.05, -0.02]
    assert race_open(noisy, min_seeds=3, max_seeds=12)
    assert not race_open(noisy, min_seeds=3, max_seeds=4)  # the budget is spent
    with pytest.raises(ValueError, match=r"`1 <= min_seeds <= max_seeds` must hold, but got min_seeds=5, max_seeds=4"):
        race_open(noisy, 5, 4)


def _race(rng: np.random.Generator, true_diff: float, sd: float = 0.03) -> str:
    d = list(rng.normal(true_diff, sd, 3))
    while race_open(d, min_seeds=3, max_seeds=12):
        d.append(rng.normal(true_diff, sd))  # one paired seed per round
    return verdict(d).verdict


def test_the_race_false_better_rate_under_a_null():
    """True difference 0, paired SD 0.03, 3 to 12 seeds: stopping at the first decided look could inflate
    the error; measured 0.7 % false "better" (and 1 % "worse") at ROPE 0.02 and threshold 0.95. (At ROPE 0
    the same race says "better" 18 % of the time: the ROPE is what holds it.)"""
    rng = np.random.default_rng(7)
    words = [_race(rng, 0.0) for _ in range(2000)]
    assert words.count(BETTER) / len(words) <= 0.05
    assert words.count(WORSE) / len(words) <= 0.05
    assert words.count(EQUIVALENT) / len(words) > 0.25  # and it does decide: equal approaches come out equivalent
    assert sum(_race(rng, 0.08) == BETTER for _ in range(200)) / 200 > 0.8  # a real gain is found


def _split(rng: np.random.Generator, accuracy: float, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    y = (rng.random(n) < 0.25).astype(int)  # 1:3, minority 1
    return y, np.where(rng.random(n) < accuracy, y, 1 - y)


def test_two_level_bootstrap_point_and_interval():
    rng = np.random.default_rng(3)
    ys, a, b = [], [], []
    for n in (300, 280, 310):  # resplits may differ in size
        y, pa = _split(rng, 0.85, n)
        ys.append(y), a.append(pa), b.append(np.where(rng.random(n) < 0.70, y, 1 - y))
    delta, low, high = two_level_bootstrap(ys, a, b, n_boot=1000)
    by_hand = np.mean([f1_score(y, p, average="macro") - f1_score(y, q, average="macro") for y, p, q in zip(ys, a, b, strict=False)])
    assert delta == pytest.approx(by_hand)
    assert 0 < low < delta < high
    assert two_level_bootstrap(ys, a, b, n_boot=1000) == (delta, low, high)  # seeded
    assert two_level_bootstrap(ys, a, a, n_boot=200) == (0.0, 0.0, 0.0)  # paired: the same images for a and b


def test_two_level_bootstrap_rejects_misaligned_input():
    with pytest.raises(ValueError, match=r"1-d of one length >= 2, but got shapes \(3,\), \(2,\), \(3,\)"):
        two_level_bootstrap([[0, 1, 1], [0, 1]], [[0, 1], [0, 1]], [[0, 1, 0], [0, 1]])
    with pytest.raises(ValueError, match=r"needs >= 2 seeds with y_true, pred_a and pred_b each, but got 1, 1, 1"):
        two_level_bootstrap([[0, 1]], [[0, 1]], [[0, 1]])


@pytest.mark.parametrize("seed_sd", [0.02, 0.05])
def test_two_level_bootstrap_false_separation_rate_under_a_null(seed_sd):
    """Two equal approaches: each (approach, seed) network has its own true accuracy, 0.8 plus a seed effect
    of SD ``seed_sd``; 5 seeds, 300 test images each. The 95 % interval may exclude 0 in at most 7 % of
    400 replicates (measured 0.25 % and 3 %; a pooled bootstrap over (image, seed) rows: 21-71 %)."""
    rng = np.random.default_rng(11)
    separated = 0
    for r in range(400):
        ys, a, b = [], [], []
        for acc_a, acc_b in 0.8 + rng.normal(0, seed_sd, (5, 2)):
            y, pa = _split(rng, acc_a)
            ys.append(y), a.append(pa), b.append(np.where(rng.random(y.size) < acc_b, y, 1 - y))
        _, low, high = two_level_bootstrap(ys, a, b, n_boot=500, seed=r)  # 500: keeps the test under 10 s
        separated += low > 0 or high < 0
    assert separated / 400 <= 0.07


def test_verdict_needs_is_where_the_verdict_turns():
    """Paired differences with a fixed SD, shifted to just above / below the returned |Δ|: better / undecided."""
    base = np.array([-1.0, 0.0, 1.0, 0.5, -0.5, 0.0])
    d = base / base.std(ddof=1) * 0.03  # sd exactly 0.03
    for rho in (0.0, 0.28):
        need = verdict_needs(0.03, 6, rope=0.02, rho=rho)
        assert need == pytest.approx(0.02 + stats.t.ppf(0.95, 5) * 0.03 * math.sqrt(1 / 6 + rho / (1 - rho)))
        assert verdict(d + need + 1e-9, 0.02, rho=rho).verdict == "better"
        assert verdict(d + need - 1e-6, 0.02, rho=rho).verdict == "undecided at this budget"
        assert verdict(d - need - 1e-9, 0.02, rho=rho).verdict == "worse"
    # with the resplit correction more seeds help less: 12 seeds need 88 % of what 6 do, 80 % on one fixed split
    assert verdict_needs(0.03, 12, rho=0.28) / verdict_needs(0.03, 6, rho=0.28) == pytest.approx(0.877, abs=0.002)
    assert verdict_needs(0.03, 12) / verdict_needs(0.03, 6) == pytest.approx(0.797, abs=0.002)
    assert verdict_needs(0.03, 1) == math.inf and verdict_needs(0.0, 5, rope=0.02) == 0.02


def test_min_detectable_difference_has_its_power():
    """At the difference it returns, a simulated paired t-test at 0.05 / 11 rejects 80 % of the time."""
    sd, n = 0.03, 5
    mdd = min_detectable_difference(sd, n, comparisons=11)
    assert 0.05 < mdd < 0.13  # the range the review found for 5 seeds and 11 comparisons
    d = np.random.default_rng(5).normal(mdd, sd, (40_000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    assert np.mean(np.abs(t) > stats.t.ppf(1 - 0.05 / 11 / 2, n - 1)) == pytest.approx(0.8, abs=0.01)
    assert min_detectable_difference(sd, 12, comparisons=11) < mdd < min_detectable_difference(sd, 3, comparisons=11)
    assert min_detectable_difference(sd, 5) < mdd  # one comparison: a looser level
    assert min_detectable_difference(sd, 1) == math.inf and min_detectable_difference(0.0, 5) == 0.0
    with pytest.raises(ValueError, match=r"comparisons >= 1, but got alpha=0.05, power=0.8, comparisons=0"):
        min_detectable_difference(sd, n, comparisons=0)


def test_test_sampling_error_matches_fresh_test_splits():
    """The bootstrap SE from one split against the SD of macro-F1 over many fresh splits of the same process."""
    rng = np.random.default_rng(9)
    fresh = np.std([macro_f1(*_split(rng, 0.85)) for _ in range(2000)], ddof=1)
    assert test_sampling_error(*_split(rng, 0.85)) == pytest.approx(fresh, rel=0.15)
    assert test_sampling_error(*_split(rng, 0.85, n=1200)) == pytest.approx(fresh / 2, rel=0.15)


def test_bounded_interval_is_a_t_interval_on_the_logit_scale():
    x = np.array([0.95, 0.99, 1.0, 0.97, 0.98])
    mean, sd, low, high = bounded_interval(x)
    z = np.log(np.clip(x, 1e-3, 1 - 1e-3) / (1 - np.clip(x, 1e-3, 1 - 1e-3)))
    half = stats.t.ppf(0.975, 4) * z.std(ddof=1) / math.sqrt(5)
    assert (low, high) == pytest.approx((1 / (1 + np.exp(-(z.mean() - half))), 1 / (1 + np.exp(-(z.mean() + half)))))
    assert (mean, sd) == pytest.approx((x.mean(), x.std(ddof=1)))
    assert t_interval(x)[3] > 1 and 0 < low < mean < high < 1  # the raw t interval leaves [0, 1]; this one cannot


def test_bounded_interval_without_an_upper_bound_is_log_scale_and_positive():
    cost = [0.02, 0.0, 0.05, 0.01]  # a zero: half the smallest positive value on the log scale
    _, _, low, high = bounded_interval(cost, upper=None)
    z = np.log([0.02, 0.005, 0.05, 0.01])
    half = stats.t.ppf(0.975, 3) * z.std(ddof=1) / 2
    assert (low, high) == pytest.approx(np.exp([z.mean() - half, z.mean() + half]))
    assert t_interval(cost)[2] < 0 < low


def test_bounded_interval_mid_range_is_close_to_t_and_rejects_out_of_range():
    x = [0.48, 0.52, 0.50, 0.49, 0.51]
    assert bounded_interval(x)[2:] == pytest.approx(t_interval(x)[2:], abs=1e-3)
    assert bounded_interval([1.0, 1.0]) == (1.0, 0.0, 1.0, 1.0)
    assert math.isnan(bounded_interval([0.3])[2])
    with pytest.raises(ValueError, match=r"needs values in \[0, 1.0\], but got \[0.5, 1.2\]"):
        bounded_interval([0.5, 1.2])
