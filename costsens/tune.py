"""The third seed's experiment as a Ray Tune study whose trials are cost matrices.

    python -m costsens.tune --dataset glass --num-samples 12

Each trial draws one cost matrix of a kind (none, consistent, inconsistent) with the paper's
generator, trains the entropy tree with it (direct rescaling, or one-vs-one when inconsistent)
on ``--repetitions`` stratified 1:1 splits, and reports, per repetition, accuracy and recall /
precision of the smallest class and the expected cost. MLflow gets a parent run per study (the
mean of each kind) and a child run per matrix (step = repetition), written by the driver once
the trials are done.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from costsens import cli, tabular

KINDS = ("none", "consistent", "inconsistent")
SUMMARY = ("test_accuracy", "test_minority_recall", "test_minority_precision", "test_expected_cost")
EXPERIMENT = "cost_matrices"  # the MLflow experiment
DEFAULT_TRACKING_URI = "sqlite:///results/mlflow.db"  # the image study's default: one MLflow store for both
DEFAULT_STORAGE = Path("results/ray")
ARTIFACTS = Path("results/mlartifacts")  # where a sqlite store keeps artifacts, as in the image study
BATCH = 1000  # MLflow's most metrics per log_batch


def parser() -> cli.Parser:
    ap = cli.Parser(prog="python -m costsens.tune", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="glass",
                    help=f"packaged data set: {', '.join(tabular.DATASETS)} (default glass, 6 classes); or --ann-dir")
    ap.add_argument("--ann-dir", type=Path, default=None, help="folder with the paper's ann-train.data / ann-test.data")
    ap.add_argument("--num-samples", type=int, default=4, help="matrices per kind (default 4)")
    ap.add_argument("--repetitions", type=int, default=5, help="stratified 1:1 splits per matrix (default 5)")
    ap.add_argument("--seed", type=int, default=0, help="seed of splits and trees; matrices draw from their own seeds")
    ap.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help=f"MLflow tracking URI (default {DEFAULT_TRACKING_URI})")
    ap.add_argument("--storage-path", type=Path, default=DEFAULT_STORAGE, help=f"Ray Tune storage (default {DEFAULT_STORAGE})")
    return ap


def checked(argv: Sequence[str]) -> tuple[argparse.Namespace, tabular.Table]:
    """Parse and check every flag, then read the data set: all before Ray, MLflow and scikit-learn load."""
    args = parser().parse_args(argv)
    cli.at_least("--num-samples", args.num_samples, 1)
    cli.at_least("--repetitions", args.repetitions, 1)
    cli.seed(args.seed)
    cli.writable_dir("--storage-path", args.storage_path)
    cli.tracking_uri(args.tracking_uri)
    table = tabular.read_ann(args.ann_dir.expanduser()) if args.ann_dir else tabular.load(args.dataset)
    return args, table


def log_runs(uri: str, study_id: str, table: tabular.Table, grid: Any, kinds: list[str]) -> dict[str, dict[str, float]]:
    """One parent run for the study, one child run per matrix with its metrics per repetition; the means per kind."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(EXPERIMENT)
    location = (ARTIFACTS / EXPERIMENT).resolve().as_uri() if uri.startswith("sqlite:") else None
    experiment = found.experiment_id if found else client.create_experiment(EXPERIMENT, artifact_location=location)
    tags = {"study_id": study_id, "approach": table.name}
    parent = client.create_run(experiment, run_name=f"{table.name} · {study_id}", tags={**tags, "role": "parent"})
    parent_id = parent.info.run_id
    means: dict[str, dict[str, float]] = {}
    for kind in kinds:
        results = [r for r in grid if r.config["kind"] == kind]
        for n, result in enumerate(results):
            child = client.create_run(experiment, run_name=f"{kind}-{n}", tags={
                **tags, "role": "child", "mlflow.parentRunId": parent_id, "trial_id": str(result.metrics.get("trial_id", ""))})
            run_id = child.info.run_id
            frame = result.metrics_dataframe
            metrics = [] if frame is None else [
                Metric(m, float(row[m]), int(row["timestamp"] * 1000), int(row["training_iteration"]))
                for _, row in frame.iterrows() for m in SUMMARY + ("macro_f1",) if m in frame]
            client.log_batch(run_id, params=[Param(k, str(v)) for k, v in result.config.items()])
            for i in range(0, len(metrics), BATCH):
                client.log_batch(run_id, metrics=metrics[i:i + BATCH])
            client.set_terminated(run_id, "FAILED" if result.error else "FINISHED")
        frames = [r.metrics_dataframe for r in results if r.metrics_dataframe is not None]
        if frames:
            means[kind] = {m: float(np.mean([f[m].mean() for f in frames])) for m in SUMMARY}
            for m, v in means[kind].items():
                client.log_metric(parent_id, f"{kind}.{m}", v)
    client.set_tag(parent_id, "trials", str(len(grid)))
    client.set_terminated(parent_id, "FINISHED" if grid.num_errors == 0 else "FAILED")
    return means


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args, table = checked(list(sys.argv[1:] if argv is None else argv))
    except (cli.FlagError, tabular.TabularDataError) as err:
        return cli.fail(err)
    import ray  # Ray, MLflow and scikit-learn load only once the flags are good
    from ray import tune

    from costsens.experiment import matrix_trial

    uri = args.tracking_uri
    db = cli.sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{db}"
    kinds = [k for k in KINDS if k != "inconsistent" or len(table.classes) >= 3]  # every 2x2 matrix is consistent
    study_id = f"{table.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    ray.init(address="local", include_dashboard=False, logging_level="WARNING")
    try:
        grid = tune.Tuner(
            tune.with_parameters(matrix_trial, table=table),
            param_space={"kind": tune.grid_search(kinds), "matrix_seed": tune.randint(0, 2**31 - 1),
                         "seed": args.seed, "repetitions": args.repetitions, "dataset": table.name},
            tune_config=tune.TuneConfig(num_samples=args.num_samples),
            run_config=tune.RunConfig(name=study_id, storage_path=str(args.storage_path.expanduser().resolve()), verbose=1),
        ).fit()
    finally:
        ray.shutdown()
    means = log_runs(uri, study_id, table, grid, kinds)
    print(f"{table.name}: mean over matrices and repetitions (accuracy / minority recall / minority precision / expected cost)")
    for kind, values in means.items():
        print(f"  {kind:13s} " + " / ".join(f"{v:.4f}" for v in values.values()))
    return 0 if grid.num_errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
