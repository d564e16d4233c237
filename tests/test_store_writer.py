"""study.store, the MLflow writer side, against a real SQLite tracking store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from study.store import Tracker, end_open_runs, prepare_store


def tracker(tmp_path: Path, approach: str = "focal", study: str = "focal-20261126-000000-abcd") -> Tracker:
    return Tracker(f"sqlite:///{tmp_path}/m.db", "focal", study, approach, tmp_path / "art", ["cat", "dog"], "cat", "animals")


def test_parent_runs_are_named_approach_first_and_carry_the_minority(tmp_path) -> None:
    t = tracker(tmp_path)
    run = t.client.get_run(t.parent_id)
    assert run.info.run_name == "focal · focal-20261126-000000-abcd"
    assert run.data.tags["minority"] == "cat" and run.data.tags["classes"] == '["cat", "dog"]'


def test_resuming_reattaches_runs_and_logs_each_parameter_once(tmp_path) -> None:
    t = tracker(tmp_path)
    child = t.child("t1", {"lr": 0.1, "approach": "focal"}, {"phase": "search"})
    t.log_epoch(child, 1, {"val_macro_f1": 0.5})
    t.log_params(t.parent_id, {"best.lr": "0.1"})
    again = tracker(tmp_path)  # a resumed study
    assert again.parent_id == t.parent_id
    assert again.child("t1", {"lr": 0.1, "approach": "focal"}, {"phase": "search"}) == child
    again.log_params(again.parent_id, {"best.lr": "0.1", "best.gamma": "2"})  # MLflow refuses a second best.lr
    again.log_epoch(child, 1, {"val_macro_f1": 0.9})  # already logged: not again
    assert [m.value for m in again.client.get_metric_history(child, "val_macro_f1")] == [0.5]
    assert again.client.get_run(again.parent_id).data.params == {"best.lr": "0.1", "best.gamma": "2"}


def test_the_same_trial_id_in_another_phase_is_another_run(tmp_path) -> None:
    t = tracker(tmp_path)
    assert t.child("t1", {}, {"phase": "search"}) != t.child("t1", {}, {"phase": "confirm", "confirm_seed": "0"})


def test_end_open_runs_ends_every_running_run_of_the_study_only(tmp_path) -> None:
    mine, other = tracker(tmp_path), tracker(tmp_path, study="focal-20261126-000000-ffff")
    mine.child("t1", {}, {"phase": "search"})
    assert end_open_runs(f"sqlite:///{tmp_path}/m.db", mine.study_id, "KILLED") == 2
    assert mine.client.get_run(mine.parent_id).info.status == "KILLED"
    assert other.client.get_run(other.parent_id).info.status == "RUNNING"


def test_two_first_studies_create_one_sqlite_file_without_racing(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path}/fresh.db"
    code = f"from study.store import prepare_store, Tracker; from pathlib import Path; prepare_store({uri!r}); " \
           f"Tracker({uri!r}, 'focal', 'focal-x-' + __import__('sys').argv[1], 'focal', None, ['a', 'b'], 'a', 'd')"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], stderr=subprocess.PIPE, text=True) for i in range(2)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    client = MlflowClient(uri)
    assert len(client.search_runs([client.get_experiment_by_name("focal").experiment_id])) == 2


def test_prepare_store_leaves_servers_alone() -> None:
    prepare_store("http://127.0.0.1:9")  # nothing to create: no error, no connection


def test_logging_many_runs_leaves_no_figure_open(tmp_path) -> None:
    import matplotlib.pyplot as plt

    t = tracker(tmp_path)
    before = set(plt.get_fignums())
    for i in range(22):  # past pyplot's "More than 20 figures have been opened" warning
        run = t.child(f"t{i}", {"lr": 0.1}, {"phase": "search"})
        t.log_artifacts(run, {"val_confusion": [[3, 1], [0, 4]], "val_macro_f1": 0.8})
    assert set(plt.get_fignums()) == before
    artifacts = {a.path for a in t.client.list_artifacts(run)}
    assert {"val_confusion_matrix.png", "val_per_class_report.tsv", "config.json"} <= artifacts


def test_a_run_without_the_figure_keeps_the_confusion_counts_in_its_report(tmp_path) -> None:
    """A search trial's run skips the drawn matrix (85 ms of the driver's CPU a trial, bench_scale.py)."""
    t = tracker(tmp_path)
    run = t.child("t0", {"lr": 0.1}, {"phase": "search"})
    t.log_artifacts(run, {"val_confusion": [[3, 1], [0, 4]], "val_macro_f1": 0.8}, figure=False)
    assert {a.path for a in t.client.list_artifacts(run)} == {"val_per_class_report.tsv", "config.json"}
    report = t.client.download_artifacts(run, "val_per_class_report.tsv", str(tmp_path))
    assert Path(report).read_text().endswith("confusion: true \\ predicted\tcat\tdog\ncat\t3\t1\ndog\t0\t4\n")


def test_child_runs_are_searched_for_once_per_tracker_not_once_per_trial(tmp_path) -> None:
    t = tracker(tmp_path)
    searches = []
    search_runs = t.client.search_runs
    t.client.search_runs = lambda *a, **k: searches.append(a[1]) or search_runs(*a, **k)  # type: ignore[method-assign]
    runs = [t.child(f"t{i}", {"lr": i}, {"phase": "search"}) for i in range(5)]
    assert len(set(runs)) == 5 and searches == [
        "tags.study_id = 'focal-20261126-000000-abcd' and tags.approach = 'focal' and tags.role = 'child'"]
    assert t.client.get_run(runs[3]).data.params == {"lr": "3"}
    again = tracker(tmp_path)  # a resumed study finds all five in its one search
    assert [again.child(f"t{i}", {"lr": i}, {"phase": "search"}) for i in range(5)] == runs


def test_mlflow_is_told_not_to_print_a_link_per_ended_run(tmp_path, monkeypatch) -> None:
    from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT

    from study import store

    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    store.client.cache_clear()
    store.client(f"sqlite:///{tmp_path}/m.db")
    assert MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.get() is True  # else two lines and a run read per ended run
