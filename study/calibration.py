"""How far to trust predicted probabilities: top-label ECE, the Brier score, temperature scaling, a reliability diagram.

Minimum-expected-cost decisions assume calibrated probabilities, and reweighting or resampling distort them
(Guo et al. 2017, "On Calibration of Modern Neural Networks"; Tian et al. 2020). numpy only; scipy for the
one-dimensional temperature search and matplotlib for the diagram load on first use.

The trial keeps softmax probabilities, not logits: ``log_probs(probs)`` turns them into log-probabilities,
which temperature scaling treats exactly as logits (softmax ignores a constant added to a row).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LOG_T_BOUNDS = (np.log(1e-2), np.log(1e2))  # the temperature search: T in [0.01, 100]


def _check(scores: ArrayLike, y_true: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(y_true)
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] < 2:
        raise ValueError(f"{what} must be n x k with n >= 1 and k >= 2 classes, but got shape {s.shape}")
    if y.shape != (s.shape[0],):
        raise ValueError(f"y_true must hold one label per row of {what} ({s.shape[0]}), but got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= s.shape[1]:
        raise ValueError(f"y_true must be integer labels in [0, {s.shape[1] - 1}]")
    return s, y


def _probs(probs: ArrayLike, y_true: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, y = _check(probs, y_true, "probs")
    if (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-3):
        raise ValueError("probs must be non-negative with rows summing to 1 (softmax outputs)")
    return p, y


def reliability_bins(probs: ArrayLike, y_true: ArrayLike, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin ((i-1)/M, i/M]: its count, mean top-label confidence and accuracy."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    p, y = _probs(probs, y_true)
    conf, correct = p.max(1), (p.argmax(1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)  # right-closed bins
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins: NaN
        confidence = np.bincount(bins, conf, n_bins) / count
        accuracy = np.bincount(bins, correct, n_bins) / count
    return {"edges": edges, "count": count, "confidence": confidence, "accuracy": accuracy}


def expected_calibration_error(probs: ArrayLike, y_true: ArrayLike, n_bins: int = 15) -> float:
    """Top-label ECE (Guo et al. 2017): sum over bins of |B|/n * |accuracy(B) - confidence(B)|."""
    b = reliability_bins(probs, y_true, n_bins)
    filled = b["count"] > 0
    gaps = np.abs(b["accuracy"][filled] - b["confidence"][filled])
    return float((b["count"][filled] * gaps).sum() / b["count"].sum())


def brier_score(probs: ArrayLike, y_true: ArrayLike) -> float:
    """Multi-class Brier score: mean over samples of sum_k (p_k - [y = k])^2, in [0, 2]."""
    p, y = _probs(probs, y_true)
    onehot = np.eye(p.shape[1])[y]
    return float(((p - onehot) ** 2).sum(1).mean())


def log_probs(probs: ArrayLike, floor: float = 1e-12) -> np.ndarray:
    """log of softmax probabilities, floored so that a probability rounded to 0 stays finite."""
    return np.log(np.maximum(np.asarray(probs, dtype=np.float64), floor))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def apply_temperature(logits_or_log_probs: ArrayLike, temperature: float) -> np.ndarray:
    """softmax(z / T): the calibrated probabilities."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits_or_log_probs, dtype=np.float64)
    return np.exp(_log_softmax(z / temperature))


def nll(logits_or_log_probs: ArrayLike, y_true: ArrayLike, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(z / T) at the true labels."""
    z, y = _check(logits_or_log_probs, y_true, "logits")
    return float(-_log_softmax(z / temperature)[np.arange(len(y)), y].mean())


def fit_temperature(logits_or_log_probs: ArrayLike, y_true: ArrayLike) -> float:
    """The one T > 0 minimising the validation NLL of softmax(z / T) (Guo et al.'s temperature scaling).

    Searched over log T in [log 0.01, log 100] (bounded Brent); a split the model separates perfectly has
    its optimum at T -> 0 and gets a temperature near the bound 0.01 (its NLL is flat at 0 there)."""
    from scipy.optimize import minimize_scalar  # scipy loads only when a study calibrates

    z, y = _check(logits_or_log_probs, y_true, "logits")
    if not np.isfinite(z).all():
        raise ValueError("logits must be finite (take log_probs(probs) of probabilities, which floors zeros)")
    rows = np.arange(len(y))
    res = minimize_scalar(lambda log_t: -_log_softmax(z / np.exp(log_t))[rows, y].mean(),
                          bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def reliability_diagram(probs: ArrayLike, y_true: ArrayLike, n_bins: int = 15, title: str = "") -> Figure:
    """Accuracy per confidence bin against the diagonal of perfect calibration, with each bin's share of samples."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    b = reliability_bins(probs, y_true, n_bins)
    ece = expected_calibration_error(probs, y_true, n_bins)
    width, centres = 1.0 / n_bins, (b["edges"][:-1] + b["edges"][1:]) / 2
    fig = Figure(figsize=(4.5, 5.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    filled = b["count"] > 0
    top.bar(centres[filled], b["accuracy"][filled], width=width, edgecolor="black", color="tab:blue", label="accuracy")
    top.bar(centres[filled], b["confidence"][filled] - b["accuracy"][filled], bottom=b["accuracy"][filled],
            width=width, color="tab:red", alpha=0.3, hatch="//", label="gap to confidence")
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    top.set(ylim=(0, 1), ylabel="accuracy", title=f"{title + ': ' if title else ''}ECE {ece:.3f}")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(centres, b["count"] / b["count"].sum(), width=width, edgecolor="black", color="grey")
    bottom.set(xlim=(0, 1), xlabel="top-label confidence", ylabel="share")
    return fig
