"""Every approach of a study in one Ray Tune run, each with its own Optuna search and its own ASHA.

One ASHA across approaches would stop slow starters such as under-sampling; one Tuner per
approach, one after another, leaves trial slots idle at every approach's end. These two
wrappers keep a search and a scheduler per approach (by the trial config's ``approach``) inside
one Tuner, so that the approaches' trials run side by side.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

STATE_FILE = "per-approach-search.json"
log = logging.getLogger(__name__)


class PerApproachSearch(Searcher):
    """Proposes each approach's trials from its own searcher, in turn, ``num_samples`` each."""

    def __init__(self, searchers: dict[str, Searcher], num_samples: int, metric: str, mode: str) -> None:
        super().__init__(metric=metric, mode=mode)
        self.searchers, self.num_samples = searchers, num_samples
        self.suggested: Counter[str] = Counter()
        self.owner: dict[str, str] = {}  # trial id -> approach

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return all(s.set_search_properties(metric, mode, config, **spec) for s in self.searchers.values())

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        open_ = [a for a in self.searchers if self.suggested[a] < self.num_samples]
        if not open_:
            return Searcher.FINISHED
        approach = min(open_, key=lambda a: self.suggested[a])  # round robin, in the space's order
        config = self.searchers[approach].suggest(trial_id)
        if isinstance(config, dict):
            self.owner[trial_id] = approach
            self.suggested[approach] += 1
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._tell(trial_id, "on_trial_result", result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
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
        tmp.write_text(json.dumps({"suggested": self.suggested, "owner": self.owner}))
        tmp.replace(folder / STATE_FILE)

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        folder = Path(checkpoint_dir)
        for approach, searcher in self.searchers.items():
            searcher.restore(str(folder / f"per-approach-{approach}.pkl"))
        state = json.loads((folder / STATE_FILE).read_text())
        self.suggested, self.owner = Counter(state["suggested"]), state["owner"]


class PerApproachScheduler(FIFOScheduler):
    """Hands each trial's events to its approach's scheduler; trials start in submission order."""

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
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "; ".join(f"{a}: {s.debug_string()}" for a, s in self.schedulers.items())
