"""Checkpoints of finished trials: per approach only the best trial keeps its own.

Every trial checkpoints every epoch (model and Adam state, 134 MB for ResNet-18) and keeps two, so that
it can resume after a failure. Once a trial has ended only the best trial of its approach is needed: its
best-epoch checkpoint goes on the test split. Without pruning, a 48-trial ``--space all`` study left
14 GB under results/ray/.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow.fs
from ray import tune

log = logging.getLogger(__name__)


def rank(best_macro_f1: float, trial_id: str) -> tuple[float, str]:
    """How trials of one approach compare: best validation macro-F1, ties to the larger trial id."""
    return best_macro_f1, trial_id


def delete_checkpoints(trial: Any) -> int:
    """Delete the trial's checkpoint_* directories on its storage (local, NFS or S3); how many went."""
    fs, root = trial.storage.storage_filesystem, trial.storage.trial_fs_path
    found = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    dirs = [f.path for f in found if f.type == pyarrow.fs.FileType.Directory and f.base_name.startswith("checkpoint_")]
    for path in dirs:
        fs.delete_dir(path)
    return len(dirs)


class KeepBestCheckpoints(tune.Callback):
    """When a trial ends, whichever of it and its approach's best so far ranks lower loses its checkpoints.

    The deletion waits for Tune's next experiment snapshot (``get_state`` is called while it is written):
    a study resumed from an older snapshot would restart the trial from the checkpoints it lost. The
    ranking is part of the snapshot, so ``--resume`` goes on comparing with the trials ended before.
    """

    def __init__(self) -> None:
        self.scores: dict[str, float] = {}  # trial id -> its best validation macro-F1
        self.best: dict[str, list] = {}  # approach -> [macro-F1, trial id] of its best ended trial
        self.doomed: list[Any] = []  # trials that lost, not yet ended in a snapshot
        self.ready: list[Any] = []  # trials that lost, ended in a snapshot: delete

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "macro_f1" in result:
            self.scores[trial.trial_id] = max(self.scores.get(trial.trial_id, float("-inf")), float(result["macro_f1"]))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        approach = trial.config.get("approach", "")
        mine = rank(self.scores.get(trial.trial_id, float("-inf")), trial.trial_id)
        held = self.best.get(approach)
        if held is None or mine > tuple(held):
            self.best[approach] = list(mine)
            self.doomed += [t for t in trials if held and t.trial_id == held[1]]
        else:
            self.doomed.append(trial)

    on_trial_error = on_trial_complete  # a trial that failed for good may still have the best checkpoint

    def get_state(self) -> dict[str, Any]:
        self.ready, self.doomed = self.ready + self.doomed, []  # this snapshot has them ended
        return {"scores": self.scores, "best": self.best}

    def set_state(self, state: dict[str, Any]) -> None:
        self.scores, self.best = dict(state["scores"]), dict(state["best"])

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self._delete("ready")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._delete("ready")
        self._delete("doomed")

    def _delete(self, which: str) -> None:
        for trial in getattr(self, which):
            try:
                delete_checkpoints(trial)
            except OSError as err:  # a storage hiccup costs disk space, never the study
                log.warning("could not delete the checkpoints of trial %s: %s", trial.trial_id, err)
        setattr(self, which, [])
