"""Run a validated study plan: one Ray Tune run in which every approach has its own Optuna search and
its own ASHA (side by side), MLflow tracking, each approach's best checkpoint on the test split,
then results/<space>/."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.fs
import torch
from optuna.samplers import TPESampler
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from study.data import Dataset
from study.loop import evaluate
from study.pruning import KeepBestCheckpoints, rank
from study.report import write_report
from study.search import PerApproachScheduler, PerApproachSearch
from study.spaces import Space
from study.tracking import MLflowCallback, Tracker, flat_params
from study.trainable import CHECKPOINT_FILE, build_parts, scored, train_trial

if TYPE_CHECKING:
    from study.tune import Plan


def tracker_settings(plan: "Plan", approach: str) -> dict[str, Any]:
    local = plan.tracking_uri.startswith("sqlite:")
    root = Path(plan.args.results_dir).resolve() / "mlartifacts" if local else None
    return {"uri": plan.tracking_uri, "experiment": plan.space, "study_id": plan.study_id, "approach": approach,
            "artifact_root": root}


def make_tuner(plan: "Plan", data: Dataset, bank: dict) -> tune.Tuner:
    """One Tuner for every approach of the space; each approach has its own Optuna search and its own ASHA."""
    b, a = plan.budget, plan.args
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, data=data, weights=bank),  # into the object store once, shared by trials
        {"cpu": a.cpus_per_trial, "gpu": a.gpus_per_trial},
    )
    path = f"{plan.storage}/{plan.study_id}/{plan.space}"
    if a.resume and tune.Tuner.can_restore(path):
        return tune.Tuner.restore(path, trainable, resume_errored=True)
    searchers, schedulers = {}, {}
    for space in plan.spaces:
        constants = {"approach": space.name, "seed": a.seed, "epochs": b["epochs"], "batch_size": b["batch_size"],
                     "image_size": b["image_size"], "cpus": a.cpus_per_trial, "gpus": a.gpus_per_trial}
        # TPE models the results after a third of the budget; before that it samples at random
        tpe = TPESampler(seed=a.seed, n_startup_trials=max(2, b["num_samples"] // 3))
        searchers[space.name] = OptunaSearch(space.define_by_run(constants), metric="macro_f1", mode="max", sampler=tpe)
        schedulers[space.name] = ASHAScheduler(metric="macro_f1", mode="max", time_attr="training_iteration", max_t=b["epochs"],
                                               grace_period=min(b["grace_period"], b["epochs"]),
                                               reduction_factor=b["reduction_factor"])
    callbacks = [MLflowCallback(tracker_settings(plan, s.name), list(data.classes), b["epochs"]) for s in plan.spaces]
    callbacks.append(KeepBestCheckpoints())
    return tune.Tuner(
        trainable,
        # Locally a finished trial's process serves the next trial instead of importing torch again (seconds a
        # trial); on a cluster every trial gets a fresh actor, so that trials spread over the nodes.
        tune_config=tune.TuneConfig(search_alg=PerApproachSearch(searchers, b["num_samples"], "macro_f1", "max"),
                                    scheduler=PerApproachScheduler(schedulers, "macro_f1"), reuse_actors=a.address is None,
                                    num_samples=b["num_samples"] * len(plan.spaces), max_concurrent_trials=a.max_concurrent),
        run_config=tune.RunConfig(
            name=plan.space,
            storage_path=f"{plan.storage}/{plan.study_id}",
            callbacks=callbacks,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="macro_f1",
                                                    checkpoint_score_order="max"),
            failure_config=tune.FailureConfig(max_failures=3),
            verbose=1,  # the status table only; every metric is in MLflow
        ),
    )


def test_best(best: tune.Result, data: Dataset, bank: dict) -> dict[str, Any]:
    """The best trial's best-epoch checkpoint on the held-out test split: touched once, here."""
    checkpoint = best.get_best_checkpoint("macro_f1", "max")
    parts = build_parts(best.config, data, bank)
    with checkpoint.as_directory() as d:
        state = torch.load(Path(d) / CHECKPOINT_FILE, map_location=parts.device, weights_only=True)
    parts.model.load_state_dict(state["model"])
    result = evaluate(parts.model, data.test.images, data.test.labels, parts.loss, batch_size=256, norm=parts.norm,
                      device=parts.device)
    epoch_of = {id(c): m for c, m in best.best_checkpoints}
    return {"epoch": state["epoch"], "val": epoch_of.get(id(checkpoint), best.metrics),
            "test": scored(result, data.classes, parts.costs)}


def has_best_checkpoint(result: tune.Result) -> bool:
    """Whether the trial's best checkpoint is still on the storage (KeepBestCheckpoints deletes losers')."""
    checkpoint = result.get_best_checkpoint("macro_f1", "max") if result.best_checkpoints else None
    return checkpoint is not None and checkpoint.filesystem.get_file_info(checkpoint.path).type != pyarrow.fs.FileType.NotFound


def best_value(result: tune.Result) -> float:
    frame = result.metrics_dataframe
    return float(frame["macro_f1"].max()) if frame is not None and "macro_f1" in frame else float("-inf")


