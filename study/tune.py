"""The study: ``python -m study.tune --space focal``.

Checks every flag, the search space, the data path and the weights with the standard library
and YAML alone (a bad flag is answered in about a second: one ``error:`` line, exit code 2,
nothing written), then hands a typed plan to ``study.runner``, which decodes the data once and,
for each approach of the space, runs a Ray Tune search (Optuna's TPE proposes, ASHA stops poor
trials early on validation macro-F1), retrains each approach's best configs over several seeds
(the confirmation phase: the verdict's mean and 95 % interval), logs it all to MLflow (a parent
run per approach, a child run per trial) and writes results/<space>/.

Seeds: --seed fixes the data split and the search; every trial derives its own seed from it
(weight initialisation, resampling, batch order), and confirmation seed i uses the same trial seed
in every approach, so runs pair across approaches.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import secrets
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

from study.plan import Budget, Confirm, Plan, Resources
from study.sources import DataError, check_source, parse_counts, parse_ratio
from study.spaces import SpaceError, available, load_spaces
from study.weights import WeightsError, check_backbone, check_weights, weights_file

SMOKE = {"epochs": 2, "num_samples": 2, "batch_size": 32, "grace_period": 1}
SPACE_NAME = re.compile(r"[A-Za-z0-9_-]+")
ADDRESS_TIMEOUT_S = 5.0
USER_ERRORS = (DataError, SpaceError, WeightsError)


class UsageError(ValueError):
    """A bad flag value."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        raise UsageError(message)


