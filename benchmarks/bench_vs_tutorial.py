"""Our study against a study written the way Ray Tune's PyTorch tutorial writes one, on the same image folder.

    .venv/bin/python benchmarks/bench_vs_tutorial.py            # 3 pairs, 4 trials x 3 epochs, 64 px
    .venv/bin/python benchmarks/bench_vs_tutorial.py --tiny     # a few images, 2 trials x 1 epoch: does it work

Writes a Kaggle-layout folder of PNGs (train/, validation/, test/ of <class>/) from the embedded Animal-MNIST
cats vs dogs into a scratch folder, then runs, alternating (ours, peer, ours, peer, ...), ``--pairs`` pairs of
  - ours: ``python -m study.tune --data FOLDER`` with a space file of one ``lr`` param and no points (so
    ``--num-samples`` is the trial count), ``--confirm-seeds 0``, MLflow as it is;
  - the peer (benchmarks/tutorial_trial.py): each trial builds ImageFolder + DataLoader and decodes every epoch,
    random search + ASHA, ResNet-18 / Adam / cross-entropy, ``tune.report`` per epoch, no MLflow;
with the same budget (trials, epochs, 64 px, batch 64, ASHA grace 1 / reduction 2), 1 CPU per trial and at most
2 trials at once. ``wall_ratio`` is the median over pairs of ours / peer wall time. Driver CPU: the driver
process's own (``RUSAGE_SELF`` at its exit); tree CPU: what the OS charged the child and the processes it reaped.
Where the time goes: the peer times its phases inside (``perf_counter``); ours is timed from the outside (the
"data:" line's arrival, Ray's result.json per trial). Writes ``--out``/vs_tutorial.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
SPACE = "lr_only"
SPACE_YAML = """description: the learning rate alone, no points (a new user's first space)
fixed: {loss: ce, sampler: none, model: scratch}
params:
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
"""
# the child: runs ours (a module) or the peer, then writes its own CPU time at exit (sys.exit included)
CHILD = """import atexit, json, resource, runpy, sys
out, what = sys.argv[1], sys.argv[2]
def done():
    u = resource.getrusage(resource.RUSAGE_SELF)
    open(out, "w").write(json.dumps({"driver_cpu_s": u.ru_utime + u.ru_stime}))
atexit.register(done)
sys.argv = [what, *sys.argv[3:]]
if what == "tutorial_trial":
    import tutorial_trial
    sys.exit(tutorial_trial.main(sys.argv[1:]))
runpy.run_module(what, run_name="__main__", alter_sys=True)
"""


def write_folder(folder: Path, image_size: int, per_split: int | None, cache_dir: Path) -> dict[str, int]:
    """The embedded cats vs dogs as PNGs in the Kaggle layout; ``per_split``: at most that many per class."""
    from PIL import Image

    from study.data import load_dataset

    data = load_dataset("animals", image_size=image_size, seed=0, ratio=None, counts=None, cache_dir=cache_dir)
    counts = {}
    for split, name in (("train", "train"), ("val", "validation"), ("test", "test")):
        part = getattr(data, split)
        kept = dict.fromkeys(range(data.num_classes), 0)
        for i, (image, label) in enumerate(zip(part.images, part.labels.tolist(), strict=True)):
            if per_split is not None and kept[label] >= per_split:
                continue
            kept[label] += 1
            target = folder / name / data.classes[label]
            target.mkdir(parents=True, exist_ok=True)
            array = image.permute(1, 2, 0).numpy()
            Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(target / f"{i:06d}.png")
        counts[name] = sum(kept.values())
    return counts


def run_child(what: str, argv: list[str], cwd: Path, stamp: str | None = None) -> dict[str, Any]:
    """One side in a fresh interpreter: wall time, driver CPU, tree CPU, and when ``stamp`` first appeared."""
    cpu_file = cwd / "driver_cpu.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(cpu_file), what, *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, tail = None, []
    for line in proc.stdout:
        if stamp and seen is None and line.startswith(stamp):
            seen = time.perf_counter() - start
        tail = (tail + [line.rstrip()])[-30:]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"error: {what} failed (exit {os.waitstatus_to_exitcode(status)}):\n" + "\n".join(tail))
    return {"wall_s": round(wall, 2), "driver_cpu_s": round(json.loads(cpu_file.read_text())["driver_cpu_s"], 2),
            "tree_cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "stamp_s": seen}


def result_rows(storage: Path) -> list[list[dict]]:
    """Every trial's result.json rows under a Ray Tune storage folder."""
    return [[json.loads(x) for x in f.read_text().splitlines() if x.strip()] for f in storage.rglob("result.json")]


def ours(folder: Path, spaces: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Our study once; where its time goes, from the outside."""
    argv = ["--space", SPACE, "--spaces-dir", str(spaces), "--data", str(folder), "--image-size", str(args.image_size),
            "--num-samples", str(args.trials), "--max-epochs", str(args.epochs), "--batch-size", "64",
            "--grace-period", "1", "--reduction-factor", "2", "--confirm-seeds", "0", "--cpus-per-trial", "1",
            "--gpus-per-trial", "0", "--max-concurrent", "2", "--results-dir", str(work / "results")]
    run = run_child("study.tune", argv, work, stamp="data:")
    trials = [rows for rows in result_rows(work / "results" / "ray") if rows]
    first = min(r[0]["timestamp"] - r[0]["time_this_iter_s"] for r in trials)
    last = max(r[-1]["timestamp"] for r in trials)
    started = time.time() - run["wall_s"]  # approximate: the child's start, in wall-clock seconds (1 s stamps)
    run["where"] = {"to_data_line_s (imports, checks, folder decode)": round(run.pop("stamp_s") or 0.0, 1),
                    "before_first_trial_s (the above + Ray start, MLflow parent runs)": round(first - started, 1),
                    "trials_summed_s (Ray's time_total_s: loop, eval, report)": round(
                        sum(r[-1]["time_total_s"] for r in trials), 1),
                    "first_trial_start_to_last_end_s": round(last - first, 1),
                    "after_last_trial_s (test evaluation, MLflow, summary)": round(started + run["wall_s"] - last, 1)}
    run["trials"], run["epochs"] = len(trials), sum(len(r) for r in trials)
    run["command"] = "python -m study.tune " + " ".join(argv)
    return run


def peer(folder: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The tutorial-style study once; its phases from inside."""
    out = work / "peer.json"
    argv = ["--data", str(folder), "--trials", str(args.trials), "--epochs", str(args.epochs), "--batch-size", "64",
            "--max-concurrent", "2", "--grace-period", "1", "--reduction-factor", "2",
            "--storage", str(work / "ray"), "--phases-out", str(out)]
    run = run_child("tutorial_trial", argv, work)
    run.pop("stamp_s")
    inside = json.loads(out.read_text())
    where = {k: round(v, 1) for k, v in inside["phases"].items()}
    for key in ("t_import", "t_build", "t_decode", "t_train", "t_val", "t_report", "time_total_s"):
        where[f"trials_summed_{key}"] = round(sum(t[key] for t in inside["trials"]), 1)
    run["where"], run["trials"] = where, len(inside["trials"])
    run["epochs"] = sum(int(t["training_iteration"]) for t in inside["trials"])
    run["command"] = "tutorial_trial.main " + " ".join(argv)
    return run


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--trials", type=int, default=None, help="trials per study (default 4; --tiny 2)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 3; --tiny 1)")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None, help="default results/bench (--tiny: results/bench/tiny)")
    ap.add_argument("--tiny", action="store_true", help="8 images per class and split, 2 trials x 1 epoch, 1 pair")
    args = ap.parse_args()
    args.trials = args.trials or (2 if args.tiny else 4)
    args.epochs = args.epochs or (1 if args.tiny else 3)
    if args.tiny and "--pairs" not in sys.argv:
        args.pairs = 1
    args.out = args.out or ROOT / "results" / "bench" / ("tiny" if args.tiny else "")
    if args.tiny and args.out.resolve() == (ROOT / "results" / "bench").resolve():
        ap.error("--tiny never writes over results/bench's files; give another --out")
    if min(args.pairs, args.trials, args.epochs) < 1:
        ap.error("--pairs, --trials and --epochs must be >= 1")
    return args


def main() -> int:
    args = parse()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vs_tutorial_") as scratch:
        scratch_dir = Path(scratch)
        folder, spaces = scratch_dir / "images", scratch_dir / "spaces"
        spaces.mkdir()
        (spaces / f"{SPACE}.yaml").write_text(SPACE_YAML)
        counts = write_folder(folder, args.image_size, 8 if args.tiny else None, ROOT / "results" / "cache")
        print(f"image folder: {counts}", flush=True)
        for i in range(args.pairs):
            for side in ("ours", "peer"):
                work = scratch_dir / f"{side}{i}"
                work.mkdir()
                run = ours(folder, spaces, work, args) if side == "ours" else peer(folder, work, args)
                runs.append({"side": side, "pair": i, **run})
                print(f"pair {i} {side}: {run['wall_s']} s wall, driver CPU {run['driver_cpu_s']} s", flush=True)
    report = summarise(runs, counts, args)
    write(report, args)
    print(json.dumps({k: report[k] for k in ("wall_ratio", "driver_cpu_ratio", "pair_ratios")}, indent=1))
    return 0


def summarise(runs: list[dict], counts: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    by_pair = {(r["pair"], r["side"]): r for r in runs}
    ratios = [by_pair[(i, "ours")]["wall_s"] / by_pair[(i, "peer")]["wall_s"] for i in range(args.pairs)]
    cpu = [by_pair[(i, "ours")]["driver_cpu_s"] / max(by_pair[(i, "peer")]["driver_cpu_s"], 1e-9)
           for i in range(args.pairs)]
    return {"wall_ratio": round(statistics.median(ratios), 3), "pair_ratios": [round(r, 3) for r in ratios],
            "driver_cpu_ratio": round(statistics.median(cpu), 3), "target": 0.9, "runs": runs, "images": counts,
            "setting": {"pairs": args.pairs, "trials": args.trials, "epochs": args.epochs,
                        "image_size": args.image_size, "batch_size": 64, "max_concurrent": 2, "cpus_per_trial": 1,
                        "grace_period": 1, "reduction_factor": 2, "tiny": args.tiny},
            "cpu_count": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "bench_cpu_children_s": round(sum(getattr(resource.getrusage(resource.RUSAGE_CHILDREN), f)
                                              for f in ("ru_utime", "ru_stime")), 1)}


def write(report: dict[str, Any], args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vs_tutorial.json").write_text(json.dumps(report, indent=2) + "\n")
    flags = " ".join(a for a in sys.argv[1:])
    lines = ["# Our study vs a Ray Tune tutorial-style study", "",
             f"Command: `.venv/bin/python benchmarks/bench_vs_tutorial.py {flags}`", "",
             f"{report['when']}, {report['cpu_count']} CPUs; setting {report['setting']}; images {report['images']}.",
             "", f"**wall_ratio (ours / peer, median of pair ratios): {report['wall_ratio']}** (target <= 0.9); pair "
             f"ratios {report['pair_ratios']}; driver CPU ratio {report['driver_cpu_ratio']}.", "",
             "| pair | side | wall s | driver CPU s | tree CPU s | trials | epochs |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['pair']} | {r['side']} | {r['wall_s']} | {r['driver_cpu_s']} | {r['tree_cpu_s']} | {r['trials']} "
              f"| {r['epochs']} |" for r in report["runs"]]
    lines += ["", "Where the time goes (ours from the outside, the peer's from inside its driver and trainable):", ""]
    for r in report["runs"]:
        lines.append(f"- pair {r['pair']} {r['side']}: " + "; ".join(f"{k} {v}" for k, v in r["where"].items()))
    lines += ["", "The peer (benchmarks/tutorial_trial.py) follows pytorch.org's \"Hyperparameter tuning with Ray "
              "Tune\": ImageFolder + DataLoader per trial (num_workers=0 for the 1-CPU budget), random search on "
              "tune.loguniform lr, ASHA on validation loss, a pickled checkpoint per tune.report, the best checkpoint "
              "tested; no MLflow. Ours: python -m study.tune with MLflow as it is.", "",
              "Tree CPU: what the OS charged each side's driver and the processes it reaped (Ray's workers are "
              "not all among them).", ""]
    (args.out / "vs_tutorial.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
