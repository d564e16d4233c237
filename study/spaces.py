"""Search spaces: YAML (search_spaces/<name>.yaml) -> a validated space -> an Optuna define-by-run function.

A space file holds data only:

    description: one line
    defaults: {epochs: 12, num_samples: 16, ...}   # the budget; CLI flags override
    fixed:    {loss: focal}                          # trial settings that are not searched
    params:                                          # searched, in order (optuna's short form)
      lr:    {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
      alpha: {type: float, low: 0.1, high: 0.9, when: {loss: [focal]}}   # conditional
      freeze: {type: categorical, choices: [none, layer2]}

``all.yaml`` lists ``approaches`` (other spaces) and the one budget they all share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from study.losses import LOSSES
from study.models import FREEZE, MODELS
from study.sampling import SAMPLERS

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"

# Every trial setting with its default; spaces may fix or search only these keys.
TRIAL_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,  # Adam learning rate
    "weight_decay": 0.0,  # Adam L2 penalty
    "sampler": "none",  # data approach, see study.sampling.SAMPLERS
    "ratio": 1.0,  # sampling ratio: minority / majority after resampling, (0, 1]
    "k_neighbors": 5,  # SMOTE neighbours
    "loss": "ce",  # see study.losses.LOSSES
    "gamma": 2.0,  # focal modulating exponent
    "alpha": None,  # focal class balance: weight of the smallest class (others 1 - alpha)
    "weight_ratio": None,  # weighted_ce: minority:majority weight ratio (None = inverse frequency)
    "model": "scratch",  # scratch | pretrained
    "weights": None,  # pretrained from: imagenet | source | a state-dict file
    "freeze": "none",  # freeze the backbone up to: none | stem | layer1..layer4
    "cost_ratio": None,  # misclassification costs: FN:FP for the minority (2 classes), else the largest cost n
}
# The budget: study-level settings a space sets and CLI flags override.
BUDGET_DEFAULTS: dict[str, Any] = {
    "epochs": 10,  # max epochs per trial (ASHA's max_t)
    "num_samples": 8,  # trials per approach
    "batch_size": 64,
    "image_size": 32,  # pixels, square
    "grace_period": 2,  # ASHA: epochs before a trial can be stopped
    "reduction_factor": 3,  # ASHA: keep the top 1/rf at each rung
}
NAMED_CHOICES = {"sampler": sorted(SAMPLERS), "loss": sorted(LOSSES), "model": list(MODELS), "freeze": list(FREEZE)}
PARAM_KEYS = {"float": {"type", "low", "high", "log", "when"}, "int": {"type", "low", "high", "log", "when"},
              "categorical": {"type", "choices", "when"}}
TOP_KEYS = {"description", "defaults", "fixed", "params", "approaches"}


class SpaceError(ValueError):
    """A bad search-space file: the message names the file and the key."""


@dataclass(frozen=True)
class Space:
    name: str
    description: str
    defaults: dict[str, Any]
    fixed: dict[str, Any]
    params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def define_by_run(self, constants: dict[str, Any] | None = None) -> "DefineByRun":
        """The Optuna define-by-run function of this space; ``constants`` join every trial's config."""
        return DefineByRun(self, {**TRIAL_DEFAULTS, **(constants or {}), **self.fixed})

    def values(self, key: str) -> list[Any]:
        """Every value ``key`` can take in this space (fixed, choices, or the default)."""
        if key in self.params and self.params[key]["type"] == "categorical":
            return list(self.params[key]["choices"])
        return [self.fixed.get(key, TRIAL_DEFAULTS.get(key))]


@dataclass(frozen=True)
class DefineByRun:
    """Picklable (Ray saves the searcher to resume it): asks Optuna for each param in order; a
    conditional param (``when``) is asked only when the values chosen before it match."""

    space: Space
    constants: dict[str, Any]

    def __call__(self, trial: Any) -> dict[str, Any]:
        chosen, asked = dict(self.constants), set()
        for key, p in self.space.params.items():
            if any(chosen.get(k) not in v for k, v in p.get("when", {}).items()):
                continue
            if p["type"] == "categorical":
                chosen[key] = trial.suggest_categorical(key, p["choices"])
            elif p["type"] == "float":
                chosen[key] = trial.suggest_float(key, p["low"], p["high"], log=p.get("log", False))
            else:
                chosen[key] = trial.suggest_int(key, p["low"], p["high"], log=p.get("log", False))
            asked.add(key)
        # Ray merges the asked values in itself; a skipped conditional param keeps its default
        return {k: v for k, v in chosen.items() if k not in asked}


def available(directory: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (directory or SPACES_DIR).glob("*.yaml"))


