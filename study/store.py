"""MLflow behind one door: a study's runs written (by the driver alone) and read back.

Writing: a Tune callback in the driver (``study.engine.MLflowCallback``) is the only writer — Ray's
own MLflow integration cannot nest runs, and trials writing one SQLite file at once hit "database is
locked". Runs are found again by tags (study id, approach, phase, trial id), so ``--resume``
reattaches instead of duplicating, and every run is ended FINISHED / FAILED / KILLED.

Reading: runs come back as plain :class:`Run` values, so the report and the analyses never touch
MLflow's entities. Layout (written by the study): one experiment per space; per approach a parent run
(tags ``role=parent``, ``study_id``, ``approach``) and child runs (``role=child``,
``phase=search|confirm``). Importing this module is cheap (standard library only); MLflow loads
on the first call that needs it, after :func:`check_uri` has answered.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from study.errors import StudyError
from study.names import VAL_MACRO_F1

# MLflow 3 sends usage events to its makers unless told not to; a study's records stay on the user's machines
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow.tracking import MlflowClient

DEFAULT_TRACKING_URI = "sqlite:///results/mlflow.db"
DESCRIPTION_TAG = "mlflow.note.content"  # what the MLflow UI shows as a run's description
PROBE_TIMEOUT_S = 5.0


class StoreError(StudyError):
    """The tracking store cannot answer what was asked: a one-line message."""


@dataclass(frozen=True)
class Run:
    run_id: str
    name: str
    status: str  # RUNNING | FINISHED | FAILED | KILLED | SCHEDULED
    start_time: int  # ms since the epoch
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]  # each key's latest value; see history() for every step

    @property
    def approach(self) -> str:
        return self.tags.get("approach", "")

    @property
    def study_id(self) -> str:
        return self.tags.get("study_id", "")


def absolute_uri(uri: str) -> str:
    """sqlite:///relative.db -> sqlite:////absolute/relative.db (the working directory may change)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def check_uri(uri: str, *, exists: bool = False, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail in seconds on a tracking URI that cannot work: a server that does not answer ``/health``
    within ``timeout`` (MLflow's own client would retry for minutes), an unsupported scheme, or with
    ``exists`` (readers) an SQLite file that is not there (MLflow would create an empty one)."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
                status = resp.status
        except urllib.error.HTTPError as err:
            status = err.code
        except (urllib.error.URLError, OSError) as err:
            raise StoreError(f"cannot reach the MLflow tracking server at {uri}: {getattr(err, 'reason', err)}") from None
        if status != 200:
            raise StoreError(f"MLflow tracking server at {uri} answered HTTP {status} on /health")
    elif uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):]).expanduser()
        if exists and not path.is_file():
            raise StoreError(f"no MLflow tracking store at {uri}: {path} does not exist")
        if not exists and path.parent.exists() and not path.parent.is_dir():
            raise StoreError(f"tracking URI {uri}: {path.parent} is not a directory")
    else:
        raise StoreError(f"unsupported tracking URI {uri!r}: use sqlite:///path.db or http(s)://host:port")


@functools.lru_cache(maxsize=8)
def client(uri: str) -> MlflowClient:
    """One client per URI (an SQLite client opens its engine once)."""
    from mlflow.tracking import MlflowClient

    # Against a server MLflow prints two "View run ... at" lines per ended run, and reads the run back to do it:
    # thousands of lines and HTTP calls in a large study
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

    return MlflowClient(tracking_uri=absolute_uri(uri))


def _run(r: Any) -> Run:
    return Run(r.info.run_id, r.info.run_name or "", r.info.status, r.info.start_time or 0,
               dict(r.data.tags), dict(r.data.params), dict(r.data.metrics))


def experiment_id(uri: str, experiment: str) -> str:
    """The id of the experiment named ``experiment``; unknown: an error listing the ones there are."""
    found = client(uri).get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client(uri).search_experiments())
        raise StoreError(f"no MLflow experiment {experiment!r} at {uri}; experiments there: {', '.join(names) or 'none'}")
    return found.experiment_id


def _search(uri: str, experiment: str, query: str) -> list[Run]:
    exp, out, token = experiment_id(uri, experiment), [], None
    while True:
        page = client(uri).search_runs([exp], query, max_results=1000, order_by=["attributes.start_time DESC"],
                                       page_token=token)
        out += [_run(r) for r in page]
        token = page.token
        if not token:
            return out


def _quote(value: str) -> str:
    if "'" in value:
        raise StoreError(f"a tag value to search for must not contain a quote, but got {value!r}")
    return f"'{value}'"


def parents(uri: str, experiment: str, study_id: str | None = None) -> list[Run]:
    """The parent runs (one per approach and study), newest first; of one study if ``study_id``."""
    query = "tags.role = 'parent'" + (f" and tags.study_id = {_quote(study_id)}" if study_id else "")
    return _search(uri, experiment, query)


