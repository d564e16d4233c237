"""The study: ``python -m study.tune --space focal``.

Checks every flag, the search space, the data path and the weights with the standard library
and YAML alone (a bad flag is answered in about a second: one ``error:`` line, exit code 2,
nothing written), then hands a typed plan to ``study.runner``, which decodes the data once and,
for each approach of the space, runs a Ray Tune search (the space's literature and neutral settings
first, then Optuna's TPE; ASHA stops poor trials early on validation macro-F1), races each
approach's top candidates on validation, then races the approaches against ``baseline`` over paired
seeds until each verdict (better / worse / practically equivalent / undecided at this budget) is
clear, logs it all to MLflow (a parent run per approach, a child run per trial) and writes
results/<space>/.

Seeds: --seed fixes the data split and the search; every trial derives its own seed from it
(weight initialisation, resampling, batch order), and confirmation seed i uses the same trial seed
(and, by default, its own redrawn split) in every approach, so runs pair across approaches.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from study import paths
from study.errors import Parser, UsageError, cli
from study.plan import PLAN_FILE, Budget, Confirm, Plan, Resources, gpu_share, is_finished, plan_from_json, read_plan, study_file
from study.sources import ANIMAL_PAIRS, check_source, parse_counts, parse_ratio
from study.spaces import MAX_NAME_LENGTH, available, load_spaces
from study.weights import check_backbone, check_weights, weights_file

SMOKE = {"epochs": 2, "num_samples": 2, "batch_size": 32, "grace_period": 1}
SMOKE_CONFIRM = Confirm(top=1, race_seeds=1, min_seeds=2, max_seeds=2)
SPACE_NAME = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_NAME_LENGTH}}}")
ADDRESS_TIMEOUT_S = 5.0  # a TCP connection to --address
RAY_PROBE_TIMEOUT_S = 15.0  # Ray's own client reaching the cluster's GCS (a non-Ray server never answers it)
SEED_MAX = 2**31 - 1
MAX_PLAN_BYTES = 4 << 20
# Integer flags: (low, high). The highs keep a typo from asking for a study that never ends or a process per trial
# that no machine holds.
BOUNDS: dict[str, tuple[int, int]] = {
    "num_samples": (1, 10_000), "max_epochs": (1, 10_000), "batch_size": (1, 65_536), "grace_period": (1, 10_000),
    "reduction_factor": (2, 100), "max_concurrent": (1, 1_024), "image_size": (16, 1024), "seed": (0, SEED_MAX),
    "confirm_top": (1, 20), "confirm_race_seeds": (1, 100), "confirm_min_seeds": (1, 100),
    "confirm_max_seeds": (1, 100), "confirm_seeds": (0, 100),
}
EVAL_COST_RATIO = (1e-6, 1e6)  # FN / FP
# --resume: flags that change the data, the budget or the spaces (refused when they differ from the study's),
# as plan attribute paths
FIXED_ON_RESUME: dict[str, str] = {
    "data": "data", "ratio": "ratio", "counts": "counts", "seed": "seed", "smoke": "smoke", "eval_costs": "eval_costs",
    "image_size": "budget.image_size", "num_samples": "budget.num_samples", "max_epochs": "budget.epochs",
    "batch_size": "budget.batch_size", "grace_period": "budget.grace_period",
    "reduction_factor": "budget.reduction_factor", "confirm_top": "confirm.top",
    "confirm_race_seeds": "confirm.race_seeds", "confirm_min_seeds": "confirm.min_seeds",
    "confirm_max_seeds": "confirm.max_seeds", "confirm_seeds": "confirm.max_seeds", "rope": "confirm.rope",
    "no_resplit": "confirm.resplit", "spaces_dir": "spaces",
}
# --plan: the flags that may go with a saved plan (where it runs and what it prints; never what it computes)
WITH_PLAN = ("plan", "tracking_uri", "storage_path", "results_dir", "cpus_per_trial", "gpus_per_trial",
             "max_concurrent", "address", "verbose")


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


def auto_gpus(image_size: int, batch_size: int, address: str | None) -> float | str:
    """``--gpus-per-trial auto``: on this machine, :func:`gpu_share` when it has a GPU, else 0; on a cluster it stays
    "auto" and study.runner resolves it from the cluster's resources once Ray is up (the driver cannot see the
    workers' GPUs before)."""
    if address:
        return "auto"
    return gpu_share(image_size, batch_size) if local_gpus() else 0.0


