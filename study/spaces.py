"""Search spaces: YAML (search_spaces/<name>.yaml) -> a validated space -> an Optuna define-by-run function.

A space file holds data only:

    description: one line
    defaults: {epochs: 12, num_samples: 16, ...}   # the budget; CLI flags override
    fixed:    {loss: focal}                          # trial settings that are not searched
    params:                                          # searched, in order (optuna's short form)
      lr:    {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
      alpha: {type: float, low: 0.1, high: 0.9, when: {loss: [focal]}}   # conditional
      freeze: {type: categorical, choices: [none, layer2]}

A space without params is one fixed configuration. A composite (``all.yaml``) lists ``approaches``
under one shared budget: each a space name, or an inline mapping ``{name, description, fixed,
params}`` with the same rules as a space file. Every value is checked when loaded: names, types,
ranges (NaN and infinities never pass), and the settings that only make sense together.

Standard library and PyYAML only: the CLI validates a space before torch loads.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from study.errors import StudyError
from study.names import BACKBONES, BASE_LOSSES, COST_USES, FREEZE, LOSSES, MODELS, SAMPLERS
from study.paths import read_text

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
NAME_PATTERN = "[A-Za-z0-9_-]+"
MAX_NAME_LENGTH = 64  # names become file, run and study names
MAX_SPACE_BYTES = 1 << 20  # a space file is a page of YAML

# Every trial setting with its default; spaces may fix or search only these keys (but trial_seed).
TRIAL_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,  # Adam learning rate
    "weight_decay": 0.0,  # Adam L2 penalty
    "sampler": "none",  # data approach, see study.names.SAMPLERS
    "ratio": 1.0,  # sampling ratio: minority / majority after resampling, (0, 1]
    "k_neighbors": 5,  # SMOTE neighbours (the CLI checks them against the minority's count)
    "loss": "ce",  # see study.names.LOSSES
    "gamma": 2.0,  # focal modulating exponent (focal, and class_balanced on a focal base); 0 = cross-entropy
    "alpha": None,  # focal class balance: weight of the minority class (others 1 - alpha); None = unweighted
    "weight_ratio": None,  # weighted_ce: minority:majority weight ratio (None = inverse frequency)
    "beta": 0.9999,  # class_balanced: effective-number beta in (0, 1); w_c = (1 - beta) / (1 - beta^n_c)
    "base_loss": "ce",  # class_balanced: the loss its weights scale, ce | focal
    "max_margin": 0.5,  # ldam_drw: the largest class margin (the rarest class's), in logit units before s = 30
    "drw_epoch": 8,  # ldam_drw: first epoch (counted from 1) with deferred re-weighting (the paper: 160 of 200)
    "tau": 1.0,  # logit_adjusted: scale of the log class prior added to the logits; 0 = cross-entropy
    "model": "scratch",  # scratch | pretrained
    "backbone": "resnet18",  # see study.names.BACKBONES
    "weights": None,  # pretrained from: imagenet | source | a state-dict file
    "freeze": "none",  # freeze the backbone up to: none | stem | layer1..layer4 (pretrained models only)
    "cost_ratio": None,  # misclassification costs: FN:FP for the minority (2 classes), else the largest cost n
    "match_steps": False,  # train every epoch for the unresampled training set's optimizer steps (paper protocol)
    "cost_use": "both",  # a cost matrix as: weights (rescaled class weights in the loss), threshold
    #                      (minimum-expected-cost decisions) or both
    "trial_seed": 0,  # int: weight init, resampling, batch order; set by the searcher, never by a space file
}
SEARCHER_KEYS = ("trial_seed",)
# The budget: study-level settings a space sets and CLI flags override (integers >= 1 unless a rule says more).
BUDGET_DEFAULTS: dict[str, Any] = {
    "epochs": 10,  # max epochs per trial (ASHA's max_t)
    "num_samples": 8,  # trials per approach
    "batch_size": 64,
    "image_size": 32,  # pixels, square
    "grace_period": 2,  # ASHA: epochs before a trial can be stopped
    "reduction_factor": 3,  # ASHA: keep the top 1/rf at each rung
}
NAMED_CHOICES: dict[str, tuple[str, ...]] = {
    "sampler": SAMPLERS, "loss": LOSSES, "model": MODELS, "backbone": BACKBONES, "freeze": FREEZE,
    "base_loss": BASE_LOSSES, "cost_use": COST_USES,
}
Rule = tuple[str, Callable[[float], bool]]  # the rule as messages state it, and its test
# Numeric trial settings; NaN and infinities fail before these are tested. Every rule is an interval,
# so a searched range passes when both its bounds do.
RANGES: dict[str, Rule] = {
    "lr": ("in (0, 10]", lambda v: 0 < v <= 10),
    "weight_decay": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "ratio": ("in (0, 1]", lambda v: 0 < v <= 1),
    "k_neighbors": ("in [1, 100]", lambda v: 1 <= v <= 100),
    "gamma": ("in [0, 20]", lambda v: 0 <= v <= 20),
    "alpha": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "weight_ratio": ("in (0, 1e4]", lambda v: 0 < v <= 1e4),
    "beta": ("in (0, 1)", lambda v: 0 < v < 1),
    "max_margin": ("in (0, 10]", lambda v: 0 < v <= 10),
    "drw_epoch": ("in [1, 10000]", lambda v: 1 <= v <= 10000),
    "tau": ("in [0, 20]", lambda v: 0 <= v <= 20),
    "cost_ratio": ("in (0, 1e6]", lambda v: 0 < v <= 1e6),
}
INTEGER_KEYS = ("k_neighbors", "drw_epoch")
BUDGET_RANGES: dict[str, Rule] = {
    "image_size": ("in [16, 1024]", lambda v: 16 <= v <= 1024),
    "reduction_factor": (">= 2", lambda v: v >= 2),
}
PARAM_KEYS = {"float": {"type", "low", "high", "log", "when"}, "int": {"type", "low", "high", "log", "when"},
              "categorical": {"type", "choices", "when"}}
TOP_KEYS = {"description", "defaults", "fixed", "params", "approaches", "points", "no_neutral"}
INLINE_KEYS = ("name", "description", "fixed", "params", "points", "no_neutral")
# Point values that depend on the data or the budget, resolved when the study starts (``resolve_points``).
SYMBOLS: dict[str, str] = {
    "inverse_frequency": "weight_ratio",  # majority / minority training images (class weights at inverse frequency)
    "eval_cost": "cost_ratio",  # the study's evaluation FN:FP cost ratio
    "drw_paper": "drw_epoch",  # LDAM-DRW's schedule: re-weighting from 80 % of the epochs (160 of 200 in the paper)
}
NEUTRAL = "neutral"  # the point whose setting equals the baseline's


class SpaceError(StudyError):
    """A bad search-space file: the message names the file, the key, the rule and the value."""


@dataclass(frozen=True)
class Space:
    name: str
    description: str
    defaults: dict[str, Any]
    fixed: dict[str, Any]
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # empty: one fixed configuration
    points: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> a setting of every searched param
    no_neutral: str = ""  # why the space has no neutral point (the baseline's setting), when it has none

    def define_by_run(self, constants: dict[str, Any] | None = None) -> DefineByRun:
        """The Optuna define-by-run function of this space; ``constants`` join every trial's config."""
        return DefineByRun(self, {**TRIAL_DEFAULTS, **(constants or {}), **self.fixed})

    def active(self, point: dict[str, Any]) -> list[str]:
        """The params a trial at ``point`` is asked (a conditional param only when its ``when`` matches)."""
        chosen, asked = {**TRIAL_DEFAULTS, **self.fixed}, []
        for key, p in self.params.items():
            if all(point.get(k, chosen.get(k)) in v for k, v in p.get("when", {}).items()):
                asked.append(key)
        return asked

    def resolve_points(self, context: dict[str, float]) -> tuple[list[dict[str, Any]], Space, list[str]]:
        """``(points, space, widened)``: the points with their symbols replaced by ``context``'s values, the space
        with every float or int range widened to hold them (Optuna would accept an enqueued value outside its
        range with only a warning), and one line per widened range."""
        points, params, widened = [], {k: dict(p) for k, p in self.params.items()}, []
        for name, point in self.points.items():
            resolved = {}
            for key, value in point.items():
                if isinstance(value, str) and value in SYMBOLS:
                    value = int(context[value]) if key in INTEGER_KEYS else float(context[value])
                resolved[key] = value
                p = params[key]
                if p["type"] != "categorical" and not p["low"] <= value <= p["high"]:
                    p["low"], p["high"] = min(p["low"], value), max(p["high"], value)
                    widened.append(f"{self.name}: {key} range widened to [{p['low']:g}, {p['high']:g}] "
                                   f"for point {name} ({value:g})")
            points.append(resolved)
        return points, replace(self, params=params), widened

    def values(self, key: str) -> list[Any]:
        """Every value ``key`` can take: its fixed value or default, its choices, or a searched number's low and high."""
        return _values(self.fixed, self.params, key)


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


