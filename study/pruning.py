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

    After ``--resume`` the trials that ended before the interruption are unknown here, so they keep theirs:
    the overall best checkpoint is never deleted, only possibly some extra ones kept.
    """

    def __init__(self) -> None:
        self.scores: dict[str, float] = {}
        self.best: dict[str, tuple[tuple[float, str], Any]] = {}  # approach -> (rank, trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "macro_f1" in result:
            self.scores[trial.trial_id] = max(self.scores.get(trial.trial_id, float("-inf")), float(result["macro_f1"]))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        approach = trial.config.get("approach", "")
        mine = rank(self.scores.get(trial.trial_id, float("-inf")), trial.trial_id)
        held = self.best.get(approach)
        if held is None or mine > held[0]:
            self.best[approach] = (mine, trial)
            loser = held[1] if held else None
        else:
            loser = trial
        if loser is not None:
            try:
                delete_checkpoints(loser)
            except OSError as err:  # a storage hiccup costs disk space, never the study
                log.warning("could not delete the checkpoints of trial %s: %s", loser.trial_id, err)

    on_trial_error = on_trial_complete  # a trial that failed for good may still have the best checkpoint
