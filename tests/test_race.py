"""study.race: trial counts, candidates at equal training length, and the race's rounds (pure bookkeeping)."""

from __future__ import annotations

import numpy as np
import pytest

from study import race
from study.spaces import load_spaces
from study.stats import race_open, verdict


def test_trial_count_grows_with_the_searched_params_after_the_points() -> None:
    assert race.searched_trials(6, 0) == 0 and race.searched_trials(6, 1) == 6
    assert race.searched_trials(6, 2) == 9 and race.searched_trials(6, 3) == 12
    assert race.trial_count(6, 3, n_points=3) == 15  # focal: three points, then 12 drawn
    assert race.trial_count(6, 0, n_points=0) == 1  # a fixed configuration: one trial
    assert race.trial_count(6, 3, n_points=3, cap=2) == 2  # --smoke


def test_rungs_are_ashas_milestones_then_the_last_epoch() -> None:
    assert race.rungs(2, 3, 10) == [2, 6, 10]
    assert race.rungs(1, 2, 4) == [1, 2, 4]
    assert race.rungs(5, 3, 3) == [3]


def scripted(trial_id: str, values: list[float]) -> race.Trial:
    return race.Trial(trial_id, {"id": trial_id}, {e + 1: v for e, v in enumerate(values)})


def test_the_first_trial_is_the_worst_but_runs_longest_and_is_not_chosen() -> None:
    """ASHA's first trial runs to the end and, ranked by its best over more epochs, would win; at equal length it
    ranks last of the trials that reached the comparison epoch."""
    trials = [scripted("t0", [0.50, 0.55, 0.60, 0.70, 0.90, 0.91]),  # ran every epoch, poor at epoch 2
              scripted("t1", [0.70, 0.80]), scripted("t2", [0.72, 0.85]), scripted("t3", [0.60, 0.65])]
    assert max(trials, key=lambda t: max(t.history.values())).trial_id == "t0"  # the old rule's pick
    epoch, ranked = race.rank_candidates(trials, race.rungs(2, 3, 6), top=3)
    assert epoch == 2  # only t0 reached 6; all four reached 2
    assert [t.trial_id for t in ranked] == ["t2", "t1", "t3", "t0"]


def test_the_comparison_epoch_is_the_highest_rung_top_trials_reached() -> None:
    trials = [scripted("a", [0.1] * 6), scripted("b", [0.2] * 6), scripted("c", [0.9, 0.9])]
    epoch, ranked = race.rank_candidates(trials, [2, 6], top=2)
    assert epoch == 6 and [t.trial_id for t in ranked] == ["b", "a", "c"]  # c stopped at 2: below those at 6
    assert race.rank_candidates(trials, [2, 6], top=3)[0] == 2
    assert race.rank_candidates([], [2, 6], top=3) == (0, [])


def decide_with(min_seeds: int, max_seeds: int, rope: float = 0.02):
    return lambda d: (verdict(d, rope).verdict, race_open(d, min_seeds, max_seeds, rope))


def play(scores: dict[str, list[float]], min_seeds: int = 3, max_seeds: int = 12) -> race.Ledger:
    """Runs the race's rounds with ``scores[approach][seed]`` as each run's test macro-F1."""
    ledger = race.Ledger(candidates={a: {} for a in scores})
    decide = decide_with(min_seeds, max_seeds)
    while seeds := race.next_round(ledger, list(scores), min_seeds, max_seeds, decide):
        for a, ss in seeds.items():
            for s in ss:
                ledger.scores.setdefault(a, {})[str(s)] = scores[a][s]
        ledger.rounds.append({"round": len(ledger.rounds), "seeds": seeds})
        ledger = race.Ledger.from_json(ledger.to_json())  # what a resumed driver reads back
    return ledger