def _check_name(name: Any, where: str) -> None:
    """Space names become file names and run names: no paths, quotes or spaces."""
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        shown = name[:MAX_NAME_LENGTH] if isinstance(name, str) else name
        raise SpaceError(f"{where}space name must match {NAME_PATTERN}, got {shown!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise SpaceError(f"{where}space name must be at most {MAX_NAME_LENGTH} characters, got {len(name)}: "
                         f"'{name[:20]}...'")


def _refuse_aliases(text: str) -> None:
    """An alias (``*name``) could expand a few lines into gigabytes (a billion laughs): refused from the event
    stream, before anything is composed or expanded."""
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a space file",
                                              event.start_mark)


MAX_FLOW_DEPTH = 64  # nested [ and { in a space file (its deepest legitimate use is 3)


def _refuse_deep_nesting(text: str, path: Path) -> None:
    """PyYAML's scanner takes time growing with the square of the flow depth (100,000 nested ``[`` took 105 s before
    its RecursionError): counted first, in the raw text (a bracket inside a quoted string counts too)."""
    depth = 0
    for bracket in re.finditer(r"[\[\]{}]", text):
        depth += 1 if bracket.group() in "[{" else -1
        if depth > MAX_FLOW_DEPTH:
            raise SpaceError(f"{path.name}: malformed YAML: nested too deeply")


