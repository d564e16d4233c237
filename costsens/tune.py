"""The third seed's experiment as a Ray Tune study whose trials are cost matrices.

    python -m study.cost_tune --dataset glass --num-samples 12

Each trial draws one cost matrix of a kind (none, consistent, inconsistent) with the paper's
generator, trains the entropy tree with it (direct rescaling, or one-vs-one when inconsistent)
on ``--repetitions`` stratified 1:1 splits, and reports, per repetition, accuracy and recall /
precision of the smallest class and the expected cost. MLflow gets a parent run per study and a
child run per matrix, through the same driver-side tracker as the image study.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from study import costs as C
from study import tabular
from study.costs_report import EntropyTree
from study.tracking import DEFAULT_TRACKING_URI, TrackingError, absolute_uri, check_tracking_uri

KINDS = ("none", "consistent", "inconsistent")


def evaluate_matrix(config: dict[str, Any], table: tabular.Table, repetition: int) -> dict[str, float]:
    """One repetition: split, fit with this trial's matrix, score on the held-out half."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
    from sklearn.model_selection import train_test_split

    X_tr, X_te, y_tr, y_te = train_test_split(table.X, table.y, test_size=0.5, stratify=table.y,
                                              random_state=config["seed"] + repetition)
    counts = np.bincount(y_tr, minlength=len(table.classes))
    small = int(np.argmin(counts))
    rng = np.random.default_rng(config["matrix_seed"])  # the trial is one matrix: the same in every repetition
    kind = "consistent" if config["kind"] == "none" else config["kind"]
    cm = C.random_cost_matrix(counts, rng, kind=kind)
    make = lambda: EntropyTree(config["seed"])  # noqa: E731
    model = make().fit(X_tr, y_tr) if config["kind"] == "none" else C.fit_cost_sensitive(make, X_tr, y_tr, cm)
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
    from ray import tune

    for repetition in range(config["repetitions"]):
        tune.report(evaluate_matrix(config, table, repetition))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m study.cost_tune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="glass", help="glass (6 classes, default) or hypothyroid (2); or --ann-dir")
    ap.add_argument("--ann-dir", type=Path, default=None, help="folder with the paper's ann-train.data / ann-test.data")
    ap.add_argument("--num-samples", type=int, default=4, help="matrices per kind (default 4)")
    ap.add_argument("--repetitions", type=int, default=5, help="stratified 1:1 splits per matrix (default 5)")
    ap.add_argument("--seed", type=int, default=0, help="seed of splits and trees; matrices draw from their own seeds")
    ap.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help=f"MLflow tracking URI (default {DEFAULT_TRACKING_URI})")
    ap.add_argument("--storage-path", default="results/ray", help="Ray Tune storage (default results/ray)")
    args = ap.parse_args(argv)
    try:
        if args.num_samples < 1 or args.repetitions < 1:
            raise ValueError("--num-samples and --repetitions must be >= 1")
        table = tabular.read_ann(args.ann_dir) if args.ann_dir else tabular.load(args.dataset)
        uri = absolute_uri(args.tracking_uri)
        check_tracking_uri(uri)
    except (ValueError, OSError, TrackingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import ray
    from ray import tune

    from study.tracking import MLflowCallback, Tracker

    kinds = [k for k in KINDS if k != "inconsistent" or len(table.classes) >= 3]  # every 2x2 matrix is consistent
    study_id = f"{table.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    settings = {"uri": uri, "experiment": "cost_matrices", "study_id": study_id, "approach": table.name,
                "artifact_root": Path("results/mlartifacts").resolve() if uri.startswith("sqlite:") else None}
    tracker = Tracker(**settings)
    ray.init(address="local", include_dashboard=False, logging_level="WARNING")
    try:
        grid = tune.Tuner(
            tune.with_parameters(matrix_trial, table=table),
            param_space={"kind": tune.grid_search(kinds), "matrix_seed": tune.randint(0, 2**31 - 1),
                         "seed": args.seed, "repetitions": args.repetitions, "dataset": table.name, "approach": table.name},
            tune_config=tune.TuneConfig(num_samples=args.num_samples),
            run_config=tune.RunConfig(name=study_id, storage_path=str(Path(args.storage_path).resolve()), verbose=1,
                                      callbacks=[MLflowCallback(settings, list(table.classes), args.repetitions)]),
        ).fit()
    finally:
        ray.shutdown()
    print(f"{table.name}: mean over matrices and repetitions (accuracy / minority recall / minority precision / expected cost)")
    for kind in kinds:
        frames = [r.metrics_dataframe for r in grid if r.config["kind"] == kind and r.metrics_dataframe is not None]
        means = {m: float(np.mean([f[m].mean() for f in frames])) for m in
                 ("test_accuracy", "test_minority_recall", "test_minority_precision", "test_expected_cost")}
        for m, v in means.items():
            tracker.client.log_metric(tracker.parent_id, f"{kind}.{m}", v)
        print(f"  {kind:13s} " + " / ".join(f"{v:.4f}" for v in means.values()))
    tracker.end(tracker.parent_id, "FINISHED" if grid.num_errors == 0 else "FAILED", {"trials": str(len(grid))})
    return 0 if grid.num_errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
