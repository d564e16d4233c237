"""Ray Tune behind one door: every use of Ray's APIs and internals by the study lives here.

- ``search`` runs every approach of a study in one Tuner, each with its own Optuna search and its
  own ASHA (side by side: one ASHA across approaches would kill slow starters; one Tuner per
  approach leaves slots idle at each approach's end).
- ``confirm`` retrains given configurations for the full budget, no early stopping.
- Tune callbacks: MLflow child runs (through ``study.store``), checkpoint pruning, a restore from a kept
  checkpoint when the latest is gone, a status line.

What leaves this module is plain data (:class:`Outcome`), never a Ray object; the parts that lean on
Ray internals (the experiment snapshot's format, ``trial.storage``, the Searcher base class) are
tested against a real Tuner in tests/test_engine.py, so a Ray upgrade fails there first.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.stopper import Stopper

from study.errors import StudyError
from study.names import VAL_BRIER, VAL_MACRO_F1
from study.store import Tracker, numeric_metrics

STATE_FILE = "per-approach-search.json"
PENDING_VAR = "TUNE_MAX_PENDING_TRIALS_PG"
USER_PENDING = os.environ.get(PENDING_VAR)  # the user's own setting wins over pending_trials'
MAX_FAILURES = 6  # a trial restarts from its last checkpoint up to this many times (Ray counts across --resume;
#                  the long chaos run lost a trial at 3: results/bench/chaos.md). User errors never retry (FatalStop).
log = logging.getLogger(__name__)


# ---------------------------------------------------------------- Ray itself


def private_temp_dir() -> str:
    """Ray's session folder for a local instance, private to this user (mode 700) and short (its Unix sockets live
    there): trials need AWS variables for S3 storage, and Ray writes the environment into its session logs."""
    path = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / f"ray-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_uid != os.getuid():
        raise StudyError(f"Ray's session folder {path} belongs to another user: set RAY_TMPDIR to a folder of yours")
    path.chmod(0o700)
    return str(path)


def init_ray(address: str | None, verbose: bool = False) -> None:
    """Ray for the study; quiet unless ``verbose``: trial workers' own output (a worker's exit traceback when Ray
    ends a reused actor, per-epoch checkpoint lines) stays in Ray's session logs instead of the terminal. A trial's
    error still reaches the driver through Ray Tune's own error reporting."""
    import ray

    if not address and "RAY_AUTH_MODE" not in os.environ:
        # Token authentication for a new local instance, Ray 2.60's own default, set here rather than left to Ray,
        # which warns about it on every start. RAY_AUTH_MODE in the environment wins (disabled opts out); a cluster
        # sets it on every node (cluster.yaml). Ray reads the mode once at import: this refreshes it, as Ray does.
        from ray._private.authentication.authentication_token_setup import _enable_token_auth

        _enable_token_auth()
    temp_dir = None if address else private_temp_dir()
    # A fresh local instance unless told to join one: a plain ray.init() would attach to whatever
    # /tmp/ray/ray_current_cluster names, and hang for ever when that cluster is dead.
    ray.init(address=address or "local", dashboard_host="127.0.0.1", include_dashboard=False if not address else None,
             logging_level="WARNING", log_to_driver=verbose, _temp_dir=temp_dir,
             runtime_env={"worker_process_setup_hook": "study.engine.quiet_worker"})
    if temp_dir:
        os.chmod(temp_dir, 0o700)  # Ray makes its folder world-writable (shared between users); ours is ours alone


def quiet_worker() -> None:
    """Runs in every Ray worker: Ray's storage module logs "Checkpoint successfully created" per epoch at INFO
    (the logger's name is Ray 2.60's)."""
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)


def shutdown_ray() -> None:
    import ray

    ray.shutdown()


class ClusterError(StudyError):
    """A setting that cannot work on this Ray cluster: a clear one-line message."""


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
        return dict(zip(node_ids, ray.get(refs, timeout=120), strict=False))
    finally:
        marker.unlink()


