"""study.report and study.store on a real SQLite tracking store holding runs in the study's layout."""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from study import report, store
from study.stats import macro_f1

STUDY, OLD = "s-new", "s-old"
SEEDS = range(5)
# probability of a correct test prediction: focal clearly ahead, class_weight level with baseline
SKILL = {"baseline": 0.70, "class_weight": 0.70, "focal": 0.92, "transfer": 0.8}
_clock = itertools.count(1_700_000_000_000, 1000)  # start times in order, never tied


def _run(client: Any, exp: str, tags: dict[str, str], name: str, params: dict[str, Any] | None = None,
         metrics: dict[str, float] | None = None, history: dict[str, list[float]] | None = None,
         artifacts: dict[str, Any] | None = None, status: str = "FINISHED") -> str:
    from mlflow.entities import Metric, Param

    run_id = client.create_run(exp, start_time=next(_clock), tags=tags, run_name=name).info.run_id
    points = [Metric(k, v, 0, 0) for k, v in (metrics or {}).items()]
    points += [Metric(k, v, 0, step) for k, values in (history or {}).items() for step, v in enumerate(values, 1)]
    client.log_batch(run_id, metrics=points, params=[Param(k, str(v)) for k, v in (params or {}).items()])
    for path, data in (artifacts or {}).items():
        client.log_dict(run_id, data, path)
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


def _curves(rng: np.random.Generator, epochs: int, level: float) -> dict[str, list[float]]:
    steps = np.arange(1, epochs + 1)
    return {"train_loss": list(1.0 / steps), "val_loss": list(1.2 / steps + 0.05),
            "train_macro_f1": list(level * (1 - 0.3 / steps)), "val_macro_f1": list(level * (1 - 0.4 / steps) + rng.normal(0, 0.01, epochs))}


def _predictions(approach: str, seed: int, rank: int) -> tuple[list[int], list[int]]:
    y = np.random.default_rng(seed).integers(0, 2, 120)  # one test split per seed, shared by approaches
    skill = SKILL[approach] if rank == 1 else 0.5
    right = np.random.default_rng([seed, rank, len(approach), ord(approach[0])]).random(120) < skill
    return y.tolist(), np.where(right, y, 1 - y).tolist()


def _approach(client: Any, exp: str, study: str, approach: str, confirm: bool = True, status: str = "FINISHED",
              trials: int = 4) -> dict:
    rng = np.random.default_rng(len(approach))
    tags = {"study_id": study, "approach": approach}
    searched = {"lr": lambda: float(rng.uniform(1e-4, 3e-3)), "gamma": lambda: float(rng.uniform(0.5, 4))}
    parent = _run(client, exp, {**tags, "role": "parent", "classes": json.dumps(["cat", "dog"]), "minority": "cat",
                                "final_config_rank": "1", "data": "animals"}, f"{approach} · {study}",
                  params={"best.lr": 0.001234, "best.gamma": 2.0, "best.loss": "focal", "best.epochs": 3},
                  metrics={"val_macro_f1": 0.8, "best_epoch": 3, **({} if confirm else {"test_macro_f1": SKILL[approach]})},
                  status=status)
    child = {**tags, "role": "child", "mlflow.parentRunId": parent}
    search = [_run(client, exp, {**child, "phase": "search", "trial_id": f"t{i}"}, f"{approach}-t{i}",
                   params={"lr": searched["lr"](), "gamma": searched["gamma"](), "loss": "focal", "trial_seed": i},
                   history=_curves(rng, 3, 0.6 + 0.05 * i)) for i in range(trials)]
    scores: dict[int, dict[str, float]] = {}
    for rank, seed in itertools.product(((1, 2) if approach == "focal" else (1,)) if confirm else (), SEEDS):
        y, pred = _predictions(approach, seed, rank)
        metrics = {"test_macro_f1": macro_f1(np.array(y), np.array(pred)), "test_minority_recall": float(rng.uniform(0.5, 0.9)),
                   "test_balanced_accuracy": float(rng.uniform(0.6, 0.9)), "test_expected_cost": float(rng.uniform(0.1, 0.4)),
                   "test_accuracy": 0.8, "selected_epoch": 3}
        _run(client, exp, {**child, "phase": "confirm", "confirm_seed": str(seed), "config_rank": str(rank)},
             f"{approach}-confirm-{rank}-{seed}", metrics=metrics, history=_curves(rng, 3, 0.7),
             artifacts={report.PREDICTIONS: {"y_true": y, "y_pred": pred}})
        if rank == 1:
            scores[seed] = metrics
    return {"parent": parent, "search": search, "scores": scores}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Experiment ``all``: an older study, then a study of three finished approaches and one still running;
    experiment ``single``: a study without confirmation runs; ``stuck``: no approach finished."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root}/m.db"
    client = MlflowClient(uri)
    make = lambda name: client.create_experiment(name, artifact_location=(root / "artifacts" / name).as_uri())  # noqa: E731
    exp = make("all")
    _approach(client, exp, OLD, "baseline", confirm=False, trials=0)
    runs = {a: _approach(client, exp, STUDY, a) for a in ("baseline", "class_weight", "focal")}
    _approach(client, exp, STUDY, "transfer", confirm=False, status="RUNNING", trials=0)
    single = make("single")
    for a in ("baseline", "focal"):
        _approach(client, single, "s-single", a, confirm=False, trials=2)
    _approach(client, make("stuck"), "s-stuck", "focal", confirm=False, status="KILLED", trials=0)
    return {"uri": uri, "runs": runs, "root": root}


