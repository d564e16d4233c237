"""study.engine, the Ray door: per-approach search and scheduling inside one Tuner, checkpoint pruning, and
real (tiny) Tuner runs of both phases, so that a Ray upgrade fails here first."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs
import pytest
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from study.engine import (
    KeepBestCheckpoints,
    PerApproachScheduler,
    PerApproachSearch,
    delete_checkpoints,
    stored_trials,
    tie_broken,
)


class Recording(Searcher):
    def __init__(self, name: str) -> None:
        super().__init__(metric="val_macro_f1", mode="max")
        self.name, self.completed, self.results = name, [], []

    def suggest(self, trial_id: str) -> dict:
        return {"approach": self.name, "trial": trial_id}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.results.append(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.completed.append((trial_id, error))

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps(self.completed))

    def restore(self, checkpoint_path: str) -> None:
        self.completed = [tuple(c) for c in json.loads(Path(checkpoint_path).read_text())]


def test_each_approach_gets_its_budget_in_turn_then_the_search_finishes(tmp_path) -> None:
    a, b = Recording("a"), Recording("b")
    search = PerApproachSearch({"a": a, "b": b}, {"a": 2, "b": 2}, metric="val_macro_f1", mode="max")
    configs = [search.suggest(f"t{i}") for i in range(4)]
    assert [c["approach"] for c in configs] == ["a", "b", "a", "b"]
    assert search.suggest("t4") == Searcher.FINISHED
    search.on_trial_result("t1", {"val_macro_f1": 0.5})
    search.on_trial_complete("t1", {"val_macro_f1": 0.5})
    search.on_trial_complete("t2", error=True)
    assert b.results == ["t1"] and b.completed == [("t1", False)] and a.completed == [("t2", True)]
    search.save_to_dir(str(tmp_path))  # Tuner.restore: counts, owners and each searcher's own state come back
    again = PerApproachSearch({"a": Recording("a"), "b": Recording("b")}, {"a": 2, "b": 2}, metric="val_macro_f1", mode="max")
    again.restore_from_dir(str(tmp_path))
    assert again.suggest("t5") == Searcher.FINISHED and again.owner["t3"] == "b"
    assert again.searchers["a"].completed == [("t2", True)]


def test_a_searcher_that_has_nothing_yet_takes_no_budget() -> None:
    class Waiting(Recording):
        def suggest(self, trial_id: str):
            return None

    search = PerApproachSearch({"a": Waiting("a")}, {"a": 1}, metric="val_macro_f1", mode="max")
    assert search.suggest("t0") is None and search.suggested["a"] == 0


def asha() -> ASHAScheduler:
    return ASHAScheduler(metric="val_macro_f1", mode="max", time_attr="training_iteration", max_t=4, grace_period=1,
                         reduction_factor=2)


def test_each_approach_has_its_own_asha() -> None:
    """A poor trial is stopped by comparison with its own approach only, not with a stronger approach."""
    scheduler = PerApproachScheduler({"strong": asha(), "weak": asha()}, "val_macro_f1")
    assert scheduler.metric == "val_macro_f1"
    trials = {name: SimpleNamespace(trial_id=name, config={"approach": name.rstrip("0123456789")})
              for name in ("strong1", "strong2", "weak1", "weak2")}
    for t in trials.values():
        scheduler.on_trial_add(None, t)
    result = lambda f1: {"val_macro_f1": f1, "training_iteration": 1}  # noqa: E731
    assert scheduler.on_trial_result(None, trials["strong1"], result(0.9)) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, trials["weak1"], result(0.4)) == TrialScheduler.CONTINUE  # first of its rung
    assert scheduler.on_trial_result(None, trials["strong2"], result(0.5)) == TrialScheduler.STOP  # below strong1
    assert scheduler.on_trial_result(None, trials["weak2"], result(0.45)) == TrialScheduler.CONTINUE  # above weak1


def test_asha_breaks_a_macro_f1_tie_by_the_lower_brier_score() -> None:
    """Early rungs of an imbalanced study tie (every trial answers the majority class); ASHA stops only a trial
    strictly below the cutoff, so without a tie-break it stopped none. Between equal macro-F1 the worse-calibrated
    trial stops; a real macro-F1 difference still outranks any Brier score."""
    scheduler = PerApproachScheduler({"a": asha()}, "val_macro_f1")
    trials = [SimpleNamespace(trial_id=f"t{i}", config={"approach": "a"}) for i in range(4)]
    for t in trials:
        scheduler.on_trial_add(None, t)
    result = lambda f1, brier: {"val_macro_f1": f1, "val_brier": brier, "training_iteration": 1}  # noqa: E731
    assert scheduler.on_trial_result(None, trials[0], result(0.5, 0.40)) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, trials[1], result(0.5, 0.55)) == TrialScheduler.STOP  # tied, worse Brier
    assert scheduler.on_trial_result(None, trials[2], result(0.5, 0.30)) == TrialScheduler.CONTINUE  # tied, better
    assert scheduler.on_trial_result(None, trials[3], result(0.501, 1.99)) == TrialScheduler.CONTINUE  # F1 first
    assert tie_broken(result(0.5, float("nan")))["val_macro_f1"] == 0.5 - 2e-6  # diverged: the worst, never NaN
    plain = PerApproachScheduler({"a": asha()}, "val_macro_f1")  # a result without a Brier score is ranked as is
    for t in trials[:2]:
        plain.on_trial_add(None, t)
    assert plain.on_trial_result(None, trials[0], {"val_macro_f1": 0.5, "training_iteration": 1}) == TrialScheduler.CONTINUE
    assert plain.on_trial_result(None, trials[1], {"val_macro_f1": 0.5, "training_iteration": 1}) == TrialScheduler.CONTINUE


def lr_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True)}


def test_a_trial_the_restored_searcher_never_proposed_is_skipped_with_a_warning(tmp_path, caplog) -> None:
    """--resume on S3 once restored Optuna's file from before a trial Ray's experiment state had: the study
    crashed on KeyError. Now that trial's results only miss the search."""
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    def optuna() -> OptunaSearch:
        return OptunaSearch(lr_space, metric="val_macro_f1", mode="max", sampler=TPESampler(seed=0))

    before = PerApproachSearch({"a": optuna()}, {"a": 3}, metric="val_macro_f1", mode="max")
    before.suggest("t0")
    before.searchers["a"].save(str(tmp_path / "older.pkl"))  # the searcher's file, uploaded before t1 existed
    before.suggest("t1")
    before.save_to_dir(str(tmp_path))
    (tmp_path / "older.pkl").replace(tmp_path / "per-approach-a.pkl")
    after = PerApproachSearch({"a": optuna()}, {"a": 3}, metric="val_macro_f1", mode="max")
    after.restore_from_dir(str(tmp_path))
    assert after.owner == {"t0": "a", "t1": "a"}
    result = lambda f1: {"val_macro_f1": f1, "training_iteration": 1}  # noqa: E731
    after.on_trial_result("t0", result(0.7))  # the trial it knows still counts
    assert not caplog.text
    after.on_trial_result("t1", result(0.5))
    after.on_trial_complete("t1", result(0.5))
    assert caplog.text.count("the a search has no trial t1 (restored from an older save)") == 2
    after.on_trial_complete("t0", result(0.7))
    assert [t.value for t in after.searchers["a"]._ot_study.trials if t.value is not None] == [0.7]


