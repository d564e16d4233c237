"""The statistics of the verdict: the posterior of a paired difference, intervals, tests, bootstraps, power.

Every approach's final configuration is retrained over paired trial seeds (``baseline`` runs the same
seeds). The verdict against ``baseline`` is the closed-form Bayesian posterior of the mean paired
difference with a region of practical equivalence (:func:`verdict`); the race that decides how many
seeds to spend is :func:`race_open`. Beside it: seed intervals (:func:`t_interval`, and
:func:`bounded_interval` for metrics with a bound), the paired t-test and Wilcoxon with Holm's
correction (for reference), a two-level (seeds, then images) bootstrap, the minimum detectable
difference, the difference a verdict needs and the test split's own sampling error. scipy does the distributions; Holm's step-down
(scipy's ``false_discovery_control`` is Benjamini-Hochberg) is written out.

Degenerate inputs give NaN, never an exception or a made-up number: an interval from one value,
a test from fewer than two pairs or from pairs that never differ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

NAN = float("nan")
BETTER, WORSE, EQUIVALENT, UNDECIDED = "better", "worse", "practically equivalent", "undecided at this budget"
VERDICTS = (BETTER, WORSE, EQUIVALENT, UNDECIDED)
BOUND_EPS = 1e-3  # values at a bound are moved this far inside before the logit / log (see bounded_interval)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """``(mean, sd, low, high)``: Student-t interval of the mean over seeds (sd with ddof=1).

    For an unbounded quantity (a difference); a metric with a bound takes :func:`bounded_interval`.
    One value: its mean, NaN for the rest. Values that all agree (sd 0): the interval is the mean itself.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("t_interval needs at least one value, but got none")
    if not 0 < confidence < 1:
        raise ValueError(f"`0 < confidence < 1` must hold, but got confidence={confidence}")
    mean = float(x.mean())
    if x.size == 1:
        return mean, NAN, NAN, NAN
    sd = float(x.std(ddof=1))
    if sd == 0:
        return mean, 0.0, mean, mean  # scipy's t needs scale > 0; the data leave no doubt here
    low, high = stats.t.interval(confidence, df=x.size - 1, loc=mean, scale=sd / math.sqrt(x.size))
    return mean, sd, float(low), float(high)


def bounded_interval(values: Sequence[float], upper: float | None = 1.0,
                     confidence: float = 0.95) -> tuple[float, float, float, float]:
    """``(mean, sd, low, high)`` of a metric bounded below by 0 (and above by ``upper``; None: no upper bound).

    The t interval is taken on the logit scale of ``x / upper`` (on the log scale without an upper
    bound) and mapped back. The map is monotone and its range is the open interval (0, upper), so
    the interval never leaves the metric's range, however close to the bound the seeds score (a
    t interval on the raw scale puts recall above 1 and cost below 0). Values exactly at a bound
    have no logit or log: on the logit scale they are moved ``BOUND_EPS`` (times ``upper``) inside,
    less than half a count on any test split this study uses; on the log scale a 0 becomes half the
    smallest positive value (the usual rule for logs of data with zeros). Mean and sd are the raw
    values' (as :func:`t_interval`); the interval is of the mean on the transformed scale, so it is
    asymmetric near a bound, as the data are. Equal values: the value itself; one value: NaN.
    """
    x = np.asarray(values, dtype=float)
    mean, sd, low, high = t_interval(x, confidence)
    if x.size < 2 or sd == 0:
        return mean, sd, low, high
    if np.any(x < 0) or (upper is not None and np.any(x > upper)):
        raise ValueError(f"bounded_interval needs values in [0, {upper if upper is not None else 'inf'}], "
                         f"but got {x.tolist()}")
    if upper is None:
        z = np.log(np.where(x > 0, x, x[x > 0].min() / 2))
        _, _, zl, zh = t_interval(z, confidence)
        return mean, sd, float(np.exp(zl)), float(np.exp(zh))
    z = stats.logistic.ppf(np.clip(x / upper, BOUND_EPS, 1 - BOUND_EPS))  # logit
    _, _, zl, zh = t_interval(z, confidence)
    return mean, sd, float(upper * stats.logistic.cdf(zl)), float(upper * stats.logistic.cdf(zh))