def resolve_gpus(gpus_per_trial: float | str, image_size: int, batch_size: int) -> float:
    """``auto`` on a cluster: the share of a GPU by image size when the cluster has GPUs, else 0 (the CPU)."""
    import ray

    from study.plan import gpu_share

    if gpus_per_trial != "auto":
        return float(gpus_per_trial)
    return gpu_share(image_size, batch_size) if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def check_cluster(gpus_per_trial: float, cpus_per_trial: float, tracking_uri: str, storage: str) -> None:
    """Guard rails checked once Ray is up, before any trial starts."""
    import ray

    nodes = [n for n in ray.nodes() if n["Alive"]]
    total = ray.cluster_resources()
    if gpus_per_trial > 0 and total.get("GPU", 0) < gpus_per_trial:
        raise ClusterError(f"--gpus-per-trial {gpus_per_trial} asked for, but the Ray cluster has {total.get('GPU', 0)} GPUs")
    if max((n["Resources"].get("CPU", 0) for n in nodes), default=0) < cpus_per_trial:
        raise ClusterError(f"--cpus-per-trial {cpus_per_trial} asked for, but no node of the Ray cluster has that many CPUs")
    if len(nodes) < 2:
        return
    if tracking_uri.startswith("sqlite:"):
        raise ClusterError(f"a {len(nodes)}-node cluster with tracking URI {tracking_uri}: start an MLflow tracking "
                           "server on the head node and pass --tracking-uri http://<head-private-ip>:5000")
    if "://" not in storage:
        blind = [n[:8] for n, seen in storage_seen_by(storage, [n["NodeID"] for n in nodes]).items() if not seen]
        if blind:
            raise ClusterError(f"storage path {storage} is local to the driver (nodes {', '.join(blind)} cannot see it); "
                               "a multi-node study needs shared storage: --storage-path s3://bucket/path or an NFS mount")


# ---------------------------------------------------------------- interrupts: every SIGINT / SIGTERM a pause


class Interrupted(Exception):
    """SIGINT or SIGTERM: the study pauses (runs KILLED, exit 130 or 143; ``--resume`` finishes it)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"interrupted (exit {code})")
        self.code = code


class Signals:
    """SIGINT and SIGTERM become a pause through Ray Tune's own interrupt path.

    Ray Tune's SIGINT handler is turned off (``TUNE_DISABLE_SIGINT_HANDLER``) and ours records the signal
    itself: inside ``Tuner.fit`` it calls the handler Ray keeps on SIGUSR1, which snapshots the experiment
    and stops it with the running trials resumable; outside a fit it raises :class:`Interrupted`. The pause
    is read from the recorded signal, never inferred from trial states (Ray marks running trials TERMINATED
    after its last snapshot). Install after ``ray.init``, which sets a SIGTERM handler of its own. An ignored
    SIGINT (a background job) stays ignored; during the finish (``deferred``) a signal waits until it ends.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.in_fit = False
        self.deferred = False

    def reset(self) -> None:
        """A new study in this process (a sweep's next ratio) starts with no signal recorded."""
        self.received, self.in_fit, self.deferred = None, False, False

    def install(self) -> None:
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGTERM, self.on_signal)

    @property
    def code(self) -> int:
        return 128 + (self.received or signal.SIGINT)

    def on_signal(self, signum: int, frame: Any) -> None:
        self.received = self.received or signum
        if self.deferred:
            return
        if self.in_fit:
            ray_handler = signal.getsignal(signal.SIGUSR1)  # Ray Tune's "snapshot, then stop" while a fit runs
            if callable(ray_handler):
                ray_handler(signal.SIGUSR1, frame)
            return
        raise Interrupted(self.code)

    def check(self) -> None:
        """Raise the pause a signal asked for (between Tuners)."""
        if self.received is not None and not self.deferred:
            raise Interrupted(self.code)


SIGNALS = Signals()


class FatalError(StudyError):
    """A trial met a user error (weights, loss, space, data): it would fail the same way on every retry."""


class FatalStop(Stopper):
    """Ends the whole Tuner once a trial reports ``fatal_error`` (the trainable's marker for a user error):
    Ray's FailureConfig has no per-exception filter, and a retry would only fail again."""

    def __init__(self) -> None:
        self.error: str | None = None

    def __call__(self, trial_id: str, result: dict) -> bool:
        if result.get("fatal_error"):
            self.error = self.error or str(result["fatal_error"])
            return True
        return False

    def stop_all(self) -> bool:
        return self.error is not None


# ---------------------------------------------------------------- searching every approach side by side


def trial_seed(seed: int, approach: str, turn: int | str) -> int:
    """A trial's own seed: different for every trial of a study, the same when the study is rerun."""
    return zlib.crc32(f"{seed}/{approach}/{turn}".encode()) & 0x7FFFFFFF