def _read(name: str, directory: Path | None) -> dict[str, Any]:
    """A space file's top-level mapping: a regular UTF-8 file of at most MAX_SPACE_BYTES, plain YAML (no aliases)."""
    _check_name(name, "")
    path = (directory or SPACES_DIR) / f"{name}.yaml"
    if not os.path.lexists(path):
        raise SpaceError(f"unknown space '{name}'; choose one of: {', '.join(available(directory))}")
    text = read_text(path, MAX_SPACE_BYTES, SpaceError, path.name)  # stat first: a FIFO or device never hangs
    _refuse_deep_nesting(text, path)
    try:
        _refuse_aliases(text)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SpaceError(f"{path.name}{where}: malformed YAML: {getattr(err, 'problem', err)}") from None
    except RecursionError:
        raise SpaceError(f"{path.name}: malformed YAML: nested too deeply") from None
    if not isinstance(doc, dict):
        raise SpaceError(f"{path.name}: expected a mapping at the top level")
    unknown = sorted(set(doc) - TOP_KEYS)
    if unknown:
        raise SpaceError(f"{path.name}: unknown key '{unknown[0]}'; allowed: {', '.join(sorted(TOP_KEYS))}")
    return doc


def _mapping(file: str, doc: dict[str, Any], key: str) -> dict[str, Any]:
    """``doc[key]`` as a mapping (absent or empty: {}), else a SpaceError."""
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpaceError(f"{file}: {key}: expected a mapping, got {value!r}")
    return value


