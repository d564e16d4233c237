"""The third seed's experiment as a Ray Tune study whose trials are cost matrices.

    python -m costsens.tune --dataset glass --num-samples 12

Each trial draws one cost matrix of a kind (none, consistent, inconsistent) with the paper's
generator, trains the entropy tree with it (direct rescaling, or one-vs-one when inconsistent)
on ``--repetitions`` stratified 1:1 splits, and reports, per repetition, accuracy and recall /
precision of the smallest class and the expected cost. MLflow gets a parent run per study, opened
before the trials (the mean of each kind), and a child run per matrix (step = repetition), written
by the driver once the trials are done. Ctrl-C or SIGTERM stops the study: its parent run ends
KILLED, exit 130 / 143; a study of seconds to minutes is rerun, not resumed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from costsens import cli, tabular
from study import paths
from study.errors import Parser, StudyError, fail

KINDS = ("none", "consistent", "inconsistent")
SUMMARY = ("test_accuracy", "test_minority_recall", "test_minority_precision", "test_expected_cost")
EXPERIMENT = "cost_matrices"  # the MLflow experiment
DEFAULT_TRACKING_URI = "sqlite:///results/mlflow.db"  # the image study's default: one MLflow store for both
DEFAULT_STORAGE = Path("results/ray")
ARTIFACTS = Path("results/mlartifacts")  # where a sqlite store keeps artifacts, as in the image study
BATCH = 1000  # MLflow's most metrics per log_batch


def parser() -> Parser:
    ap = Parser(prog="python -m costsens.tune", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="glass",
                    help=f"packaged data set: {', '.join(tabular.DATASETS)} (default glass, 6 classes); or --ann-dir")
    ap.add_argument("--ann-dir", type=Path, default=None, help="folder with the paper's ann-train.data / ann-test.data")
    ap.add_argument("--num-samples", type=int, default=4, help="matrices per kind (default 4)")
    ap.add_argument("--repetitions", type=int, default=5, help="stratified 1:1 splits per matrix (default 5)")
    ap.add_argument("--seed", type=int, default=0, help="seed of splits and trees; matrices draw from their own seeds")
    ap.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI,
                    help=f"MLflow tracking URI (default {DEFAULT_TRACKING_URI})")
    ap.add_argument("--storage-path", type=Path, default=DEFAULT_STORAGE,
                    help=f"Ray Tune storage (default {DEFAULT_STORAGE})")
    return ap


def db_folder(uri: str) -> Path | None:
    """The folder of a ``sqlite:///`` URI's file, which the study makes when missing (as it does the storage)."""
    db = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
    try:
        return Path(db).expanduser().resolve().parent if db else None
    except (RuntimeError, OSError):  # a symlink loop: study.paths names it
        return None


def checked(argv: Sequence[str]) -> tuple[argparse.Namespace, tabular.Table]:
    """Parse and check every flag, then read the data set: all before Ray, MLflow and scikit-learn load."""
    args = parser().parse_args(argv)
    cli.at_least("--num-samples", args.num_samples, 1)
    cli.at_least("--repetitions", args.repetitions, 1)
    cli.seed(args.seed)
    args.storage_path = paths.output_folder(args.storage_path, "--storage-path")
    args.tracking_uri = paths.tracking_uri(args.tracking_uri, creates=db_folder(args.tracking_uri))  # made absolute
    table = tabular.read_ann(args.ann_dir.expanduser()) if args.ann_dir else tabular.load(args.dataset)
    return args, table


class Pause:
    """SIGINT and SIGTERM stop the study: SIGTERM raises KeyboardInterrupt as SIGINT does (an ignored SIGINT, a
    background job's, stays ignored); after :meth:`defer` (the finish, the clean-up) a signal is only recorded.
    Inside ``Tuner.fit`` (``in_fit``) the signal goes to the handler Ray Tune keeps on SIGUSR1, which ends the fit
    through Ray's own stop, and :func:`fit` raises after it, as ``study.tune``'s interrupts do, instead of an
    exception raised wherever Ray's loop happens to be."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferring = False
        self.in_fit = False
        self._previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signum = self.signum or signum
        if self.deferring:
            return
        ray_handler = signal.getsignal(signal.SIGUSR1) if self.in_fit else None
        if callable(ray_handler):  # set once the fit's loop starts
            ray_handler(signal.SIGUSR1, frame)
            return
        raise KeyboardInterrupt

    def install(self) -> None:
        """Handle SIGTERM and SIGINT (again after ``ray.init``, which sets a SIGTERM handler that exits)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        if self._previous[signal.SIGINT] is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, self._on_signal)

    def defer(self) -> None:
        self.deferring = True
        signal.signal(signal.SIGTERM, self._on_signal)
        if self._previous[signal.SIGINT] is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, self._on_signal)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def code(self) -> int:
        """130 for SIGINT (Python's KeyboardInterrupt records nothing), 143 for SIGTERM."""
        return 128 + (self.signum or signal.SIGINT)


