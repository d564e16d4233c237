"""KeepBestCheckpoints: per approach only the best ended trial keeps its checkpoint directories. A loser's
go only once the experiment snapshot on the storage records it TERMINATED; the ranking survives --resume."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs

from study.pruning import KeepBestCheckpoints, delete_checkpoints, stored_trials


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
        t.metric_analysis = {"macro_f1": {"max": max(scores), "last": scores[-1]}}
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
