"""Per-approach search and scheduling inside one Tuner."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from study.search import PerApproachScheduler, PerApproachSearch


class Recording(Searcher):
    def __init__(self, name: str) -> None:
        super().__init__(metric="macro_f1", mode="max")
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
    search = PerApproachSearch({"a": a, "b": b}, num_samples=2, metric="macro_f1", mode="max")
    configs = [search.suggest(f"t{i}") for i in range(4)]
    assert [c["approach"] for c in configs] == ["a", "b", "a", "b"]
    assert search.suggest("t4") == Searcher.FINISHED
    search.on_trial_result("t1", {"macro_f1": 0.5})
    search.on_trial_complete("t1", {"macro_f1": 0.5})
    search.on_trial_complete("t2", error=True)
    assert b.results == ["t1"] and b.completed == [("t1", False)] and a.completed == [("t2", True)]
    search.save_to_dir(str(tmp_path))  # Tuner.restore: counts, owners and each searcher's own state come back
    again = PerApproachSearch({"a": Recording("a"), "b": Recording("b")}, num_samples=2, metric="macro_f1", mode="max")
    again.restore_from_dir(str(tmp_path))
    assert again.suggest("t5") == Searcher.FINISHED and again.owner["t3"] == "b"
    assert again.searchers["a"].completed == [("t2", True)]


def test_a_searcher_that_has_nothing_yet_takes_no_budget() -> None:
    class Waiting(Recording):
        def suggest(self, trial_id: str):
            return None

    search = PerApproachSearch({"a": Waiting("a")}, num_samples=1, metric="macro_f1", mode="max")
    assert search.suggest("t0") is None and search.suggested["a"] == 0


def asha() -> ASHAScheduler:
    return ASHAScheduler(metric="macro_f1", mode="max", time_attr="training_iteration", max_t=4, grace_period=1,
                         reduction_factor=2)


def test_each_approach_has_its_own_asha() -> None:
    """A poor trial is stopped by comparison with its own approach only, not with a stronger approach."""
    scheduler = PerApproachScheduler({"strong": asha(), "weak": asha()}, "macro_f1")
    assert scheduler.metric == "macro_f1"
    trials = {name: SimpleNamespace(trial_id=name, config={"approach": name.rstrip("0123456789")})
              for name in ("strong1", "strong2", "weak1", "weak2")}
    for t in trials.values():
        scheduler.on_trial_add(None, t)
    result = lambda f1: {"macro_f1": f1, "training_iteration": 1}  # noqa: E731
    assert scheduler.on_trial_result(None, trials["strong1"], result(0.9)) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, trials["weak1"], result(0.4)) == TrialScheduler.CONTINUE  # first of its rung
    assert scheduler.on_trial_result(None, trials["strong2"], result(0.5)) == TrialScheduler.STOP  # below strong1
    assert scheduler.on_trial_result(None, trials["weak2"], result(0.45)) == TrialScheduler.CONTINUE  # above weak1


def lr_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True)}


def test_a_trial_the_restored_searcher_never_proposed_is_skipped_with_a_warning(tmp_path, caplog) -> None:
    """--resume on S3 once restored Optuna's file from before a trial Ray's experiment state had: the study
    crashed on KeyError. Now that trial's results only miss the search."""
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    def optuna() -> OptunaSearch:
        return OptunaSearch(lr_space, metric="macro_f1", mode="max", sampler=TPESampler(seed=0))

    before = PerApproachSearch({"a": optuna()}, num_samples=3, metric="macro_f1", mode="max")
    before.suggest("t0")
    before.searchers["a"].save(str(tmp_path / "older.pkl"))  # the searcher's file, uploaded before t1 existed
    before.suggest("t1")
    before.save_to_dir(str(tmp_path))
    (tmp_path / "older.pkl").replace(tmp_path / "per-approach-a.pkl")
    after = PerApproachSearch({"a": optuna()}, num_samples=3, metric="macro_f1", mode="max")
    after.restore_from_dir(str(tmp_path))
    assert after.owner == {"t0": "a", "t1": "a"}
    result = lambda f1: {"macro_f1": f1, "training_iteration": 1}  # noqa: E731
    after.on_trial_result("t0", result(0.7))  # the trial it knows still counts
    assert not caplog.text
    after.on_trial_result("t1", result(0.5))
    after.on_trial_complete("t1", result(0.5))
    assert caplog.text.count("the a search has no trial t1 (restored from an older save)") == 2
    after.on_trial_complete("t0", result(0.7))
    assert [t.value for t in after.searchers["a"]._ot_study.trials if t.value is not None] == [0.7]