# ---------------------------------------------------------------- pruning


def trial(root: Path, trial_id: str, approach: str = "focal", epochs: int = 2, status: str = "TERMINATED") -> SimpleNamespace:
    path = root / trial_id
    for epoch in range(epochs):
        (path / f"checkpoint_00000{epoch}").mkdir(parents=True)
        (path / f"checkpoint_00000{epoch}" / "state.pt").write_bytes(b"x" * 10)
    (path / "result.json").write_text("{}")
    storage = SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem(), trial_fs_path=str(path),
                              experiment_fs_path=str(root))
    return SimpleNamespace(trial_id=trial_id, config={"approach": approach}, storage=storage, status=status,
                           metric_analysis={})


def write_snapshot(root: Path, trials: list, name: str = "experiment_state-2026-11-25_10-00-00.json", **status: str) -> None:
    """What Ray syncs to the storage: each trial's JSON state and run metadata (as JSON strings)."""
    data = [[json.dumps({"trial_id": t.trial_id, "status": status.get(t.trial_id, t.status)}), json.dumps({})] for t in trials]
    (root / name).write_text(json.dumps({"trial_data": data, "runner_data": {}, "stats": {}}))


def kept(root: Path) -> set[str]:
    return {p.parent.name for p in root.glob("*/checkpoint_*")}


def callback() -> KeepBestCheckpoints:
    cb = KeepBestCheckpoints(check_every_s=0)
    cb.trials = []  # what Tune passes to its hooks: every trial
    return cb