def finite(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return number


def gpus(value: str) -> float | str:
    return value if value == "auto" else finite(value)


def auto_gpus(image_size: int, batch_size: int, address: str | None) -> float:
    """Trials per GPU by image size, from benchmarks/bench_gpu.py on an H200 (results/bench/gpu.md): small images
    are bound by kernel launches, so four trials share a GPU (3.6x one trial's images/s at 32 px, batch 64)."""
    if address or local_gpus() == 0:
        return 0.0  # on a cluster, say how many: the driver cannot see the workers' GPUs before Ray starts
    if image_size <= 64 and batch_size <= 128:
        return 0.25
    return 1.0 if image_size >= 224 and batch_size >= 256 else 0.5


def parser() -> Parser:
    ap = Parser(prog="python -m study.tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", required=True, help=f"search space in search_spaces/: one of {', '.join(available())}")
    ap.add_argument("--spaces-dir", type=Path, default=None, help="folder of your own space files (default: search_spaces/)")
    ap.add_argument("--data", default="animals", help="animals (default), animals_source, digits, digits_lt, or a folder path "
                    "in the Kaggle layout (train/<class>/, validation/<class>/, optional test/<class>/)")
    ap.add_argument("--ratio", default=None, help="training minority:majority ratio, e.g. 1:11 or 0.0909 (animals default "
                    "1:11); every minority image is kept where the other classes have enough images, they are cut")
    ap.add_argument("--counts", default=None, help="explicit training images per class, e.g. cat=1000,dog=11000")
    ap.add_argument("--image-size", type=int, default=None, help="image side in pixels, 16..1024 (the space's default otherwise)")
    ap.add_argument("--num-samples", type=int, default=None, help="search trials per approach (the space's default otherwise)")
    ap.add_argument("--max-epochs", type=int, default=None, help="max epochs per trial, ASHA's max_t, and every confirmation "
                    "run's length (the space's default otherwise)")
    ap.add_argument("--batch-size", type=int, default=None, help="training batch size (the space's default otherwise)")
    ap.add_argument("--grace-period", type=int, default=None, help="ASHA: epochs before a trial may be stopped")
    ap.add_argument("--reduction-factor", type=int, default=None, help="ASHA: keep the top 1/rf of trials at each rung (>= 2)")
    ap.add_argument("--seed", type=int, default=0, help="data split and search seed; trials derive their own (default 0)")
    ap.add_argument("--confirm-top", type=int, default=1, help="configs per approach retrained after the search (default 1)")
    ap.add_argument("--confirm-seeds", type=int, default=None, help="seeds per retrained config; 0 turns confirmation off "
                    "(default 5 for a space of several approaches such as all and samplers, 3 for one approach)")
    ap.add_argument("--confirm-resplit", action="store_true", help="confirmation seeds also redraw the train/validation/"
                    "test split (seed, seed+1, ...)")
    ap.add_argument("--eval-costs", default=None, help="evaluation cost matrix for two classes as FN:FP of the minority "
                    "(default: the training imbalance ratio); more classes: the third seed's generator")
    ap.add_argument("--cpus-per-trial", type=finite, default=1, help="CPUs per trial; also its torch threads (default 1)")
    ap.add_argument("--gpus-per-trial", type=gpus, default="auto", help="GPUs per trial, fractions allowed: 0.25, 0.5, 1, 2; "
                    "default auto: 0 without a GPU, else trials share each GPU by image size (README, Performance)")
    ap.add_argument("--max-concurrent", type=int, default=None, help="at most this many trials at once (default: as "
                    "resources allow)")
    ap.add_argument("--address", default=None, help="join an existing Ray cluster (auto or host:port); default: a fresh "
                    "local Ray")
    ap.add_argument("--tracking-uri", default=None, help="MLflow tracking URI: sqlite:///path.db or http(s)://host:port "
                    "(default sqlite:///<results-dir>/mlflow.db)")
    ap.add_argument("--storage-path", default=None, help="Ray Tune storage for checkpoints and state, a folder or a URI "
                    "such as s3://bucket/path (default <results-dir>/ray)")
    ap.add_argument("--results-dir", default="results", help="summaries, data cache and source checkpoints (default results)")
    ap.add_argument("--resume", action="store_true", help="continue the latest interrupted study of this space")
    ap.add_argument("--smoke", action="store_true", help="tiny subsets, 2 trials of 2 epochs per approach: what CI runs")
    ap.add_argument("-v", "--verbose", action="store_true", help="Ray Tune's progress tables instead of a status line")
    return ap


# ---------------------------------------------------------------- checks (standard library only)


def _at_least(args: argparse.Namespace, flag: str, low: int, high: int | None = None) -> None:
    value = getattr(args, flag)
    if value is None:
        return
    if value < low or (high is not None and value > high):
        rule = f">= {low}" if high is None else f"in {low}..{high}"
        raise UsageError(f"--{flag.replace('_', '-')} must be {rule}, got {value}")


def local_gpus() -> int:
    """GPUs this machine's driver lists (no torch import), within CUDA_VISIBLE_DEVICES when it is set."""
    listed = Path("/proc/driver/nvidia/gpus")
    count = len(list(listed.iterdir())) if listed.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]))
    return count


def check_resources(args: argparse.Namespace) -> None:
    if args.cpus_per_trial <= 0:
        raise UsageError(f"--cpus-per-trial must be > 0, got {args.cpus_per_trial}")
    gpus = args.gpus_per_trial
    if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        raise UsageError(f"--gpus-per-trial must be a fraction in [0, 1] or a whole number, got {gpus}")
    if args.address:
        return  # the cluster's resources are checked once Ray is up, before any trial starts
    cpus = os.cpu_count() or 1
    if args.cpus_per_trial > cpus:
        raise UsageError(f"--cpus-per-trial {args.cpus_per_trial:g} asked for, but this machine has {cpus} CPUs")
    if gpus > 0 and local_gpus() < math.ceil(gpus):
        raise UsageError(f"--gpus-per-trial {gpus:g} asked for, but this machine has {local_gpus()} GPUs")


