"""Trials shorter than a worker's start, behind a searcher: Ray's one pending trial against one per slot.

    .venv/bin/python benchmarks/bench_pending.py        # -> results/bench/pending.{json,md}

Ray Tune keeps one trial pending when a searcher (not its random/grid generator) proposes trials and no
``max_concurrent_trials`` is set (``TUNE_MAX_PENDING_TRIALS_PG`` = auto). Every phase of our study has a searcher
(per-approach Optuna, the fixed configs of a race or confirmation round), so short trials ran one after another
on two CPUs. ``study.engine.pending_trials`` sets the variable to the number of trial slots. Here: ``--trials``
sleep-and-report trials of ``--seconds`` each through ``study.engine.FixedConfigs``, one CPU each, actors reused,
each setting in a fresh process, alternated ``--repeats`` times; the wall time of ``fit()`` and how many trials
ran at once at most.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one(trials: int, seconds: float, storage: str) -> dict:
    """One fit in this process, with whatever TUNE_MAX_PENDING_TRIALS_PG the environment holds."""
    from ray import tune

    from study.engine import FixedConfigs, init_ray
    from study.names import VAL_MACRO_F1

    def sleeper(config: dict) -> None:
        start = time.time()
        time.sleep(config["seconds"])
        tune.report({VAL_MACRO_F1: 0.5, "start": start, "end": time.time()})

    init_ray(None)
    configs = [{"i": i, "seconds": seconds} for i in range(trials)]
    start = time.perf_counter()
    grid = tune.Tuner(tune.with_resources(sleeper, {"cpu": 1}),
                      tune_config=tune.TuneConfig(search_alg=FixedConfigs(configs), num_samples=trials, reuse_actors=True),
                      run_config=tune.RunConfig(storage_path=storage, verbose=0)).fit()
    wall = time.perf_counter() - start
    spans = [(r.metrics["start"], r.metrics["end"]) for r in grid]
    at_once = max(sum(a <= t < b for a, b in spans) for t, _ in spans)
    return {"wall_s": wall, "at_once": at_once}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    ap.add_argument("--one", choices=["1", "2"], help=argparse.SUPPRESS)  # a child process: one fit
    args = ap.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as storage:
            print(json.dumps(one(args.trials, args.seconds, storage)))
        return 0
    runs: dict[str, list[dict]] = {"1": [], "2": []}
    for _ in range(args.repeats):
        for pending in runs:
            env = {**os.environ, "TUNE_MAX_PENDING_TRIALS_PG": pending, "PYTHONPATH": str(ROOT)}
            out = subprocess.run([sys.executable, __file__, "--one", pending, "--trials", str(args.trials),
                                  "--seconds", str(args.seconds)], env=env, capture_output=True, text=True, check=True)
            runs[pending].append(json.loads(out.stdout.strip().splitlines()[-1]))
    median = {p: statistics.median(r["wall_s"] for r in rs) for p, rs in runs.items()}
    floor = args.trials * args.seconds / 2
    report = {"trials": args.trials, "seconds": args.seconds, "repeats": args.repeats, "cpus": os.cpu_count(),
              "runs": runs, "median_wall_s": median, "ratio_2_over_1": median["2"] / median["1"], "floor_s": floor}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pending.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = "\n".join(f"| {p} | {median[p]:.1f} | {max(r['at_once'] for r in runs[p])} | "
                     f"{', '.join(format(r['wall_s'], '.1f') for r in runs[p])} |" for p in runs)
    (args.out / "pending.md").write_text(
        f"# One pending trial against one per slot\n\nCommand: `.venv/bin/python benchmarks/bench_pending.py "
        f"--trials {args.trials} --seconds {args.seconds} --repeats {args.repeats}` ({os.cpu_count()} CPUs; "
        f"{args.trials} trials of {args.seconds:g} s, one CPU each: {floor:.0f} s of sleep on two slots).\n\n"
        f"| pending trials | median wall (s) | most trials at once | every run (s) |\n|---|---|---|---|\n{rows}\n\n"
        f"Wall time with one pending per slot / with Ray's one: **{report['ratio_2_over_1']:.2f}**.\n")
    print((args.out / "pending.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