def end(cb: KeepBestCheckpoints, t: SimpleNamespace, *scores: float, synced: bool = True) -> None:
    """Trial ``t`` reports ``scores`` and ends; then (``synced``) the snapshot on the storage has it, Tune steps on."""
    if scores:  # what Ray keeps of the reported macro-F1s
        t.metric_analysis = {"val_macro_f1": {"max": max(scores), "last": scores[-1]}}
    cb.trials.append(t)
    (cb.on_trial_error if t.status == "ERROR" else cb.on_trial_complete)(0, cb.trials, t)
    if synced:
        write_snapshot(Path(t.storage.experiment_fs_path), cb.trials)
        cb.on_step_begin(0, cb.trials)


def test_only_the_best_trial_of_each_approach_keeps_checkpoints(tmp_path: Path) -> None:
    cb = callback()
    a, b, c = trial(tmp_path, "a"), trial(tmp_path, "b"), trial(tmp_path, "c")
    other = trial(tmp_path, "z", approach="baseline")
    end(cb, a, 0.5, 0.7)
    assert kept(tmp_path) == {"a", "b", "c", "z"}  # the first to end is the best so far
    end(cb, b, 0.9, 0.6)  # its best epoch counts, not its last
    assert kept(tmp_path) == {"b", "c", "z"}
    end(cb, c, 0.8)
    end(cb, other, 0.1)  # another approach: compared with its own trials only
    assert kept(tmp_path) == {"b", "z"}
    assert (tmp_path / "a" / "result.json").exists()  # only checkpoints go


def test_ties_go_to_the_larger_trial_id_as_in_finish_approach(tmp_path: Path) -> None:
    cb = callback()
    end(cb, trial(tmp_path, "t2"), 0.8)
    end(cb, trial(tmp_path, "t1"), 0.8)
    assert kept(tmp_path) == {"t2"}
    end(cb, trial(tmp_path, "t3"), 0.8)
    assert kept(tmp_path) == {"t3"}


def test_a_silent_trial_loses_and_a_failed_one_keeps_its_checkpoints(tmp_path: Path) -> None:
    """--resume retries trials that failed for good (resume_errored) from their checkpoints."""
    cb = callback()
    end(cb, trial(tmp_path, "a"), 0.2)
    end(cb, trial(tmp_path, "b", epochs=1))  # never reported a metric
    end(cb, trial(tmp_path, "c", status="ERROR"), 0.1)
    assert kept(tmp_path) == {"a", "c"}
    end(cb, trial(tmp_path, "d"), 0.3)
    assert kept(tmp_path) == {"c", "d"}


def test_the_best_ending_twice_keeps_its_checkpoints(tmp_path: Path) -> None:
    """A resumed study can end its best trial again (an errored trial retried, a stale snapshot)."""
    cb = callback()
    a = trial(tmp_path, "a")
    end(cb, a, 0.8)
    end(cb, trial(tmp_path, "b"), 0.5)
    cb.trials.remove(a)
    end(cb, a, 0.7)  # ended again, its best this time lower
    assert kept(tmp_path) == {"a"} and cb.best["focal"] == [0.8, "a"] and not cb.losers


def test_nothing_goes_before_the_stored_snapshot_has_the_loser_ended(tmp_path: Path) -> None:
    """--resume restarts a trial the stored snapshot calls RUNNING from its checkpoints: they must be there."""
    cb = callback()
    a, b = trial(tmp_path, "a"), trial(tmp_path, "b")
    end(cb, a, 0.9)
    end(cb, b, 0.5, synced=False)
    cb.on_step_begin(0, cb.trials)  # the snapshot on the storage predates b's end
    assert kept(tmp_path) == {"a", "b"}
    write_snapshot(tmp_path, cb.trials, b="RUNNING")
    cb.on_step_begin(0, cb.trials)
    cb.on_experiment_end(cb.trials)  # an aborted study: its last snapshot never said b ended
    assert kept(tmp_path) == {"a", "b"}
    write_snapshot(tmp_path, cb.trials, name="experiment_state-2026-11-25_09-00-00.json")  # an older session's
    cb.on_step_begin(0, cb.trials)
    assert kept(tmp_path) == {"a", "b"}
    write_snapshot(tmp_path, cb.trials)
    cb.on_experiment_end(cb.trials)
    assert kept(tmp_path) == {"a"}


