"""The statistics of the verdict: seed intervals, paired tests, Holm's correction, a paired bootstrap.

Every approach's final configuration is retrained over the same N trial seeds; the numbers here
turn those N test scores (and their pooled test predictions) into a mean with a 95 % interval
and paired comparisons against ``baseline``. scipy does the distributions; only Holm's step-down
(which scipy lacks: ``false_discovery_control`` is Benjamini-Hochberg) is written out.

Degenerate inputs give NaN, never an exception or a made-up number: an interval from one value,
a test from fewer than two pairs or from pairs that never differ (all-zero differences leave
both tests undefined: the t statistic is 0/0 and Wilcoxon has no non-zero rank).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

NAN = float("nan")


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """``(mean, sd, low, high)``: Student-t interval of the mean over seeds (sd with ddof=1).

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


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence | None = None) -> float:
    """Macro-F1 over ``labels`` (default: every label in either array), an absent class scoring 0.

    Matches ``sklearn.metrics.f1_score(average='macro', labels=labels, zero_division=0)``; a
    numpy version because the bootstrap calls it thousands of times.
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


def paired_bootstrap(
    y_true: Sequence,
    pred_a: Sequence,
    pred_b: Sequence,
    metric: Callable[..., float] = macro_f1,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """``(delta, low, high)``: ``metric(a) - metric(b)`` on the pooled test predictions and its
    percentile bootstrap interval, each resample drawing the same sample indices for a and b.

    The default metric is macro-F1 over the labels of the whole pool, fixed for every resample
    (a class missing from one resample scores 0 there instead of leaving the average).
    """
    t, a, b = np.asarray(y_true), np.asarray(pred_a), np.asarray(pred_b)
    if not t.shape == a.shape == b.shape or t.ndim != 1:
        raise ValueError(f"y_true, pred_a and pred_b must be 1-d of one length, but got {t.shape}, {a.shape}, {b.shape}")
    if t.size < 2:
        raise ValueError(f"the paired bootstrap needs at least 2 test predictions, but got {t.size}")
    if metric is macro_f1:
        labels = np.union1d(t, np.union1d(a, b))
        metric = lambda yt, yp: macro_f1(yt, yp, labels)  # noqa: E731

    def delta(yt: np.ndarray, ya: np.ndarray, yb: np.ndarray) -> float:
        return metric(yt, ya) - metric(yt, yb)

    result = stats.bootstrap((t, a, b), delta, paired=True, vectorized=False, n_resamples=n_boot,
                             confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    return float(delta(t, a, b)), float(result.confidence_interval.low), float(result.confidence_interval.high)