@dataclass(frozen=True)
class Verdict:
    """The posterior of the mean paired difference (approach minus baseline) and what it decides."""

    verdict: str  # one of VERDICTS
    p_better: float  # P(mu > rope)
    p_equivalent: float  # P(-rope <= mu <= rope)
    p_worse: float  # P(mu < -rope)
    mean: float  # mean paired difference (the posterior's location)
    low: float  # the posterior's central 95 % interval
    high: float
    n: int  # pairs (seeds)
    rope: float
    rho: float


def _check_decision(rope: float, threshold: float, rho: float) -> None:
    if not (rope >= 0 and math.isfinite(rope)):
        raise ValueError(f"the ROPE half-width must be a finite number >= 0, but got rope={rope}")
    if not 0.5 < threshold < 1:
        raise ValueError(f"`0.5 < threshold < 1` must hold (so at most one verdict can pass it), but got {threshold}")
    if not 0 <= rho < 1:
        raise ValueError(f"`0 <= rho < 1` must hold (rho = n_test / n_train), but got rho={rho}")


def verdict(diffs: Sequence[float], rope: float = 0.02, threshold: float = 0.95, rho: float = 0.0) -> Verdict:
    """Better / worse / practically equivalent / undecided, from the paired differences (one per seed).

    Under the uninformative prior, the posterior of the mean difference mu is Student-t with n-1
    degrees of freedom, location mean(d) and scale sd(d) * sqrt(1/n + rho/(1-rho)): rho = n_test / n_train
    is Nadeau & Bengio's correction for seeds whose resplit train/test sets overlap (0 for one fixed
    split), as in Corani & Benavoli's correlated t-test. The verdict is the first of better, worse,
    equivalent whose probability reaches ``threshold``, else undecided. Fewer than 2 pairs: undecided.
    sd 0 (every pair agrees, e.g. all zero): a point mass at the mean, so all-zero differences are
    "practically equivalent" with probability 1, never NaN.
    """
    _check_decision(rope, threshold, rho)
    d = np.asarray(diffs, dtype=float)
    n = int(d.size)
    if n < 2:
        mean = float(d.mean()) if n else NAN
        return Verdict(UNDECIDED, NAN, NAN, NAN, mean, NAN, NAN, n, rope, rho)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0:
        better, worse = float(mean > rope), float(mean < -rope)
        low = high = mean
    else:
        # scipy.special's t functions, not a frozen stats.t: a race simulation calls this thousands of times
        df, scale = n - 1, sd * math.sqrt(1 / n + rho / (1 - rho))
        better = float(special.stdtr(df, (mean - rope) / scale))
        worse = float(special.stdtr(df, (-rope - mean) / scale))
        half = float(special.stdtrit(df, 0.975)) * scale
        low, high = mean - half, mean + half
    equivalent = max(0.0, 1.0 - better - worse)
    word = next((w for w, p in ((BETTER, better), (WORSE, worse), (EQUIVALENT, equivalent)) if p >= threshold),
                UNDECIDED)
    return Verdict(word, better, equivalent, worse, mean, low, high, n, rope, rho)


def verdict_needs(sd_paired: float, n: int, rope: float = 0.02, threshold: float = 0.95, rho: float = 0.0) -> float:
    """The smallest mean paired difference (in absolute value) that :func:`verdict` calls better (or worse) at
    ``n`` pairs with this paired SD: rope + t(threshold, n-1) * sd * sqrt(1/n + rho/(1-rho)). What a budget could
    decide, in the verdict's own terms (the resplit correction included). Fewer than 2 pairs: inf; sd 0: rope."""
    _check_decision(rope, threshold, rho)
    if math.isnan(sd_paired):
        return NAN
    if n < 2:
        return math.inf
    return rope + float(special.stdtrit(n - 1, threshold)) * sd_paired * math.sqrt(1 / n + rho / (1 - rho))


def race_open(diffs: Sequence[float], min_seeds: int, max_seeds: int, rope: float = 0.02,
              threshold: float = 0.95, rho: float = 0.0) -> bool:
    """Whether an approach's race against ``baseline`` goes on for another paired seed.

    Open below ``min_seeds`` pairs (nothing is decided before), closed at ``max_seeds``, and in
    between open while :func:`verdict` is undecided. The race stops at the first decided look, so
    its false-decision rate is above the single look's; tests/test_stats.py measures it under a null.
    """
    if not 1 <= min_seeds <= max_seeds:
        raise ValueError(f"`1 <= min_seeds <= max_seeds` must hold, but got min_seeds={min_seeds}, "
                         f"max_seeds={max_seeds}")
    n = len(diffs)
    if n < min_seeds:
        return True
    if n >= max_seeds:
        return False
    return verdict(diffs, rope, threshold, rho).verdict == UNDECIDED


