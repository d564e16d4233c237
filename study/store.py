"""MLflow behind one door: where a study's runs are read back (and a report's artifacts attached).

Runs come back as plain :class:`Run` values, so the report and the analyses never touch MLflow's
entities. Layout (written by the study): one experiment per space; per approach a parent run
(tags ``role=parent``, ``study_id``, ``approach``) and child runs (``role=child``,
``phase=search|confirm``). Importing this module is cheap (standard library only); MLflow loads
on the first call that needs it, after :func:`check_uri` has answered.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow.tracking import MlflowClient

DEFAULT_TRACKING_URI = "sqlite:///results/mlflow.db"
DESCRIPTION_TAG = "mlflow.note.content"  # what the MLflow UI shows as a run's description
PROBE_TIMEOUT_S = 5.0


class StoreError(ValueError):
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


def log_text(uri: str, run_id: str, text: str, path: str) -> None:
    client(uri).log_text(run_id, text, path)


def set_description(uri: str, run_id: str, text: str) -> None:
    """The run's description in the MLflow UI (markdown)."""
    client(uri).set_tag(run_id, DESCRIPTION_TAG, text)