def test_the_ranking_and_pending_deletions_survive_a_resume(tmp_path: Path) -> None:
    before, a, b = callback(), trial(tmp_path, "a"), trial(tmp_path, "b")
    end(before, a, 0.9)
    end(before, b, 0.5, synced=False)  # b lost; the driver dies before the snapshot on storage has it ended
    after = callback()  # --resume: a new callback, its state from the snapshot, the trials restored
    after.set_state(json.loads(json.dumps(before.get_state())))
    after.trials += [SimpleNamespace(**vars(a)), SimpleNamespace(**vars(b))]
    write_snapshot(tmp_path, after.trials)
    after.on_step_begin(0, after.trials)
    assert kept(tmp_path) == {"a"}
    end(after, trial(tmp_path, "c"), 0.6)  # compared with a, which ended before the interruption
    assert kept(tmp_path) == {"a"}
    end(after, trial(tmp_path, "d"), 0.95)
    assert kept(tmp_path) == {"d"}


def test_a_failed_deletion_is_a_warning_not_a_crash(tmp_path: Path, caplog) -> None:
    cb = callback()
    end(cb, trial(tmp_path, "a"), 0.9)
    broken = trial(tmp_path, "b")

    def refuse(path: str) -> None:
        raise OSError(f"permission denied: {path}")

    broken.storage.storage_filesystem = SimpleNamespace(get_file_info=pyarrow.fs.LocalFileSystem().get_file_info,
                                                        open_input_stream=pyarrow.fs.LocalFileSystem().open_input_stream,
                                                        delete_dir=refuse)
    end(cb, broken, 0.1)
    assert kept(tmp_path) == {"a", "b"}
    assert "could not delete the checkpoints of trial b: permission denied" in caplog.text


def test_delete_checkpoints_counts_and_tolerates_a_missing_trial_dir(tmp_path: Path) -> None:
    t = trial(tmp_path, "a", epochs=3)
    assert delete_checkpoints(t) == 3
    assert delete_checkpoints(t) == 0
    t.storage.trial_fs_path = str(tmp_path / "never-made")
    assert delete_checkpoints(t) == 0


def test_stored_trials_reads_the_newest_snapshot(tmp_path: Path) -> None:
    fs = pyarrow.fs.LocalFileSystem()
    assert stored_trials(fs, str(tmp_path / "nothing-yet")) == []
    t = trial(tmp_path, "a")
    write_snapshot(tmp_path, [t], name="experiment_state-2026-11-25_09-00-00.json", a="RUNNING")
    write_snapshot(tmp_path, [t], name="experiment_state-2026-11-25_10-00-00.json")
    assert stored_trials(fs, str(tmp_path)) == [({"trial_id": "a", "status": "TERMINATED"}, {})]


# ---------------------------------------------------------------- real Tuner runs (a Ray upgrade fails here first)


def toy_trainable(config: dict, data: dict, eval_costs, weights=None) -> None:
    """Reports a validation macro-F1 that grows with lr, with a checkpoint every epoch, like the study's trainable."""
    import tempfile

    import torch
    from ray import tune

    start = 0
    if (checkpoint := tune.get_checkpoint()) is not None:
        with checkpoint.as_directory() as d:
            start = torch.load(Path(d) / "state.pt", weights_only=True)
    for epoch in range(start + 1, config["epochs"] + 1):
        with tempfile.TemporaryDirectory() as d:
            torch.save(epoch, Path(d) / "state.pt")
            f1 = min(0.99, config["lr"] * 100 + epoch / 100)
            tune.report({"val_macro_f1": f1, "val_loss": 1 - f1, "seed_seen": config["trial_seed"]},
                        checkpoint=tune.Checkpoint.from_directory(d))


@pytest.fixture(scope="module")
def local_ray():
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests folder
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def setup_for(tmp_path: Path, approaches: list[str]):
    from study.engine import TuneSetup

    trackers = {a: {"uri": f"sqlite:///{tmp_path}/m.db", "experiment": "toy", "study_id": "toy-1", "approach": a,
                    "artifact_root": tmp_path / "art", "classes": ["cat", "dog"], "minority": "cat", "data": "toy"}
                for a in approaches}
    return TuneSetup(trainable=toy_trainable, data={0: None}, eval_costs=None, bank={}, cpus=1, gpus=0, max_concurrent=2,
                     local=True, storage=str(tmp_path / "ray"), trackers=trackers, checkpoint_file="state.pt",
                     verbose=False)