def children(uri: str, experiment: str, study_id: str, approach: str, phase: str | None = None) -> list[Run]:
    """The child runs of one approach of one study, of one phase (``search`` | ``confirm``) if given."""
    query = (f"tags.role = 'child' and tags.study_id = {_quote(study_id)} and tags.approach = {_quote(approach)}"
             + (f" and tags.phase = {_quote(phase)}" if phase else ""))
    return _search(uri, experiment, query)


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """``[(step, value), ...]`` of a metric, by step (the last value logged wins a repeated step)."""
    points = sorted(client(uri).get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return sorted({m.step: m.value for m in points}.items())


def json_artifact(uri: str, run_id: str, path: str) -> Any:
    """A run's JSON artifact, parsed."""
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per small file is noise
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client(uri).download_artifacts(run_id, path, dst_path=tmp)
        except (MlflowException, OSError):
            raise StoreError(f"run {run_id} has no artifact {path!r}") from None
        return json.loads(Path(local).read_text())


def log_figure(uri: str, run_id: str, figure: Figure, path: str) -> None:
    client(uri).log_figure(run_id, figure, path)


def log_dict(uri: str, run_id: str, data: dict[str, Any], path: str) -> None:
    client(uri).log_dict(run_id, data, path)


def set_description(uri: str, run_id: str, text: str) -> None:
    """The run's description in the MLflow UI (markdown)."""
    client(uri).set_tag(run_id, DESCRIPTION_TAG, text)


# ---------------------------------------------------------------- writing (the study's driver)


PARENT, CHILD = "parent", "child"
METRIC_PREFIXES = ("val_", "train_", "test_", "selected_epoch")


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


def confusion_figure(confusion: list[list[int]], classes: list[str], title: str) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    confusion = metrics.get(f"{prefix}confusion")
    if confusion is not None:  # the counts too: a search trial's run has no figure of them
        lines += ["", "confusion: true \\ predicted\t" + "\t".join(classes)]
        lines += [f"{c}\t" + "\t".join(str(n) for n in row) for c, row in zip(classes, confusion, strict=False)]
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
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial MLflow database tables"
    db.parent.mkdir(parents=True, exist_ok=True)  # the CLI allowed only an existing folder or the results folder
    with _locked(db.with_name(db.name + ".lock")):
        client(uri).search_experiments(max_results=1)


def end_open_runs(uri: str, study_id: str, status: str) -> int:
    """End every run of the study still RUNNING (parents and children) with ``status``; how many."""
    c = client(uri)
    experiments = [e.experiment_id for e in c.search_experiments()]
    if not experiments:
        return 0
    query, running, token = f"tags.study_id = '{study_id}' and attributes.status = 'RUNNING'", [], None
    while True:  # every page first (a 10,000-trial study has more runs than one holds): ending them shifts the pages
        page = c.search_runs(experiments, query, max_results=1000, page_token=token)
        running += [run.info.run_id for run in page]
        token = page.token
        if not token:
            break
    for run_id in running:
        c.set_terminated(run_id, status)
    return len(running)


def ensure_experiment(client: MlflowClient, experiment: str, artifact_root: Path | None) -> str:
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
    c = client(uri)
    return c.create_run(ensure_experiment(c, experiment, artifact_root), tags=tags, run_name=name).info.run_id


def end_run(uri: str, run_id: str, status: str) -> None:
    client(uri).set_terminated(run_id, status)


class Tracker:
    """The study's MLflow writer for one approach: experiment, parent run, child runs (by phase and trial id)."""

    def __init__(self, uri: str, experiment: str, study_id: str, approach: str, artifact_root: Path | None,
                 classes: list[str], minority: str, data: str, parent_run: str | None = None) -> None:
        self.client = client(uri)
        self.study_id, self.approach, self.classes = study_id, approach, list(classes)
        self.experiment_id = ensure_experiment(self.client, experiment, artifact_root)
        tags = {"classes": json.dumps(self.classes), "minority": minority, "data": data}
        if parent_run:
            tags["mlflow.parentRunId"] = parent_run
        # approach first: the UI cuts long names, and "<space>-2026..." told parents apart by nothing visible
        self.parent_id = self._find_or_create(PARENT, f"{approach} · {study_id}", tags)
        self.children: dict[tuple[str, str], str] = {}  # (trial id, phase) -> run id
        self._existing: dict[tuple[str, str], Any] | None = None  # runs there before this tracker; read on first use
        self.last_step: dict[str, int] = {}

    def _find(self, role: str, extra: str = "") -> list:
        """Every run of this approach with ``role``, newest first (paged: a study may have thousands)."""
        query = f"tags.study_id = '{self.study_id}' and tags.approach = '{self.approach}' and tags.role = '{role}'" + extra
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], query, max_results=1000, page_token=token)
            out += page
            token = page.token
            if not token:
                return out

    def _find_or_create(self, role: str, name: str, tags: dict[str, str]) -> str:
        runs = self._find(role)
        if runs:
            return self._reattach(runs[0])
        return self._create(role, name, tags)

    def _create(self, role: str, name: str, tags: dict[str, str]) -> str:
        tags = {"study_id": self.study_id, "approach": self.approach, "role": role, **tags}
        return self.client.create_run(self.experiment_id, tags=tags, run_name=name).info.run_id

    def _reattach(self, run: Any) -> str:
        if run.info.status != "RUNNING":
            self.client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id

    def _known_children(self) -> dict[tuple[str, str], Any]:
        """The child runs there already are (a resumed study), read in one search: searching per trial scans
        every run of the store, which made a study's bookkeeping grow with the square of its trials."""
        known: dict[tuple[str, str], Any] = {}
        for run in self._find(CHILD):
            known.setdefault((run.data.tags.get("trial_id", ""), run.data.tags.get("phase", "search")), run)  # newest wins
        return known

    def existing_child(self, trial_id: str, phase: str) -> str | None:
        """The run id of a trial's child run, as the store holds it now (another writer, the Tune callback, made
        it): found, not reattached, so its status stays."""
        return next((run.info.run_id for run in self._find(CHILD) if run.data.tags.get("trial_id") == trial_id
                     and run.data.tags.get("phase") == phase), None)

    def child(self, trial_id: str, config: dict[str, Any], tags: dict[str, str]) -> str:
        """The trial's child run: reattached when it exists (resume), created once otherwise."""
        phase = tags.get("phase", "search")
        if self._existing is None:
            self._existing = self._known_children()
        if (trial_id, phase) not in self.children:
            old = self._existing.pop((trial_id, phase), None)
            if old is not None:
                run_id = self._reattach(old)
                history = self.client.get_metric_history(run_id, VAL_MACRO_F1)
                self.last_step[run_id] = max((m.step for m in history), default=0)
            else:
                run_id = self._create(CHILD, f"{self.approach}-{phase}-{trial_id}",
                                      {"trial_id": trial_id, "mlflow.parentRunId": self.parent_id, **tags})
                history = []
            self.children[trial_id, phase] = run_id
            if not history:
                self.log_params(run_id, flat_params(config), fresh=old is None)
                self.client.log_dict(run_id, config, "config.json")
        return self.children[trial_id, phase]

    def log_params(self, run_id: str, params: dict[str, str], fresh: bool = False) -> None:
        """Each parameter once: a resumed study must not log a parameter again (MLflow refuses a second value).
        ``fresh``: a run created a moment ago, which has none yet."""
        from mlflow.entities import Param

        have = {} if fresh else self.client.get_run(run_id).data.params
        fresh = [Param(k, v[:6000]) for k, v in params.items() if k not in have]
        for start in range(0, len(fresh), 100):
            self.client.log_batch(run_id, params=fresh[start : start + 100])

    def log_epoch(self, run_id: str, step: int, metrics: dict[str, float], tags: dict[str, str] | None = None) -> None:
        from mlflow.entities import Metric, RunTag

        if step <= self.last_step.get(run_id, 0):
            return  # already logged before an interruption: resuming never duplicates a step
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()],
                              tags=[RunTag(k, v) for k, v in (tags or {}).items()])
        self.last_step[run_id] = step

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])

    def log_artifacts(self, run_id: str, result: dict[str, Any], prefix: str = "val_", figure: bool = True) -> None:
        """The per-class report (with the confusion counts) and, with ``figure``, the confusion matrix drawn: 85 ms
        of the driver's CPU a run (bench_scale.py), so a search trial's run has the report alone."""
        confusion = result.get(f"{prefix}confusion")
        if confusion is not None and figure:
            import matplotlib.pyplot as plt

            fig = confusion_figure(confusion, self.classes, f"{self.approach}: {prefix.rstrip('_')} confusion")
            try:
                self.client.log_figure(run_id, fig, f"{prefix}confusion_matrix.png")
            finally:
                plt.close(fig)  # pyplot holds every figure it made until closed: one per trial leaked
        self.client.log_text(run_id, per_class_report(result, self.classes, prefix), f"{prefix}per_class_report.tsv")

    def tag(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

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


def set_verdict(uri: str, run_id: str, verdict: str, name: str) -> None:
    """A parent run's verdict against the baseline: its ``verdict`` tag and its name (the runs table shows both).
    Sets, never appends: calling it again with the same values changes nothing."""
    c = client(uri)
    c.set_tag(run_id, "verdict", verdict)
    c.update_run(run_id, name=name)
