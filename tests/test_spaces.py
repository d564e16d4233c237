"""Every YAML space loads and samples valid configurations; bad files fail naming file, key, rule and value."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from study import names, spaces
from study.spaces import (
    BUDGET_DEFAULTS,
    INTEGER_KEYS,
    NAMED_CHOICES,
    RANGES,
    TRIAL_DEFAULTS,
    SpaceError,
    available,
    load_space,
    load_spaces,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE_FILES = sorted(p.stem for p in spaces.SPACES_DIR.glob("*.yaml"))
ALL = ["baseline", "class_weight", "focal", "sampling", "transfer", "cost_weights", "cost_threshold", "cost",
       "class_balanced", "ldam_drw", "logit_adjusted", "balanced_softmax"]
PAPER = ["paper_over_aug", "paper_over_dup", "paper_over_smote", "paper_under_cluster", "paper_under_random",
         "baseline", "paper_class_weight", "paper_focal", "paper_transfer"]


def sample(space: spaces.Space, n: int = 5) -> list[dict]:
    """``n`` configurations as Ray sees them: the define-by-run constants merged with the asked values."""
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1))
    fn = space.define_by_run({"seed": 0})
    configs = []
    for _ in range(n):
        trial = study.ask()
        configs.append({**fn(trial), **trial.params})
        study.tell(trial, 0.5)
    return configs


@pytest.mark.parametrize("name", SPACE_FILES)
def test_every_space_loads_and_samples_valid_configs(name: str) -> None:
    from study.losses import build_loss  # the spaces' rules agree with what the losses accept

    for space in load_spaces(name):
        pickle.loads(pickle.dumps(space.define_by_run({"seed": 0})))  # Ray saves the searcher to resume it
        assert set(space.defaults) == set(BUDGET_DEFAULTS)
        for config in sample(space, 5 if space.params else 1):
            assert set(config) >= set(TRIAL_DEFAULTS), "every trial setting is present"
            for key, choices in NAMED_CHOICES.items():
                assert config[key] in choices, key
            for key, (rule, ok) in RANGES.items():
                if config[key] is not None:
                    assert math.isfinite(config[key]) and ok(config[key]), f"{key} {rule}"
                    assert isinstance(config[key], int) or key not in INTEGER_KEYS
            assert config["freeze"] == "none" or config["model"] == "pretrained"
            for key, p in space.params.items():
                if key in config and p["type"] != "categorical":
                    assert p["low"] <= config[key] <= p["high"]
            options = {k: config[k] for k in names.LOSS_OPTIONS[config["loss"]]}
            if config["cost_ratio"] is not None and config["cost_use"] in ("weights", "both"):
                options["class_weights"] = [1.0, 2.0]
            build_loss(config["loss"], [10, 100], 0, **options)


def test_all_runs_every_approach_under_one_budget() -> None:
    approaches = load_spaces("all")
    assert [s.name for s in approaches] == ALL
    assert len({tuple(sorted(s.defaults.items())) for s in approaches}) == 1
    assert {s.fixed["loss"] for s in approaches} == set(names.LOSSES), "every loss takes part"


@pytest.mark.parametrize(
    ("name", "loss", "use"), [("cost_weights", "weighted_ce", "weights"), ("cost_threshold", "ce", "threshold"),
                              ("cost", "weighted_ce", "both")],
)
def test_cost_spaces_apply_the_matrix_their_own_way(name: str, loss: str, use: str) -> None:
    space = load_space(name)
    assert (space.fixed["loss"], space.fixed["cost_use"]) == (loss, use)
    assert list(space.params) == ["cost_ratio", "lr"]


@pytest.mark.parametrize(("name", "searched"), [("class_balanced", {"lr", "beta", "base_loss", "gamma"}),
                                                ("ldam_drw", {"lr", "max_margin", "drw_epoch"}),
                                                ("logit_adjusted", {"lr", "tau"}), ("balanced_softmax", {"lr"})])
def test_long_tail_spaces_search_their_loss(name: str, searched: set[str]) -> None:
    space = load_space(name)
    assert space.fixed["loss"] == name and set(space.params) == searched


def test_paper_holds_the_nine_methods_with_the_paper_s_settings_and_no_search() -> None:
    approaches = load_spaces("paper")
    assert [s.name for s in approaches] == PAPER
    budget = approaches[0].defaults
    assert budget["epochs"] == 12 and budget["num_samples"] == 1 and budget["grace_period"] == budget["epochs"]
    by_name = {s.name: s for s in approaches}
    for s in approaches:
        assert s.params == {} and s.fixed["lr"] == 1e-4 and s.defaults == budget and s.description
        (config,) = sample(s, 1)
        assert config == {**TRIAL_DEFAULTS, "seed": 0, **s.fixed}, "a fixed configuration asks Optuna nothing"
    for sampler in ("over_aug", "over_dup", "over_smote", "under_cluster", "under_random"):
        fixed = by_name[f"paper_{sampler}"].fixed
        assert (fixed["sampler"], fixed["ratio"], fixed["loss"], fixed["model"]) == (sampler, 1.0, "ce", "scratch")
    assert by_name["paper_over_smote"].fixed["k_neighbors"] == 5
    assert by_name["baseline"].fixed == {"sampler": "none", "loss": "ce", "model": "scratch", "lr": 1e-4,
                                         "match_steps": True}
    assert all(s.fixed["match_steps"] for s in approaches), "every method the baseline's optimizer steps"
    assert by_name["paper_class_weight"].fixed["loss"] == "weighted_ce"
    assert by_name["paper_class_weight"].fixed["weight_ratio"] is None, "inverse frequency"
    assert {k: by_name["paper_focal"].fixed[k] for k in ("loss", "gamma", "alpha")} == {"loss": "focal", "gamma": 2.0,
                                                                                        "alpha": 0.25}
    transfer = by_name["paper_transfer"].fixed
    assert (transfer["model"], transfer["weights"], transfer["freeze"]) == ("pretrained", "source", "none")


def test_new_trial_keys_and_their_defaults() -> None:
    assert TRIAL_DEFAULTS["backbone"] == "resnet18" and NAMED_CHOICES["backbone"] == names.BACKBONES
    assert TRIAL_DEFAULTS["cost_use"] == "both" and NAMED_CHOICES["cost_use"] == ("weights", "threshold", "both")
    assert TRIAL_DEFAULTS["trial_seed"] == 0
    for key in ("beta", "base_loss", "max_margin", "drw_epoch", "tau"):
        assert key in TRIAL_DEFAULTS
    assert {k for options in names.LOSS_OPTIONS.values() for k in options} <= set(TRIAL_DEFAULTS)
    assert {k for options in names.SAMPLER_OPTIONS.values() for k in options} <= set(TRIAL_DEFAULTS)


def test_values_lists_fixed_choices_and_searched_bounds() -> None:
    space = load_space("class_balanced")
    assert space.values("loss") == ["class_balanced"]
    assert space.values("beta") == [0.9, 0.99, 0.999, 0.9999]
    assert space.values("lr") == [1.0e-4, 1.0e-2]
    assert space.values("k_neighbors") == [TRIAL_DEFAULTS["k_neighbors"]]


def test_importing_spaces_loads_no_torch() -> None:
    code = "import sys, study.spaces; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray', 'mlflow')" \
           " or m in ('study.losses', 'study.models', 'study.sampling')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(spaces.__file__).parent.parent)
    assert out.stdout.strip() == "[]"


def test_unknown_space_lists_choices() -> None:
    with pytest.raises(SpaceError, match=r"unknown space 'focl'; choose one of: all, balanced_softmax, .*focal"):
        load_spaces("focl")


@pytest.mark.parametrize("name", ["../../x", "a'b", "", "all.yaml", "a b", "x/y"])
def test_space_names_are_plain_words(name: str) -> None:
    with pytest.raises(SpaceError, match=rf"space name must match \[A-Za-z0-9_-\]\+, got {name!r}".replace(".", r"\.")):
        load_spaces(name)


@pytest.fixture()
def space_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(spaces, "SPACES_DIR", tmp_path)
    return tmp_path


GOOD = "fixed: {loss: focal}\nparams:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
PARAMS = "params:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # names, keys and structure
        (GOOD + "  gama: {type: float, low: 0, high: 5}\n", r"bad\.yaml: params\.gama: unknown key; allowed: lr, "),
        (GOOD + "epochs: 3\n", r"bad\.yaml: unknown key 'epochs'"),
        (GOOD + "  sampler: {type: categorical, choices: []}\n", r"bad\.yaml: params\.sampler: choices must be a non-empty list"),
        (GOOD + "  sampler: {type: categorical, choices: [smote]}\n",
         r"bad\.yaml: params\.sampler\.choices: unknown sampler 'smote'; choose one of: none, over_aug"),
        (GOOD + "  gamma: {type: float, low: zero, high: 1}\n", r"bad\.yaml: params\.gamma\.low: expected a number, got 'zero'"),
        (GOOD + "  gamma: {type: flt, low: 0, high: 1}\n", r"bad\.yaml: params\.gamma: expected a mapping with type float"),
        (GOOD + "  gamma: {type: float, low: 0, high: 1, step: 2}\n", r"bad\.yaml: params\.gamma: unknown key 'step'"),
        (GOOD + "  batch: {type: int, low: 1, high: 2}\n", r"bad\.yaml: params\.batch: unknown key"),
        (GOOD + "  sampler: {type: float, low: 0, high: 1}\n", r"bad\.yaml: params\.sampler: sampler needs type categorical"),
        (GOOD + "  k_neighbors: {type: float, low: 1, high: 5}\n",
         r"bad\.yaml: params\.k_neighbors: k_neighbors needs type int or categorical, got type float"),
        (GOOD + "  drw_epoch: {type: int, low: 1.5, high: 5}\n", r"bad\.yaml: params\.drw_epoch\.low: expected an integer, got 1\.5"),
        (GOOD + "  gamma: {type: float, low: 5, high: 1}\n",
         r"bad\.yaml: params\.gamma: `low <= high` must hold, but got \(low=5, high=1\)"),
        (GOOD + "  gamma: {type: float, low: 0, high: 1, log: true}\n",
         r"bad\.yaml: params\.gamma: `low > 0` must hold for a log scale, but got low=0"),
        (GOOD + "  gamma: {type: float, low: 0, high: 1, log: 1}\n", r"bad\.yaml: params\.gamma: log must be true or false"),
        ("fixed: {lr: fast}\n" + PARAMS.replace("lr", "gamma"), r"bad\.yaml: fixed\.lr: expected a number, got 'fast'"),
        ("fixed: {loss: focl}\n" + PARAMS,
         r"bad\.yaml: fixed\.loss: unknown loss 'focl'; choose one of: balanced_softmax, ce, class_balanced, focal"),
        ("fixed: {backbone: vgg16}\n" + PARAMS,
         r"bad\.yaml: fixed\.backbone: unknown backbone 'vgg16'; choose one of: resnet18, mobilenet_v2, efficientnet_lite0"),
        ("fixed: {cost_use: always}\n" + PARAMS,
         r"bad\.yaml: fixed\.cost_use: unknown cost_use 'always'; choose one of: weights, threshold, both"),
        ("fixed: {base_loss: bce}\n" + PARAMS, r"bad\.yaml: fixed\.base_loss: unknown base_loss 'bce'; choose one of: ce, focal"),
        ("fixed: {model: null}\n" + PARAMS, r"bad\.yaml: fixed\.model: unknown model None; choose one of: pretrained, scratch"),
        ("fixed: {weights: 3}\n" + PARAMS, r"bad\.yaml: fixed\.weights: expected a name or a file path, got 3"),
        ("fixed: {lr: 0.1}\nparams:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-2}\n", r"bad\.yaml: params\.lr: also fixed"),
        ("fixed: {trial_seed: 3}\n" + PARAMS, r"bad\.yaml: fixed\.trial_seed: set by the searcher for each trial, never by"),
        (GOOD + "  trial_seed: {type: int, low: 0, high: 9}\n", r"bad\.yaml: params\.trial_seed: set by the searcher"),
        ("description: [a, b]\n" + PARAMS, r"bad\.yaml: description: expected a string, got \['a', 'b'\]"),
        # malformed sections are SpaceErrors, never AttributeErrors
        ("fixed: focal\n" + PARAMS, r"bad\.yaml: fixed: expected a mapping, got 'focal'"),
        ("params: [lr, gamma]\n", r"bad\.yaml: params: expected a mapping, got \['lr', 'gamma'\]"),
        (GOOD + "defaults: 12\n", r"bad\.yaml: defaults: expected a mapping, got 12"),
        (GOOD + "  ratio: {type: float, low: 0.1, high: 1, when: [sampler]}\n",
         r"bad\.yaml: params\.ratio\.when: expected a mapping of earlier keys to lists of values, got \['sampler'\]"),
        (GOOD + "  ratio: {type: float, low: 0.1, high: 1, when: {samplr: [over_dup]}}\n",
         r"bad\.yaml: params\.ratio\.when: 'samplr' must name an earlier param or fixed value"),
        (GOOD + "  ratio: {type: float, low: 0.1, high: 1, when: {loss: focal}}\n",
         r"bad\.yaml: params\.ratio\.when\.loss: expected a non-empty list of values, got 'focal'"),
        (GOOD + "  ratio: {type: float, low: 0.1, high: 1, when: {loss: [focl]}}\n",
         r"bad\.yaml: params\.ratio\.when\.loss: unknown loss 'focl'"),
        # ranges, fixed and searched
        ("fixed: {lr: 0}\n" + PARAMS.replace("lr", "gamma"), r"bad\.yaml: fixed\.lr: `lr in \(0, 10\]` must hold, but got 0"),
        ("params:\n  lr: {type: float, low: -1.0, high: 1.0}\n", r"bad\.yaml: params\.lr\.low: `lr in \(0, 10\]` must hold, but got -1\.0"),
        (GOOD + "  weight_decay: {type: float, low: -0.1, high: 0.1}\n",
         r"bad\.yaml: params\.weight_decay\.low: `weight_decay in \[0, 1\]` must hold, but got -0\.1"),
        (GOOD + "  gamma: {type: categorical, choices: [2, -1]}\n",
         r"bad\.yaml: params\.gamma\.choices: `gamma in \[0, 20\]` must hold, but got -1"),
        ("fixed: {alpha: 1.5}\n" + PARAMS, r"bad\.yaml: fixed\.alpha: `alpha in \[0, 1\]` must hold, but got 1\.5"),
        (GOOD + "  ratio: {type: float, low: 0.5, high: 1.5}\n",
         r"bad\.yaml: params\.ratio\.high: `ratio in \(0, 1\]` must hold, but got 1\.5"),
        ("fixed: {ratio: 0}\n" + PARAMS, r"bad\.yaml: fixed\.ratio: `ratio in \(0, 1\]` must hold, but got 0"),
        ("fixed: {weight_ratio: 0}\n" + PARAMS, r"bad\.yaml: fixed\.weight_ratio: `weight_ratio in \(0, 1e4\]` must hold, but got 0"),
        ("fixed: {cost_ratio: -2}\n" + PARAMS, r"bad\.yaml: fixed\.cost_ratio: `cost_ratio in \(0, 1e6\]` must hold, but got -2"),
        ("fixed: {k_neighbors: 0}\n" + PARAMS, r"bad\.yaml: fixed\.k_neighbors: `k_neighbors in \[1, 100\]` must hold, but got 0"),
        ("fixed: {k_neighbors: 2.5}\n" + PARAMS, r"bad\.yaml: fixed\.k_neighbors: expected an integer, got 2\.5"),
        ("fixed: {beta: 1.0}\n" + PARAMS, r"bad\.yaml: fixed\.beta: `beta in \(0, 1\)` must hold, but got 1\.0"),
        (GOOD + "  beta: {type: categorical, choices: [0.9, 0]}\n",
         r"bad\.yaml: params\.beta\.choices: `beta in \(0, 1\)` must hold, but got 0"),
        ("fixed: {tau: -0.5}\n" + PARAMS, r"bad\.yaml: fixed\.tau: `tau in \[0, 20\]` must hold, but got -0\.5"),
        (GOOD + "  max_margin: {type: float, low: 0.0, high: 1.0}\n",
         r"bad\.yaml: params\.max_margin\.low: `max_margin in \(0, 10\]` must hold, but got 0\.0"),
        (GOOD + "  drw_epoch: {type: int, low: 0, high: 5}\n",
         r"bad\.yaml: params\.drw_epoch\.low: `drw_epoch in \[1, 10000\]` must hold, but got 0"),
        ("fixed: {lr: .nan}\n" + PARAMS.replace("lr", "gamma"), r"bad\.yaml: fixed\.lr: expected a finite number, got nan"),
        ("params:\n  lr: {type: float, low: 1.0e-4, high: .inf, log: true}\n",
         r"bad\.yaml: params\.lr\.high: expected a finite number, got inf"),
        (GOOD + "  weight_decay: {type: float, low: -.inf, high: 0.1}\n",
         r"bad\.yaml: params\.weight_decay\.low: expected a finite number, got -inf"),
        ("fixed: {lr: true}\n" + PARAMS.replace("lr", "gamma"), r"bad\.yaml: fixed\.lr: expected a number, got True"),
        # settings that only make sense together
        ("fixed: {model: scratch, freeze: layer2}\n" + PARAMS,
         r"bad\.yaml: freeze: `freeze == none unless model == pretrained` must hold, but got freeze='layer2' with model='scratch'"),
        (PARAMS + "  freeze: {type: categorical, choices: [none, layer1]}\n",
         r"bad\.yaml: freeze: `freeze == none unless model == pretrained` must hold, but got freeze='layer1' with "
         r"model='scratch'"),
        ("fixed: {loss: ce, cost_ratio: 5.0}\n" + PARAMS,
         r"bad\.yaml: cost_use: `loss == weighted_ce when cost_use is weights or both` must hold, but got loss='ce'"),
        ("fixed: {loss: weighted_ce, cost_use: weights, weight_ratio: 3.0}\n" + PARAMS + "  cost_ratio: {type: float, low: 1, high: 5}\n",
         r"bad\.yaml: weight_ratio: `weight_ratio == null when cost_use is weights or both` must hold .*, but got 3\.0"),
        # the budget
        (GOOD + "defaults: {epochs: 0}\n", r"bad\.yaml: defaults\.epochs: `epochs >= 1` must hold, but got 0"),
        (GOOD + "defaults: {epochs: 2.5}\n", r"bad\.yaml: defaults\.epochs: expected an integer, got 2\.5"),
        (GOOD + "defaults: {num_samples: true}\n", r"bad\.yaml: defaults\.num_samples: expected an integer, got True"),
        (GOOD + "defaults: {epoch: 3}\n", r"bad\.yaml: defaults\.epoch: unknown key"),
        (GOOD + "defaults: {reduction_factor: 1}\n",
         r"bad\.yaml: defaults\.reduction_factor: `reduction_factor >= 2` must hold, but got 1"),
        (GOOD + "defaults: {image_size: 8}\n", r"bad\.yaml: defaults\.image_size: `image_size in \[16, 1024\]` must hold, but got 8"),
        (GOOD + "defaults: {image_size: 2048}\n", r"bad\.yaml: defaults\.image_size: `image_size in \[16, 1024\]` must hold"),
    ],
)
def test_bad_space_names_file_key_rule_and_value(space_dir: Path, text: str, message: str) -> None:
    (space_dir / "bad.yaml").write_text(text)
    with pytest.raises(SpaceError, match=message):
        load_spaces("bad")


@pytest.mark.parametrize(
    "text",
    [
        "fixed: {model: pretrained, weights: source, freeze: layer2}\n" + PARAMS,
        "params:\n  model: {type: categorical, choices: [scratch, pretrained]}\n"
        "  freeze: {type: categorical, choices: [none, layer1], when: {model: [pretrained]}}\n",
        "fixed: {loss: ce, cost_ratio: 5.0, cost_use: threshold}\n" + PARAMS,
        "fixed: {alpha: 0, lr: 1.0e-4}\n",  # Lin et al.'s alpha is in the closed [0, 1]; and no params: a fixed config
        "fixed: {alpha: null, weights: null, cost_ratio: null}\n" + PARAMS,
        GOOD + "defaults: {image_size: 16, reduction_factor: 2}\n",
    ],
)
def test_good_edge_cases_load(space_dir: Path, text: str) -> None:
    (space_dir / "ok.yaml").write_text(text)
    (space,) = load_spaces("ok")
    assert sample(space, 2)


def test_malformed_yaml_names_file_and_line(space_dir: Path) -> None:
    (space_dir / "broken.yaml").write_text("fixed: {loss: ce}\nparams:\n  lr: {type: float, low: 1\n")
    with pytest.raises(SpaceError, match=r"broken\.yaml line \d+: malformed YAML"):
        load_spaces("broken")


def test_a_space_without_params_is_one_fixed_configuration(space_dir: Path) -> None:
    (space_dir / "fixed.yaml").write_text("fixed: {loss: focal, gamma: 1.0, lr: 3.0e-4}\n")
    (space,) = load_spaces("fixed")
    assert space.params == {}
    study = optuna.create_study()
    trial = study.ask()
    assert space.define_by_run({"seed": 0})(trial) == {**TRIAL_DEFAULTS, "seed": 0, "loss": "focal", "gamma": 1.0,
                                                       "lr": 3.0e-4}
    assert trial.params == {}


INLINE = """description: two inline approaches and a file
defaults: {epochs: 4, num_samples: 1}
approaches:
  - name: quick_focal
    description: focal at Lin et al.'s settings
    fixed: {loss: focal, gamma: 2.0, alpha: 0.25}
  - name: quick_lr
    params:
      lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  - plain
