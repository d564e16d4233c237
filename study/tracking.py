"""MLflow tracking: a parent run per study, a child run per trial, written by the driver alone.

Ray's own MLflow integration cannot nest runs, and trials writing to one SQLite file at once
hit "database is locked". So this Tune callback, in the driver, is the only writer: trials
report to Ray, Ray hands each result to the callback, the callback logs it with ``step`` =
epoch. Runs are found again by tags (study id, approach, trial id), so ``--resume`` reattaches
instead of duplicating, and every run is ended FINISHED / FAILED / KILLED.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from ray import tune  # noqa: E402

DEFAULT_TRACKING_URI = "sqlite:///results/mlflow.db"
PARENT, CHILD = "parent", "child"
METRIC_PREFIXES = ("macro_f1", "val_", "train_", "test_")


class TrackingError(ValueError):
    """The tracking URI cannot be used: a clear one-line message."""


def check_tracking_uri(uri: str) -> None:
    """Fail fast (before Ray starts) on a server that does not answer or an unsupported scheme."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as resp:
                if resp.status != 200:
                    raise TrackingError(f"MLflow tracking server at {uri} answered HTTP {resp.status} on /health")
        except (urllib.error.URLError, OSError) as err:
            raise TrackingError(f"cannot reach the MLflow tracking server at {uri}: {getattr(err, 'reason', err)}") from None
    elif uri.startswith("sqlite:///"):
        parent = Path(uri[len("sqlite:///"):]).expanduser().parent
        if parent.exists() and not parent.is_dir():
            raise TrackingError(f"tracking URI {uri}: {parent} is not a directory")
    else:
        raise TrackingError(f"unsupported tracking URI {uri!r}: use sqlite:///path.db or http(s)://host:port")


def absolute_uri(uri: str) -> str:
    """sqlite:///relative.db -> sqlite:////absolute/relative.db (Ray changes trial working dirs)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


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
    macro = metrics.get("macro_f1") if prefix == "val_" else metrics.get(f"{prefix}macro_f1")
    lines.append(f"macro-F1\t\t\t{macro:.4f}" if macro is not None else "")
    return "\n".join(lines) + "\n"


class Tracker:
    """The study's MLflow writer: experiment, parent run, child runs (by trial id)."""

    def __init__(self, uri: str, experiment: str, study_id: str, approach: str, artifact_root: Path | None) -> None:
        self.client = MlflowClient(tracking_uri=uri)
        self.study_id, self.approach = study_id, approach
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            location = (artifact_root / experiment).resolve().as_uri() if artifact_root else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = found.experiment_id
        self.parent_id = self._find_or_create(PARENT, f"{study_id}/{approach}", {})
        self.children: dict[str, str] = {}
        self.last_step: dict[str, int] = {}

    def _find(self, role: str, extra: str = "") -> list:
        query = f"tags.study_id = '{self.study_id}' and tags.approach = '{self.approach}' and tags.role = '{role}'" + extra
        return self.client.search_runs([self.experiment_id], query, max_results=1000)

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

    def child(self, trial_id: str, config: dict[str, Any]) -> str:
        """The trial's child run: reattached when it exists (resume), created once otherwise."""
        if trial_id not in self.children:
            run_id = self._find_or_create(
                CHILD, f"{self.approach}-{trial_id}", {"trial_id": trial_id, "mlflow.parentRunId": self.parent_id},
                extra=f" and tags.trial_id = '{trial_id}'",
            )
            self.children[trial_id] = run_id
            history = self.client.get_metric_history(run_id, "macro_f1")
            self.last_step[run_id] = max((m.step for m in history), default=0)
            if not history:
                params = [Param(k, v[:6000]) for k, v in flat_params(config).items()]
                self.client.log_batch(run_id, params=params)
                self.client.log_dict(run_id, config, "config.json")
        return self.children[trial_id]

    def log_epoch(self, run_id: str, step: int, metrics: dict[str, float], tags: dict[str, str] | None = None) -> None:
        if step <= self.last_step.get(run_id, 0):
            return  # already logged before an interruption: resuming never duplicates a step
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()],
                              tags=[RunTag(k, v) for k, v in (tags or {}).items()])
        self.last_step[run_id] = step

    def log_artifacts(self, run_id: str, result: dict[str, Any], classes: list[str], prefix: str = "val_") -> None:
        confusion = result.get(f"{prefix}confusion")
        if confusion is not None:
            fig = confusion_figure(confusion, classes, f"{self.approach}: {prefix.rstrip('_')} confusion")
            self.client.log_figure(run_id, fig, f"{prefix}confusion_matrix.png")
            plt.close(fig)
        self.client.log_text(run_id, per_class_report(result, classes, prefix), f"{prefix}per_class_report.tsv")

    def end(self, run_id: str, status: str, tags: dict[str, str] | None = None) -> None:
        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(run_id, status)

    def close_children(self, statuses: dict[str, str]) -> None:
        """End every child run of this study still RUNNING (status from Ray's trial state)."""
        for run in self._find(CHILD, " and attributes.status = 'RUNNING'"):
            trial_id = run.data.tags.get("trial_id", "")
            self.client.set_terminated(run.info.run_id, statuses.get(trial_id, "KILLED"))


class MLflowCallback(tune.Callback):
    """Ray Tune callback: trial start / result / complete / error -> the tracker's child runs.

    One callback per approach; it handles the trials of its approach only. Ray pickles its
    callbacks with the experiment state (``Tuner.restore``), so the callback keeps only its
    settings and opens the tracker in ``setup``.
    """

    def __init__(self, settings: dict[str, Any], classes: list[str], max_epochs: int) -> None:
        self.settings, self.classes, self.max_epochs = settings, classes, max_epochs
        self.tracker: Tracker | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "tracker": None}

    def setup(self, **info: Any) -> None:
        self.tracker = Tracker(**self.settings)

    def mine(self, trial: Any) -> bool:
        return trial.config.get("approach") == self.settings["approach"]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not self.mine(trial):
            return
        self.tracker.child(trial.trial_id, trial.config)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if not self.mine(trial):
            return
        run_id = self.tracker.child(trial.trial_id, trial.config)
        tags = {"node_id": str(result.get("node_id", ""))}
        if result.get("resumed_from"):
            tags["resumed_from_epoch"] = str(result["resumed_from"])  # restarted from its checkpoint, not from scratch
        self.tracker.log_epoch(run_id, int(result["training_iteration"]), numeric_metrics(result), tags)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not self.mine(trial):
            return
        run_id = self.tracker.child(trial.trial_id, trial.config)
        last = trial.last_result or {}
        epochs = int(last.get("training_iteration", 0))
        self.tracker.log_artifacts(run_id, last, self.classes)
        tags = {"epochs_run": str(epochs), "stopped_early": str(epochs < self.max_epochs).lower()}
        self.tracker.end(run_id, "FINISHED", tags)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not self.mine(trial):
            return
        run_id = self.tracker.child(trial.trial_id, trial.config)
        self.tracker.end(run_id, "FAILED", {"error": "true"})
