"""The validated plan of a study: what the CLI hands to everything below it (nothing below sees argparse).

A plan is saved as ``plan.json`` (:meth:`Plan.to_json`, one versioned schema; credentials redacted) in
``<storage>/<study id>/``: ``--resume`` checks its flags against it and ``python -m study.tune --plan
plan.json`` re-runs it. Standard library only, like the CLI that builds it (pyarrow only for URIs).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study import paths
from study.errors import UsageError
from study.spaces import Space

PLAN_VERSION = 1
PLAN_FILE = "plan.json"  # in <storage>/<study id>/
FINISHED_FILE = "finished"  # in <storage>/<study id>/, written once the study's report is
MAX_PLAN_BYTES = 4 << 20


@dataclass(frozen=True)
class Budget:
    """The shared budget of every approach of a study (a space's defaults, overridden by flags)."""

    epochs: int  # max epochs per trial (ASHA's max_t), also every confirmation run's length
    num_samples: int  # search trials per approach
    batch_size: int
    image_size: int  # pixels, square
    grace_period: int  # ASHA: epochs before a trial can be stopped
    reduction_factor: int  # ASHA: keep the top 1/rf at each rung


@dataclass(frozen=True)
class Confirm:
    """The confirmation phase: each approach's top configs raced on validation, the winner retrained from scratch
    over seeds until its verdict is clear (between ``min_seeds`` and ``max_seeds``)."""

    top: int = 3  # configs per approach, by best validation macro-F1, that enter the within-approach race
    race_seeds: int = 2  # seeds per config in that race (on validation)
    min_seeds: int = 3  # confirmation seeds before a verdict may be drawn; 0 (with max_seeds 0): no confirmation
    max_seeds: int = 12  # confirmation seeds at most
    rope: float = 0.02  # region of practical equivalence on test macro-F1
    resplit: bool = True  # each seed draws its own train/validation/test split where the data set allows it

    @property
    def enabled(self) -> bool:
        return self.max_seeds > 0


def gpu_share(image_size: int, batch_size: int) -> float:
    """GPUs per trial by image size, from benchmarks/bench_gpu.py on an H200 (results/bench/gpu.md): small images
    are bound by kernel launches, so four trials share a GPU (3.6x one trial's images/s at 32 px, batch 64)."""
    if image_size <= 64 and batch_size <= 128:
        return 0.25
    return 1.0 if image_size >= 224 and batch_size >= 256 else 0.5


@dataclass(frozen=True)
class Resources:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | str = 0.0  # "auto" only with an address: resolved once Ray is up (study.runner)
    max_concurrent: int | None = None
    address: str | None = None  # an existing Ray cluster ("auto"); None: a fresh local Ray


@dataclass(frozen=True)
class Plan:
    space: str  # the space named on the command line ("all" for the composite)
    spaces: tuple[Space, ...]  # its approaches
    data: str  # a data set name or a folder path
    ratio: float | None  # training minority:majority ratio
    counts: dict[str, int] | None  # explicit training images per class
    budget: Budget
    seed: int  # data split and the search (each trial derives its own seed from it)
    resources: Resources
    tracking_uri: str  # absolute sqlite:////... or http(s)://
    storage: str  # absolute path or URI
    results_dir: Path  # absolute
    study_id: str
    resume: bool = False
    smoke: bool = False
    confirm: Confirm = field(default_factory=Confirm)
    eval_costs: tuple[float, float] | None = None  # FN:FP for the minority (two classes); None: the default
    weights: dict[str, Path] = field(default_factory=dict)  # pretrained weights by name -> file
    verbose: bool = False
    report_dir: Path | None = None  # where summary.{md,csv} and comparison.png go (default <results_dir>/<space>)
    parent_run: str | None = None  # an MLflow run the approaches' parent runs nest under (a sweep's ratio)

    @property
    def cache_dir(self) -> Path:
        return self.results_dir / "cache"

    def to_json(self) -> str:
        """The plan as ``plan.json``: every field, the spaces by name with their resolved content, the tracking
        URI's password redacted."""
        doc = {"version": PLAN_VERSION, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}
        doc["spaces"] = [dataclasses.asdict(s) for s in self.spaces]
        doc["budget"], doc["resources"] = dataclasses.asdict(self.budget), dataclasses.asdict(self.resources)
        doc["confirm"] = dataclasses.asdict(self.confirm)
        doc["tracking_uri"] = paths.redact(self.tracking_uri)
        doc["weights"] = {k: str(v) for k, v in self.weights.items()}
        for key in ("results_dir", "report_dir"):
            doc[key] = None if doc[key] is None else str(doc[key])
        return json.dumps(doc, indent=2) + "\n"  # never sort_keys: the order of params is the order Optuna asks


def _build(cls: type, doc: Any, where: str) -> Any:
    """``cls(**doc)`` for one of the plan's dataclasses, or a UsageError naming the part that does not fit."""
    if not isinstance(doc, dict):
        raise UsageError(f"{where}: expected a mapping, got {type(doc).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(doc) - names)
    if unknown:
        raise UsageError(f"{where}: unknown field '{unknown[0]}'")
    try:
        return cls(**doc)
    except TypeError as err:
        raise UsageError(f"{where}: {err}") from None


def plan_from_json(text: str, where: str = PLAN_FILE) -> Plan:
    """A plan from :meth:`Plan.to_json`'s text; a malformed or foreign file is a UsageError naming ``where``."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise UsageError(f"{where}: not a plan (malformed JSON: {str(err)[:80]})") from None
    if not isinstance(doc, dict) or doc.get("version") != PLAN_VERSION:
        found = doc.get("version") if isinstance(doc, dict) else None
        raise UsageError(f"{where}: not a plan of version {PLAN_VERSION} (found version {found!r})")
    doc = {k: v for k, v in doc.items() if k != "version"}
    spaces = doc.get("spaces")
    if not isinstance(spaces, list) or not spaces:
        raise UsageError(f"{where}: spaces: expected a non-empty list")
    doc["spaces"] = tuple(_build(Space, s, f"{where}: spaces[{i}]") for i, s in enumerate(spaces))
    for key, cls in (("budget", Budget), ("resources", Resources), ("confirm", Confirm)):
        doc[key] = _build(cls, doc.get(key), f"{where}: {key}")
    try:
        doc["results_dir"] = Path(doc["results_dir"])
        doc["report_dir"] = None if doc.get("report_dir") is None else Path(doc["report_dir"])
        doc["weights"] = {str(k): Path(v) for k, v in (doc.get("weights") or {}).items()}
        if doc.get("eval_costs") is not None:
            doc["eval_costs"] = tuple(float(c) for c in doc["eval_costs"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise UsageError(f"{where}: malformed field ({err})") from None
    return _build(Plan, doc, where)


# ---------------------------------------------------------------- where a study keeps its plan


def study_file(storage: str, study_id: str, name: str) -> str:
    """``<storage>/<study id>/<name>``: a path, or a URI for object storage."""
    return f"{storage.rstrip('/')}/{study_id}/{name}"


def _filesystem(location: str) -> tuple[Any, str]:
    """pyarrow's file system and path for a URI (s3://...); a UsageError when it cannot be opened."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(location)
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot open {location}: {str(err).splitlines()[0]}") from None


def save_plan(plan: Plan, location: str | Path) -> None:
    """Write ``plan.to_json()`` to ``location``: a local path (atomically: a temporary file, then os.replace,
    in a folder checked by study.paths) or a URI such as s3://bucket/path/plan.json (one object put)."""
    data = plan.to_json().encode()
    if "://" not in str(location):
        paths.write_atomic(location, data, "plan")
        return
    fs, path = _filesystem(str(location))
    fs.create_dir(path.rpartition("/")[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(data)


def read_plan(location: str | Path) -> Plan | None:
    """The plan saved at ``location`` (a path or a URI), or None when there is none."""
    if "://" not in str(location):
        if not Path(location).exists():
            return None
        return plan_from_json(paths.read_text(location, MAX_PLAN_BYTES, UsageError), str(location))
    import pyarrow.fs

    fs, path = _filesystem(str(location))
    info = fs.get_file_info(path)
    if info.type == pyarrow.fs.FileType.NotFound:
        return None
    if info.type != pyarrow.fs.FileType.File or (info.size or 0) > MAX_PLAN_BYTES:
        raise UsageError(f"{location}: not a plan file (a folder, or larger than {MAX_PLAN_BYTES >> 20} MB)")
    with fs.open_input_stream(path) as f:
        raw = f.read()
    try:
        return plan_from_json(raw.decode("utf-8"), str(location))
    except UnicodeDecodeError:
        raise UsageError(f"{location}: not a plan (not UTF-8 text)") from None


def mark_finished(storage: str, study_id: str) -> None:
    """Leave ``<storage>/<study id>/finished`` (after the report): a later --resume says so and changes nothing."""
    location = study_file(storage, study_id, FINISHED_FILE)
    if "://" not in location:
        paths.write_atomic(location, b"", "finished")
        return
    fs, path = _filesystem(location)
    with fs.open_output_stream(path) as out:
        out.write(b"")


def exists(location: str) -> bool:
    """Whether ``location`` (a path or a URI) names a file or folder."""
    if "://" not in location:
        return Path(location).exists()
    import pyarrow.fs

    fs, path = _filesystem(location)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def is_finished(storage: str, study_id: str) -> bool:
    """The study's report was written (the runner leaves ``<storage>/<study id>/finished``)."""
    return exists(study_file(storage, study_id, FINISHED_FILE))
