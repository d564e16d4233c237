"""MLflow tracking: a parent run per approach, a child run per trial, written by the driver alone.

Ray's own MLflow integration cannot nest runs, and trials writing to one SQLite file at once
hit "database is locked". So a Tune callback in the driver (``study.engine.MLflowCallback``) is
the only writer: trials report to Ray, Ray hands each result to the callback, the callback logs
it here with ``step`` = epoch. Runs are found again by tags (study id, approach, phase, trial id),
so ``--resume`` reattaches instead of duplicating, and every run is ended FINISHED / FAILED / KILLED.
"""

from __future__ import annotations

import fcntl
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from study.names import VAL_MACRO_F1  # noqa: E402

PARENT, CHILD = "parent", "child"
METRIC_PREFIXES = ("val_", "train_", "test_")


def flat_params(config: dict[str, Any]) -> dict[str, str]:
    """Flattened, short-named parameters; unset (None) values are left out."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in flat_params(value).items()})
        elif value is not None:
            out[key] = str(value)
    return out


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v) for k, v in result.items()
        if k.startswith(METRIC_PREFIXES) and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def confusion_figure(confusion: list[list[int]], classes: list[str], title: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(3.2 + 0.3 * len(classes), 3 + 0.3 * len(classes)))
    ax.imshow(confusion, cmap="Blues")
    for i, row in enumerate(confusion):
        for j, n in enumerate(row):
            ax.text(j, i, str(n), ha="center", va="center")
    ax.set_xticks(range(len(classes)), classes, rotation=45)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def per_class_report(metrics: dict[str, Any], classes: list[str], prefix: str = "val_") -> str:
    lines = ["class\tprecision\trecall\tf1"]
    for c in classes:
        p, r, f = (metrics.get(f"{prefix}{m}_{c}", float("nan")) for m in ("precision", "recall", "f1"))
        lines.append(f"{c}\t{p:.4f}\t{r:.4f}\t{f:.4f}")
    macro = metrics.get(f"{prefix}macro_f1")
    lines.append(f"macro-F1\t\t\t{macro:.4f}" if macro is not None else "")
    return "\n".join(lines) + "\n"


@contextmanager
def _locked(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_store(uri: str) -> None:
    """Create and migrate a SQLite tracking file once, under a file lock, before any run is logged: two
    first studies racing in MLflow's schema migration leave the file unusable."""
    if not uri.startswith("sqlite:///"):
        return
    db = Path(uri[len("sqlite:///"):])
    with _locked(db.with_name(db.name + ".lock")):
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


def end_open_runs(uri: str, study_id: str, status: str) -> int:
    """End every run of the study still RUNNING (parents and children) with ``status``; how many."""
    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return 0
    runs = client.search_runs(experiments, f"tags.study_id = '{study_id}' and attributes.status = 'RUNNING'",
                              max_results=5000)
    for run in runs:
        client.set_terminated(run.info.run_id, status)
    return len(runs)


def experiment_id(client: MlflowClient, experiment: str, artifact_root: Path | None) -> str:
    """The experiment's id, created when missing (another study may create it at the same moment)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        location = (artifact_root / experiment).resolve().as_uri() if artifact_root else None
        try:
            return client.create_experiment(experiment, artifact_location=location)
        except Exception:  # created a moment ago by another study
            found = client.get_experiment_by_name(experiment)
            if found is None:
                raise
    return found.experiment_id


def open_run(uri: str, experiment: str, name: str, tags: dict[str, str], artifact_root: Path | None = None) -> str:
    """A plain run (e.g. one per ratio of a sweep) that studies' parent runs can nest under."""
    client = MlflowClient(tracking_uri=uri)
    return client.create_run(experiment_id(client, experiment, artifact_root), tags=tags, run_name=name).info.run_id


def end_run(uri: str, run_id: str, status: str) -> None:
    MlflowClient(tracking_uri=uri).set_terminated(run_id, status)


