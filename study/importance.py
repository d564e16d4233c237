"""Which hyperparameters mattered: fANOVA importances and a parallel-coordinates plot per approach.

Rebuilt from MLflow after the study: each SEARCH child run becomes a completed Optuna trial (its
searched params, its best validation macro-F1 over the epochs it ran) in an in-memory Optuna
study, which Optuna's ``FanovaImportanceEvaluator`` and ``plot_parallel_coordinate`` read. The
results are attached to the approach's parent run (``importance.json``,
``parallel_coordinates.png``) and summarised in ``summary.md``.

Trials that ASHA stopped early count with the best score they reached, which favours the
configurations that ran longer: the importances describe this search, not the space in general.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from study import store
from study.names import VAL_MACRO_F1

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

# Per-trial bookkeeping a child run logs as params although nothing searched them (they vary by trial).
NOT_SEARCHED = frozenset({"trial_seed", "split_seed", "seed", "trial_id", "phase", "confirm_seed", "config_rank"})
SEARCHED_TAG = "searched"  # on the parent: the searched keys, comma-separated (inferred when absent)


@dataclass(frozen=True)
class Trial:
    run_id: str
    params: dict[str, str]  # as MLflow holds them: strings
    value: float  # best val_macro_f1 over the epochs run


@dataclass(frozen=True)
class Importance:
    approach: str
    n_trials: int
    searched: tuple[str, ...]
    importance: dict[str, float] = field(default_factory=dict)  # fANOVA, largest first, sums to 1
    reason: str = ""  # why there is no importance ("" when there is)

    def as_dict(self) -> dict[str, Any]:
        return {"approach": self.approach, "n_trials": self.n_trials, "searched": list(self.searched),
                "importance": self.importance, "reason": self.reason}


def search_trials(uri: str, experiment: str, study_id: str, approach: str) -> list[Trial]:
    """The approach's search children that reported validation macro-F1 at least once."""
    out = []
    for run in store.children(uri, experiment, study_id, approach, phase="search"):
        points = store.history(uri, run.run_id, VAL_MACRO_F1)
        if points:
            out.append(Trial(run.run_id, run.params, max(v for _, v in points)))
    return out


def searched_keys(trials: list[Trial], tag: str | None = None) -> tuple[str, ...]:
    """The parent's ``searched`` tag if set; otherwise the params whose value differs between trials."""
    if tag:
        return tuple(k.strip() for k in tag.split(",") if k.strip())
    keys = sorted({k for t in trials for k in t.params} - NOT_SEARCHED)
    return tuple(k for k in keys if len({t.params.get(k) for t in trials}) > 1)


def _number(text: str) -> float | int | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def distributions(trials: list[Trial], keys: tuple[str, ...]) -> dict[str, optuna.distributions.BaseDistribution]:
    """Distributions spanning the values seen (MLflow keeps values, not the space): all ints -> int,
    all numbers -> float, else categorical. Log scale (the plot's axes only: fANOVA works on raw
    values) when every value is positive and they span a factor of 10 or more."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for key in keys:
        texts = sorted({t.params[key] for t in trials if key in t.params})
        numbers = [_number(s) for s in texts]
        if not texts:
            continue
        if any(n is None for n in numbers) or any(s.lower() in ("nan", "inf", "-inf") for s in texts):
            out[key] = CategoricalDistribution(texts)
            continue
        low, high = min(numbers), max(numbers)
        log = low > 0 and high >= 10 * low
        out[key] = (IntDistribution(low, high, log=log) if all(isinstance(n, int) for n in numbers)
                    else FloatDistribution(float(low), float(high), log=log))
    return out


def optuna_study(trials: list[Trial], keys: tuple[str, ...]) -> optuna.Study:
    """An in-memory Optuna study (maximising val macro-F1) holding ``trials`` as completed trials."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = distributions(trials, keys)
    study = optuna.create_study(direction="maximize")
    for t in trials:
        present = {k: d for k, d in dists.items() if k in t.params}
        params = {k: t.params[k] if isinstance(d, CategoricalDistribution) else _number(t.params[k])
                  for k, d in present.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=present, value=t.value))
    return study


def analyse(approach: str, trials: list[Trial], searched: tuple[str, ...], seed: int = 0) -> Importance:
    """fANOVA importances of ``searched`` over ``trials``, or the reason there are none."""
    n, reason = len(trials), ""
    if n < 2:
        reason = f"{n} search trial{'s' if n != 1 else ''} with {VAL_MACRO_F1}: importance needs at least 2"
    elif not searched:
        reason = "no searched parameter varies between the trials"
    elif len(searched) == 1:
        reason = f"one searched parameter ({searched[0]}): nothing to weigh it against"
    elif len({t.value for t in trials}) == 1:
        reason = f"every trial scored the same {VAL_MACRO_F1} ({trials[0].value:.4g}): no variance to explain"
    if reason:
        return Importance(approach, n, searched, reason=reason)
    import optuna

    study = optuna_study(trials, searched)
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    scores = optuna.importance.get_param_importances(study, evaluator=evaluator)
    if not scores:
        return Importance(approach, n, searched, reason="the searched parameters are not shared by every trial")
    return Importance(approach, n, searched, {k: float(v) for k, v in scores.items()})


def parallel_coordinates(trials: list[Trial], searched: tuple[str, ...], title: str) -> Figure:
    """Optuna's parallel-coordinates plot: one line per trial, coloured by its best val macro-F1."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna

    study = optuna_study(trials, searched)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", "Attempting to set identical low and high ylims")  # a param that never moved
        ax = optuna.visualization.matplotlib.plot_parallel_coordinate(study, target_name=VAL_MACRO_F1)
    ax.set_title(title)
    return ax.figure


def for_parent(uri: str, parent: store.Run, trials: list[Trial], seed: int = 0) -> Importance:
    """Analyse one approach's search ``trials`` (see :func:`search_trials`) and attach ``importance.json``
    (and, with at least 2 trials and a searched parameter, ``parallel_coordinates.png``) to its parent run."""
    result = analyse(parent.approach, trials, searched_keys(trials, parent.tags.get(SEARCHED_TAG)), seed)
    store.log_dict(uri, parent.run_id, result.as_dict(), "importance.json")
    if len(trials) >= 2 and result.searched:
        import matplotlib.pyplot as plt

        fig = parallel_coordinates(trials, result.searched, f"{parent.approach}: search trials")
        store.log_figure(uri, parent.run_id, fig, "parallel_coordinates.png")
        plt.close(fig)
    return result


def markdown(results: list[Importance]) -> list[str]:
    """The summary's section: per approach, its params by fANOVA importance, or why there are none."""
    lines = ["## Which hyperparameters mattered", "",
             f"fANOVA importance (Optuna) of each searched parameter for the best {VAL_MACRO_F1} a search "
             "trial reached; importances sum to 1. Early-stopped trials count with what they reached, so "
             "this describes the search as run. Plots: `parallel_coordinates.png` on each parent run.", ""]
    for r in results:
        lines.append(f"### {r.approach} ({r.n_trials} trials)")
        lines.append("")
        if r.importance:
            lines += ["| parameter | importance |", "|---|---|"]
            lines += [f"| {k} | {v:.2f} |" for k, v in r.importance.items()]
        else:
            lines.append(f"No importance: {r.reason}.")
        lines.append("")
    return lines