def finish_approach(space: Space, results: list[tune.Result], finished: bool, tracker: Tracker, data: Dataset,
                    bank: dict) -> dict[str, Any] | None:
    """Close the approach's child runs; give its parent run the best trial and its test-split metrics."""
    statuses = {r.metrics.get("trial_id", ""): ("FAILED" if r.error else "FINISHED") for r in results}
    tracker.close_children(statuses)
    reported = sorted(((rank(value, r.metrics["trial_id"]), r) for r in results if (value := best_value(r)) > float("-inf")),
                      key=lambda pair: pair[0], reverse=True)  # by the rank KeepBestCheckpoints keeps checkpoints by
    best = next((r for _, r in reported if has_best_checkpoint(r)), None)
    if not finished or best is None:
        tracker.end(tracker.parent_id, "KILLED" if not finished else "FAILED")
        return None
    outcome = test_best(best, data, bank)
    params = {f"best.{k}": v for k, v in flat_params(best.config).items()}
    client, run = tracker.client, tracker.parent_id
    for key, value in params.items():
        client.log_param(run, key, value[:6000])
    val = {k: v for k, v in outcome["val"].items() if k.startswith(("macro_f1", "val_", "train_"))}
    test = {f"test_{k}": v for k, v in outcome["test"].items() if k != "confusion"}
    for key, value in {**val, **test, "best_epoch": outcome["epoch"]}.items():
        if isinstance(value, (int, float)):
            client.log_metric(run, key, float(value))
    client.log_dict(run, best.config, "best_config.json")
    tracker.log_artifacts(run, {f"test_{k}": v for k, v in outcome["test"].items()}, list(data.classes), prefix="test_")
    tracker.end(run, "FINISHED", {"best_trial_id": best.metrics["trial_id"], "best_run_id": tracker.run_of(best.metrics["trial_id"]),
                                  "trials": str(len(results)), "data": data.name, "searched": ",".join(space.params)})
    return {"approach": space.name, "config": best.config, "macro_f1": outcome["val"]["macro_f1"],
            "test_macro_f1": outcome["test"]["macro_f1"], "epoch": outcome["epoch"]}


def run_approaches(plan: "Plan", data: Dataset, bank: dict) -> list[dict[str, Any] | None]:
    trackers = {s.name: Tracker(**tracker_settings(plan, s.name)) for s in plan.spaces}  # parent runs first
    grid = make_tuner(plan, data, bank).fit()
    finished = grid.num_terminated + grid.num_errors == len(grid) and grid.num_terminated > 0
    return [finish_approach(s, [r for r in grid if r.config.get("approach") == s.name], finished, trackers[s.name], data, bank)
            for s in plan.spaces]


def init_ray(address: str | None) -> None:
    import ray

    # A fresh local instance unless told to join one: a plain ray.init() would attach to whatever
    # /tmp/ray/ray_current_cluster names, and hang for ever when that cluster is dead.
    ray.init(address=address or "local", dashboard_host="127.0.0.1", include_dashboard=False if not address else None,
             logging_level="WARNING")


class ClusterError(RuntimeError):
    """A setting that cannot work on a multi-node cluster: a clear one-line message."""


def storage_seen_by(storage: str, node_ids: list[str]) -> dict[str, bool]:
    """Which nodes see a marker file the driver writes into ``storage`` (one Ray task per node)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = Path(storage) / f".shared-storage-check-{os.getpid()}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by the study driver\n")
    try:
        probe = ray.remote(num_cpus=0)(os.path.exists)
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(str(marker))
                for n in node_ids]
        return dict(zip(node_ids, ray.get(refs, timeout=120)))
    finally:
        marker.unlink()


def check_cluster(plan: "Plan") -> None:
    """Guard rails for multi-node clusters, checked before any trial starts."""
    import ray

    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    if plan.args.gpus_per_trial > 0 and ray.cluster_resources().get("GPU", 0) < plan.args.gpus_per_trial:
        raise ClusterError(f"--gpus-per-trial {plan.args.gpus_per_trial} asked for, but the Ray cluster has "
                           f"{ray.cluster_resources().get('GPU', 0)} GPUs")
    if len(nodes) < 2:
        return
    if plan.tracking_uri.startswith("sqlite:"):
        raise ClusterError(f"a {len(nodes)}-node cluster with tracking URI {plan.tracking_uri}: start an MLflow tracking "
                           "server on the head node and pass --tracking-uri http://<head-private-ip>:5000")
    if "://" not in plan.storage:
        blind = [n[:8] for n, seen in storage_seen_by(plan.storage, nodes).items() if not seen]
        if blind:
            raise ClusterError(f"storage path {plan.storage} is local to the driver (nodes {', '.join(blind)} cannot see it); "
                               "a multi-node study needs shared storage: --storage-path s3://bucket/path or an NFS mount")


def run_study(plan: "Plan", data: Dataset, bank: dict) -> int:
    import ray

    # A checkpoint every epoch with num_to_keep=2 forces a (small, cheap) experiment-state snapshot every
    # other epoch; Ray warns about each one, burying the progress table.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    init_ray(plan.args.address)
    outcomes = []
    try:
        try:
            check_cluster(plan)
        except ClusterError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        outcomes = run_approaches(plan, data, bank)
    finally:
        ray.shutdown()
    out = write_report(plan.tracking_uri, plan.space, Path(plan.args.results_dir) / plan.space, plan.study_id)
    for o in filter(None, outcomes):
        searched = {k: o["config"][k] for k in next(s for s in plan.spaces if s.name == o["approach"]).params if k in o["config"]}
        print(f"best {o['approach']}: validation macro-F1 {o['macro_f1']:.4f} (epoch {o['epoch']}), "
              f"test macro-F1 {o['test_macro_f1']:.4f}, config {searched}")
    print(f"summary: {out}")
    return 0 if all(outcomes) else 1