class PerApproachSearch(Searcher):
    """Proposes each approach's trials from its own searcher, in turn, ``counts[approach]`` each, and gives
    every trial its own ``trial_seed``.

    What TPE learns from is comparable across trials: a trial's value is its validation macro-F1 at
    ``tell_epoch`` (ASHA's first rung, which every trial that reports reaches), not its last reported one
    (Ray's OptunaSearch would tell an ASHA-stopped trial's epoch-2 score beside another's epoch-10 score)."""

    def __init__(self, searchers: dict[str, Searcher], counts: dict[str, int], metric: str, mode: str, seed: int = 0,
                 tell_epoch: int = 1) -> None:
        super().__init__(metric=metric, mode=mode)
        self.searchers, self.counts, self.seed, self.tell_epoch = searchers, counts, seed, tell_epoch
        self.suggested: Counter[str] = Counter()
        self.owner: dict[str, str] = {}  # trial id -> approach
        self.told: dict[str, float] = {}  # trial id -> its value at tell_epoch

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return all(s.set_search_properties(metric, mode, config, **spec) for s in self.searchers.values())

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        open_ = [a for a in self.searchers if self.suggested[a] < self.counts[a]]
        if not open_:
            return Searcher.FINISHED
        approach = min(open_, key=lambda a: self.suggested[a])  # round robin, in the space's order
        config = self.searchers[approach].suggest(trial_id)
        if isinstance(config, dict):
            config = {**config, "trial_seed": trial_seed(self.seed, approach, self.suggested[approach])}
            self.owner[trial_id] = approach
            self.suggested[approach] += 1
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if result.get("training_iteration") == self.tell_epoch and self.metric in result:
            self.told[trial_id] = float(result[self.metric])
        self._tell(trial_id, "on_trial_result", result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and trial_id in self.told:
            result = {**result, self.metric: self.told[trial_id]}
        self._tell(trial_id, "on_trial_complete", result, error)

    def _tell(self, trial_id: str, event: str, *args: Any) -> None:
        if trial_id not in self.owner:
            return
        try:
            getattr(self.searchers[self.owner[trial_id]], event)(trial_id, *args)
        except KeyError:
            # After --resume the searcher's file can be older than Ray's experiment state: Ray uploads the
            # snapshot's files one by one, and a driver killed in between leaves a mix. That searcher never
            # proposed the trial, so it learns nothing from it; the study goes on.
            log.warning("the %s search has no trial %s (restored from an older save): its result is not used",
                        self.owner[trial_id], trial_id)

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Tuner.restore: each approach's searcher saves itself (Ray's own format) beside a JSON of the turn counts.
        Flat .pkl / .json files: the only ones Ray downloads again on restore."""
        folder = Path(checkpoint_dir)
        for approach, searcher in self.searchers.items():
            searcher.save(str(folder / f"per-approach-{approach}.pkl"))
        tmp = folder / f"{STATE_FILE}.tmp"
        tmp.write_text(json.dumps({"suggested": self.suggested, "owner": self.owner, "told": self.told}))
        tmp.replace(folder / STATE_FILE)

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        folder = Path(checkpoint_dir)
        for approach, searcher in self.searchers.items():
            searcher.restore(str(folder / f"per-approach-{approach}.pkl"))
        state = json.loads((folder / STATE_FILE).read_text())
        self.suggested, self.owner, self.told = Counter(state["suggested"]), state["owner"], state.get("told", {})


TIE_BREAK = 1e-6  # times the Brier score (0 to 2): far below any macro-F1 step on a validation split


def tie_broken(result: dict) -> dict:
    """The result as ASHA ranks it: validation macro-F1, ties to the lower validation Brier score. Early rungs of an
    imbalanced study tie (every trial answers the majority class: macro-F1 equal), and ASHA stops only a trial
    strictly below its rung's cutoff, so without this it stopped none there (results/bench/vs_tutorial.md)."""
    if VAL_MACRO_F1 not in result or VAL_BRIER not in result:
        return result
    brier = result[VAL_BRIER] if math.isfinite(result[VAL_BRIER]) else 2.0  # a diverged trial's NaN: the worst
    return {**result, VAL_MACRO_F1: result[VAL_MACRO_F1] - TIE_BREAK * brier}


class PerApproachScheduler(FIFOScheduler):
    """Hands each trial's events to its approach's scheduler (results as ``tie_broken``); trials start in
    submission order."""

    def __init__(self, schedulers: dict[str, TrialScheduler], metric: str) -> None:
        super().__init__()
        self.schedulers, self._metric = schedulers, metric

    def _of(self, trial: Any) -> TrialScheduler:
        return self.schedulers[trial.config["approach"]]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return all(s.set_search_properties(metric, mode, **spec) for s in self.schedulers.values())

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, tie_broken(result))

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, tie_broken(result) if result else result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "; ".join(f"{a}: {s.debug_string()}" for a, s in self.schedulers.items())


