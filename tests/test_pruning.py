"""KeepBestCheckpoints: per approach only the best ended trial keeps its checkpoint directories, deleted once
Tune's experiment snapshot has the losers ended; the ranking survives --resume."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs

from study.pruning import KeepBestCheckpoints, delete_checkpoints


def trial(root: Path, trial_id: str, approach: str = "focal", epochs: int = 2) -> SimpleNamespace:
    path = root / trial_id
    for epoch in range(epochs):
        (path / f"checkpoint_00000{epoch}").mkdir(parents=True)
        (path / f"checkpoint_00000{epoch}" / "state.pt").write_bytes(b"x" * 10)
    (path / "result.json").write_text("{}")
    storage = SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem(), trial_fs_path=str(path))
    return SimpleNamespace(trial_id=trial_id, config={"approach": approach}, storage=storage)


def kept(root: Path) -> set[str]:
    return {p.parent.name for p in root.glob("*/checkpoint_*")}


def end(cb: KeepBestCheckpoints, t: SimpleNamespace, *scores: float, snapshot: bool = True) -> None:
    """Trial ``t`` reports ``scores`` and ends; then Tune snapshots the experiment and steps on."""
    for s in scores:
        cb.on_trial_result(0, [], t, {"macro_f1": s})
    cb.trials.append(t)
    cb.on_trial_complete(0, cb.trials, t)
    if snapshot:
        cb.get_state()
        cb.on_step_begin(0, cb.trials)


def callback() -> KeepBestCheckpoints:
    cb = KeepBestCheckpoints()
    cb.trials = []  # what Tune passes to every hook: all trials
    return cb


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


def test_a_trial_that_never_reported_loses_to_one_that_did(tmp_path: Path) -> None:
    cb = callback()
    end(cb, trial(tmp_path, "a"), 0.2)
    b = trial(tmp_path, "b", epochs=1)
    cb.trials.append(b)
    cb.on_trial_error(0, cb.trials, b)
    cb.get_state()
    cb.on_step_begin(0, cb.trials)
    assert kept(tmp_path) == {"a"}


def test_delete_checkpoints_counts_and_tolerates_a_missing_trial_dir(tmp_path: Path) -> None:
    t = trial(tmp_path, "a", epochs=3)
    assert delete_checkpoints(t) == 3
    assert delete_checkpoints(t) == 0
    t.storage.trial_fs_path = str(tmp_path / "never-made")
    assert delete_checkpoints(t) == 0


def test_a_failed_deletion_is_a_warning_not_a_crash(tmp_path: Path, caplog) -> None:
    cb = callback()
    end(cb, trial(tmp_path, "a"), 0.9)
    broken = trial(tmp_path, "b")

    def refuse(path: str) -> None:
        raise OSError(f"permission denied: {path}")

    broken.storage.storage_filesystem = SimpleNamespace(get_file_info=pyarrow.fs.LocalFileSystem().get_file_info,
                                                        delete_dir=refuse)
    end(cb, broken, 0.1)
    assert kept(tmp_path) == {"a", "b"}
    assert "could not delete the checkpoints of trial b: permission denied" in caplog.text


def test_nothing_goes_before_a_snapshot_has_the_loser_ended(tmp_path: Path) -> None:
    """A study resumed from an older snapshot restarts the trial from its checkpoints: they must still be there."""
    cb = callback()
    end(cb, trial(tmp_path, "a"), 0.9)
    end(cb, trial(tmp_path, "b"), 0.5, snapshot=False)
    cb.on_step_begin(0, cb.trials)
    assert kept(tmp_path) == {"a", "b"}
    cb.get_state()
    assert kept(tmp_path) == {"a", "b"}  # written now; deleted at the next step
    cb.on_step_begin(0, cb.trials)
    assert kept(tmp_path) == {"a"}


def test_the_experiment_end_deletes_what_is_left(tmp_path: Path) -> None:
    cb = callback()
    end(cb, trial(tmp_path, "a"), 0.4)
    end(cb, trial(tmp_path, "b"), 0.5, snapshot=False)
    cb.on_experiment_end(cb.trials)
    assert kept(tmp_path) == {"b"}


def test_the_ranking_survives_a_resume(tmp_path: Path) -> None:
    before, a = callback(), trial(tmp_path, "a")
    end(before, a, 0.9)
    state = before.get_state()
    after = callback()  # --resume: a new callback, its state from the snapshot, the trials restored
    after.set_state(state)
    after.trials.append(SimpleNamespace(**vars(a)))
    end(after, trial(tmp_path, "b"), 0.5)
    assert kept(tmp_path) == {"a"}  # b lost to a, which ended before the interruption
    end(after, trial(tmp_path, "c"), 0.95)
    assert kept(tmp_path) == {"c"}
