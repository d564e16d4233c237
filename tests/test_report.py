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
from study.errors import cli
from study.stats import macro_f1

STUDY, OLD = "s-new", "s-old"
SEEDS = range(5)
# probability of a correct test prediction: focal clearly ahead, class_weight level with baseline
SKILL = {"baseline": 0.70, "class_weight": 0.70, "focal": 0.92, "transfer": 0.8}
SETTINGS = {"rope": "0.03", "split_rho": "0.1"}  # the study's tags: its ROPE and resplit correction
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
              trials: int = 4, settings: dict[str, str] | None = None) -> dict:
    rng = np.random.default_rng(len(approach))
    tags = {"study_id": study, "approach": approach}
    searched = {"lr": lambda: float(rng.uniform(1e-4, 3e-3)), "gamma": lambda: float(rng.uniform(0.5, 4))}
    parent = _run(client, exp, {**tags, "role": "parent", "classes": json.dumps(["cat", "dog"]), "minority": "cat",
                                "final_config_rank": "1", "data": "animals", **(settings or {})},
                  f"{approach} · {study}",
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
                   "test_mec_expected_cost": float(rng.uniform(0.05, 0.3)),
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
    runs = {a: _approach(client, exp, STUDY, a, settings=SETTINGS) for a in ("baseline", "class_weight", "focal")}
    _approach(client, exp, STUDY, "transfer", confirm=False, status="RUNNING", trials=0)
    single = make("single")
    for a in ("baseline", "focal"):
        _approach(client, single, "s-single", a, confirm=False, trials=2)
    _approach(client, make("stuck"), "s-stuck", "focal", confirm=False, status="KILLED", trials=0)
    nobase = make("nobase")
    for a in ("class_weight", "focal"):
        _approach(client, nobase, "s-nobase", a, trials=2)
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


def _logit_interval(values: list[float]) -> tuple[float, float]:
    z = np.log(np.array(values) / (1 - np.array(values)))
    half = stats.t.ppf(0.975, len(z) - 1) * z.std(ddof=1) / math.sqrt(len(z))
    return 1 / (1 + np.exp(-(z.mean() - half))), 1 / (1 + np.exp(-(z.mean() + half)))


def test_summary_csv_holds_each_approach_with_an_interval_in_range(study, written):
    table = {r["approach"]: r for r in _table(written)}
    assert list(table) == ["baseline", "class_weight", "focal"]  # the running approach and the old study left out
    for approach, row in table.items():
        values = _seed_values(study, approach)  # rank 1 only: the rank-2 runs would pull the mean to 0.5
        assert row["n_seeds"] == "5" and row["config_rank"] == "1"
        assert float(row["test_macro_f1_mean"]) == pytest.approx(np.mean(values))
        low, high = _logit_interval(values)
        assert (float(row["test_macro_f1_ci_low"]), float(row["test_macro_f1_ci_high"])) == pytest.approx((low, high))
        cost = _seed_values(study, approach, "test_mec_expected_cost")
        assert float(row["test_mec_expected_cost_mean"]) == pytest.approx(np.mean(cost))
        assert 0 < float(row["test_expected_cost_ci_low"]) < float(row["test_expected_cost_mean"])
        assert 0 < float(row["test_sampling_error"]) < 0.1  # 120 test images
    assert float(table["focal"]["search_val_macro_f1"]) == 0.8
    assert table["focal"]["searched"] == "gamma,lr"  # trial_seed varies too, but nothing searched it
    assert json.loads(table["focal"]["config"])["lr"] == "0.001234"


def test_summary_csv_holds_the_verdict_by_hand(study, written):
    """The posterior from the study's tags (ROPE 0.03, rho 0.1) by scipy's t, and the reference tests."""
    table = {r["approach"]: r for r in _table(written)}
    base = _seed_values(study, "baseline")
    assert table["baseline"]["verdict"] == table["baseline"]["p_ttest"] == table["baseline"]["p_holm"] == ""
    p = {}
    for approach in ("class_weight", "focal"):
        row, d = table[approach], np.subtract(_seed_values(study, approach), base)
        scale = d.std(ddof=1) * math.sqrt(1 / 5 + 0.1 / 0.9)
        better = 1 - stats.t.cdf(0.03, 4, loc=d.mean(), scale=scale)
        worse = stats.t.cdf(-0.03, 4, loc=d.mean(), scale=scale)
        assert (float(row["p_better"]), float(row["p_worse"])) == pytest.approx((better, worse))
        assert float(row["p_equivalent"]) == pytest.approx(1 - better - worse)
        assert float(row["delta_vs_baseline"]) == pytest.approx(d.mean())
        assert (float(row["delta_low"]), float(row["delta_high"])) == pytest.approx(
            stats.t.interval(0.95, 4, loc=d.mean(), scale=scale))
        assert row["paired_seeds"] == "0 1 2 3 4" and row["rope"] == "0.03" and row["split_rho"] == "0.1"
        word = "better" if better >= 0.95 else "worse" if worse >= 0.95 else (
            "practically equivalent" if 1 - better - worse >= 0.95 else "undecided at this budget")
        assert row["verdict"] == word
        assert float(row["verdict_needs"]) == pytest.approx(0.03 + stats.t.ppf(0.95, 4) * scale)
        mdd = float(row["min_detectable_difference"])  # 2 comparisons: level 0.025
        nc = mdd * math.sqrt(5) / d.std(ddof=1)
        assert stats.nct.sf(stats.t.ppf(1 - 0.0125, 4), 4, nc) == pytest.approx(0.8, abs=0.01)
        p[approach] = stats.ttest_rel(_seed_values(study, approach), base).pvalue
        assert float(row["p_ttest"]) == pytest.approx(p[approach])
        assert float(row["p_wilcoxon"]) == pytest.approx(stats.wilcoxon(d).pvalue)
    assert table["focal"]["verdict"] == "better"  # 0.92 against 0.70 correct predictions
    small, large = sorted(p, key=p.get)  # Holm by hand, two comparisons
    assert float(table[small]["p_holm"]) == pytest.approx(min(1, 2 * p[small]))
    assert float(table[large]["p_holm"]) == pytest.approx(max(min(1, 2 * p[small]), p[large]))


def test_summary_md_states_verdicts_budget_and_noise_floor(written):
    table = {r["approach"]: r for r in _table(written)}
    md = (written / "summary.md").read_text()
    focal = table["focal"]
    assert "| focal | 5 |" in md and "gamma=2, lr=0.001234" in md
    assert f"- focal is **better** than baseline: Δ {float(focal['delta_vs_baseline']):+.3f}" in md
    assert f"| focal | better | {float(focal['p_better']):.3f} |" in md
    mdd, floor = float(focal["min_detectable_difference"]), float(focal["test_sampling_error"])
    assert f"| 5 (0 1 2 3 4) | {float(focal['verdict_needs']):.3f} | {mdd:.3f} | {floor:.3f} |" in md
    assert "Region of practical equivalence ±0.03" in md and "ρ = n_test/(n_test + n_train) = 0.1" in md
    assert "for reference only: nominal only under a fixed seed count" in md
    assert f"- class_weight is **{table['class_weight']['verdict']}" in md
    assert "Not finished, left out: transfer (RUNNING)" in md
    assert "cat recall" in md and "### focal (4 trials)" in md
    assert "## The F1-cost front" in md and "- argmax decisions: " in md and "- minimum-expected-cost decisions: " in md
    for name in ("comparison.png", "curves.png", "front.png"):
        assert (written / name).stat().st_size > 10_000 and f"({name})" in md


def test_the_front_is_what_no_other_approach_dominates(written):
    assert report.pareto_front({"a": (0.9, 0.3), "b": (0.8, 0.1), "c": (0.7, 0.2), "d": (0.9, 0.4),
                                "e": (float("nan"), 0.0)}) == ["b", "a"]  # c: b beats it on both; d: a on cost
    assert report.pareto_front({"a": (0.5, 0.2), "b": (0.5, 0.2)}) == ["a", "b"]  # ties dominate nothing
    table = _table(written)
    points = {r["approach"]: (float(r["test_macro_f1_mean"]), float(r["test_expected_cost_mean"])) for r in table}
    line = next(x for x in (written / "summary.md").read_text().splitlines() if x.startswith("- argmax decisions: "))
    listed = [part.split(" (")[0] for part in line[len("- argmax decisions: "):].split("), ")]
    assert listed == report.pareto_front(points)


def test_forest_plot_and_small_multiples(study, written):
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    _, parents, _ = report.select(study["uri"], "all", None)
    approaches = [report.gather(study["uri"], "all", p) for p in parents]
    table = report.rows(study["uri"], approaches)
    fig = report.comparison_figure(table)
    (ax,) = fig.axes
    compared = sorted((r for r in table if r["verdict"]), key=lambda r: r["delta_vs_baseline"])
    assert [t.get_text() for t in ax.get_yticklabels()] == [r["approach"] for r in compared]  # sorted by Δ
    (band,) = ax.patches  # the ROPE, from the study's tag
    assert band.get_x() == pytest.approx(-0.03) and band.get_width() == pytest.approx(0.06)
    points = [c.lines[0] for c in ax.containers]  # each errorbar's marker
    assert [to_rgba(p.get_color()) for p in points] == [to_rgba(report.COLOURS[r["verdict"]]) for r in compared]
    assert [p.get_xdata()[0] for p in points] == pytest.approx([r["delta_vs_baseline"] for r in compared])
    plt.close(fig)
    fig = report.curves_figure(study["uri"], approaches)
    fig.canvas.draw()
    panels = [a for a in fig.axes if a.get_visible() and a.get_title()]
    assert [a.get_title() for a in panels] == ["baseline", "class_weight", "focal"]  # one panel per approach
    for ax in panels:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)  # epochs 1..3, not 1.0, 1.25, ...
        twin = next(a for a in fig.axes if a is not ax and a.bbox.bounds == ax.bbox.bounds)
        assert twin.get_yscale() == "log" and ax.get_yscale() == "linear" and len(ax.lines) == len(twin.lines) == 2
    plt.close(fig)
    assert not plt.get_fignums()  # every figure the report opened is closed


