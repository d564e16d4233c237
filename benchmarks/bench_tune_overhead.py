"""Ray Tune overhead of a realistic study: wall time x concurrent slots vs the summed trial time.

    .venv/bin/python benchmarks/bench_tune_overhead.py                     # --space focal in a scratch dir
    .venv/bin/python benchmarks/bench_tune_overhead.py --space all --in-place

Runs ``python -m study.tune --space SPACE`` (its default budget), then sums every trial's own
training time (Ray's ``time_total_s``) and compares it with the study's wall time x the
concurrent trial slots. The design promise is a ratio within 1.2 (Ray's release tests aim at
< 20 % overhead). ``--in-place`` runs the study in the project directory, so that it is also the
study whose results/ are kept. Writes results/bench/tune_overhead_<space>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "bench"


def trial_spans(study_dir: Path) -> list[tuple[float, float, float, int]]:
    """(start, end, time_total_s, epochs) of each trial, from Ray's result.json files (1 s timestamps)."""
    spans = []
    for result in study_dir.glob("*/*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if rows:
            first, last = rows[0], rows[-1]
            spans.append((first["timestamp"] - first["time_this_iter_s"], last["timestamp"], last["time_total_s"],
                          last["training_iteration"]))
    return spans


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="focal")
    ap.add_argument("--in-place", action="store_true", help="run in the project directory (keeps the study's results)")
    args = ap.parse_args()
    argv = ["--space", args.space, "--cpus-per-trial", "1"]
    slots = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        cwd = ROOT if args.in_place else Path(tmp)
        started, start = time.time(), time.perf_counter()
        subprocess.run([sys.executable, "-m", "study.tune", *argv], cwd=cwd, check=True)
        wall = time.perf_counter() - start
        study_dir = max((cwd / "results" / "ray").glob(f"{args.space}-*"), key=lambda p: p.stat().st_mtime)
        trials = trial_spans(study_dir)
    trained = sum(t[2] for t in trials)
    first_start, last_end = min(t[0] for t in trials), max(t[1] for t in trials)
    figures = {"command": "python -m study.tune " + " ".join(argv), "study": study_dir.name, "cpu_count": slots,
               "wall_s": round(wall, 1), "trials": len(trials), "epochs": sum(t[3] for t in trials),
               "summed_trial_time_s": round(trained, 1), "wall_x_slots_over_trial_time": round(wall * slots / trained, 3),
               "target": 1.2, "before_first_trial_s": round(first_start - started, 1),
               "after_last_trial_s": round(started + wall - last_end, 1),
               "slot_use_between": round(trained / (slots * (last_end - first_start)), 3)}
    OUT.mkdir(parents=True, exist_ok=True)
    name = f"tune_overhead_{args.space}"
    (OUT / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    flags = " --in-place" if args.in_place else ""
    (OUT / f"{name}.md").write_text(
        f"# Ray Tune overhead of a realistic study: `--space {args.space}`\n\n"
        f"Command: `.venv/bin/python benchmarks/bench_tune_overhead.py --space {args.space}{flags}` "
        f"(runs `{figures['command']}`{'' if args.in_place else ' in a scratch dir'}; study `{study_dir.name}`)\n\n"
        "Machine: 2 cores, no GPU, shared with other jobs (noisy); one run.\n\n"
        "| wall (s) | slots | trials | epochs | summed trial time (s) | wall x slots / trial time | target |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {figures['wall_s']} | {slots} | {len(trials)} | {figures['epochs']} | {figures['summed_trial_time_s']} | "
        f"**{figures['wall_x_slots_over_trial_time']}** | <= 1.2 |\n\n"
        "The wall time is everything a user waits for. Where the rest goes (trial start and end from Ray's "
        "result.json, 1 s resolution):\n\n"
        f"- before the first trial reports its start (Ray start-up, data decode or cache read, the first trial "
        f"process importing torch): {figures['before_first_trial_s']} s\n"
        f"- after the last trial ends (test-split evaluation, MLflow parent run, report): {figures['after_last_trial_s']} s\n"
        f"- between them, the trials' own time fills {figures['slot_use_between']:.0%} of the {slots} slots; the rest is "
        "idle slots: a trial process starting, the scheduler and searcher, and (with several approaches) each "
        "approach's test-split evaluation before the next approach starts\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