def _ray_address(address: str) -> tuple[str, int] | None:
    """host, port of a Ray address; for ``auto``: the running cluster's, or None when there is none."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if not address:
            current = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"
            address = current.read_text().strip() if current.is_file() else ""
        if not address:
            return None
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address must be auto or host:port, got {address!r}")
    return host, int(port)


def check_address(address: str | None) -> None:
    """An unreachable --address is an error in seconds, not a hang."""
    if not address:
        return
    target = _ray_address(address)
    if target is None:
        raise UsageError("--address auto: no running Ray cluster found (start one with `ray start --head`)")
    try:
        socket.create_connection(target, timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as err:
        raise UsageError(f"--address {address}: cannot reach a Ray cluster at {target[0]}:{target[1]}: "
                         f"{err.strerror or err}") from None


def check_tracking_uri(uri: str, results: Path) -> str:
    """An absolute, usable tracking URI: a server that answers, or a sqlite file in an existing folder (or in
    the results folder, which the study creates)."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as resp:
                if resp.status != 200:
                    raise UsageError(f"MLflow tracking server at {uri} answered HTTP {resp.status} on /health")
        except (urllib.error.URLError, OSError) as err:
            raise UsageError(f"cannot reach the MLflow tracking server at {uri}: {getattr(err, 'reason', err)}") from None
        return uri
    if not uri.startswith("sqlite:///"):
        raise UsageError(f"unsupported tracking URI {uri!r}: use sqlite:///path.db or http(s)://host:port")
    path = Path(uri[len("sqlite:///"):]).expanduser()
    folder = path.resolve().parent
    if not folder.is_dir() and folder != results:
        raise UsageError(f"tracking URI {uri}: folder {folder} does not exist")
    if path.exists() and not path.is_file():
        raise UsageError(f"tracking URI {uri}: {path} is not a file")
    if folder.is_dir() and not os.access(folder, os.W_OK):
        raise UsageError(f"tracking URI {uri}: folder {folder} is not writable")
    return "sqlite:///" + str(path.resolve())  # absolute: Ray changes trial working dirs


