"""study.runner and study.resplit without Ray: the plan's phases as data (candidates, race and round configs, the
points' data symbols) and the confirmation splits."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from study import race, runner
from study.data import Dataset, Split
from study.engine import Outcome, trial_seed
from study.plan import Budget, Confirm, Plan, Resources
from study.resplit import overlap_rho, resplit
from study.spaces import load_spaces


def plan_of(space: str = "core", **confirm: object) -> Plan:
    spaces = tuple(load_spaces(space))
    return Plan(space=space, spaces=spaces, data="animals", ratio=None, counts=None,
                budget=Budget(epochs=6, num_samples=3, batch_size=32, image_size=16, grace_period=2, reduction_factor=3),
                seed=7, resources=Resources(), tracking_uri="sqlite:////tmp/x.db", storage="/tmp/ray",
                results_dir=Path("/tmp/r"), study_id=f"{space}-1", confirm=Confirm(**confirm))


def toy_data(n_train: tuple[int, int] = (10, 60), n_eval: int = 20, copies: int = 4) -> Dataset:
    """Distinct images (each its own value), ``copies`` training images duplicated once."""
    counts = {"train": n_train, "val": (n_eval, n_eval), "test": (n_eval, n_eval)}
    splits, value = {}, 0
    for name, (a, b) in counts.items():
        labels = torch.tensor([0] * a + [1] * b)
        images = torch.zeros(len(labels), 1, 4, 4, dtype=torch.uint8)
        for i in range(len(labels)):
            images[i].view(-1)[:2] = torch.tensor([value % 256, value // 256])
            value += 1
        if name == "train":
            images[-copies:] = images[-2 * copies: -copies]  # exact copies stay in training
        splits[name] = Split(images, labels)
    return Dataset("toy", ("cat", "dog"), **splits)


def keys(split: Split) -> set[bytes]:
    return {bytes(img.numpy().tobytes()) for img in split.images}


def test_resplit_seeds_give_distinct_splits_whose_test_images_never_met_the_search() -> None:
    ds = toy_data()
    held = keys(ds.val)
    tests = []
    for seed in (8, 9, 10):
        new = resplit(ds, seed)
        for name in ("train", "val", "test"):  # same per-class sizes, the imbalance included
            assert getattr(new, name).counts(2) == getattr(ds, name).counts(2)
        assert not keys(new.test) & held, "a test image the search chose on"
        assert not (keys(new.test) & keys(new.train)) and not (keys(new.val) & keys(new.train))
        assert not keys(new.test) & keys(new.val)
        tests.append(keys(new.test))
    assert tests[0] != tests[1] != tests[2]
    assert keys(resplit(ds, 8).test) == tests[0]  # the same seed, the same split
    assert overlap_rho(ds) == pytest.approx(40 / (40 + 70))


def test_a_folder_with_its_own_test_split_is_not_resplit(tmp_path: Path) -> None:
    (tmp_path / "test").mkdir()
    folder = replace(plan_of(), data=str(tmp_path))
    assert not runner.resplits(folder) and runner.split_seed(folder, 3) == 7
    assert runner.resplits(plan_of()) and runner.split_seed(plan_of(), 3) == 11
    assert not runner.resplits(plan_of(resplit=False))


def outcome(approach: str, trial: str, history: dict[int, float], status: str = "FINISHED") -> Outcome:
    return Outcome(trial, {"approach": approach, "lr": float(len(trial)), "trial": trial}, status,
                   max(history.values()), 0, {}, None, history)


def test_candidates_are_ranked_at_equal_length_per_approach() -> None:
    plan = plan_of("core", top=2)
    outcomes = [outcome("baseline", "b0", {1: 0.1, 2: 0.5, 3: 0.6, 4: 0.7, 5: 0.8, 6: 0.95}),
                outcome("baseline", "b1", {1: 0.4, 2: 0.7}), outcome("baseline", "b2", {1: 0.3, 2: 0.6}),
                outcome("baseline", "b3", {1: 0.9, 2: 0.99}, status="FAILED"),
                outcome("focal", "f0", {1: 0.2, 2: 0.3})]
    ranked = runner.candidates(plan, outcomes)
    assert [c["trial"] for c in ranked["baseline"]] == ["b1", "b2", "b0"]  # compared at epoch 2; a failed trial never
    assert [c["trial"] for c in ranked["focal"]] == ["f0"]
    configs = runner.race_configs(plan, ranked)
    assert {c["approach"] for c in configs} == {"baseline"}  # one candidate: nothing to race
    assert sorted((c["race_seed"], c["config_rank"]) for c in configs) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(c["phase"] == "race" and c["split_seed"] == 7 for c in configs)
    assert {c["trial_seed"] for c in configs} == {trial_seed(7, "race", 0), trial_seed(7, "race", 1)}
    raced = [Outcome("r", {**c}, "FINISHED", 0.9 if c["config_rank"] == 1 else 0.5, 6) for c in configs]
    chosen, means = runner.choose(ranked, raced)
    assert chosen["baseline"]["trial"] == "b2" and chosen["baseline"]["config_rank"] == 1
    assert means["baseline"] == {"0": 0.5, "1": 0.9} and chosen["focal"]["trial"] == "f0"
    one = plan_of("core", top=1)  # --confirm-top 1 (what --smoke sets): one candidate each, no race
    assert runner.race_configs(one, runner.candidates(one, outcomes)) == []
    # ranked at the highest rung one trial reached: b0 at epoch 6
    assert runner.choose(runner.candidates(one, outcomes), [])[0]["baseline"]["trial"] == "b0"


def test_round_configs_pair_seeds_across_approaches_on_their_own_splits() -> None:
    plan = plan_of()
    ledger = race.Ledger(candidates={"baseline": {"approach": "baseline"}, "focal": {"approach": "focal"}})
    configs = runner.round_configs(plan, ledger, {"baseline": [0, 1], "focal": [1]}, k=2)
    seeds = {(c["approach"], c["confirm_seed"]): c for c in configs}
    assert set(seeds) == {("baseline", 0), ("baseline", 1), ("focal", 1)}
    assert seeds[("baseline", 1)]["trial_seed"] == seeds[("focal", 1)]["trial_seed"] == trial_seed(7, "confirm", 1)
    assert seeds[("focal", 1)]["split_seed"] == 9 and all(c["round"] == 2 and c["phase"] == "confirm" for c in configs)


def test_point_symbols_come_from_the_training_split_and_the_evaluation_costs() -> None:
    from study.costs import binary_cost_matrix

    ds = toy_data()
    context = runner.point_context(plan_of(), ds, binary_cost_matrix(4.0, positive=ds.minority))
    assert context == {"inverse_frequency": 6.0, "eval_cost": pytest.approx(4.0), "drw_paper": 5}


def test_every_approachs_search_has_its_points_first_and_its_trial_count() -> None:
    from study.costs import binary_cost_matrix

    ds = toy_data()
    searches = runner.searches(plan_of("core"), ds, binary_cost_matrix(6.0, positive=0))
    assert {a: (len(s.points), s.trials) for a, s in searches.items()} == {
        "baseline": (1, 4), "class_weight": (2, 7), "focal": (3, 9), "logit_adjusted": (2, 7)}
    assert searches["class_weight"].points[1] == {"lr": 1e-3, "weight_ratio": 6.0}
    smoke = runner.searches(replace(plan_of("core"), smoke=True), ds, binary_cost_matrix(6.0, positive=0))
    assert {s.trials for s in smoke.values()} == {2}


def test_a_fixed_configuration_is_one_trial() -> None:
    ds = toy_data()
    searches = runner.searches(plan_of("paper"), ds, np.array([[0.0, 1.0], [1.0, 0.0]]))
    assert {s.trials for s in searches.values()} == {1} and all(not s.points for s in searches.values())