def paired_tests(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """``(p_ttest, p_wilcoxon)``, two-sided, of ``a`` against ``b`` paired by position (by seed).

    NaN for both with fewer than two pairs or when every difference is zero (undefined tests).
    The Wilcoxon signed-rank test drops zero differences (scipy's default ``zero_method='wilcox'``);
    with 5 pairs its smallest two-sided p is 0.0625, so it can support but never alone reach 0.05.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired tests need as many values in a as in b, but got {x.size} and {y.size}")
    d = x - y
    if d.size < 2 or not np.any(d):
        return NAN, NAN
    return float(stats.ttest_rel(x, y).pvalue), float(stats.wilcoxon(d).pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given.

    Sorted ascending, ``p_(i)`` becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))`` (j from 1). NaN
    entries (tests that could not run) stay NaN and do not count in the family size m.
    """
    p = np.asarray(pvalues, dtype=float)
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1], but got {p.tolist()}")
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = order.size, 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (m - j) * p[i]))  # monotone: never below an earlier step
        out[i] = running
    return out.tolist()


def min_detectable_difference(sd_paired: float, n: int, alpha: float = 0.05, power: float = 0.8,
                              comparisons: int = 1) -> float:
    """The smallest true mean paired difference a two-sided paired t-test over ``n`` pairs detects with
    probability ``power``, at level ``alpha / comparisons`` (Holm's first, strictest step: the worst case).

    Exact: the test statistic follows scipy's noncentral t (df n-1, noncentrality delta sqrt(n) / sd),
    solved for delta by root finding; no normal approximation. Fewer than 2 pairs: inf; sd 0: 0.
    """
    if not (0 < alpha < 1 and 0 < power < 1 and comparisons >= 1):
        raise ValueError(f"need 0 < alpha < 1, 0 < power < 1, comparisons >= 1, but got alpha={alpha}, "
                         f"power={power}, comparisons={comparisons}")
    if math.isnan(sd_paired):
        return NAN
    if n < 2:
        return math.inf
    if sd_paired == 0:
        return 0.0
    df, level = n - 1, alpha / comparisons
    crit = stats.t.ppf(1 - level / 2, df)

    def shortfall(effect: float) -> float:  # power at a standardised effect, minus the target
        nc = effect * math.sqrt(n)
        wrong_side = float(stats.nct.cdf(-crit, df, nc))  # scipy answers NaN once it underflows
        return float(stats.nct.sf(crit, df, nc)) + (0.0 if math.isnan(wrong_side) else wrong_side) - power

    high = 1.0
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-10)) * sd_paired


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence | None = None) -> float:
    """Macro-F1 over ``labels`` (default: every label in either array), an absent class scoring 0.

    Matches ``sklearn.metrics.f1_score(average='macro', labels=labels, zero_division=0)``.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = np.union1d(y_true, y_pred) if labels is None else labels
    scores = []
    for label in labels:
        t, p = y_true == label, y_pred == label
        tp = np.count_nonzero(t & p)
        denom = np.count_nonzero(t) + np.count_nonzero(p)
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def _f1_of_confusions(conf: np.ndarray) -> np.ndarray:
    """Macro-F1 of confusion matrices ``(..., k, k)`` (true, predicted); an absent class scores 0."""
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    denom = conf.sum(-1) + conf.sum(-2)
    return np.divide(2 * tp, denom, out=np.zeros(denom.shape), where=denom > 0).mean(-1)


def _cells(labels: np.ndarray, *columns: np.ndarray) -> np.ndarray:
    """Each image's joint cell (true, pred_a[, pred_b]) as one integer in base k."""
    k, cell = labels.size, np.zeros(columns[0].shape, dtype=np.int64)
    for col in columns:
        cell = cell * k + np.searchsorted(labels, col)
    return cell


def _aligned(*arrays: Sequence) -> list[np.ndarray]:
    out = [np.asarray(a) for a in arrays]
    if any(a.ndim != 1 or a.shape != out[0].shape for a in out) or out[0].size < 2:
        raise ValueError("y_true and the predictions must be 1-d of one length >= 2, but got shapes "
                         + ", ".join(str(a.shape) for a in out))
    return out