@pytest.mark.engine
def test_a_real_search_runs_each_approach_with_its_own_seeds_and_prunes_losers(tmp_path, local_ray) -> None:
    from mlflow.tracking import MlflowClient

    from study import engine
    from study.plan import Budget
    from study.spaces import Space
    from study.store import Tracker

    space = Space("a", "", {}, {}, {"lr": {"type": "float", "low": 1e-3, "high": 5e-3}})
    points = {"a": [{"lr": 2e-3}, {"lr": 1e-3}], "b": []}  # a's points are its first two trials, in order
    spaces = {a: engine.Search(space.define_by_run({"approach": a, "epochs": 3, "phase": "search"}), points[a], 3)
              for a in ("a", "b")}
    setup = setup_for(tmp_path, ["a", "b"])
    for settings in setup.trackers.values():
        Tracker(**settings)  # the parent runs exist before the Tuner, as in a study
    budget = Budget(epochs=3, num_samples=3, batch_size=8, image_size=16, grace_period=1, reduction_factor=2)
    result = engine.search(setup, "toy", spaces, budget, seed=7, resume=False)
    assert len(result.outcomes) == 6
    by_seed = {o.config["trial_seed"]: o.config["lr"] for o in result.outcomes}
    assert [by_seed[engine.trial_seed(7, "a", turn)] for turn in (0, 1)] == [2e-3, 1e-3]  # a's first two turns
    assert all(set(o.history) == set(range(1, o.last["training_iteration"] + 1)) for o in result.outcomes)
    assert {o.config["approach"] for o in result.outcomes} == {"a", "b"}
    seeds = [o.config["trial_seed"] for o in result.outcomes]
    assert len(set(seeds)) == 6 and all(o.last["seed_seen"] == o.config["trial_seed"] for o in result.outcomes)
    assert all(o.best_val > 0 for o in result.outcomes)
    # the real snapshot format is what pruning reads
    stored = stored_trials(pyarrow.fs.LocalFileSystem(), str(tmp_path / "ray" / "toy"))
    assert {s["trial_id"] for s, _ in stored} == {o.trial_id for o in result.outcomes}
    with_checkpoints = [o for o in result.outcomes if o.load_best_state is not None]
    assert {o.config["approach"] for o in with_checkpoints} == {"a", "b"} and len(with_checkpoints) == 2
    best_a = max((o for o in result.outcomes if o.config["approach"] == "a"), key=lambda o: o.best_val)
    assert best_a.load_best_state is not None and int(best_a.load_best_state()) >= 1
    children = MlflowClient(f"sqlite:///{tmp_path}/m.db").search_runs(
        [MlflowClient(f"sqlite:///{tmp_path}/m.db").get_experiment_by_name("toy").experiment_id], "tags.role = 'child'")
    assert len(children) == 6 and {r.data.tags["phase"] for r in children} == {"search"}


@pytest.mark.engine
def test_a_real_confirmation_runs_every_config_to_the_end(tmp_path, local_ray) -> None:
    from study import engine
    from study.store import Tracker

    setup = setup_for(tmp_path, ["a"])
    Tracker(**setup.trackers["a"])
    configs = [{"approach": "a", "lr": 1e-4, "epochs": 4, "trial_seed": s, "phase": "confirm", "confirm_seed": s,
                "config_rank": 0} for s in range(3)]
    result = engine.retrain(setup, "toy-confirm", configs, epochs=4, resume=False)
    assert len(result.outcomes) == 3
    assert sorted(o.config["confirm_seed"] for o in result.outcomes) == [0, 1, 2]
    assert all(o.last["training_iteration"] == 4 for o in result.outcomes)  # no early stopping
    assert not list((tmp_path / "ray").glob("toy-confirm/*/checkpoint_*"))  # every ended confirm run is pruned


def test_rays_session_folder_is_private_to_the_user(tmp_path, monkeypatch) -> None:
    """Ray writes the environment (AWS keys for S3 storage included) into its session logs: mode 700, ours."""
    import stat

    from study.engine import private_temp_dir

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    (tmp_path / f"ray-{os.getuid()}").mkdir(mode=0o755)  # left world-readable by an older run
    path = Path(private_temp_dir())
    assert path.parent == tmp_path and stat.S_IMODE(path.stat().st_mode) == 0o700


def test_a_user_error_in_a_trial_stops_the_whole_tuner_once() -> None:
    """Ray's FailureConfig retries every exception; the trainable reports a user error as ``fatal_error`` instead."""
    from study.engine import FatalStop

    stop = FatalStop()
    assert not stop("t1", {"val_macro_f1": 0.5}) and not stop.stop_all()
    assert stop("t2", {"fatal_error": "unknown loss 'focl'; choose one of: ce, focal", "val_macro_f1": 0.0})
    assert stop.stop_all() and stop.error == "unknown loss 'focl'; choose one of: ce, focal"
    stop("t3", {"fatal_error": "another"})
    assert stop.error == "unknown loss 'focl'; choose one of: ce, focal"  # the first one is the one reported