def new_study_id(dataset: str) -> str:
    """Unique even for two studies started in the same second (a random suffix): they would share one Ray folder."""
    return f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def kinds_of(table: tabular.Table) -> list[str]:
    return [k for k in KINDS if k != "inconsistent" or len(table.classes) >= 3]  # every 2x2 matrix is consistent


def log_runs(client: Any, experiment: str, parent_id: str, study_id: str, table: tabular.Table,
             grid: Any) -> dict[str, dict[str, float]]:
    """One child run per matrix with its metrics per repetition under the parent, which gets the means per kind
    and ends; the means."""
    from mlflow.entities import Metric, Param

    tags = {"study_id": study_id, "approach": table.name}
    means: dict[str, dict[str, float]] = {}
    for kind in kinds_of(table):
        results = [r for r in grid if r.config["kind"] == kind]
        for n, result in enumerate(results):
            child = client.create_run(experiment, run_name=f"{kind}-{n}", tags={
                **tags, "role": "child", "mlflow.parentRunId": parent_id,
                "trial_id": str(result.metrics.get("trial_id", ""))})
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
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, table = checked(argv)
    except StudyError as err:
        return fail(err)
    return run(args, table, argv)


def run(args: argparse.Namespace, table: tabular.Table, argv: list[str]) -> int:
    """The study: the parent run first, then the trials, then a child run per matrix. SIGINT or SIGTERM stops it
    (parent KILLED, exit 130/143; nothing resumes it, the line says what to rerun); a signal during the
    finish (logging the trials' runs) waits until the finish is done."""
    from study import store

    pause = Pause()
    pause.install()
    uri, parent = args.tracking_uri, None
    study_id = new_study_id(table.name)
    try:
        store.prepare_store(uri)  # created and migrated once, under a lock: two first runs at once race otherwise
        client = store.client(uri)
        experiment = store.ensure_experiment(client, EXPERIMENT, ARTIFACTS if uri.startswith("sqlite:") else None)
        tags = {"study_id": study_id, "approach": table.name, "role": "parent"}
        parent = client.create_run(experiment, run_name=f"{table.name} · {study_id}", tags=tags).info.run_id
        grid = fit(args, table, study_id, pause)
        pause.defer()
        means = log_runs(client, experiment, parent, study_id, table, grid)
    except KeyboardInterrupt:
        pause.defer()  # a second Ctrl-C must not break the clean-up
        if parent is not None:
            store.end_run(uri, parent, "KILLED")
        print(f"interrupted: costsens.tune study {study_id} stopped, its parent run KILLED; it does not resume: rerun "
              f"`python -m costsens.tune {shlex.join(argv)}` for a new study", file=sys.stderr)
        return pause.code
    except BaseException:
        if parent is not None:
            store.end_run(uri, parent, "FAILED")
        raise
    finally:
        pause.restore()
    print(f"{table.name}: mean over matrices and repetitions "
          "(accuracy / minority recall / minority precision / expected cost)")
    for kind, values in means.items():
        print(f"  {kind:13s} " + " / ".join(f"{v:.4f}" for v in values.values()))
    return 0 if grid.num_errors == 0 else 1


def fit(args: argparse.Namespace, table: tabular.Table, study_id: str, pause: Any) -> Any:
    """The Tune study's ResultGrid; Ray runs only inside this call."""
    import ray  # Ray and scikit-learn load only once the flags are good
    from ray import tune

    from costsens.experiment import matrix_trial

    # Ray Tune's own SIGINT handler ends fit() normally, as if the study were done: ours raises KeyboardInterrupt
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    # workers' own output (a worker's exit traceback when a stop ends it mid-trial) stays in Ray's session logs
    ray.init(address="local", include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        pause.install()  # ray.init replaced the SIGTERM handler with one that exits
        tuner = tune.Tuner(
            tune.with_parameters(matrix_trial, table=table),
            param_space={"kind": tune.grid_search(kinds_of(table)), "matrix_seed": tune.randint(0, 2**31 - 1),
                         "seed": args.seed, "repetitions": args.repetitions, "dataset": table.name},
            tune_config=tune.TuneConfig(num_samples=args.num_samples),
            run_config=tune.RunConfig(name=study_id, storage_path=str(args.storage_path), verbose=1),
        )
        pause.in_fit = True
        try:
            grid = tuner.fit()
        finally:
            pause.in_fit = False
        if pause.signum is not None:
            raise KeyboardInterrupt  # the fit ended because of the signal
        return grid
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
