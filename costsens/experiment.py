"""The third seed's experiment: an entropy decision tree with and without misclassification costs.

For each data set and repetition: a stratified 1:1 train/test split; the tree trained three ways —
no cost; direct rescaling with a generated *consistent* cost matrix; one-vs-one with a generated
*inconsistent* matrix (three or more classes only) — scored on accuracy, on recall and precision
of the smallest class, and on the expected cost. :func:`run_experiment` is one protocol of
``python -m costsens.report``; :func:`matrix_trial` is one trial of ``python -m costsens.tune``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score
from sklearn.model_selection import train_test_split

from costsens import tabular
from costsens.costs import random_cost_matrix
from costsens.learners import MIN_LEAF_WEIGHT, EntropyTree, OneVsOneCostClassifier, fit_cost_sensitive, fit_rescaled
from study import costs as C

NO_COST, CONSISTENT, INCONSISTENT, OVO_CONTROL, PAPER_CV_ROW = (
    "no cost",
    "consistent cost (direct rescaling)",
    "inconsistent cost (one-vs-one vote)",
    "control: one-vs-one vote, no cost",
    "paper's cv {1; 0.8686; 0.5992} (direct rescaling)",
)
C_PAPER_CV = np.array([1.0000, 0.8686, 0.5992])  # the paper's consistent class-cost vector (TN2)
PROTOCOLS = {"resplit": "new split, new matrices each repetition", "fixed": "one split, matrices redrawn"}
METRICS = ("accuracy", "recall", "precision")


@dataclass
class Score:
    accuracy: float
    recall: float  # of the smallest class
    precision: float  # of the smallest class
    cost_consistent: float  # expected cost per test sample under this repetition's consistent matrix
    cost_inconsistent: float | None  # ... and under its inconsistent one (k >= 3)
    confusion: np.ndarray
    predicted_small: int
    correct_small: int


@dataclass
class Experiment:
    table: tabular.Table
    protocol: str
    repetitions: int
    smallest: int
    settings: list[str]
    scores: dict[str, list[Score]] = field(default_factory=dict)
    matrices: list[dict[str, np.ndarray]] = field(default_factory=list)  # per repetition
    train_counts: list[list[int]] = field(default_factory=list)
    test_counts: list[list[int]] = field(default_factory=list)

    def values(self, setting: str, metric: str) -> np.ndarray:
        return np.array([getattr(s, metric) for s in self.scores[setting]], dtype=float)


def _score(y: np.ndarray, pred: np.ndarray, k: int, small: int, cm_c: np.ndarray, cm_i: np.ndarray | None) -> Score:
    return Score(
        accuracy=float(accuracy_score(y, pred)),
        recall=float(recall_score(y, pred, labels=[small], average=None, zero_division=0)[0]),
        precision=float(precision_score(y, pred, labels=[small], average=None, zero_division=0)[0]),
        cost_consistent=C.expected_cost(y, pred, cm_c),
        cost_inconsistent=None if cm_i is None else C.expected_cost(y, pred, cm_i),
        confusion=confusion_matrix(y, pred, labels=list(range(k))),
        predicted_small=int(np.sum(pred == small)),
        correct_small=int(np.sum((pred == small) & (y == small))),
    )


def run_experiment(
    table: tabular.Table,
    repetitions: int,
    seed: int,
    protocol: str = "resplit",
    min_leaf_weight: float = MIN_LEAF_WEIGHT,
) -> Experiment:
    """Every setting on the same splits and the same generated matrices, ``repetitions`` times."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    k = len(table.classes)
    small = int(np.argmin(table.counts))
    settings = [NO_COST, CONSISTENT] + ([INCONSISTENT, OVO_CONTROL] if k >= 3 else [])
    settings += [PAPER_CV_ROW] if table.name == "ann" and k == len(C_PAPER_CV) else []
    exp = Experiment(table, protocol, repetitions, small, settings, {s: [] for s in settings})
    for rep in range(repetitions):
        # one seed stream per repetition: split, cost matrices and tree never share draws
        split_seed, cost_seed, tree_seed = np.random.SeedSequence([seed, rep]).generate_state(3)
        if protocol == "fixed":  # the paper's no-cost row has no spread: one split, one tree seed
            split_seed, tree_seed = np.random.SeedSequence([seed, 0]).generate_state(3)[[0, 2]]
        X_tr, X_te, y_tr, y_te = train_test_split(
            table.X, table.y, test_size=0.5, stratify=table.y, random_state=int(split_seed)
        )
        counts = np.bincount(y_tr, minlength=k)
        rng = np.random.default_rng(int(cost_seed))
        cm_c = random_cost_matrix(counts, rng, kind="consistent")
        cm_i = random_cost_matrix(counts, rng, kind="inconsistent") if k >= 3 else None
        exp.matrices.append({"consistent": cm_c} | ({"inconsistent": cm_i} if cm_i is not None else {}))
        exp.train_counts.append(counts.tolist())
        exp.test_counts.append(np.bincount(y_te, minlength=k).tolist())
        make: Callable[[], EntropyTree] = lambda: EntropyTree(int(tree_seed) % 2**31, min_leaf_weight)  # noqa: E731, B023 (used in this iteration)
        models: dict[str, Any] = {
            NO_COST: make().fit(X_tr, y_tr),
            CONSISTENT: fit_rescaled(make, X_tr, y_tr, cm_c),
        }
        if cm_i is not None:
            models[INCONSISTENT] = OneVsOneCostClassifier(make, cm_i).fit(X_tr, y_tr)
            # equal costs: every pair unweighted, so the vote's own effect shows apart from the costs'
            models[OVO_CONTROL] = OneVsOneCostClassifier(make, 1 - np.eye(k)).fit(X_tr, y_tr)
        if PAPER_CV_ROW in settings:
            w = C.rescaling_weights(C_PAPER_CV, counts)
            models[PAPER_CV_ROW] = make().fit(X_tr, y_tr, sample_weight=w[y_tr])
        for name, model in models.items():
            exp.scores[name].append(_score(y_te, np.asarray(model.predict(X_te)), k, small, cm_c, cm_i))
    return exp


