"""How fast a bad flag is answered: ``python -m <command> <bad flags>`` in a fresh process, wall time.

    .venv/bin/python benchmarks/bench_cli.py        # -> results/bench/cli.{json,md}

The promise (issue "Records that survive"): every check runs with the standard library and YAML
before torch, Ray or MLflow load, so a bad flag is answered in under 3 s on a 2-core machine.
Each case runs ``--repeats`` times in a fresh interpreter; the table gives the median and the
largest, with the exit code (2 expected) and the one line the command printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = [
    ("study.tune", ["--space", "nope"]),
    ("study.tune", ["--space", "focal", "--num-samples", "0"]),
    ("study.tune", ["--space", "focal", "--cpus-per-trial", "nan"]),
    ("study.tune", ["--space", "focal", "--data", "/no/such/folder"]),
    ("study.tune", ["--space", "focal", "--address", "127.0.0.1:1"]),
    ("study.sweep", ["--space", "core", "--ratios", "1:5"]),
    ("study.pretrain", ["--epochs", "0"]),
    ("study.report", ["--space", "nope", "--tracking-uri", "sqlite:////no/such/dir/x.db"]),
    ("costsens.report", ["--repetitions", "0"]),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for module, flags in CASES:
            times, code, line = [], None, ""
            for _ in range(args.repeats):
                start = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", module, *flags], cwd=scratch, capture_output=True, text=True,
                                      timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
                times.append(time.perf_counter() - start)
                code, line = proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1]
            rows.append({"command": f"python -m {module} {' '.join(flags)}", "median_s": round(statistics.median(times), 3),
                         "max_s": round(max(times), 3), "exit_code": code, "message": line[:160]})
            print(f"{rows[-1]['median_s']:6.2f} s  exit {code}  {rows[-1]['command']}: {line[:100]}", flush=True)
    worst = max(r["max_s"] for r in rows)
    report = {"cases": rows, "worst_s": worst, "target_s": 3.0, "met": worst < 3.0 and all(r["exit_code"] == 2 for r in rows),
              "python": sys.version.split()[0], "repeats": args.repeats}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cli.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# A bad flag, answered", "", "Command: `.venv/bin/python benchmarks/bench_cli.py` (a fresh interpreter per run, "
             f"{args.repeats} runs per case). Target: under 3 s, exit code 2, one `error:` line.", "",
             "| command | median s | max s | exit | message |", "|---|---|---|---|---|"]
    lines += [f"| `{r['command']}` | {r['median_s']:.2f} | {r['max_s']:.2f} | {r['exit_code']} | {r['message']} |" for r in rows]
    lines += ["", f"Worst case {worst:.2f} s: target {'met' if report['met'] else 'NOT met'}.", ""]
    (args.out / "cli.md").write_text("\n".join(lines))
    return 0 if report["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