"""


def test_a_composite_mixes_inline_approaches_and_space_files(space_dir: Path) -> None:
    (space_dir / "plain.yaml").write_text("defaults: {epochs: 99}\nfixed: {loss: ce}\n")
    (space_dir / "mix.yaml").write_text(INLINE)
    got = load_spaces("mix")
    assert [s.name for s in got] == ["quick_focal", "quick_lr", "plain"]
    assert all(s.defaults == {**BUDGET_DEFAULTS, "epochs": 4, "num_samples": 1} for s in got), "the composite's budget"
    assert got[0].fixed == {"loss": "focal", "gamma": 2.0, "alpha": 0.25} and got[0].description.startswith("focal")
    assert list(got[1].params) == ["lr"] and got[1].fixed == {}


@pytest.mark.parametrize(
    ("approaches", "message"),
    [
        ("[]", r"comp\.yaml: approaches: expected a non-empty list of space names or mappings, got \[\]"),
        ("plain", r"comp\.yaml: approaches: expected a non-empty list"),
        ("[comp]", r"comp\.yaml: approaches\[0\]: 'comp' cannot list itself"),
        ("[plain, ../plain]", r"comp\.yaml: approaches\[1\]: space name must match \[A-Za-z0-9_-\]\+, got '\.\./plain'"),
        ("[plain, other]", r"other\.yaml: lists approaches; load it with load_spaces"),
        ("[plain, 3]", r"comp\.yaml: approaches\[1\]: expected a space name or a mapping with name, description, fixed, "
                       r"params, points, no_neutral, got 3$"),
        ("[plain, plain]", r"comp\.yaml: approaches\[1\]: approach 'plain' is listed twice"),
        ("[plain, {name: plain, fixed: {loss: focal}}]", r"comp\.yaml: approaches\[1\]: approach 'plain' is listed twice"),
        ("[{fixed: {loss: ce}}]", r"comp\.yaml: approaches\[0\]: space name must match \[A-Za-z0-9_-\]\+, got None$"),
        ("[{name: \"x'y\"}]", r"comp\.yaml: approaches\[0\]: space name must match \[A-Za-z0-9_-\]\+, got \"x'y\"$"),
        (f"[{{name: {'n' * 65}}}]", r"comp\.yaml: approaches\[0\]: space name must be at most 64 characters, got 65: "
                                  r"'n{20}\.\.\.'$"),
        ("[{name: a, defaults: {epochs: 3}}]", r"comp\.yaml: approaches\[0\]: unknown key 'defaults'; an inline approach "
                                               r"holds name, description, fixed, params, points, no_neutral \(the budget "
                                               r"is the composite's\)$"),
        ("[{name: a, fixed: {lr: -1}}]", r"comp\.yaml: approaches\.a: fixed\.lr: `lr in \(0, 10\]` must hold, but got -1"),
        ("[{name: a, params: {gamma: {type: float, low: 0, high: .inf}}}]",
         r"comp\.yaml: approaches\.a: params\.gamma\.high: expected a finite number, got inf"),
        ("[{name: a, fixed: [loss]}]", r"comp\.yaml: approaches\.a: fixed: expected a mapping, got \['loss'\]"),
    ],
)
def test_bad_composites_name_the_entry(space_dir: Path, approaches: str, message: str) -> None:
    (space_dir / "plain.yaml").write_text("fixed: {loss: ce}\n")
    (space_dir / "other.yaml").write_text("approaches: [plain]\n")
    (space_dir / "comp.yaml").write_text(f"approaches: {approaches}\n")
    with pytest.raises(SpaceError, match=message):
        load_spaces("comp")


def test_a_composite_holds_only_description_defaults_and_approaches(space_dir: Path) -> None:
    (space_dir / "comp.yaml").write_text("approaches: [x]\nfixed: {loss: ce}\n")
    with pytest.raises(SpaceError, match=r"comp\.yaml: fixed: a composite space holds only description, defaults and approaches"):
        load_spaces("comp")


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
    assert {"all", "paper", "cost_weights", "cost_threshold", *ALL} <= set(available())


def test_anchors_load_but_aliases_are_refused_unexpanded(space_dir: Path) -> None:
    """An alias could expand a few lines into gigabytes (a billion laughs); the error names the line, never the value."""
    (space_dir / "anchored.yaml").write_text("fixed: &f {loss: focal}\n")
    assert load_spaces("anchored")[0].fixed == {"loss": "focal"}
    (space_dir / "merge.yaml").write_text("x: &f {loss: focal}\nfixed:\n  <<: *f\n")
    with pytest.raises(SpaceError, match=r"^merge\.yaml line 3: malformed YAML: aliases \(\*name\) are not allowed in a "
                                         r"space file$"):
        load_spaces("merge")


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p.mkdir(), r"^odd\.yaml: a folder, not a regular file$"),
    (lambda p: os.mkfifo(p), r"^odd\.yaml: a FIFO, not a regular file$"),
    (lambda p: p.symlink_to("/dev/null"), r"^odd\.yaml: a character device, not a regular file$"),
    (lambda p: p.write_bytes(b"\xff"), r"^odd\.yaml: not UTF-8 text \(byte 0\)$"),
    (lambda p: p.write_text("a: " + "{x: " * 50_000 + "}" * 50_000), r"^odd\.yaml: malformed YAML: nested too deeply$"),
])
def test_a_space_file_must_be_small_regular_utf8_text(space_dir: Path, make, message: str) -> None:
    make(space_dir / "odd.yaml")
    with pytest.raises(SpaceError, match=message):
        load_spaces("odd")


def test_every_range_has_an_upper_bound_so_lr_1e300_is_refused(tmp_path) -> None:
    """A space searching lr up to 1e300 once ran and reported lr 5.5e13 as the best configuration."""
    from study.spaces import RANGES, SpaceError, load_space

    (tmp_path / "huge.yaml").write_text("params:\n  lr: {type: float, low: 1.0e-4, high: 1.0e+300, log: true}\n")
    with pytest.raises(SpaceError, match=r"huge\.yaml: params\.lr\.high: `lr in \(0, 10\]` must hold, but got 1e\+300"):
        load_space("huge", tmp_path)
    assert all(not rule[1](1e300) for rule in RANGES.values())
