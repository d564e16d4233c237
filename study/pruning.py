"""Checkpoints of finished trials: per approach only the best trial keeps its own.

Every trial checkpoints every epoch (model and Adam state, 134 MB for ResNet-18) and keeps two, so that
it can resume after a failure. Once a trial has ended only the best trial of its approach is needed: its
best-epoch checkpoint goes on the test split. Without pruning, a 48-trial ``--space all`` study left
14 GB under results/ray/.
"""

from __future__ import annotations

import json
import logging
import time
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


def stored_trials(fs: pyarrow.fs.FileSystem, experiment: str) -> list[tuple[dict, dict]]:
    """(trial state, run metadata) of every trial in the newest experiment snapshot on the storage: what
    ``--resume`` would restore. Ray 2.60's experiment_state-<time>.json; [] before the first one."""
    found = fs.get_file_info(pyarrow.fs.FileSelector(experiment, allow_not_found=True))
    snapshots = sorted(f.path for f in found if f.base_name.startswith("experiment_state-") and f.base_name.endswith(".json"))
    if not snapshots:
        return []
    with fs.open_input_stream(snapshots[-1]) as f:
        state = json.loads(f.read())
    return [(json.loads(trial), json.loads(metadata)) for trial, metadata in state["trial_data"]]


class KeepBestCheckpoints(tune.Callback):
    """When a trial ends, whichever of it and its approach's best so far ranks lower loses its checkpoints.

    A loser's checkpoints go only once the experiment snapshot on the storage records it TERMINATED:
    ``--resume`` from an older snapshot would restart it from them. Trials that failed for good keep
    theirs (``--resume`` retries them). The ranking is saved with each snapshot, so a resumed study goes
    on comparing with the trials that ended before the interruption.
    """

    def __init__(self, check_every_s: float = 5.0) -> None:
        self.best: dict[str, list] = {}  # approach -> [macro-F1, trial id] of its best ended trial
        self.losers: set[str] = set()  # ended trials that lost; their checkpoints are still there
        self.check_every_s, self.checked = check_every_s, float("-inf")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        approach = trial.config.get("approach", "")
        best_f1 = trial.metric_analysis.get("macro_f1", {}).get("max", float("-inf"))  # Ray's running max, resumed too
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

    def _prune(self, trials: list) -> None:
        self.checked = time.monotonic()
        ended = [t for t in trials if t.trial_id in self.losers and t.status == "TERMINATED"]
        if not ended:
            return
        try:
            stored = {s["trial_id"] for s, _ in stored_trials(ended[0].storage.storage_filesystem,
                                                             ended[0].storage.experiment_fs_path)
                      if s["status"] == "TERMINATED"}
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