@pytest.fixture(scope="module")
def written(study: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("results") / "all"
    report.write_report(study["uri"], "all", out)
    return out


def _table(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv") as f:
        return list(csv.DictReader(f))


def _seed_values(study: dict[str, Any], approach: str, metric: str = "test_macro_f1") -> list[float]:
    return [study["runs"][approach]["scores"][s][metric] for s in SEEDS]


def test_summary_csv_holds_the_verdict_of_the_seeds(study, written):
    table = {r["approach"]: r for r in _table(written)}
    assert list(table) == ["baseline", "class_weight", "focal"]  # the running approach and the old study left out
    for required in ("test_macro_f1_mean", "test_macro_f1_ci_low", "test_macro_f1_ci_high", "delta_vs_baseline", "p_holm"):
        assert required in table["focal"]
    base = _seed_values(study, "baseline")
    p = {}
    for approach, row in table.items():
        values = _seed_values(study, approach)  # rank 1 only: the rank-2 runs would pull the mean to 0.5
        x = np.array(values)
        half = stats.t.ppf(0.975, 4) * x.std(ddof=1) / math.sqrt(5)
        assert row["n_seeds"] == "5" and row["config_rank"] == "1"
        assert float(row["test_macro_f1_mean"]) == pytest.approx(x.mean())
        assert float(row["test_macro_f1_ci_low"]) == pytest.approx(x.mean() - half)
        assert float(row["test_macro_f1_ci_high"]) == pytest.approx(x.mean() + half)
        assert float(row["test_expected_cost_mean"]) == pytest.approx(np.mean(_seed_values(study, approach, "test_expected_cost")))
        if approach == "baseline":
            assert row["delta_vs_baseline"] == row["p_ttest"] == row["p_holm"] == ""
            continue
        assert float(row["delta_vs_baseline"]) == pytest.approx(np.mean(np.subtract(values, base)))
        p[approach] = stats.ttest_rel(values, base).pvalue
        assert float(row["p_ttest"]) == pytest.approx(p[approach])
        assert float(row["p_wilcoxon"]) == pytest.approx(stats.wilcoxon(np.subtract(values, base)).pvalue)
        assert float(row["bootstrap_delta_low"]) <= float(row["bootstrap_delta"]) <= float(row["bootstrap_delta_high"])
    small, large = sorted(p, key=p.get)  # Holm by hand, two comparisons
    assert float(table[small]["p_holm"]) == pytest.approx(min(1, 2 * p[small]))
    assert float(table[large]["p_holm"]) == pytest.approx(max(min(1, 2 * p[small]), p[large]))
    assert float(table["focal"]["bootstrap_delta_low"]) > 0  # 0.92 against 0.70 correct predictions
    assert float(table["focal"]["search_val_macro_f1"]) == 0.8
    assert table["focal"]["searched"] == "gamma,lr"  # trial_seed varies too, but nothing searched it
    assert json.loads(table["focal"]["config"])["lr"] == "0.001234"


def test_summary_md_marks_what_holm_supports(written):
    table = {r["approach"]: r for r in _table(written)}
    md = (written / "summary.md").read_text()
    assert "| focal | 5 |" in md and "gamma=2, lr=0.001234" in md
    assert f"{float(table['focal']['delta_vs_baseline']):+.3f}*" in md
    assert "**focal is better than baseline**" in md
    class_weight_significant = float(table["class_weight"]["p_holm"]) < 0.05
    assert ("class_weight is not separated from baseline" in md) is not class_weight_significant
    assert "Not finished, left out: transfer (RUNNING)" in md
    assert "cat recall" in md and "### focal (4 trials)" in md
    assert (written / "comparison.png").stat().st_size > 10_000


def test_comparison_figure_integer_epochs_and_log_loss(study):
    import matplotlib.pyplot as plt

    _, parents, _ = report.select(study["uri"], "all", None)
    approaches = [report.gather(study["uri"], "all", p) for p in parents]
    fig = report.comparison_figure(study["uri"], approaches, report.rows(study["uri"], approaches))
    fig.canvas.draw()
    scores, loss, f1 = fig.axes
    assert loss.get_yscale() == "log" and f1.get_yscale() == "linear"
    for ax in (loss, f1):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)  # epochs 1..3, not 1.0, 1.25, ...
    assert len(scores.collections) == 3  # one CI whisker per approach
    plt.close(fig)


def test_importance_attached_to_each_parent(study, written):
    parent = study["runs"]["focal"]["parent"]
    found = store.json_artifact(study["uri"], parent, "importance.json")
    assert found["approach"] == "focal" and found["n_trials"] == 4
    assert set(found["importance"]) == {"lr", "gamma"} and sum(found["importance"].values()) == pytest.approx(1)
    names = [f.path for f in store.client(study["uri"]).list_artifacts(parent)]
    assert "parallel_coordinates.png" in names


def test_single_runs_claim_no_ranking(study, tmp_path):
    report.write_report(study["uri"], "single", tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert "single run" in md and "rank nothing" in md
    assert "better than" not in md and "Highest mean" not in md
    row = {r["approach"]: r for r in _table(tmp_path)}["focal"]
    assert row["n_seeds"] == "0" and row["test_macro_f1_ci_low"] == "" and row["p_holm"] == ""
    assert float(row["test_macro_f1_mean"]) == SKILL["focal"]  # the parent's single test figure


def test_an_older_study_by_id(study, tmp_path):
    report.write_report(study["uri"], "all", tmp_path, study_id=OLD)
    assert [r["approach"] for r in _table(tmp_path)] == ["baseline"]


def test_describe_for_the_parent_run(written):
    row = {r["approach"]: r for r in _table(written)}["focal"]
    row = {k: float(v) if k.startswith("test_") else v for k, v in row.items()} | {"n_seeds": 5}
    text = report.describe(row)
    half = (row["test_macro_f1_ci_high"] - row["test_macro_f1_ci_low"]) / 2
    assert "gamma=2, lr=0.001234" in text
    assert f"test macro-F1 {row['test_macro_f1_mean']:.3f} ± {half:.3f} (95 % CI over 5 seeds)" in text
    single = row | {"test_macro_f1_ci_low": float("nan"), "n_seeds": 0}
    assert "a single run, no confirmation seeds" in report.describe(single)


@pytest.mark.parametrize(("args", "message"), [
    (["--space", "nope"], r"^error: no MLflow experiment 'nope' at sqlite:///.*; experiments there: Default, all, single, stuck$"),
    (["--space", "all", "--study-id", "s-x"], r"^error: unknown study id 's-x' in experiment 'all'; studies there: s-new, s-old$"),
    (["--space", "stuck"], r"^error: experiment 'stuck' has no finished approach yet \(focal KILLED\)$"),
])
def test_cli_errors_are_one_line_exit_2(study, tmp_path, capsys, args, message):
    assert report.main([*args, "--tracking-uri", study["uri"], "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.match(message, err), err
    assert not any(tmp_path.iterdir())  # validated before anything is written


def test_cli_missing_store_and_dead_server(tmp_path, capsys):
    assert report.main(["--space", "all", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"]) == 2
    assert f"error: no MLflow tracking store at sqlite:///{tmp_path}/none.db" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    start = time.monotonic()
    assert report.main(["--space", "all", "--tracking-uri", f"http://127.0.0.1:{port}"]) == 2
    assert time.monotonic() - start < 10
    assert f"error: cannot reach the MLflow tracking server at http://127.0.0.1:{port}" in capsys.readouterr().err


def test_cli_writes_the_report(study, tmp_path, capsys):
    assert report.main(["--space", "all", "--tracking-uri", study["uri"], "--results-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "all" / "summary.md")
    assert {p.name for p in (tmp_path / "all").iterdir()} == {"summary.md", "summary.csv", "comparison.png"}


def test_cli_imports_nothing_heavy_before_validating():
    code = "import sys, study.report; print(sorted(m for m in ('matplotlib', 'mlflow', 'optuna') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "[]"


def test_store_reads_children_and_history(study):
    uri, focal = study["uri"], study["runs"]["focal"]
    search = store.children(uri, "all", STUDY, "focal", phase="search")
    assert sorted(r.run_id for r in search) == sorted(focal["search"])
    assert {r.tags["phase"] for r in store.children(uri, "all", STUDY, "focal")} == {"search", "confirm"}
    assert len(store.children(uri, "all", STUDY, "focal", phase="confirm")) == 10
    points = store.history(uri, focal["search"][0], "train_loss")
    assert [s for s, _ in points] == [1, 2, 3] and points[0][1] == pytest.approx(1.0)
    parents = store.parents(uri, "all", STUDY)
    assert {p.approach for p in parents} == {"baseline", "class_weight", "focal", "transfer"}
    assert next(p for p in parents if p.approach == "transfer").status == "RUNNING"


def test_store_errors(study):
    with pytest.raises(store.StoreError, match=r"run \w+ has no artifact 'nothing.json'"):
        store.json_artifact(study["uri"], study["runs"]["focal"]["parent"], "nothing.json")
    with pytest.raises(store.StoreError, match="must not contain a quote, but got \"it's\""):
        store.parents(study["uri"], "all", "it's")
    with pytest.raises(store.StoreError, match=r"unsupported tracking URI 'file:///x': use sqlite"):
        store.check_uri("file:///x")


def test_store_description_and_text(study):
    uri, parent = study["uri"], study["runs"]["class_weight"]["parent"]
    store.set_description(uri, parent, "**class_weight**")
    store.log_text(uri, parent, "hello", "notes.txt")
    run = next(p for p in store.parents(uri, "all", STUDY) if p.run_id == parent)
    assert run.tags[store.DESCRIPTION_TAG] == "**class_weight**"
    assert "notes.txt" in [f.path for f in store.client(uri).list_artifacts(parent)]


def test_check_uri_gives_up_on_a_silent_server_within_its_timeout():
    with socket.socket() as server:  # accepts connections, never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        accepted: list[socket.socket] = []
        threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
        start = time.monotonic()
        with pytest.raises(store.StoreError, match="cannot reach the MLflow tracking server at http://127.0.0.1"):
            store.check_uri(f"http://127.0.0.1:{server.getsockname()[1]}", timeout=0.5)
        assert time.monotonic() - start < 3
        for conn in accepted:
            conn.close()


def test_the_paper_section_puts_table_1_beside_our_intervals() -> None:
    from study.report import paper_section

    row = {"approach": "paper_over_aug", "n_seeds": 5, "test_macro_f1_mean": 0.8, "test_macro_f1_ci_low": 0.75,
           "test_macro_f1_ci_high": 0.85}
    lines = paper_section([row, {**row, "approach": "focal"}])
    assert "| paper_over_aug | 78.49 | 80.0 | [75.0, 85.0] | 5 |" in lines
    assert not any(line.startswith("| focal") for line in lines)  # not one of the paper's methods