def test_a_clearly_worse_approach_is_decided_at_min_seeds_and_an_identical_one_is_equivalent() -> None:
    rng = np.random.default_rng(0)
    base = list(0.90 + rng.normal(0, 0.01, 12))
    ledger = play({"baseline": base, "worse": [b - 0.15 for b in base], "same": list(base)})
    assert ledger.seeds("worse") == [0, 1, 2] and len(ledger.rounds) == 1
    assert decide_with(3, 12)(race.paired_differences(ledger, "worse"))[0] == "worse"
    assert decide_with(3, 12)(race.paired_differences(ledger, "same"))[0] == "practically equivalent"


def test_an_open_verdict_adds_one_paired_seed_per_round_up_to_max_seeds() -> None:
    rng = np.random.default_rng(1)
    base = list(0.90 + rng.normal(0, 0.03, 12))
    noisy = [b + rng.normal(0.0, 0.06) for b in base]  # undecidable at this budget
    ledger = play({"baseline": base, "noisy": noisy}, min_seeds=3, max_seeds=6)
    assert ledger.seeds("noisy") == list(range(6)) and ledger.seeds("baseline") == list(range(6))
    assert [r["seeds"].get("noisy") for r in ledger.rounds] == [[0, 1, 2], [3], [4], [5]]


def test_without_a_baseline_every_approach_stops_at_min_seeds() -> None:
    ledger = play({"focal": [0.8] * 12}, min_seeds=3)
    assert ledger.seeds("focal") == [0, 1, 2] and len(ledger.rounds) == 1


def test_every_space_names_its_points_for_every_param_it_searches() -> None:
    """The literature's settings and the neutral point come first in every search, lr included."""
    for space in load_spaces("all") + load_spaces("sampling") + load_spaces("transfer_imagenet"):
        assert space.points, f"{space.name} has no points"
        assert "neutral" in space.points or space.no_neutral, space.name
        for name, point in space.points.items():
            assert "lr" in point or "lr" not in space.params, f"{space.name}.{name} leaves lr to chance"
            assert set(space.active(point)) <= set(point), f"{space.name}.{name}"


def test_points_resolve_data_symbols_and_widen_a_range_that_cannot_hold_them() -> None:
    [space] = load_spaces("class_weight")
    points, widened_space, widened = space.resolve_points({"inverse_frequency": 50.0, "eval_cost": 50.0,
                                                           "drw_paper": 8})
    assert points == [{"lr": 1e-3, "weight_ratio": 1.0}, {"lr": 1e-3, "weight_ratio": 50.0}]
    assert widened_space.params["weight_ratio"]["high"] == 50.0 and space.params["weight_ratio"]["high"] == 30.0
    assert widened == ["class_weight: weight_ratio range widened to [1, 50] for point inverse_frequency (50)"]


@pytest.mark.parametrize("points, message", [
    ("{neutral: {lr: 1.0e-3}}", r"points\.neutral: sets no value for 'gamma'; a point sets every param it searches"),
    ("{neutral: {lr: 1.0e-3, gamma: 0.0, alpha: 0.5, tau: 1.0}}", r"points\.neutral: 'tau' is not searched"),
    ("{lin: {lr: 1.0e-3, gamma: 2.0, alpha: 0.25}}", r"needs a 'neutral' point \(the baseline's setting\) or a "
                                                      r"no_neutral sentence"),
    ("{neutral: {lr: 1.0e-3, gamma: inverse_frequency, alpha: 0.5}}", r"'inverse_frequency' is a value of "
                                                                       r"weight_ratio, not of gamma"),
])
def test_bad_points_are_refused_with_the_rule(tmp_path, points: str, message: str) -> None:
    from study.spaces import SpaceError, load_space

    (tmp_path / "mine.yaml").write_text(
        "fixed: {loss: focal}\nparams:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
        "  gamma: {type: float, low: 0.0, high: 5.0}\n  alpha: {type: float, low: 0.1, high: 0.9}\n"
        f"points: {points}\n")
    with pytest.raises(SpaceError, match=message):
        load_space("mine", tmp_path)