class Tracker:
    """The study's MLflow writer for one approach: experiment, parent run, child runs (by phase and trial id)."""

    def __init__(self, uri: str, experiment: str, study_id: str, approach: str, artifact_root: Path | None,
                 classes: list[str], minority: str, data: str, parent_run: str | None = None) -> None:
        self.client = MlflowClient(tracking_uri=uri)
        self.study_id, self.approach, self.classes = study_id, approach, list(classes)
        self.experiment_id = experiment_id(self.client, experiment, artifact_root)
        tags = {"classes": json.dumps(self.classes), "minority": minority, "data": data}
        if parent_run:
            tags["mlflow.parentRunId"] = parent_run
        # approach first: the UI cuts long names, and "<space>-2026..." told parents apart by nothing visible
        self.parent_id = self._find_or_create(PARENT, f"{approach} · {study_id}", tags)
        self.children: dict[tuple[str, str], str] = {}
        self.last_step: dict[str, int] = {}

    def _find(self, role: str, extra: str = "") -> list:
        query = f"tags.study_id = '{self.study_id}' and tags.approach = '{self.approach}' and tags.role = '{role}'" + extra
        return self.client.search_runs([self.experiment_id], query, max_results=5000)

    def _find_or_create(self, role: str, name: str, tags: dict[str, str], extra: str = "") -> str:
        runs = self._find(role, extra)
        if runs:
            run_id = runs[0].info.run_id
            if runs[0].info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {"study_id": self.study_id, "approach": self.approach, "role": role, **tags}
        return self.client.create_run(self.experiment_id, tags=tags, run_name=name).info.run_id

    def run_of(self, trial_id: str) -> str | None:
        """The trial's child run id, if it has one (no side effects)."""
        runs = self._find(CHILD, f" and tags.trial_id = '{trial_id}'")
        return runs[0].info.run_id if runs else None

    def child(self, trial_id: str, config: dict[str, Any], tags: dict[str, str]) -> str:
        """The trial's child run: reattached when it exists (resume), created once otherwise."""
        phase = tags.get("phase", "search")
        if (trial_id, phase) not in self.children:
            run_id = self._find_or_create(
                CHILD, f"{self.approach}-{phase}-{trial_id}",
                {"trial_id": trial_id, "mlflow.parentRunId": self.parent_id, **tags},
                extra=f" and tags.trial_id = '{trial_id}' and tags.phase = '{phase}'",
            )
            self.children[trial_id, phase] = run_id
            history = self.client.get_metric_history(run_id, VAL_MACRO_F1)
            self.last_step[run_id] = max((m.step for m in history), default=0)
            if not history:
                self.log_params(run_id, flat_params(config))
                self.client.log_dict(run_id, config, "config.json")
        return self.children[trial_id, phase]

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        """Each parameter once: a resumed study must not log a parameter again (MLflow refuses a second value)."""
        have = self.client.get_run(run_id).data.params
        fresh = [Param(k, v[:6000]) for k, v in params.items() if k not in have]
        for start in range(0, len(fresh), 100):
            self.client.log_batch(run_id, params=fresh[start : start + 100])

    def log_epoch(self, run_id: str, step: int, metrics: dict[str, float], tags: dict[str, str] | None = None) -> None:
        if step <= self.last_step.get(run_id, 0):
            return  # already logged before an interruption: resuming never duplicates a step
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()],
                              tags=[RunTag(k, v) for k, v in (tags or {}).items()])
        self.last_step[run_id] = step

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])

    def log_artifacts(self, run_id: str, result: dict[str, Any], prefix: str = "val_") -> None:
        confusion = result.get(f"{prefix}confusion")
        if confusion is not None:
            fig = confusion_figure(confusion, self.classes, f"{self.approach}: {prefix.rstrip('_')} confusion")
            self.client.log_figure(run_id, fig, f"{prefix}confusion_matrix.png")
            plt.close(fig)
        self.client.log_text(run_id, per_class_report(result, self.classes, prefix), f"{prefix}per_class_report.tsv")

    def tag(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def end(self, run_id: str, status: str, tags: dict[str, str] | None = None) -> None:
        if tags:
            self.tag(run_id, tags)
        self.client.set_terminated(run_id, status)

    def close_children(self, statuses: dict[str, str]) -> None:
        """End every child run of this approach still RUNNING (status from Ray's trial state)."""
        for run in self._find(CHILD, " and attributes.status = 'RUNNING'"):
            trial_id = run.data.tags.get("trial_id", "")
            self.client.set_terminated(run.info.run_id, statuses.get(trial_id, "KILLED"))