def paired(exp: Experiment, setting: str, baseline: str, metric: str) -> tuple[float, float, str]:
    """Mean and std of the per-repetition difference in points, and a verdict.

    Both settings saw the same split, matrices and tree seed, so the difference is paired.
    'up' / 'down' when |mean| > 2 std / sqrt(n) (about a 95 % interval), else 'within noise'.
    """
    d = 100 * (exp.values(setting, metric) - exp.values(baseline, metric))
    std = float(d.std(ddof=1)) if len(d) > 1 else 0.0
    half = 2 * std / np.sqrt(len(d))
    verdict = "within noise" if abs(d.mean()) <= half else ("up" if d.mean() > 0 else "down")
    return float(d.mean()), std, verdict


# ---------------------------------------------------------------- the Tune study: one trial = one matrix


def evaluate_matrix(config: dict[str, Any], table: tabular.Table, repetition: int) -> dict[str, float]:
    """One repetition: split, fit with this trial's matrix, score on the held-out half."""
    X_tr, X_te, y_tr, y_te = train_test_split(table.X, table.y, test_size=0.5, stratify=table.y,
                                              random_state=config["seed"] + repetition)
    counts = np.bincount(y_tr, minlength=len(table.classes))
    small = int(np.argmin(counts))
    rng = np.random.default_rng(config["matrix_seed"])  # the trial is one matrix: the same in every repetition
    kind = "consistent" if config["kind"] == "none" else config["kind"]
    cm = random_cost_matrix(counts, rng, kind=kind)
    make = lambda: EntropyTree(config["seed"])  # noqa: E731
    model = make().fit(X_tr, y_tr) if config["kind"] == "none" else fit_cost_sensitive(make, X_tr, y_tr, cm)
    pred = np.asarray(model.predict(X_te))
    return {
        "macro_f1": float(f1_score(y_te, pred, average="macro")),
        "test_accuracy": float(accuracy_score(y_te, pred)),
        "test_minority_recall": float(recall_score(y_te, pred, labels=[small], average=None, zero_division=0)[0]),
        "test_minority_precision": float(precision_score(y_te, pred, labels=[small], average=None, zero_division=0)[0]),
        "test_expected_cost": C.expected_cost(y_te, pred, cm),
    }


def matrix_trial(config: dict[str, Any], table: tabular.Table) -> None:
    """Ray Tune function trainable: one report per repetition (step = repetition)."""
    from ray import tune  # here, not above: the report needs no Ray

    for repetition in range(config["repetitions"]):
        tune.report(evaluate_matrix(config, table, repetition))