def test_parents_carry_the_verdict_idempotently(study, written, tmp_path):
    uri = study["uri"]
    report.write_report(uri, "all", tmp_path)  # twice: the same names, tags and descriptions
    by = {p.approach: p for p in store.parents(uri, "all", STUDY)}
    assert by["focal"].name == f"focal · better · {STUDY}" and by["focal"].tags["verdict"] == "better"
    description = by["focal"].tags[store.DESCRIPTION_TAG]
    assert "**Verdict against baseline: better** (ROPE ±0.03 macro-F1, 5 paired seeds)" in description
    assert "verdict" not in by["baseline"].tags and by["baseline"].name == f"baseline · {STUDY}"
    assert "test macro-F1" in by["baseline"].tags[store.DESCRIPTION_TAG]


def test_a_space_without_baseline_gives_no_verdict(study, tmp_path):
    report.write_report(study["uri"], "nobase", tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert "it gives **no verdict against the baseline**" in md and "## Verdicts against" not in md
    row = {r["approach"]: r for r in _table(tmp_path)}["focal"]
    assert row["verdict"] == "" and row["p_better"] == ""
    mean, low = float(row["test_macro_f1_mean"]), float(row["test_macro_f1_ci_low"])
    assert f"  - focal: test macro-F1 {mean:.3f} [{low:.3f}, " in md
    assert all("verdict" not in p.tags for p in store.parents(study["uri"], "nobase"))


def test_the_rope_flag_overrides_the_study_tag(study, tmp_path, capsys):
    argv = ["--space", "all", "--tracking-uri", study["uri"], "--results-dir", str(tmp_path), "--rope", "0.3"]
    assert cli(report.main, argv) == 0
    rows = {r["approach"]: r for r in _table(tmp_path / "all")}
    assert rows["focal"]["rope"] == "0.3" and rows["class_weight"]["verdict"] == "practically equivalent"


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
    numeric = ("test_", "p_", "delta", "rope")
    row = {k: float(v or "nan") if k.startswith(numeric) else v for k, v in row.items()} | {"n_seeds": 5}
    text = report.describe(row)
    assert "gamma=2, lr=0.001234" in text
    assert (f"test macro-F1 {row['test_macro_f1_mean']:.3f}, 95 % interval [{row['test_macro_f1_ci_low']:.3f}, "
            f"{row['test_macro_f1_ci_high']:.3f}] over 5 seeds") in text
    assert f"P(better) {row['p_better']:.3f}" in text
    single = row | {"test_macro_f1_ci_low": float("nan"), "n_seeds": 0, "verdict": ""}
    assert "a single run, no confirmation seeds" in report.describe(single) and "Verdict" not in report.describe(single)


@pytest.mark.parametrize(("args", "message"), [
    (["--space", "nope"],
     r"^error: no MLflow experiment 'nope' at sqlite:///.*; experiments there: Default, all, nobase, single, stuck$"),
    (["--space", "all", "--study-id", "s-x"],
     r"^error: unknown study id 's-x' in experiment 'all'; studies there: s-new, s-old$"),
    (["--space", "stuck"], r"^error: experiment 'stuck' has no finished approach yet \(focal KILLED\)$"),
    (["--space", "all", "--rope", "abc"], r"^error: argument --rope: not a number: 'abc'$"),
    (["--space", "all", "--rope", "1.5"],
     r"^error: argument --rope: must be in \[0, 1\) \(a macro-F1 difference\), got 1.5$"),
    (["--space", "all", "--bogus"], r"^error: unrecognized arguments: --bogus$"),
    (["--space"], r"^error: argument --space: expected one argument$"),
])
def test_cli_errors_are_one_line_exit_2(study, tmp_path, capsys, args, message):
    assert cli(report.main, [*args, "--tracking-uri", study["uri"], "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.match(message, err), err
    assert not any(tmp_path.iterdir())  # validated before anything is written


def test_report_error_is_a_study_error():
    from study.errors import StudyError

    assert issubclass(report.ReportError, StudyError)


def test_cli_missing_store_and_dead_server(tmp_path, capsys):
    assert cli(report.main, ["--space", "all", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"]) == 2
    assert f"error: no MLflow tracking store at sqlite:///{tmp_path}/none.db" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    start = time.monotonic()
    assert cli(report.main, ["--space", "all", "--tracking-uri", f"http://127.0.0.1:{port}"]) == 2
    assert time.monotonic() - start < 10
    assert f"error: cannot reach the MLflow tracking server at http://127.0.0.1:{port}" in capsys.readouterr().err


def test_cli_writes_the_report(study, tmp_path, capsys):
    assert cli(report.main, ["--space", "all", "--tracking-uri", study["uri"], "--results-dir", str(tmp_path)]) == 0
    summary, link = capsys.readouterr().out.strip().splitlines()
    assert summary == str(tmp_path / "all" / "summary.md")
    query = "searchFilter=tags.role%20%3D%20%27parent%27%20and%20tags.study_id%20%3D%20%27s-new%27"
    assert link.startswith("MLflow runs table (make ui): http://127.0.0.1:5000/#/experiments/") and query in link
    assert link.endswith("&orderByKey=metrics.%60test_macro_f1_mean%60&orderByAsc=false")
    assert {p.name for p in (tmp_path / "all").iterdir()} == {"summary.md", "summary.csv", "comparison.png", "curves.png",
                                                             "front.png"}


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


def test_store_description(study):
    uri, parent = study["uri"], study["runs"]["class_weight"]["parent"]
    store.set_description(uri, parent, "**class_weight**")
    run = next(p for p in store.parents(uri, "all", STUDY) if p.run_id == parent)
    assert run.tags[store.DESCRIPTION_TAG] == "**class_weight**"


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
           "test_macro_f1_ci_high": 0.85, "test_final_macro_f1_mean": 0.78}
    others = [{**row, "approach": a, "test_macro_f1_mean": m} for a, m in
              (("baseline", 0.6), ("paper_transfer", 0.9), ("paper_focal", 0.5))]
    lines = paper_section([row, {**row, "approach": "focal"}, *others])
    # Table 1's rank 2 (78.49, after transfer's 95.19); ours: second of the four, 78.0 at the fixed final epoch
    assert "| paper_over_aug | 78.49 | 2 | 80.0 [75.0, 85.0] | 78.0 | 2 | 5 |" in lines
    assert not any(line.startswith("| focal") for line in lines)  # not one of the paper's methods
    assert any(line.startswith("Spearman rank correlation between the paper's ordering and ours over 4 methods: +1.00")
               for line in lines)
