"""The study: ``python -m study.tune --space focal``.

Validates everything first (space, data, GPUs, tracking URI; exit code 2 and one line on bad
input, nothing written), decodes the data once, then for each approach of the space runs a
Ray Tune study — Optuna's TPE proposes, ASHA stops poor trials early on validation macro-F1 —
logs it to MLflow (a parent run per approach, a child run per trial), evaluates the best
trial's best-epoch checkpoint on the held-out test split, and writes results/<space>/.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from study.data import DataError, Dataset, load_dataset, parse_counts, parse_ratio, resolve_source, subset
from study.losses import LossError
from study.models import ModelError, load_state_dict, source_checkpoint, weights_path
from study.sampling import SAMPLERS
from study.spaces import Space, SpaceError, available, load_spaces
from study.tracking import DEFAULT_TRACKING_URI, TrackingError, absolute_uri, check_tracking_uri

USER_ERRORS = (DataError, SpaceError, LossError, ModelError, TrackingError)
SMOKE = {"epochs": 2, "num_samples": 2, "batch_size": 32, "grace_period": 1, "largest_class": 40}


class UsageError(ValueError):
    """A bad flag value."""


@dataclass
class Plan:
    space: str
    spaces: list[Space]
    args: argparse.Namespace
    budget: dict[str, Any]
    tracking_uri: str
    storage: str  # absolute path or URI
    study_id: str
    weights: dict[str, Path] = field(default_factory=dict)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m study.tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--space", required=True, help=f"search space in search_spaces/: one of {', '.join(available())}")
    ap.add_argument("--spaces-dir", type=Path, default=None, help="folder of your own space files (default: search_spaces/)")
    ap.add_argument("--data", default="animals", help="animals (default), animals_source, digits, digits_lt, or a folder path "
                    "in the Kaggle layout (train/<class>/, validation/<class>/, optional test/<class>/)")
    ap.add_argument("--ratio", default=None, help="training minority:majority ratio, e.g. 1:11 or 0.0909 (animals default 1:11)")
    ap.add_argument("--counts", default=None, help="explicit training images per class, e.g. cat=1000,dog=11000")
    ap.add_argument("--image-size", type=int, default=None, help="image side in pixels (the space's default otherwise)")
    ap.add_argument("--num-samples", type=int, default=None, help="trials per approach (the space's default otherwise)")
    ap.add_argument("--max-epochs", type=int, default=None, help="max epochs per trial, ASHA's max_t (the space's default otherwise)")
    ap.add_argument("--batch-size", type=int, default=None, help="training batch size (the space's default otherwise)")
    ap.add_argument("--grace-period", type=int, default=None, help="ASHA: epochs before a trial may be stopped")
    ap.add_argument("--reduction-factor", type=int, default=None, help="ASHA: keep the top 1/rf of trials at each rung")
    ap.add_argument("--seed", type=int, default=0, help="seed for data splits, Optuna's TPE sampler and every trial (default 0)")
    ap.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs per trial; also its torch threads (default 1)")
    ap.add_argument("--gpus-per-trial", type=float, default=0, help="GPUs per trial, fractions allowed: 0.25, 0.5, 1, 2 (default 0)")
    ap.add_argument("--max-concurrent", type=int, default=None, help="at most this many trials at once (default: as resources allow)")
    ap.add_argument("--address", default=None, help="join an existing Ray cluster (e.g. auto); default: a fresh local Ray")
    ap.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help=f"MLflow tracking URI (default {DEFAULT_TRACKING_URI})")
    ap.add_argument("--storage-path", default="results/ray", help="Ray Tune storage for checkpoints and state (default results/ray)")
    ap.add_argument("--results-dir", default="results", help="where <space>/summary.{md,csv} and comparison.png go")
    ap.add_argument("--resume", action="store_true", help="continue the latest interrupted study of this space")
    ap.add_argument("--smoke", action="store_true", help="tiny subsets, 2 trials of 1-2 epochs per approach: what CI runs")
    return ap


def _positive(args: argparse.Namespace) -> None:
    for flag in ("num_samples", "max_epochs", "batch_size", "image_size", "grace_period", "reduction_factor", "max_concurrent"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.cpus_per_trial <= 0:
        raise UsageError(f"--cpus-per-trial must be > 0, got {args.cpus_per_trial}")
    if args.gpus_per_trial < 0 or (args.gpus_per_trial > 1 and args.gpus_per_trial != int(args.gpus_per_trial)):
        raise UsageError(f"--gpus-per-trial must be a fraction in [0, 1] or a whole number, got {args.gpus_per_trial}")
    if args.gpus_per_trial > 0 and not args.address and not torch.cuda.is_available():
        raise UsageError(f"--gpus-per-trial {args.gpus_per_trial} asked for, but this machine has no GPU (CUDA unavailable)")


def _storage(path: str) -> str:
    return path if "://" in path else str(Path(path).expanduser().resolve())


def _study_id(space: str, storage: str, resume: bool) -> str:
    """A new id, or with --resume the latest study of the space on the storage (a path, s3://, gs://...)."""
    if not resume:
        return f"{space}-{time.strftime('%Y%m%d-%H%M%S')}"
    import pyarrow.fs

    try:
        fs, root = pyarrow.fs.FileSystem.from_uri(storage) if "://" in storage else (pyarrow.fs.LocalFileSystem(), storage)
        found = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    except (OSError, ValueError) as err:  # unknown scheme, no credentials, no such bucket
        raise UsageError(f"--resume: cannot list storage {storage}: {str(err).splitlines()[0]}") from None
    ours = re.compile(rf"{re.escape(space)}-\d{{8}}-\d{{6}}")  # not another space's "<space>-x-<time>"
    studies = sorted(f.base_name for f in found if f.type == pyarrow.fs.FileType.Directory and ours.fullmatch(f.base_name))
    if not studies:
        raise UsageError(f"--resume: no earlier '{space}' study under {storage}")
    return studies[-1]


def preflight(argv: list[str] | None) -> Plan:
    """Every check that can fail on bad input, before anything is written or Ray starts."""
    args = parser().parse_args(argv)
    _positive(args)
    spaces = load_spaces(args.space, args.spaces_dir)
    args.ratio = parse_ratio(args.ratio)
    args.counts = parse_counts(args.counts)
    resolve_source(args.data)  # unknown names, missing paths, empty class folders
    budget = dict(spaces[0].defaults)
    if args.smoke:
        budget.update({k: v for k, v in SMOKE.items() if k != "largest_class"})
    overrides = {"epochs": args.max_epochs, "num_samples": args.num_samples, "batch_size": args.batch_size,
                 "image_size": args.image_size, "grace_period": args.grace_period, "reduction_factor": args.reduction_factor}
    budget.update({k: v for k, v in overrides.items() if v is not None})
    weights = {}
    for space in spaces:
        for name in space.values("weights"):
            if name == "source":
                weights[name] = source_checkpoint(budget["image_size"], args.smoke)  # made by pretraining if missing
            elif name:
                weights[name] = weights_path(name)
    uri = absolute_uri(args.tracking_uri)
    check_tracking_uri(uri)
    storage = _storage(args.storage_path)
    return Plan(args.space, spaces, args, budget, uri, storage, _study_id(args.space, storage, args.resume), weights)


def check_samplers(plan: Plan, data: Dataset) -> None:
    """A sampler that cannot work on this training split (SMOTE with too few minority samples) fails now."""
    labels = data.train.labels.numpy()
    for space in plan.spaces:
        for name in space.values("sampler"):
            SAMPLERS[name](1.0, labels, plan.args.seed, k_neighbors=space.values("k_neighbors")[0])


def prepare_data(plan: Plan) -> Dataset:
    a = plan.args
    data = load_dataset(a.data, image_size=plan.budget["image_size"], seed=a.seed, ratio=a.ratio, counts=a.counts)
    return subset(data, SMOKE["largest_class"], a.seed) if a.smoke else data


def weight_bank(plan: Plan) -> dict[str, dict[str, torch.Tensor]]:
    """Pretrained state dicts, loaded once in the driver; trials get them through the object store."""
    from study.pretrain import pretrain

    bank = {}
    for name, path in plan.weights.items():
        if name == "source" and not path.exists():
            print(f"no source-task checkpoint at {path}: pretraining it once now (python -m study.pretrain)")
            pretrain(path, image_size=plan.budget["image_size"], seed=plan.args.seed, smoke=plan.args.smoke,
                     epochs=1 if plan.args.smoke else 6)
        bank[name] = load_state_dict(path)
    return bank


def main(argv: list[str] | None = None) -> int:
    try:
        plan = preflight(argv)
    except (UsageError, *USER_ERRORS) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        data = prepare_data(plan)
        check_samplers(plan, data)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"data: {data.summary()}")
    from study.runner import run_study  # Ray and MLflow load only after the checks passed

    return run_study(plan, data, weight_bank(plan))


if __name__ == "__main__":
    sys.exit(main())
