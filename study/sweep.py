"""The imbalance sweep: the same study at several training ratios.

    python -m study.sweep --space all --ratios 1:5,1:11,1:22,1:50 [any study.tune flag]

Every ratio is a whole study (search, then confirmation seeds) on the same validation and test
splits: ``--ratio`` only cuts the training split. Each ratio gets an MLflow run of its own, under
which its approaches' parent runs nest; ``results/sweep/`` gets a table and a plot of test macro-F1
and minority recall (mean and 95 % interval over the confirmation seeds) against the imbalance.
Everything is checked before the first study starts.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from pathlib import Path

from study.sources import DataError, parse_ratio
from study.tune import USER_ERRORS, Parser, UsageError, preflight

FIELDS = ("ratio", "imbalance", "approach", "n_seeds", "test_macro_f1_mean", "test_macro_f1_ci_low", "test_macro_f1_ci_high",
          "test_minority_recall_mean", "test_minority_recall_ci_low", "test_minority_recall_ci_high", "study_id")


def parse_ratios(value: str) -> list[tuple[str, float]]:
    """'1:5,1:11' -> [('1:5', 0.2), ('1:11', 0.0909)], most balanced first; repeats refused."""
    out = [(part.strip(), parse_ratio(part.strip())) for part in value.split(",") if part.strip()]
    if len(out) < 2:
        raise UsageError(f"--ratios needs at least two ratios, e.g. 1:5,1:11, got {value!r}")
    if len({r for _, r in out}) != len(out):
        raise UsageError(f"--ratios lists a ratio twice: {value!r}")
    return sorted(out, key=lambda pair: -pair[1])


def rows_of(summary: Path, label: str, ratio: float, study_id: str) -> list[dict[str, str]]:
    with open(summary, newline="") as f:
        return [{"ratio": label, "imbalance": f"{1 / ratio:g}", "study_id": study_id, **{k: r.get(k, "") for k in FIELDS[2:-1]}}
                for r in csv.DictReader(f)]


def write_outputs(rows: list[dict[str, str]], out: Path, command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(FIELDS))
        writer.writeheader()
        writer.writerows(rows)
    num = lambda v: float(v) if v not in ("", None) else float("nan")  # noqa: E731
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for approach in dict.fromkeys(r["approach"] for r in rows):
        mine = sorted((r for r in rows if r["approach"] == approach), key=lambda r: num(r["imbalance"]))
        x = [num(r["imbalance"]) for r in mine]
        for ax, key in zip(axes, ("test_macro_f1", "test_minority_recall")):
            mean = [num(r[f"{key}_mean"]) for r in mine]
            low = [m - num(r[f"{key}_ci_low"]) for m, r in zip(mean, mine)]
            high = [num(r[f"{key}_ci_high"]) - m for m, r in zip(mean, mine)]
            ax.errorbar(x, mean, yerr=[low, high], marker="o", capsize=3, label=approach)
    for ax, title in zip(axes, ("test macro-F1", "test minority recall")):
        ax.set_xscale("log")
        ax.set_xlabel("training imbalance (majority : minority images)")
        ax.set_title(f"{title}: mean and 95 % CI over seeds", fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=110)
    plt.close(fig)
    lines = [f"# Imbalance sweep\n\nCommand: `{command}`\n",
             "Test figures: mean [95 % t-interval] over each ratio's confirmation seeds; the same validation and test "
             "splits at every ratio. Per-ratio tables with paired tests: `ratio-*/summary.md`.\n",
             "| ratio | approach | seeds | test macro-F1 | 95 % CI | minority recall | 95 % CI |", "|---|---|---|---|---|---|---|"]
    fmt = lambda v: f"{num(v):.3f}" if v not in ("", None) else "–"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['ratio']} | {r['approach']} | {r['n_seeds']} | {fmt(r['test_macro_f1_mean'])} | "
                     f"[{fmt(r['test_macro_f1_ci_low'])}, {fmt(r['test_macro_f1_ci_high'])}] | "
                     f"{fmt(r['test_minority_recall_mean'])} | [{fmt(r['test_minority_recall_ci_low'])}, "
                     f"{fmt(r['test_minority_recall_ci_high'])}] |")
    lines.append("\n![sweep](sweep.png)\n")
    (out / "summary.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = Parser(prog="python -m study.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                add_help=False, allow_abbrev=False)
    ap.add_argument("--ratios", required=True, help="training minority:majority ratios, e.g. 1:5,1:11,1:22,1:50")
    ap.add_argument("--out", default=None, help="where the sweep's table and plot go (default <results-dir>/sweep)")
    try:
        if "-h" in argv or "--help" in argv:
            print(__doc__)
            return 0
        args, rest = ap.parse_known_args(argv)
        for flag in ("--ratio", "--counts", "--resume"):
            if any(a == flag or a.startswith(f"{flag}=") for a in rest):
                raise UsageError(f"{flag} cannot be used in a sweep: --ratios sets each study's ratio (and a sweep "
                                 "does not resume)")
        ratios = parse_ratios(args.ratios)
        plans = [(label, ratio, preflight([*rest, "--ratio", label])) for label, ratio in ratios]  # all checked first
    except (UsageError, DataError, *USER_ERRORS) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from study import store
    from study.runner import run_study

    first = plans[0][2]
    out = Path(args.out).expanduser().resolve() if args.out else first.results_dir / "sweep"
    sweep_id = f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    rows = []
    for label, ratio, plan in plans:
        store.prepare_store(plan.tracking_uri)
        artifacts = plan.results_dir / "mlartifacts" if plan.tracking_uri.startswith("sqlite:") else None  # as the study's
        run = store.open_run(plan.tracking_uri, plan.space, f"ratio {label} · {sweep_id}",
                             {"role": "sweep", "sweep_id": sweep_id, "ratio": label, "study_id": plan.study_id}, artifacts)
        report_dir = out / f"ratio-{label.replace(':', '-')}"
        print(f"sweep: ratio {label} ({plan.study_id})", flush=True)
        code = run_study(dataclasses.replace(plan, report_dir=report_dir, parent_run=run))
        store.end_run(plan.tracking_uri, run, {0: "FINISHED", 130: "KILLED", 143: "KILLED"}.get(code, "FAILED"))
        if code in (130, 143, 2):
            return code
        if (report_dir / "summary.csv").exists():
            rows += rows_of(report_dir / "summary.csv", label, ratio, plan.study_id)
    write_outputs(rows, out, "python -m study.sweep " + " ".join(argv))
    print(f"sweep summary: {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