def _check_number(where: str, name: str, value: Any, rule: Rule, integer: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise SpaceError(f"{where}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise SpaceError(f"{where}: expected a finite number, got {value!r}")
    if not rule[1](value):
        raise SpaceError(f"{where}: `{name} {rule[0]}` must hold, but got {value!r}")


def _check_value(where: str, key: str, value: Any) -> None:
    """One value of trial setting ``key`` (fixed, a choice, a bound or a ``when`` value)."""
    if value is None and TRIAL_DEFAULTS[key] is None:
        return  # null is the setting's "off" (no alpha, inverse frequency, no costs, no weights)
    if isinstance(TRIAL_DEFAULTS[key], bool):
        if not isinstance(value, bool):
            raise SpaceError(f"{where}: expected true or false, got {value!r}")
        return
    if key in NAMED_CHOICES:
        if not isinstance(value, str) or value not in NAMED_CHOICES[key]:
            raise SpaceError(f"{where}: unknown {key} {value!r}; choose one of: {', '.join(NAMED_CHOICES[key])}")
    elif key in RANGES:
        _check_number(where, key, value, RANGES[key], key in INTEGER_KEYS)
    elif not isinstance(value, str) or not value:  # weights: imagenet | source | a state-dict file
        raise SpaceError(f"{where}: expected a name or a file path, got {value!r}")


def _check_key(where: str, key: str) -> None:
    if key in SEARCHER_KEYS:
        raise SpaceError(f"{where}: set by the searcher for each trial, never by a space file")
    if key not in TRIAL_DEFAULTS:
        allowed = ", ".join(k for k in TRIAL_DEFAULTS if k not in SEARCHER_KEYS)
        raise SpaceError(f"{where}: unknown key; allowed: {allowed}")


def _check_param(file: str, key: str, p: Any, earlier: set[str]) -> dict[str, Any]:
    where = f"{file}: params.{key}"
    if not isinstance(p, dict) or p.get("type") not in PARAM_KEYS:
        raise SpaceError(f"{where}: expected a mapping with type float, int or categorical, got {p!r}")
    unknown = sorted(set(p) - PARAM_KEYS[p["type"]])
    if unknown:
        raise SpaceError(f"{where}: unknown key '{unknown[0]}' for type {p['type']}")
    when = p.get("when", {})
    if "when" in p and (not isinstance(when, dict) or not when):
        raise SpaceError(f"{where}.when: expected a mapping of earlier keys to lists of values, got {when!r}")
    for cond, vals in when.items():
        if cond not in earlier:
            raise SpaceError(f"{where}.when: '{cond}' must name an earlier param or fixed value")
        if not isinstance(vals, list) or not vals:
            raise SpaceError(f"{where}.when.{cond}: expected a non-empty list of values, got {vals!r}")
        for v in vals:
            _check_value(f"{where}.when.{cond}", cond, v)
    if p["type"] == "categorical":
        if not isinstance(p.get("choices"), list) or not p["choices"]:
            raise SpaceError(f"{where}: choices must be a non-empty list, got {p.get('choices')!r}")
        for choice in p["choices"]:
            _check_value(f"{where}.choices", key, choice)
        return p
    if key not in RANGES or (key in INTEGER_KEYS and p["type"] == "float"):
        need = "categorical" if key not in RANGES else "int or categorical"
        raise SpaceError(f"{where}: {key} needs type {need}, got type {p['type']}")
    for bound in ("low", "high"):
        v = p.get(bound)
        if p["type"] == "int" and (isinstance(v, bool) or not isinstance(v, int)):
            raise SpaceError(f"{where}.{bound}: expected an integer, got {v!r}")
        _check_value(f"{where}.{bound}", key, v)
    if p["low"] > p["high"]:
        raise SpaceError(f"{where}: `low <= high` must hold, but got (low={p['low']}, high={p['high']})")
    if not isinstance(p.get("log", False), bool):
        raise SpaceError(f"{where}: log must be true or false, got {p['log']!r}")
    if p.get("log") and p["low"] <= 0:
        raise SpaceError(f"{where}: `low > 0` must hold for a log scale, but got low={p['low']}")
    return p


def _values(fixed: dict[str, Any], params: dict[str, dict[str, Any]], key: str) -> list[Any]:
    if key in params:
        p = params[key]
        return list(p["choices"]) if p["type"] == "categorical" else [p["low"], p["high"]]
    return [fixed.get(key, TRIAL_DEFAULTS[key])]


def _check_together(file: str, fixed: dict[str, Any], params: dict[str, dict[str, Any]]) -> None:
    """Settings that only make sense together."""
    frozen = [f for f in _values(fixed, params, "freeze") if f != "none"]
    if frozen:
        models = _values(fixed, params, "model")
        if "freeze" in params and "model" in params["freeze"].get("when", {}):  # asked only for some models
            models = [m for m in models if m in params["freeze"]["when"]["model"]]
        if any(m != "pretrained" for m in models):
            other = next(m for m in models if m != "pretrained")
            raise SpaceError(f"{file}: freeze: `freeze == none unless model == pretrained` must hold, "
                             f"but got freeze={frozen[0]!r} with model={other!r}")
    costs = any(c is not None for c in _values(fixed, params, "cost_ratio"))
    if costs and any(u in ("weights", "both") for u in _values(fixed, params, "cost_use")):
        # the cost matrix's class weights go into weighted_ce, in place of its own weights
        loss = next((x for x in _values(fixed, params, "loss") if x != "weighted_ce"), None)
        if loss is not None:
            raise SpaceError(f"{file}: cost_use: `loss == weighted_ce when cost_use is weights or both` must hold, "
                             f"but got loss={loss!r}")
        ratio = next((r for r in _values(fixed, params, "weight_ratio") if r is not None), None)
        if ratio is not None:
            raise SpaceError(f"{file}: weight_ratio: `weight_ratio == null when cost_use is weights or both` "
                             f"must hold (the cost matrix sets the class weights), but got {ratio!r}")


def _defaults(file: str, doc: dict[str, Any]) -> dict[str, Any]:
    defaults = _mapping(file, doc, "defaults")
    for key, value in defaults.items():
        if key not in BUDGET_DEFAULTS:
            raise SpaceError(f"{file}: defaults.{key}: unknown key; allowed: {', '.join(BUDGET_DEFAULTS)}")
        rule = BUDGET_RANGES.get(key, (">= 1", lambda v: v >= 1))
        _check_number(f"{file}: defaults.{key}", key, value, rule, integer=True)
    return {**BUDGET_DEFAULTS, **defaults}


def _approach(file: str, name: str, doc: dict[str, Any], defaults: dict[str, Any]) -> Space:
    """One approach from a space file or an inline composite entry: description, fixed and params."""
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise SpaceError(f"{file}: description: expected a string, got {description!r}")
    fixed = _mapping(file, doc, "fixed")
    for key, value in fixed.items():
        _check_key(f"{file}: fixed.{key}", key)
        _check_value(f"{file}: fixed.{key}", key, value)
    params: dict[str, dict[str, Any]] = {}
    for key, p in _mapping(file, doc, "params").items():
        _check_key(f"{file}: params.{key}", key)
        if key in fixed:
            raise SpaceError(f"{file}: params.{key}: also fixed; a key is either fixed or searched")
        params[key] = _check_param(file, key, p, set(fixed) | set(params))
    _check_together(file, fixed, params)
    space = Space(name, description, defaults, fixed, params)
    points, no_neutral = _check_points(file, space, doc)
    return replace(space, points=points, no_neutral=no_neutral)


def _check_points(file: str, space: Space, doc: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], str]:
    """``points``: name -> a value (or a data symbol) for every param a trial at that point is asked; a space with
    points must have a ``neutral`` one or say why it has none (``no_neutral``). A space without points (a user's
    own) is searched from its first draw; every space of search_spaces/ has them (tests/test_race.py)."""
    points = _mapping(file, doc, "points")
    no_neutral = doc.get("no_neutral", "")
    if not isinstance(no_neutral, str):
        raise SpaceError(f"{file}: no_neutral: expected a sentence saying why, got {no_neutral!r}")
    if points and NEUTRAL not in points and not no_neutral:
        raise SpaceError(f"{file}: points: a space that searches needs a '{NEUTRAL}' point (the baseline's setting) "
                         "or a no_neutral sentence saying why it has none")
    if points and not space.params:
        raise SpaceError(f"{file}: points: a fixed configuration has nothing to search; remove its points")
    for name, point in points.items():
        where = f"{file}: points.{name}"
        _check_name(name, f"{where}: ")
        if not isinstance(point, dict):
            raise SpaceError(f"{where}: expected a mapping of searched params to values, got {point!r}")
        unknown = sorted(set(point) - set(space.params))
        if unknown:
            raise SpaceError(f"{where}: '{unknown[0]}' is not searched; a point sets searched params only: "
                             f"{', '.join(space.params)}")
        missing = [k for k in space.active(point) if k not in point]
        if missing:
            raise SpaceError(f"{where}: sets no value for '{missing[0]}'; a point sets every param it searches, "
                             "lr included (the loop's default is 1e-3)")
        for key, value in point.items():
            if isinstance(value, str) and value in SYMBOLS:
                if SYMBOLS[value] != key:
                    raise SpaceError(f"{where}.{key}: '{value}' is a value of {SYMBOLS[value]}, not of {key}")
                continue
            _check_value(f"{where}.{key}", key, value)
            p = space.params[key]
            if p["type"] == "categorical" and value not in p["choices"]:
                raise SpaceError(f"{where}.{key}: {value!r} is not one of the choices {p['choices']}")
    return points, no_neutral


def load_space(name: str, directory: Path | None = None) -> Space:
    """Load and validate one approach's space from ``directory`` (default: search_spaces/)."""
    doc = _read(name, directory)
    file = f"{name}.yaml"
    if "approaches" in doc:
        raise SpaceError(f"{file}: lists approaches; load it with load_spaces")
    return _approach(file, name, doc, _defaults(file, doc))


def load_spaces(name: str, directory: Path | None = None) -> list[Space]:
    """One space, or every approach of a composite space (``all``) under its one shared budget."""
    doc = _read(name, directory)
    if "approaches" not in doc:
        return [load_space(name, directory)]
    file = f"{name}.yaml"
    approaches = doc["approaches"]
    if not isinstance(approaches, list) or not approaches:
        raise SpaceError(f"{file}: approaches: expected a non-empty list of space names or mappings, got {approaches!r}")
    extra = sorted(set(doc) - {"description", "defaults", "approaches"})
    if extra:
        raise SpaceError(f"{file}: {extra[0]}: a composite space holds only description, defaults and approaches")
    budget = _defaults(file, doc)
    spaces: list[Space] = []
    for i, entry in enumerate(approaches):
        where = f"{file}: approaches[{i}]"
        if isinstance(entry, str):
            _check_name(entry, f"{where}: ")
            if entry == name:
                raise SpaceError(f"{where}: '{name}' cannot list itself")
            space = load_space(entry, directory)
        elif isinstance(entry, dict):
            unknown = sorted(set(entry) - set(INLINE_KEYS))
            if unknown:
                raise SpaceError(f"{where}: unknown key '{unknown[0]}'; an inline approach holds {', '.join(INLINE_KEYS)}"
                                 " (the budget is the composite's)")
            _check_name(entry.get("name"), f"{where}: ")
            space = _approach(f"{file}: approaches.{entry['name']}", entry["name"], entry, budget)
        else:
            raise SpaceError(f"{where}: expected a space name or a mapping with {', '.join(INLINE_KEYS)}, got {entry!r}")
        if any(s.name == space.name for s in spaces):
            raise SpaceError(f"{where}: approach '{space.name}' is listed twice; approach names must be unique")
        spaces.append(replace(space, defaults=budget))
    return spaces
