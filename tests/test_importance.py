"""study.importance: fANOVA importances and parallel coordinates from search trials, on a real SQLite store."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest

from study import store
from study.importance import (
    Importance,
    Trial,
    analyse,
    distributions,
    for_parent,
    markdown,
    parallel_coordinates,
    search_trials,
    searched_keys,
)


def _trials(n: int = 24, seed: int = 0) -> list[Trial]:
    """Scores driven by the learning rate (a peak at 1e-3); gamma is noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        lr, gamma = 10 ** rng.uniform(-4, -2), rng.uniform(0.5, 4)
        value = 0.8 - 0.1 * (np.log10(lr) + 3) ** 2 + rng.normal(0, 0.002)
        out.append(Trial(f"r{i}", {"lr": str(lr), "gamma": str(gamma), "loss": "focal", "trial_seed": str(i)}, float(value)))
    return out


def test_fanova_finds_the_parameter_that_drives_the_score():
    result = analyse("focal", _trials(), ("lr", "gamma"))
    assert result.reason == "" and result.n_trials == 24
    assert list(result.importance) == ["lr", "gamma"]  # largest first
    assert result.importance["lr"] > 0.8 and sum(result.importance.values()) == pytest.approx(1)
    assert analyse("focal", _trials(), ("lr", "gamma")) == result  # seeded


@pytest.mark.parametrize(("trials", "searched", "reason"), [
    ([], ("lr",), "0 search trials with val_macro_f1: importance needs at least 2"),
    (_trials(1), ("lr", "gamma"), "1 search trial with val_macro_f1: importance needs at least 2"),
    (_trials(5), (), "no searched parameter varies between the trials"),
    (_trials(5), ("lr",), r"one searched parameter \(lr\): nothing to weigh it against"),
    ([Trial(str(i), {"lr": str(i), "gamma": "1"}, 0.5) for i in range(3)], ("lr", "gamma"),
     r"every trial scored the same val_macro_f1 \(0.5\): no variance to explain"),
])
def test_no_importance_says_why(trials, searched, reason):
    result = analyse("focal", trials, searched)
    assert result.importance == {}
    assert re.fullmatch(reason, result.reason), result.reason


def test_searched_keys_from_the_tag_or_from_what_varies():
    trials = _trials(4)
    assert searched_keys(trials) == ("gamma", "lr")  # loss is fixed; trial_seed varies but is bookkeeping
    assert searched_keys(trials, "lr, gamma") == ("lr", "gamma")


def test_distributions_span_the_values_seen():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    trials = [Trial("a", {"lr": "0.0001", "ratio": "0.5", "k": "3", "sampler": "over_dup"}, 0.1),
              Trial("b", {"lr": "0.01", "ratio": "1.0", "k": "7", "sampler": "none"}, 0.2)]
    d = distributions(trials, ("lr", "ratio", "k", "sampler"))
    assert d["lr"] == FloatDistribution(0.0001, 0.01, log=True)  # a factor of 100: a log axis
    assert d["ratio"] == FloatDistribution(0.5, 1.0)
    assert d["k"] == IntDistribution(3, 7)
    assert d["sampler"] == CategoricalDistribution(["none", "over_dup"])


def test_parallel_coordinates_names_the_parameters():
    import matplotlib.pyplot as plt

    fig = parallel_coordinates(_trials(6), ("lr", "gamma"), "focal: search trials")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert ax.get_title() == "focal: search trials" and "lr" in labels and "gamma" in labels
    plt.close(fig)


def test_markdown_lists_importances_or_the_reason():
    lines = markdown([Importance("focal", 24, ("lr", "gamma"), {"lr": 0.9, "gamma": 0.1}),
                      Importance("baseline", 1, ("lr",), reason="1 search trial with val_macro_f1: importance needs at least 2")])
    text = "\n".join(lines)
    assert "### focal (24 trials)\n\n| parameter | importance |\n|---|---|\n| lr | 0.90 |\n| gamma | 0.10 |" in text
    assert "### baseline (1 trials)\n\nNo importance: 1 search trial with val_macro_f1: importance needs at least 2." in text


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Parents of two approaches: focal with 8 search children (one failed before any epoch), baseline with one."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root}/m.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("all", artifact_location=(root / "artifacts").as_uri())
    parents, best = {}, {}
    for approach, trials in (("focal", _trials(8)), ("baseline", _trials(1))):
        tags = {"study_id": "s1", "approach": approach}
        parents[approach] = client.create_run(exp, tags={**tags, "role": "parent"}).info.run_id
        for t in trials:
            run_id = client.create_run(exp, tags={**tags, "role": "child", "phase": "search",
                                                  "mlflow.parentRunId": parents[approach]}).info.run_id
            curve = [t.value - 0.05, t.value, t.value - 0.02]  # the best epoch is not the last
            client.log_batch(run_id, metrics=[Metric("val_macro_f1", v, 0, s) for s, v in enumerate(curve, 1)],
                             params=[Param(k, v) for k, v in t.params.items()])
            best[run_id] = t.value
    failed = client.create_run(exp, tags={"study_id": "s1", "approach": "focal", "role": "child", "phase": "search"})
    client.set_terminated(failed.info.run_id, "FAILED")
    client.create_run(exp, tags={"study_id": "s1", "approach": "focal", "role": "child", "phase": "confirm"})
    return {"uri": uri, "parents": parents, "best": best}


def _parent(tracked: dict[str, Any], approach: str) -> store.Run:
    return next(p for p in store.parents(tracked["uri"], "all", "s1") if p.approach == approach)


def test_search_trials_take_each_childs_best_epoch(tracked):
    trials = search_trials(tracked["uri"], "all", "s1", "focal")
    assert len(trials) == 8  # the failed child reported nothing; the confirm child is not a search trial
    assert {t.run_id: t.value for t in trials} == pytest.approx({k: v for k, v in tracked["best"].items()
                                                                if k in {t.run_id for t in trials}})


def test_for_parent_attaches_importance_and_the_plot(tracked):
    uri, parent = tracked["uri"], _parent(tracked, "focal")
    result = for_parent(uri, parent, search_trials(uri, "all", "s1", "focal"))
    assert set(result.importance) == {"lr", "gamma"}
    assert store.json_artifact(uri, parent.run_id, "importance.json") == json.loads(json.dumps(result.as_dict()))
    assert "parallel_coordinates.png" in [f.path for f in store.client(uri).list_artifacts(parent.run_id)]


def test_for_parent_with_one_trial_records_the_reason_and_no_plot(tracked):
    uri, parent = tracked["uri"], _parent(tracked, "baseline")
    result = for_parent(uri, parent, search_trials(uri, "all", "s1", "baseline"))
    saved = store.json_artifact(uri, parent.run_id, "importance.json")
    assert saved["importance"] == {} and saved["reason"] == result.reason != ""
    assert [f.path for f in store.client(uri).list_artifacts(parent.run_id)] == ["importance.json"]