def two_level_bootstrap(y_true: Sequence[Sequence], pred_a: Sequence[Sequence], pred_b: Sequence[Sequence],
                        n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(delta, low, high)``: the mean over seeds of macro-F1(a) - macro-F1(b) and its percentile interval
    from a two-level bootstrap (widened to t tails, see below): resample the seeds (pairs) with replacement,
    then the test images within each drawn seed (a and b on the same images), so both the seed-to-seed and the
    test-split variance are in it (pooling every seed's images and resampling rows leaves the first out).

    One entry per seed in each argument (seeds may have different test splits and sizes). Vectorised:
    an image resample of a seed is a multinomial draw over its (true, a, b) cells, so no loop runs
    over resamples. Macro-F1 is over the labels seen anywhere, fixed for every resample.
    """
    if not len(y_true) == len(pred_a) == len(pred_b) or len(y_true) < 2:
        raise ValueError(f"the two-level bootstrap needs >= 2 seeds with y_true, pred_a and pred_b each, but got "
                         f"{len(y_true)}, {len(pred_a)}, {len(pred_b)}")
    seeds = [_aligned(t, a, b) for t, a, b in zip(y_true, pred_a, pred_b, strict=False)]
    labels = np.unique(np.concatenate([np.concatenate(s) for s in seeds]))
    cells = [_cells(labels, *s) for s in seeds]
    used = np.unique(np.concatenate(cells))  # the joint cells that occur: at most k^3, often far fewer
    freq = np.stack([np.bincount(np.searchsorted(used, c), minlength=used.size) / c.size for c in cells])
    sizes = np.array([c.size for c in cells])
    k = labels.size
    true, a, b = used // (k * k), used // k % k, used % k
    to_a = np.zeros((used.size, k * k))
    to_a[np.arange(used.size), true * k + a] = 1
    to_b = np.zeros((used.size, k * k))
    to_b[np.arange(used.size), true * k + b] = 1

    def delta(counts: np.ndarray) -> np.ndarray:  # counts (..., seeds, cells) -> mean F1 difference (...)
        f1a = _f1_of_confusions((counts @ to_a).reshape(*counts.shape[:-1], k, k))
        f1b = _f1_of_confusions((counts @ to_b).reshape(*counts.shape[:-1], k, k))
        return (f1a - f1b).mean(-1)

    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
    boot = delta(rng.multinomial(sizes[drawn], freq[drawn]).astype(float))
    point, n = float(delta(freq * sizes[:, None])), len(seeds)
    # a percentile interval over n seeds has normal tails where the mean of n seeds has t_{n-1} tails, so it
    # undercovers at 5 seeds (10 % false "separated" in tests/test_stats.py's null at seed SD 0.05); widening
    # the deviations by t_{n-1} / z restores the t's width (0.5-2.5 % there). Hesterberg's expanded percentile
    # also widens by sqrt(n/(n-1)) for the plug-in variance; the image level already re-adds the test
    # split's variance that the seeds' spread holds, which covers that (with both: under 1 %, needlessly wide)
    q = 1 - (1 - confidence) / 2
    widen = stats.t.ppf(q, n - 1) / stats.norm.ppf(q)
    low, high = point + widen * (np.percentile(boot, [100 * (1 - q), 100 * q]) - point)
    return point, float(low), float(high)


def test_sampling_error(y_true: Sequence, y_pred: Sequence, n_boot: int = 2000, seed: int = 0) -> float:
    """The standard error of macro-F1 that the test split's finite size alone causes: the SD of macro-F1
    over bootstrap resamples of the test images (vectorised as multinomial draws over confusion cells).
    The noise floor: no comparison on this split resolves differences much below it."""
    t, p = _aligned(y_true, y_pred)
    labels = np.union1d(t, p)
    k, cells = labels.size, _cells(labels, t, p)
    used, counts = np.unique(cells, return_counts=True)
    to_conf = np.zeros((used.size, k * k))
    to_conf[np.arange(used.size), used] = 1
    draws = np.random.default_rng(seed).multinomial(t.size, counts / t.size, size=n_boot).astype(float)
    return float(_f1_of_confusions((draws @ to_conf).reshape(n_boot, k, k)).std(ddof=1))


test_sampling_error.__test__ = False  # type: ignore[attr-defined]  # a statistic, not a pytest test