def parser(suppress: bool = False) -> Parser:
    """The study's flags; ``suppress``: no defaults, so the parsed namespace holds only the flags given."""
    ap = Parser(prog="python -m study.tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                argument_default=argparse.SUPPRESS if suppress else None)
    d = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    ap.add_argument("--space", help=f"search space in search_spaces/: one of {', '.join(available())}")
    ap.add_argument("--plan", type=Path, help="re-run a saved plan.json (same data, seeds, budget and spaces; a new "
                    "study id); only where it runs may change: --tracking-uri, --storage-path, --results-dir, "
                    "resources")
    ap.add_argument("--spaces-dir", type=Path, help="folder of your own space files (default: search_spaces/)")
    ap.add_argument("--data", default=d("animals"), help="animals (default; cat:dog at 1:11), animals_horse_zebra (1:5), "
                    "animals_sheep_cow (1:22), animals_bird_bear (1:50), animals_source, digits, digits_1_7, digits_lt, "
                    "or a folder path in the Kaggle layout (train/<class>/, validation/<class>/, optional test/<class>/)")
    ap.add_argument("--ratio", help="training minority:majority ratio, e.g. 1:11 or 0.0909 (animals default "
                    "1:11); every minority image is kept where the other classes have enough images, they are cut")
    ap.add_argument("--counts", help="explicit training images per class, e.g. cat=1000,dog=11000")
    ap.add_argument("--image-size", type=int, help="image side in pixels, 16..1024 (the space's default otherwise)")
    ap.add_argument("--num-samples", type=int, help="search trials per approach, up to 10000 (the space's default "
                    "otherwise)")
    ap.add_argument("--max-epochs", type=int, help="max epochs per trial, ASHA's max_t, and every confirmation "
                    "run's length, up to 10000 (the space's default otherwise)")
    ap.add_argument("--batch-size", type=int, help="training batch size, up to 65536 (the space's default otherwise)")
    ap.add_argument("--grace-period", type=int, help="ASHA: epochs before a trial may be stopped")
    ap.add_argument("--reduction-factor", type=int, help="ASHA: keep the top 1/rf of trials at each rung (2..100)")
    ap.add_argument("--seed", type=int, default=d(0), help="data split and search seed; trials derive their own "
                    "(default 0)")
    ap.add_argument("--confirm-top", type=int, help="configs per approach raced after the search (default 3)")
    ap.add_argument("--confirm-race-seeds", type=int, help="seeds per config in that within-approach race on "
                    "validation (default 2)")
    ap.add_argument("--confirm-min-seeds", type=int, help="confirmation seeds before a verdict (default 3)")
    ap.add_argument("--confirm-max-seeds", type=int, help="confirmation seeds at most (default 12)")
    ap.add_argument("--confirm-seeds", type=int, help="a fixed number of confirmation seeds (min = max = N); 0 turns "
                    "confirmation off")
    ap.add_argument("--rope", type=finite, help="region of practical equivalence on test macro-F1 (default 0.02)")
    ap.add_argument("--no-resplit", action="store_true", default=d(False), help="every confirmation seed on the "
                    "study's split (default: each seed draws its own split where the data set allows it)")
    ap.add_argument("--eval-costs", help="evaluation cost matrix for two classes as FN:FP of the minority "
                    "(default: the training imbalance ratio); more classes: the third seed's generator")
    ap.add_argument("--cpus-per-trial", type=finite, default=d(1), help="CPUs per trial; also its torch threads "
                    "(default 1)")
    ap.add_argument("--gpus-per-trial", type=gpus, default=d("auto"), help="GPUs per trial, fractions allowed: 0.25, "
                    "0.5, 1, 2; default auto: 0 without a GPU, else trials share each GPU by image size (README, "
                    "Performance)")
    ap.add_argument("--max-concurrent", type=int, help="at most this many trials at once, up to 1024 (default: as "
                    "resources allow)")
    ap.add_argument("--address", help="join an existing Ray cluster (auto or host:port); default: a fresh local Ray")
    ap.add_argument("--tracking-uri", help="MLflow tracking URI: sqlite:///path.db or http(s)://[user:password@]"
                    "host:port (default sqlite:///<results-dir>/mlflow.db)")
    ap.add_argument("--storage-path", help="Ray Tune storage for checkpoints, state and plan.json, a folder or a URI "
                    "such as s3://bucket/path (default <results-dir>/ray)")
    ap.add_argument("--results-dir", default=d("results"), help="summaries, data cache and source checkpoints "
                    "(default results)")
    ap.add_argument("--resume", action="store_true", default=d(False), help="continue the latest interrupted study of "
                    "this space (flags that change its data, budget or spaces are refused)")
    ap.add_argument("--smoke", action="store_true", default=d(False), help="tiny subsets, each search's first 2 "
                    "trials of 2 epochs, 1 candidate, 2 confirmation seeds: what CI runs")
    ap.add_argument("-v", "--verbose", action="store_true", default=d(False), help="Ray Tune's progress tables "
                    "instead of a status line")
    return ap


# ---------------------------------------------------------------- checks (standard library only)


def check_bounds(args: argparse.Namespace) -> None:
    for flag, (low, high) in BOUNDS.items():
        value = getattr(args, flag)
        if value is not None and not low <= value <= high:
            raise UsageError(f"--{flag.replace('_', '-')} must be in {low}..{high}, got {value}")


def local_gpus() -> int:
    """GPUs this machine's driver lists (no torch import), within CUDA_VISIBLE_DEVICES when it is set."""
    listed = Path("/proc/driver/nvidia/gpus")
    count = len(list(listed.iterdir())) if listed.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]))
    return count