def writable(path: Path, flag: str) -> Path:
    """``path`` resolved; it, or the nearest folder above it that exists, must be a writable folder."""
    path = path.expanduser().resolve()
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{flag} {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: {probe} is not writable")
    return path


def parse_eval_costs(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        fn, fp = (float(v) for v in value.split(":"))
    except ValueError:
        raise UsageError(f"--eval-costs must look like FN:FP, e.g. 11:1, got {value!r}") from None
    if not (math.isfinite(fn) and math.isfinite(fp) and fn > 0 and fp > 0):
        raise UsageError(f"--eval-costs FN and FP must be finite and > 0, got {value!r}")
    return fn, fp


def latest_study(storage: str, space: str) -> str:
    """With --resume: the newest ``<space>-YYYYmmdd-HHMMSS-xxxx`` study on the storage (a path, s3://, gs://...)."""
    import pyarrow.fs

    try:
        fs, root = pyarrow.fs.FileSystem.from_uri(storage) if "://" in storage else (pyarrow.fs.LocalFileSystem(), storage)
        found = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    except (OSError, ValueError) as err:  # unknown scheme, no credentials, no such bucket
        raise UsageError(f"--resume: cannot list storage {storage}: {str(err).splitlines()[0]}") from None
    ours = re.compile(rf"{re.escape(space)}-(\d{{8}}-\d{{6}})(-[0-9a-f]{{4}})?")  # not another space's "<space>-x-<time>"
    studies = [(m.group(1), f.mtime_ns or 0, f.base_name) for f in found
               if f.type == pyarrow.fs.FileType.Directory and (m := ours.fullmatch(f.base_name))]
    if not studies:
        raise UsageError(f"--resume: no earlier '{space}' study under {storage}")
    return max(studies)[2]


def new_study_id(space: str) -> str:
    """Unique even for two studies started in the same second (a random suffix)."""
    return f"{space}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def budget_of(args: argparse.Namespace, defaults: dict[str, Any]) -> Budget:
    budget = dict(defaults)
    if args.smoke:
        budget.update(SMOKE)
    overrides = {"epochs": args.max_epochs, "num_samples": args.num_samples, "batch_size": args.batch_size,
                 "image_size": args.image_size, "grace_period": args.grace_period, "reduction_factor": args.reduction_factor}
    budget.update({k: v for k, v in overrides.items() if v is not None})
    return Budget(**budget)


def preflight(argv: list[str] | None) -> Plan:
    """Every check that can fail on bad input, before anything is written or a heavy module loads."""
    args = parser().parse_args(argv)
    if not SPACE_NAME.fullmatch(args.space):
        raise UsageError(f"--space must be a name of letters, digits, _ and -, got {args.space!r}")
    for flag in ("num_samples", "max_epochs", "batch_size", "grace_period", "max_concurrent", "confirm_top"):
        _at_least(args, flag, 1)
    _at_least(args, "reduction_factor", 2)
    _at_least(args, "image_size", 16, 1024)
    _at_least(args, "seed", 0, 2**31 - 1)
    _at_least(args, "confirm_seeds", 0, 100)
    eval_costs = parse_eval_costs(args.eval_costs)
    spaces = load_spaces(args.space, args.spaces_dir)
    ratio, counts = parse_ratio(args.ratio), parse_counts(args.counts)
    if ratio is not None and counts is not None:
        raise UsageError("--ratio and --counts both given; choose one")
    check_source(args.data, counts)
    budget = budget_of(args, spaces[0].defaults)
    if args.gpus_per_trial == "auto":
        args.gpus_per_trial = auto_gpus(budget.image_size, budget.batch_size, args.address)
    check_resources(args)
    if budget.image_size < 16 or budget.image_size > 1024:
        raise UsageError(f"image size must be in 16..1024, got {budget.image_size}")
    for space in spaces:  # rules that need the budget after the flags' overrides
        if "ldam_drw" in space.values("loss") and min(space.values("drw_epoch")) > budget.epochs:
            raise UsageError(f"{space.name}: drw_epoch {min(space.values('drw_epoch'))} is after the last epoch "
                             f"({budget.epochs}): deferred re-weighting would never start")
    results = writable(Path(args.results_dir), "--results-dir")
    storage_path = args.storage_path or str(results / "ray")
    storage = storage_path if "://" in storage_path else str(writable(Path(storage_path), "--storage-path"))
    weights, checkpoints = {}, results / "checkpoints"
    for space in spaces:
        for backbone in space.values("backbone"):
            check_backbone(backbone)  # a scratch efficientnet_lite0 needs its package too
            for name in filter(None, space.values("weights")):
                where = {"image_size": budget.image_size, "smoke": args.smoke}
                # source weights are made by pretraining when missing; every other file must exist and be a checkpoint
                check = weights_file if name == "source" else check_weights
                weights[f"{name}@{backbone}"] = check(name, backbone, checkpoints, **where)
    uri = check_tracking_uri(args.tracking_uri or f"sqlite:///{results / 'mlflow.db'}", results)
    check_address(args.address)
    seeds = args.confirm_seeds if args.confirm_seeds is not None else (5 if len(spaces) > 1 else 3)
    study_id = latest_study(storage, args.space) if args.resume else new_study_id(args.space)
    return Plan(space=args.space, spaces=tuple(spaces), data=args.data, ratio=ratio, counts=counts, budget=budget,
                seed=args.seed, resources=Resources(args.cpus_per_trial, args.gpus_per_trial, args.max_concurrent,
                                                    args.address),
                tracking_uri=uri, storage=storage, results_dir=results, study_id=study_id, resume=args.resume,
                smoke=args.smoke, confirm=Confirm(args.confirm_top, seeds, args.confirm_resplit), eval_costs=eval_costs,
                weights=weights, verbose=args.verbose)


def main(argv: list[str] | None = None) -> int:
    try:
        plan = preflight(argv)
    except (UsageError, *USER_ERRORS) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from study.runner import run_study  # torch, Ray and MLflow load only once every check has passed

    return run_study(plan)


if __name__ == "__main__":
    sys.exit(main())
