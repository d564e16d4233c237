"""Every YAML space loads and samples valid configurations; bad files fail naming file and key."""

from __future__ import annotations

import pickle
from pathlib import Path

import optuna
import pytest

from study import spaces
from study.losses import LOSSES
from study.models import FREEZE, MODELS
from study.sampling import SAMPLERS
from study.spaces import BUDGET_DEFAULTS, TRIAL_DEFAULTS, SpaceError, available, load_space, load_spaces

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE_FILES = sorted(p.stem for p in spaces.SPACES_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", SPACE_FILES)
def test_every_space_loads_and_samples_valid_configs(name: str) -> None:
    for space in load_spaces(name):
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1))
        fn = space.define_by_run({"seed": 0})
        pickle.loads(pickle.dumps(fn))  # Ray saves the searcher to resume it
        for _ in range(5):
            trial = study.ask()
            config = {**fn(trial), **trial.params}
            assert set(config) >= set(TRIAL_DEFAULTS), "every trial setting is present"
            assert config["sampler"] in SAMPLERS and config["loss"] in LOSSES
            assert config["model"] in MODELS and config["freeze"] in FREEZE
            assert 0 < config["ratio"] <= 1 and config["lr"] > 0
            for key, p in space.params.items():
                if key in trial.params and p["type"] != "categorical":
                    assert p["low"] <= config[key] <= p["high"]
            study.tell(trial, 0.5)
        assert set(space.defaults) == set(BUDGET_DEFAULTS)


def test_all_runs_every_approach_under_one_budget() -> None:
    approaches = load_spaces("all")
    assert [s.name for s in approaches] == ["baseline", "class_weight", "focal", "sampling", "transfer", "cost"]
    assert len({tuple(sorted(s.defaults.items())) for s in approaches}) == 1


def test_unknown_space_lists_choices() -> None:
    with pytest.raises(SpaceError, match=r"unknown space 'focl'; choose one of: all, baseline, .*focal"):
        load_spaces("focl")


@pytest.fixture()
def space_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(spaces, "SPACES_DIR", tmp_path)
    return tmp_path


GOOD = "fixed: {loss: focal}\nparams:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD + "  gama: {type: float, low: 0, high: 5}\n", r"bad\.yaml: params\.gama: unknown key"),
        (GOOD + "epochs: 3\n", r"bad\.yaml: unknown key 'epochs'"),
        (GOOD + "  gamma: {type: float, low: 5, high: 1}\n",
         r"bad\.yaml: params\.gamma: `low <= high` must hold, but got \(low=5, high=1\)"),
        (GOOD + "  gamma: {type: float, low: 0, high: 1, log: true}\n",
         r"bad\.yaml: params\.gamma: `low > 0` must hold for a log scale, but got low=0"),
        (GOOD + "  sampler: {type: categorical, choices: []}\n", r"bad\.yaml: params\.sampler: choices must be a non-empty list"),
        (GOOD + "  sampler: {type: categorical, choices: [smote]}\n",
         r"bad\.yaml: sampler: unknown value 'smote'; choose one of: none, over_aug"),
        (GOOD + "  gamma: {type: float, low: zero, high: 1}\n", r"bad\.yaml: params\.gamma: low must be a number, got 'zero'"),
        (GOOD + "  gamma: {type: flt, low: 0, high: 1}\n", r"bad\.yaml: params\.gamma: expected a mapping with type float"),
        (GOOD + "  gamma: {type: float, low: 0, high: 1, step: 2}\n", r"bad\.yaml: params\.gamma: unknown key 'step'"),
        (GOOD + "  batch: {type: int, low: 1, high: 2}\n", r"bad\.yaml: params\.batch: unknown key"),
        (GOOD + "  ratio: {type: float, low: 0.1, high: 1, when: {samplr: [over_dup]}}\n", r"params\.ratio\.when: 'samplr'"),
        ("fixed: {lr: fast}\n" + GOOD.split("\n", 1)[1], r"bad\.yaml: lr: expected a number, got 'fast'"),
        ("fixed: {loss: focl}\n" + GOOD.split("\n", 1)[1], r"bad\.yaml: loss: unknown value 'focl'; choose one of: ce, focal"),
        (GOOD + "defaults: {epochs: 0}\n", r"bad\.yaml: defaults\.epochs: expected a positive integer, got 0"),
        (GOOD + "defaults: {epoch: 3}\n", r"bad\.yaml: defaults\.epoch: unknown key"),
        ("fixed: {loss: ce}\n", r"bad\.yaml: params: a space must search at least one parameter"),
        ("fixed: {lr: 0.1}\nparams:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-2}\n", r"bad\.yaml: params\.lr: also fixed"),
    ],
)
def test_bad_space_names_file_and_key(space_dir: Path, text: str, message: str) -> None:
    (space_dir / "bad.yaml").write_text(text)
    with pytest.raises(SpaceError, match=message):
        load_spaces("bad")


def test_malformed_yaml_names_file_and_line(space_dir: Path) -> None:
    (space_dir / "broken.yaml").write_text("fixed: {loss: ce}\nparams:\n  lr: {type: float, low: 1\n")
    with pytest.raises(SpaceError, match=r"broken\.yaml line \d+: malformed YAML"):
        load_spaces("broken")


def test_conditional_param_is_asked_only_when_its_condition_holds(space_dir: Path) -> None:
    (space_dir / "cond.yaml").write_text(
        "params:\n"
        "  sampler: {type: categorical, choices: [none, over_dup]}\n"
        "  ratio: {type: float, low: 0.3, high: 0.6, when: {sampler: [over_dup]}}\n"
    )
    fn = load_space("cond").define_by_run()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        config = {**fn(trial), **trial.params}
        seen.add(config["sampler"])
        if config["sampler"] == "none":
            assert "ratio" not in trial.params and config["ratio"] == TRIAL_DEFAULTS["ratio"]
        else:
            assert 0.3 <= trial.params["ratio"] <= 0.6
        study.tell(trial, 0.0)
    assert seen == {"none", "over_dup"}


def test_available_lists_the_shipped_spaces() -> None:
    assert {"all", "baseline", "class_weight", "focal", "sampling", "transfer"} <= set(available())