def check_resources(resources: Resources) -> None:
    if resources.cpus_per_trial <= 0:
        raise UsageError(f"--cpus-per-trial must be > 0, got {resources.cpus_per_trial:g}")
    gpus = resources.gpus_per_trial
    if gpus == "auto":
        return  # a cluster's: resolved and checked once Ray is up
    if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        raise UsageError(f"--gpus-per-trial must be a fraction in [0, 1] or a whole number, got {gpus:g}")
    if resources.address:
        return  # the cluster's resources are checked once Ray is up, before any trial starts
    cpus = os.cpu_count() or 1
    if resources.cpus_per_trial > cpus:
        raise UsageError(f"--cpus-per-trial {resources.cpus_per_trial:g} asked for, but this machine has {cpus} CPUs")
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
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--address must be auto or host:port, got {address!r}")
    return host, int(port)


# Ray's own client, in a child process: against a server that is not Ray's GCS it retries without end, so the
# child is killed at the timeout. An authentication refusal still proves a Ray cluster answered.
RAY_PROBE = ("import sys\nfrom ray._raylet import GcsClient\n"
             "GcsClient(address=sys.argv[1]).internal_kv_get(b'session_name', b'session', timeout=5)\n")


def check_address(address: str | None, probe_timeout: float = RAY_PROBE_TIMEOUT_S) -> None:
    """An --address that is unreachable, or where something other than Ray listens, is an error in seconds."""
    if not address:
        return
    target = _ray_address(address)
    if target is None:
        raise UsageError("--address auto: no running Ray cluster found (start one with `ray start --head`)")
    where = f"{target[0]}:{target[1]}"
    try:
        socket.create_connection(target, timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as err:
        raise UsageError(f"--address {address}: cannot reach a Ray cluster at {where}: {err.strerror or err}") from None
    try:
        proc = subprocess.run([sys.executable, "-c", RAY_PROBE, where], capture_output=True, text=True,
                              timeout=probe_timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise UsageError(f"--address {address}: {where} accepts connections, but no Ray cluster answered within "
                         f"{probe_timeout:.0f} s (is it the head's GCS port, 6379 by default?)") from None
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode != 0 and not any("auth" in line.lower() for line in lines):
        raise UsageError(f"--address {address}: no Ray cluster at {where}: {lines[-1] if lines else proc.returncode}")


def parse_eval_costs(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        fn, fp = (float(v) for v in value.split(":"))
    except ValueError:
        raise UsageError(f"--eval-costs must look like FN:FP, e.g. 11:1, got {value!r}") from None
    if not (math.isfinite(fn) and math.isfinite(fp) and fn > 0 and fp > 0):
        raise UsageError(f"--eval-costs FN and FP must be finite and > 0, got {value!r}")
    low, high = EVAL_COST_RATIO
    if not low <= fn / fp <= high:  # 1e308:1e-308 overflows to inf
        raise UsageError(f"--eval-costs FN / FP must be in [{low:g}, {high:g}], got {value!r}")
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


def confirm_of(args: argparse.Namespace) -> Confirm:
    """The confirmation settings: the defaults (--smoke's: one config, two seeds), then the flags."""
    confirm = SMOKE_CONFIRM if args.smoke else Confirm()
    flags = {"top": args.confirm_top, "race_seeds": args.confirm_race_seeds, "min_seeds": args.confirm_min_seeds,
             "max_seeds": args.confirm_max_seeds, "rope": args.rope}
    if args.confirm_seeds is not None:
        if args.confirm_min_seeds is not None or args.confirm_max_seeds is not None:
            raise UsageError("--confirm-seeds fixes the number of seeds; give it or --confirm-min-seeds/"
                             "--confirm-max-seeds, not both")
        flags["min_seeds"] = flags["max_seeds"] = args.confirm_seeds
    confirm = dataclasses.replace(confirm, resplit=not args.no_resplit,
                                  **{k: v for k, v in flags.items() if v is not None})
    if confirm.min_seeds > confirm.max_seeds:
        raise UsageError(f"--confirm-min-seeds {confirm.min_seeds} is above --confirm-max-seeds {confirm.max_seeds}")
    if not 0 <= confirm.rope < 1:
        raise UsageError(f"--rope must be in [0, 1) (a macro-F1 difference), got {confirm.rope:g}")
    return confirm


BUDGET_FLAGS = {"epochs": "max_epochs", "num_samples": "num_samples", "batch_size": "batch_size",
                "grace_period": "grace_period", "reduction_factor": "reduction_factor", "image_size": "image_size"}


def check_spaces(spaces: list[Any], budget: Budget) -> None:
    for field, flag in BUDGET_FLAGS.items():  # a space file's defaults have the flags' bounds
        low, high = BOUNDS[flag]
        if not low <= getattr(budget, field) <= high:
            raise UsageError(f"the budget's {field} (the space's default or --{flag.replace('_', '-')}) must be in "
                             f"{low}..{high}, got {getattr(budget, field)}")
    for space in spaces:  # rules that need the budget after the flags' overrides
        if "ldam_drw" in space.values("loss") and min(space.values("drw_epoch")) > budget.epochs:
            raise UsageError(f"{space.name}: drw_epoch {min(space.values('drw_epoch'))} is after the last epoch "
                             f"({budget.epochs}): deferred re-weighting would never start")


def weights_of(spaces: tuple[Any, ...], budget: Budget, checkpoints: Path, smoke: bool, data: str) -> dict[str, Path]:
    """Every weights file the spaces name, checked (a missing 'source' checkpoint is pretrained by the study)."""
    weights = {}
    for space in spaces:
        if "source" in space.values("weights") and data in ANIMAL_PAIRS:
            raise UsageError(f"{space.name}: weights 'source' were pretrained on the animals of --data {data} "
                             "(animals_source holds every animal but cat and dog): use --data animals or another space")
        for backbone in space.values("backbone"):
            check_backbone(backbone)  # a scratch efficientnet_lite0 needs its package too
            for name in filter(None, space.values("weights")):
                check = weights_file if name == "source" else check_weights
                weights[f"{name}@{backbone}"] = check(name, backbone, checkpoints, image_size=budget.image_size,
                                                      smoke=smoke)
    return weights


def where_of(args: argparse.Namespace) -> tuple[Path, str, str]:
    """The results folder, the storage and the tracking URI, each checked (study.paths)."""
    results = paths.output_folder(args.results_dir, "--results-dir")
    storage = paths.storage(args.storage_path or str(results / "ray"))
    uri = paths.tracking_uri(args.tracking_uri or f"sqlite:///{results / 'mlflow.db'}", creates=results)
    return results, storage, uri


def resources_of(args: argparse.Namespace, budget: Budget, base: Resources | None = None) -> Resources:
    """The flags' resources; where a flag is None, ``base``'s (a saved plan's)."""
    base = base or Resources()
    pick = lambda flag, kept: kept if getattr(args, flag) is None else getattr(args, flag)  # noqa: E731
    address = pick("address", base.address)
    gpus = pick("gpus_per_trial", base.gpus_per_trial)
    if gpus == "auto":
        gpus = auto_gpus(budget.image_size, budget.batch_size, address)
    resources = Resources(pick("cpus_per_trial", base.cpus_per_trial), gpus,
                          pick("max_concurrent", base.max_concurrent), address)
    check_resources(resources)
    return resources


def fresh_plan(args: argparse.Namespace) -> Plan:
    """The plan of the flags, every input checked."""
    if not args.space:
        raise UsageError("--space is required (or --plan FILE to re-run a saved plan)")
    if not SPACE_NAME.fullmatch(args.space):
        raise UsageError(f"--space must be a name of letters, digits, _ and - (at most {MAX_NAME_LENGTH}), "
                         f"got {args.space[:MAX_NAME_LENGTH]!r}")
    eval_costs, confirm = parse_eval_costs(args.eval_costs), confirm_of(args)
    spaces = load_spaces(args.space, args.spaces_dir)
    ratio, counts = parse_ratio(args.ratio), parse_counts(args.counts)
    if ratio is not None and counts is not None:
        raise UsageError("--ratio and --counts both given; choose one")
    check_source(args.data, counts)
    budget = budget_of(args, spaces[0].defaults)
    resources = resources_of(args, budget)
    check_spaces(spaces, budget)
    results, storage, uri = where_of(args)
    weights = weights_of(tuple(spaces), budget, results / "checkpoints", args.smoke, args.data)
    check_address(resources.address)
    study_id = latest_study(storage, args.space) if args.resume else new_study_id(args.space)
    return Plan(space=args.space, spaces=tuple(spaces), data=args.data, ratio=ratio, counts=counts, budget=budget,
                seed=args.seed, resources=resources, tracking_uri=uri, storage=storage, results_dir=results,
                study_id=study_id, resume=args.resume, smoke=args.smoke, confirm=confirm, eval_costs=eval_costs,
                weights=weights, verbose=args.verbose)


def _attr(plan: Plan, dotted: str) -> Any:
    value: Any = plan
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _shown(flag: str, value: Any) -> str:
    if flag == "ratio" and value is not None:
        return f"1:{1 / value:g}"
    if flag == "spaces_dir":
        return "other space contents"
    return "on" if value is True else "off" if value is False else str(value)


def resumed(plan: Plan, given: set[str]) -> Plan:
    """--resume: the study's stored plan, with where it runs taken from the flags; flags that change its data,
    budget or spaces are refused, each difference named."""
    stored = read_plan(study_file(plan.storage, plan.study_id, PLAN_FILE))
    if stored is None:
        return plan  # a study from before plan.json: the flags are all there is
    diffs = []
    for flag in sorted(given & set(FIXED_ON_RESUME)):
        ours, theirs = _attr(plan, FIXED_ON_RESUME[flag]), _attr(stored, FIXED_ON_RESUME[flag])
        if ours != theirs:
            diffs.append(f"--{flag.replace('_', '-')} {_shown(flag, ours)} differs from the study's "
                         f"{_shown(flag, theirs)}")
    if diffs:
        raise UsageError(f"--resume: {'; '.join(diffs)} (resume with the study's flags, or start a new study)")
    return dataclasses.replace(stored, resources=plan.resources, tracking_uri=plan.tracking_uri, storage=plan.storage,
                               results_dir=plan.results_dir, study_id=plan.study_id, resume=True,
                               verbose=plan.verbose, weights={**stored.weights, **plan.weights})


def saved_plan(args: argparse.Namespace, given: set[str]) -> Plan:
    """--plan FILE: the saved plan again, a new study id; only where it runs may change."""
    extra = sorted(given - set(WITH_PLAN))
    if extra:
        raise UsageError(f"--plan: --{extra[0].replace('_', '-')} cannot change a saved plan (it would change its "
                         f"data, budget or spaces); flags allowed with --plan: "
                         f"{', '.join('--' + f.replace('_', '-') for f in WITH_PLAN[1:])}")
    plan = plan_from_json(paths.read_text(args.plan, MAX_PLAN_BYTES, UsageError, f"--plan {args.plan}"),
                          f"--plan {args.plan}")
    if "***" in plan.tracking_uri and args.tracking_uri is None:
        raise UsageError(f"--plan: the saved tracking URI {plan.tracking_uri} had its password removed; "
                         "give --tracking-uri")
    args.tracking_uri = args.tracking_uri or plan.tracking_uri
    if "results_dir" not in given:  # the plan's folders, unless the flags move them
        args.results_dir, args.storage_path = plan.results_dir, args.storage_path or plan.storage
    for flag in ("cpus_per_trial", "gpus_per_trial"):
        if flag not in given:
            setattr(args, flag, None)
    results, storage, uri = where_of(args)
    check_source(plan.data, plan.counts)
    check_spaces(list(plan.spaces), plan.budget)
    weights = weights_of(plan.spaces, plan.budget, results / "checkpoints", plan.smoke, plan.data)
    resources = resources_of(args, plan.budget, plan.resources)
    check_address(resources.address)
    return dataclasses.replace(plan, tracking_uri=uri, storage=storage, results_dir=results, weights=weights,
                               resources=resources, study_id=new_study_id(plan.space), resume=False,
                               verbose=args.verbose or plan.verbose, report_dir=None, parent_run=None)


def preflight(argv: list[str] | None) -> Plan:
    """Every check that can fail on bad input, before anything is written or a heavy module loads."""
    args = parser().parse_args(argv)
    given = set(vars(parser(suppress=True).parse_args(argv)))
    check_bounds(args)
    if args.plan is not None:
        return saved_plan(args, given)
    plan = fresh_plan(args)
    return resumed(plan, given) if plan.resume else plan


def main(argv: list[str] | None = None) -> int:
    return cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    plan = preflight(argv)
    if plan.resume and is_finished(plan.storage, plan.study_id):
        print(f"study {plan.study_id} is finished: nothing to resume (its summary is in "
              f"{plan.report_dir or plan.results_dir / plan.space})")
        return 0
    from study.runner import run_study  # torch, Ray and MLflow load only once every check has passed

    return run_study(plan)


if __name__ == "__main__":
    sys.exit(main())