class FixedConfigs(Searcher):
    """Proposes the given configs in order, then finishes: the confirmation phase's runs."""

    def __init__(self, configs: list[dict[str, Any]]) -> None:
        super().__init__(metric=VAL_MACRO_F1, mode="max")
        self.configs, self.next = list(configs), 0

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.next >= len(self.configs):
            return Searcher.FINISHED
        self.next += 1
        return dict(self.configs[self.next - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:  # JSON, not pickle: what --resume reads back
        Path(checkpoint_path).write_text(json.dumps({"configs": self.configs, "next": self.next}))

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        self.configs, self.next = state["configs"], state["next"]


# ---------------------------------------------------------------- checkpoints of ended trials


def rank(best_macro_f1: float, trial_id: str) -> tuple[float, str]:
    """How trials of one approach compare: best validation macro-F1, ties to the larger trial id."""
    return best_macro_f1, trial_id


def delete_checkpoints(trial: Any) -> int:
    """Delete the trial's checkpoint_* directories on its storage (local, NFS or S3); how many went."""
    return delete_checkpoints_under(trial.storage.storage_filesystem, trial.storage.trial_fs_path)


def delete_checkpoints_under(fs: pyarrow.fs.FileSystem, root: str) -> int:
    """Delete the checkpoint_* directories directly under ``root``; how many went."""
    found = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    dirs = [f.path for f in found if f.type == pyarrow.fs.FileType.Directory and f.base_name.startswith("checkpoint_")]
    for path in dirs:
        fs.delete_dir(path)
    return len(dirs)


def newest_snapshot(fs: pyarrow.fs.FileSystem, experiment: str) -> str | None:
    """The newest experiment snapshot on the storage (Ray 2.60's experiment_state-<time>.json); None before one."""
    found = fs.get_file_info(pyarrow.fs.FileSelector(experiment, allow_not_found=True))
    snapshots = sorted(f.path for f in found if f.base_name.startswith("experiment_state-") and f.base_name.endswith(".json"))
    return snapshots[-1] if snapshots else None


def read_snapshot(fs: pyarrow.fs.FileSystem, path: str) -> list[tuple[dict, dict]]:
    with fs.open_input_stream(path) as f:
        state = json.loads(f.read())
    return [(json.loads(trial), json.loads(metadata)) for trial, metadata in state["trial_data"]]


def stored_trials(fs: pyarrow.fs.FileSystem, experiment: str) -> list[tuple[dict, dict]]:
    """(trial state, run metadata) of every trial in the newest experiment snapshot on the storage: what
    ``--resume`` would restore; [] before the first one."""
    path = newest_snapshot(fs, experiment)
    return read_snapshot(fs, path) if path else []


class KeepBestCheckpoints(tune.Callback):
    """When a trial ends, whichever of it and its approach's best so far ranks lower loses its checkpoints
    (``keep_best=False``: every ended trial loses them — confirmation runs score the test split themselves).

    A loser's checkpoints go only once the experiment snapshot on the storage records it TERMINATED:
    ``--resume`` from an older snapshot would restart it from them. Trials that failed for good keep
    theirs (``--resume`` retries them). The ranking is saved with each snapshot, so a resumed study goes
    on comparing with the trials that ended before the interruption.
    """

    def __init__(self, check_every_s: float = 5.0, keep_best: bool = True) -> None:
        self.best: dict[str, list] = {}  # approach -> [macro-F1, trial id] of its best ended trial
        self.losers: set[str] = set()  # ended trials that lost; their checkpoints are still there
        self.check_every_s, self.checked, self.keep_best = check_every_s, float("-inf"), keep_best
        # the snapshot grows with the study: it is parsed again only when it changed (bench_scale.py found a parse
        # every few seconds growing with the square of the trial count); its folder is listed at most once a minute
        self._snapshot: str | None = None
        self._listed, self._seen, self._stored = float("-inf"), (), set()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not self.keep_best:
            self.losers.add(trial.trial_id)
            return
        approach = trial.config.get("approach", "")
        best_f1 = trial.metric_analysis.get(VAL_MACRO_F1, {}).get("max", float("-inf"))  # Ray's running max, resumed too
        mine = rank(float(best_f1), trial.trial_id)
        held = self.best.get(approach)
        if held is not None and held[1] == trial.trial_id:  # the best ended again (a resumed study): it stays
            self.best[approach] = list(max(mine, tuple(held)))
        elif held is None or mine > tuple(held):
            self.best[approach] = list(mine)
            self.losers.discard(trial.trial_id)
            if held is not None:
                self.losers.add(held[1])
        else:
            self.losers.add(trial.trial_id)

    on_trial_error = on_trial_complete  # ranked like the others; _prune never deletes an ERROR trial's checkpoints

    def get_state(self) -> dict[str, Any]:
        return {"best": self.best, "losers": sorted(self.losers)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.best, self.losers = dict(state["best"]), set(state["losers"])

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.losers and time.monotonic() - self.checked >= self.check_every_s:
            self._prune(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.losers:
            self._prune(trials)  # a finished study has written its last snapshot by now

    def _terminated(self, fs: pyarrow.fs.FileSystem, experiment: str) -> set[str]:
        """Trial ids the newest snapshot on the storage records TERMINATED."""
        if self._snapshot is None or time.monotonic() - self._listed >= 60:  # a resumed study starts a new file
            self._snapshot, self._listed = newest_snapshot(fs, experiment), time.monotonic()
        if self._snapshot is None:
            return set()
        info = fs.get_file_info(self._snapshot)
        key = (self._snapshot, info.mtime_ns, info.size)
        if key != self._seen:
            terminated = {s["trial_id"] for s, _ in read_snapshot(fs, self._snapshot) if s["status"] == "TERMINATED"}
            self._seen, self._stored = key, terminated
        return self._stored

    def _prune(self, trials: list) -> None:
        self.checked = time.monotonic()
        ended = [t for t in trials if t.trial_id in self.losers and t.status == "TERMINATED"]
        if not ended:
            return
        try:
            stored = self._terminated(ended[0].storage.storage_filesystem, ended[0].storage.experiment_fs_path)
        except (OSError, ValueError, KeyError) as err:  # not synced yet, or mid-write: try again later
            log.debug("experiment snapshot not readable yet: %s", err)
            return
        for trial in ended:
            if trial.trial_id in stored:
                try:
                    delete_checkpoints(trial)
                except OSError as err:  # a storage hiccup costs disk space, never the study
                    log.warning("could not delete the checkpoints of trial %s: %s", trial.trial_id, err)
                self.losers.discard(trial.trial_id)


def exists(checkpoint: Any) -> bool:
    return checkpoint.filesystem.get_file_info(checkpoint.path).type != pyarrow.fs.FileType.NotFound


def restore_from_kept(trial: Any) -> bool:
    """Point a trial whose latest checkpoint is gone at the newest of its kept ones still on the storage (none:
    from scratch); whether it changed anything. Ray deletes a checkpoint that falls out of ``num_to_keep`` as soon
    as a better one comes, while the experiment snapshot a resumed study starts from may still name it: the trial
    then failed to restore on every retry until ``max_failures`` (the long chaos run, results/bench/chaos.md).
    MLflow keeps each epoch once (``Tracker.log_epoch``), so the epochs run again are not written twice."""
    manager = trial.run_metadata.checkpoint_manager
    latest = manager.latest_checkpoint_result
    if latest is None or latest.checkpoint is None or exists(latest.checkpoint):
        return False
    kept = [r for r in manager._checkpoint_results if r.checkpoint is not None and exists(r.checkpoint)]
    manager._checkpoint_results = kept
    manager._latest_checkpoint_result = max(kept, key=lambda r: r.metrics.get("training_iteration", 0), default=None)
    log.warning("trial %s: its latest checkpoint %s is gone; restoring from %s", trial.trial_id, latest.checkpoint.path,
                manager._latest_checkpoint_result.checkpoint.path if kept else "scratch")
    return True


class RestoreFromKept(tune.Callback):
    """``restore_from_kept`` for every trial of a resumed study before it restarts, and for a failed trial
    before its retry."""

    def __init__(self) -> None:
        self.looked = False

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self.looked:  # the trials of the snapshot a resumed study started from: once per driver
            self.looked = True
            for trial in trials:
                if trial.status in ("PENDING", "ERROR", "PAUSED"):
                    restore_from_kept(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        restore_from_kept(trial)

    def __getstate__(self) -> dict[str, Any]:  # pickled with the experiment state: a resumed driver looks again
        return {"looked": False}


# ---------------------------------------------------------------- MLflow child runs and the status line


class MLflowCallback(tune.Callback):
    """Trial start / result / complete / error -> the approach's child runs (the driver is the only writer).

    One callback per approach; it handles the trials of its approach only. Ray pickles its
    callbacks with the experiment state (``Tuner.restore``), so the callback keeps only its
    settings and opens the tracker in ``setup``.
    """

    def __init__(self, settings: dict[str, Any], max_epochs: int, phase: str) -> None:
        self.settings, self.max_epochs, self.phase = settings, max_epochs, phase
        self.tracker: Tracker | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "tracker": None}

    def setup(self, **info: Any) -> None:
        self.tracker = Tracker(**self.settings)

    def mine(self, trial: Any) -> bool:
        return trial.config.get("approach") == self.settings["approach"]

    def run(self, trial: Any) -> str:
        tags = {"phase": self.phase}
        for key in ("confirm_seed", "race_seed", "config_rank", "round"):  # a race or confirmation run's place
            if key in trial.config:
                tags[key] = str(trial.config[key])
        return self.tracker.child(trial.trial_id, trial.config, tags)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.mine(trial):
            self.run(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if not self.mine(trial):
            return
        tags = {"node_id": str(result.get("node_id", ""))}
        if result.get("resumed_from"):
            tags["resumed_from_epoch"] = str(result["resumed_from"])  # restarted from its checkpoint, not from scratch
        self.tracker.log_epoch(self.run(trial), int(result["training_iteration"]), numeric_metrics(result), tags)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not self.mine(trial):
            return
        run_id, last = self.run(trial), trial.last_result or {}
        epochs = int(last.get("training_iteration", 0))
        self.tracker.log_artifacts(run_id, last, figure=self.phase != "search")
        if "test_y_pred" in last:
            self.tracker.client.log_dict(run_id, {"y_true": last["test_y_true"], "y_pred": last["test_y_pred"],
                                                  "probs": last.get("test_probs")}, "test_predictions.json")
        tags = {"epochs_run": str(epochs), "stopped_early": str(epochs < self.max_epochs).lower()}
        self.tracker.end(run_id, "FINISHED", tags)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.mine(trial):
            self.tracker.end(self.run(trial), "FAILED", {"error": "true"})


class StatusLine(tune.Callback):
    """Quiet by default: instead of Ray's tables (``-v`` brings them back), a line when the trials' states or the
    best score change (looked at every ``every_s``), and at least every ``quiet_s`` while nothing does."""

    def __init__(self, phase: str, every_s: float = 10.0, quiet_s: float = 120.0) -> None:
        self.phase, self.every_s, self.quiet_s = phase, every_s, quiet_s
        self.last, self.printed, self.shown = 0.0, 0.0, ""

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self.last < self.every_s:
            return
        self.last = time.monotonic()
        states = Counter(t.status.lower() for t in trials)
        best = max((t.metric_analysis.get(VAL_MACRO_F1, {}).get("max", float("-inf")) for t in trials), default=float("-inf"))
        shown = f"{self.phase}: {len(trials)} trials (" + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + ")"
        shown += f", best validation macro-F1 so far {best:.4f}" if best > float("-inf") else ""
        if shown != self.shown or self.last - self.printed >= self.quiet_s:
            self.shown, self.printed = shown, self.last
            print(f"[{time.strftime('%H:%M:%S')}] {shown}", flush=True)


# ---------------------------------------------------------------- running the Tuners


@dataclass
class Outcome:
    """One trial of a phase as plain data."""

    trial_id: str
    config: dict[str, Any]
    status: str  # FINISHED | FAILED
    best_val: float  # best validation macro-F1 over its epochs (-inf: never reported)
    best_epoch: int  # the epoch it was reached at (0: never reported)
    last: dict[str, Any] = field(default_factory=dict)  # its last reported result
    load_best_state: Callable[[], dict] | None = None  # the model state of its best-epoch checkpoint, if kept
    history: dict[int, float] = field(default_factory=dict)  # epoch -> validation macro-F1


@dataclass
class PhaseResult:
    outcomes: list[Outcome]


def _best_state_loader(result: Any, checkpoint_file: str) -> Callable[[], dict] | None:
    """Reads the state saved at the trial's best-validation epoch; None when pruning deleted it."""
    if not result.best_checkpoints:
        return None
    checkpoint = result.get_best_checkpoint(VAL_MACRO_F1, "max")
    if checkpoint is None or checkpoint.filesystem.get_file_info(checkpoint.path).type == pyarrow.fs.FileType.NotFound:
        return None

    def load() -> dict:
        with checkpoint.as_directory() as d:
            return torch.load(Path(d) / checkpoint_file, map_location="cpu", weights_only=True)

    return load


def prune_experiment(storage: str, name: str) -> None:
    """Delete every checkpoint a finished phase kept (``<storage>/<name>/<trial>/checkpoint_*``)."""
    fs, root = (pyarrow.fs.FileSystem.from_uri(f"{storage}/{name}") if "://" in storage
                else (pyarrow.fs.LocalFileSystem(), f"{storage}/{name}"))
    for trial in fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True)):
        if trial.type == pyarrow.fs.FileType.Directory:
            delete_checkpoints_under(fs, trial.path)


def _outcomes(grid: Any, checkpoint_file: str) -> list[Outcome]:
    out = []
    for r in grid:
        if r.config is None:  # a trial that never started (Ray gives it no config)
            continue
        frame = r.metrics_dataframe
        scored = frame is not None and VAL_MACRO_F1 in frame and len(frame)
        history = ({int(e): float(v) for e, v in zip(frame["training_iteration"], frame[VAL_MACRO_F1], strict=False)}
                   if scored else {})
        best_epoch = max(history, key=lambda e: (history[e], -e)) if history else 0
        out.append(Outcome(r.metrics.get("trial_id", ""), dict(r.config), "FAILED" if r.error else "FINISHED",
                           history.get(best_epoch, float("-inf")), best_epoch, dict(r.metrics),
                           _best_state_loader(r, checkpoint_file), history))
    return out


def _run(tuner: tune.Tuner, expected: int, checkpoint_file: str, stop: FatalStop | None) -> PhaseResult:
    """Fit the Tuner; a recorded signal is a pause, a trial's user error is fatal, trials left unended without
    either are a failure of the run itself (never a pause)."""
    SIGNALS.in_fit = True
    try:
        grid = tuner.fit()
    finally:
        SIGNALS.in_fit = False
    SIGNALS.check()
    outcomes = _outcomes(grid, checkpoint_file)
    fatal = (stop.error if stop else None) or next((o.last["fatal_error"] for o in outcomes if o.last.get("fatal_error")),
                                                   None)
    if fatal:
        raise FatalError(fatal)
    ended = grid.num_terminated + grid.num_errors
    if ended < len(grid) or len(grid) < expected:
        raise RuntimeError(f"Ray Tune ended with {ended} of {expected} trials ended and no interrupt: see its log above")
    return PhaseResult(outcomes)


@dataclass(frozen=True, kw_only=True)
class TuneSetup:
    """What every phase shares: the trainable and its data, resources, storage and MLflow settings."""

    trainable: Callable
    data: dict
    eval_costs: Any
    bank: dict
    cpus: float
    gpus: float
    max_concurrent: int | None
    local: bool  # a fresh local Ray: reuse trial actors
    storage: str  # <storage>/<study id>
    trackers: dict[str, dict[str, Any]]  # approach -> Tracker settings
    checkpoint_file: str
    verbose: bool


def _with_resources(s: TuneSetup) -> Any:
    return tune.with_resources(
        tune.with_parameters(s.trainable, data=s.data, eval_costs=s.eval_costs, weights=s.bank),  # object store, once
        {"cpu": s.cpus, "gpu": s.gpus},
    )


def _run_config(s: TuneSetup, name: str, callbacks: list, stop: FatalStop) -> tune.RunConfig:
    return tune.RunConfig(
        name=name,
        storage_path=s.storage,
        callbacks=callbacks,
        stop=stop,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=VAL_MACRO_F1,
                                                checkpoint_score_order="max"),
        failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
        verbose=1 if s.verbose else 0,
    )


def trial_slots(s: TuneSetup) -> int:
    """How many trials run at once: ``--max-concurrent``, else what the cluster's CPUs (and GPUs) hold."""
    if s.max_concurrent:
        return s.max_concurrent
    import ray

    have = ray.cluster_resources()
    slots = int(have.get("CPU", 1) // s.cpus) if s.cpus else 1
    if s.gpus:
        slots = min(slots, int(have.get("GPU", 0) // s.gpus))
    return max(1, slots)


def pending_trials(s: TuneSetup) -> None:
    """Let Ray Tune queue a trial per slot. With a searcher and no ``max_concurrent_trials`` it keeps one trial
    pending, and a trial shorter than a worker's start waits for the one before it: eight 3 s trials took 28.2 s
    on 2 CPUs, 17.5 s with 2 pending (``results/bench/pending.md``)."""
    if USER_PENDING is None:
        os.environ[PENDING_VAR] = str(trial_slots(s))


def _quiet_trial_logs(verbose: bool) -> None:
    quiet_worker()
    if not verbose:  # Ray's legacy reporter at verbosity 0 prints nothing: no configuration box, no hints into /tmp
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    # A checkpoint every epoch with num_to_keep=2 forces a small snapshot every other epoch; Ray warns about each.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


@dataclass(frozen=True)
class Search:
    """One approach's search: its Optuna define-by-run function, its fixed points (tried first) and its trial count."""

    define: Callable
    points: list[dict[str, Any]]
    trials: int


def search(s: TuneSetup, name: str, searches: dict[str, Search], budget: Any, seed: int, resume: bool) -> PhaseResult:
    """Every approach's search side by side: Optuna's TPE per approach (its fixed points enqueued first, once:
    a resumed searcher keeps its queue), ASHA per approach on validation macro-F1."""
    import optuna
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a "new study created" line per approach
    _quiet_trial_logs(s.verbose)
    pending_trials(s)
    trainable, path = _with_resources(s), f"{s.storage}/{name}"
    expected = sum(x.trials for x in searches.values())
    if resume and tune.Tuner.can_restore(path):
        return _run(tune.Tuner.restore(path, trainable, resume_errored=True), expected, s.checkpoint_file, None)
    searchers, schedulers = {}, {}
    for approach, x in searches.items():
        # TPE models the results after a third of the searched part; before that (and after the points) it samples
        # at random. Optuna counts the enqueued points among its start-up trials, hence the sum.
        startup = len(x.points) + max(2, (x.trials - len(x.points)) // 3)
        tpe = TPESampler(seed=trial_seed(seed, approach, "tpe"), n_startup_trials=startup)
        searchers[approach] = OptunaSearch(x.define, metric=VAL_MACRO_F1, mode="max", sampler=tpe,
                                           points_to_evaluate=x.points or None)
        schedulers[approach] = ASHAScheduler(metric=VAL_MACRO_F1, mode="max", time_attr="training_iteration",
                                             max_t=budget.epochs, grace_period=min(budget.grace_period, budget.epochs),
                                             reduction_factor=budget.reduction_factor)
    callbacks = [MLflowCallback(s.trackers[a], budget.epochs, "search") for a in searches]
    callbacks += [KeepBestCheckpoints(), RestoreFromKept()] + ([] if s.verbose else [StatusLine("search")])
    counts = {a: x.trials for a, x in searches.items()}
    searcher = PerApproachSearch(searchers, counts, VAL_MACRO_F1, "max", seed,
                                 tell_epoch=min(budget.grace_period, budget.epochs))
    stop = FatalStop()
    tuner = tune.Tuner(
        trainable,
        # Locally a finished trial's process serves the next trial instead of importing torch again (seconds a
        # trial); on a cluster every trial gets a fresh actor, so that trials spread over the nodes.
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=PerApproachScheduler(schedulers, VAL_MACRO_F1),
                                    reuse_actors=s.local, num_samples=expected, max_concurrent_trials=s.max_concurrent),
        run_config=_run_config(s, name, callbacks, stop),
    )
    return _run(tuner, expected, s.checkpoint_file, stop)


def retrain(s: TuneSetup, name: str, configs: list[dict[str, Any]], epochs: int, resume: bool,
            keep_best: bool = False, only_restore: bool = False) -> PhaseResult:
    """Retrain each config for ``epochs`` epochs, no early stopping (FIFO): a race or confirmation round.
    ``keep_best``: each approach's best run keeps its checkpoints (its network is logged after the round).
    ``only_restore``: read back a finished round; nothing when its Tuner is not on the storage."""
    _quiet_trial_logs(s.verbose)
    pending_trials(s)
    trainable, path = _with_resources(s), f"{s.storage}/{name}"
    if only_restore and not tune.Tuner.can_restore(path):
        return PhaseResult([])
    if resume and tune.Tuner.can_restore(path):
        return _run(tune.Tuner.restore(path, trainable, resume_errored=True), len(configs), s.checkpoint_file, None)
    approaches = list(dict.fromkeys(c["approach"] for c in configs))
    phase = configs[0]["phase"] if configs else "confirm"
    callbacks = [MLflowCallback(s.trackers[a], epochs, phase) for a in approaches]
    callbacks += [KeepBestCheckpoints(keep_best=keep_best), RestoreFromKept()] + ([] if s.verbose else [StatusLine(name)])
    stop = FatalStop()
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=FixedConfigs(configs),
                                    scheduler=FIFOScheduler(), reuse_actors=s.local, num_samples=len(configs),
                                    max_concurrent_trials=s.max_concurrent),
        run_config=_run_config(s, name, callbacks, stop),
    )
    return _run(tuner, len(configs), s.checkpoint_file, stop)