def _read(name: str, directory: Path | None) -> dict[str, Any]:
    path = (directory or SPACES_DIR) / f"{name}.yaml"
    if not path.exists():
        raise SpaceError(f"unknown space '{name}'; choose one of: {', '.join(available(directory))}")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SpaceError(f"{path.name}{where}: malformed YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(doc, dict):
        raise SpaceError(f"{path.name}: expected a mapping at the top level")
    unknown = sorted(set(doc) - TOP_KEYS)
    if unknown:
        raise SpaceError(f"{path.name}: unknown key '{unknown[0]}'; allowed: {', '.join(sorted(TOP_KEYS))}")
    return doc


def _check_value(file: str, key: str, value: Any) -> None:
    if key in NAMED_CHOICES and value not in NAMED_CHOICES[key] and not (key == "model" and value is None):
        raise SpaceError(f"{file}: {key}: unknown value {value!r}; choose one of: {', '.join(NAMED_CHOICES[key])}")
    default = TRIAL_DEFAULTS.get(key, BUDGET_DEFAULTS.get(key))
    numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
    if numeric and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
        raise SpaceError(f"{file}: {key}: expected a number, got {value!r}")


def _check_param(file: str, key: str, p: Any, earlier: set[str]) -> dict[str, Any]:
    where = f"{file}: params.{key}"
    if not isinstance(p, dict) or p.get("type") not in PARAM_KEYS:
        raise SpaceError(f"{where}: expected a mapping with type float, int or categorical, got {p!r}")
    unknown = sorted(set(p) - PARAM_KEYS[p["type"]])
    if unknown:
        raise SpaceError(f"{where}: unknown key '{unknown[0]}' for type {p['type']}")
    for cond, vals in p.get("when", {}).items():
        if cond not in earlier or not isinstance(vals, list):
            raise SpaceError(f"{where}.when: '{cond}' must name an earlier param or fixed value, with a list of values")
    if p["type"] == "categorical":
        if not isinstance(p.get("choices"), list) or not p["choices"]:
            raise SpaceError(f"{where}: choices must be a non-empty list, got {p.get('choices')!r}")
        for choice in p["choices"]:
            _check_value(file, key, choice)
        return p
    number = float if p["type"] == "float" else int
    for bound in ("low", "high"):
        v = p.get(bound)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (number is int and not isinstance(v, int)):
            raise SpaceError(f"{where}: {bound} must be {'a number' if number is float else 'an integer'}, got {v!r}")
    if p["low"] > p["high"]:
        raise SpaceError(f"{where}: `low <= high` must hold, but got (low={p['low']}, high={p['high']})")
    if not isinstance(p.get("log", False), bool):
        raise SpaceError(f"{where}: log must be true or false, got {p['log']!r}")
    if p.get("log") and p["low"] <= 0:
        raise SpaceError(f"{where}: `low > 0` must hold for a log scale, but got low={p['low']}")
    return p


def _defaults(file: str, doc: dict[str, Any]) -> dict[str, Any]:
    defaults = doc.get("defaults") or {}
    for key, value in defaults.items():
        if key not in BUDGET_DEFAULTS:
            raise SpaceError(f"{file}: defaults.{key}: unknown key; allowed: {', '.join(BUDGET_DEFAULTS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpaceError(f"{file}: defaults.{key}: expected a positive integer, got {value!r}")
    return {**BUDGET_DEFAULTS, **defaults}


def load_space(name: str, directory: Path | None = None) -> Space:
    """Load and validate one approach's space from ``directory`` (default: search_spaces/)."""
    doc = _read(name, directory)
    file = f"{name}.yaml"
    if "approaches" in doc:
        raise SpaceError(f"{file}: lists approaches; load it with load_spaces")
    fixed = doc.get("fixed") or {}
    for key, value in fixed.items():
        if key not in TRIAL_DEFAULTS:
            raise SpaceError(f"{file}: fixed.{key}: unknown key; allowed: {', '.join(TRIAL_DEFAULTS)}")
        _check_value(file, key, value)
    params: dict[str, dict[str, Any]] = {}
    for key, p in (doc.get("params") or {}).items():
        if key not in TRIAL_DEFAULTS:
            raise SpaceError(f"{file}: params.{key}: unknown key; allowed: {', '.join(TRIAL_DEFAULTS)}")
        if key in fixed:
            raise SpaceError(f"{file}: params.{key}: also fixed; a key is either fixed or searched")
        params[key] = _check_param(file, key, p, set(fixed) | set(params))
    if not params:
        raise SpaceError(f"{file}: params: a space must search at least one parameter")
    return Space(name, str(doc.get("description", "")), _defaults(file, doc), fixed, params)


def load_spaces(name: str, directory: Path | None = None) -> list[Space]:
    """One space, or every approach of a composite space (``all``) under its one shared budget."""
    doc = _read(name, directory)
    if "approaches" not in doc:
        return [load_space(name, directory)]
    file = f"{name}.yaml"
    approaches = doc["approaches"]
    if not isinstance(approaches, list) or not approaches:
        raise SpaceError(f"{file}: approaches must be a non-empty list of space names")
    if set(doc) - {"description", "defaults", "approaches"}:
        raise SpaceError(f"{file}: a composite space holds only description, defaults and approaches")
    budget = _defaults(file, doc)
    spaces = []
    for approach in approaches:
        if approach == name:
            raise SpaceError(f"{file}: approaches: '{name}' cannot list itself")
        space = load_space(approach, directory)
        spaces.append(Space(space.name, space.description, budget, space.fixed, space.params))
    return spaces