def test_signals_pause_through_rays_handler_inside_a_fit_and_raise_outside(monkeypatch) -> None:
    import signal

    from study.engine import Interrupted, Signals

    signals, asked = Signals(), []
    monkeypatch.setattr(signal, "getsignal", lambda s: lambda *a: asked.append(a[0]))
    signals.in_fit = True
    signals.on_signal(signal.SIGTERM, None)  # inside Tuner.fit: Ray's SIGUSR1 handler snapshots and stops
    assert asked == [signal.SIGUSR1] and signals.code == 143
    signals.in_fit = False
    with pytest.raises(Interrupted, match=r"interrupted \(exit 143\)"):
        signals.check()
    signals.reset()
    signals.deferred = True
    signals.on_signal(signal.SIGINT, None)  # during the finish: recorded, nothing raised
    signals.check()
    assert signals.received == signal.SIGINT
    signals.deferred = False
    with pytest.raises(Interrupted, match=r"interrupted \(exit 130\)"):
        signals.on_signal(signal.SIGINT, None)


@pytest.mark.engine
def test_ray_tune_may_queue_a_trial_per_slot(tmp_path, local_ray, monkeypatch) -> None:
    """Ray keeps one trial pending behind a searcher, which runs trials shorter than a worker's start one by one."""
    import dataclasses

    from study import engine

    setup = setup_for(tmp_path, ["a"])
    monkeypatch.delenv(engine.PENDING_VAR, raising=False)
    engine.pending_trials(setup)
    assert os.environ[engine.PENDING_VAR] == "2"  # --max-concurrent 2
    auto = dataclasses.replace(setup, max_concurrent=None, cpus=0.5)
    assert engine.trial_slots(auto) == 4  # 2 CPUs / 0.5 each
    assert engine.trial_slots(dataclasses.replace(auto, cpus=4)) == 1  # never none
    assert engine.trial_slots(dataclasses.replace(auto, gpus=0.25)) == 1  # no GPU here: one at a time
    monkeypatch.setattr(engine, "USER_PENDING", "7")  # the user's own setting stays
    monkeypatch.setenv(engine.PENDING_VAR, "7")
    engine.pending_trials(auto)
    assert os.environ[engine.PENDING_VAR] == "7"


def test_a_trial_whose_latest_checkpoint_is_gone_restores_from_its_newest_kept_one(tmp_path) -> None:
    """The long chaos run: Ray deleted the checkpoint a resumed study's snapshot named as latest (a better one had
    come since), so the trial failed to restore on every retry. It now restarts from the newest kept one left."""
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult

    from study.engine import RestoreFromKept, restore_from_kept

    manager = _CheckpointManager(tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="val_macro_f1",
                                                        checkpoint_score_order="max"))
    fs = pyarrow.fs.LocalFileSystem()
    for i, f1 in enumerate((0.8, 0.6)):  # epoch 1 scores better than epoch 2: both kept, epoch 2 the latest
        (tmp_path / f"checkpoint_{i:06d}").mkdir()
        manager.register_checkpoint(_TrainingResult(tune.Checkpoint(str(tmp_path / f"checkpoint_{i:06d}"), fs),
                                                    {"val_macro_f1": f1, "training_iteration": i + 1}))
    trial = SimpleNamespace(trial_id="t0", status="PENDING", run_metadata=SimpleNamespace(checkpoint_manager=manager))
    assert not restore_from_kept(trial)  # still there: nothing to do
    (tmp_path / "checkpoint_000001").rmdir()  # what the snapshot names as latest, deleted since
    callback = RestoreFromKept()
    callback.on_step_begin(0, [trial])
    assert manager.latest_checkpoint_result.checkpoint.path.endswith("checkpoint_000000")
    assert [r.metrics["training_iteration"] for r in manager._checkpoint_results] == [1]
    (tmp_path / "checkpoint_000000").rmdir()
    callback.on_trial_recover(0, [trial], trial)  # a retry with nothing kept: from scratch
    assert manager.latest_checkpoint_result is None and manager._checkpoint_results == []
    assert pickle.loads(pickle.dumps(callback)).looked is False  # a resumed driver looks again
