"""The imbalance sweep: the same study at several training ratios.

    python -m study.sweep --space all --ratios 1:5,1:11,1:22,1:50 [any study.tune flag]

    python -m study.sweep --resume --space all --ratios 1:5,1:11,1:22,1:50 [the same flags]

Every ratio is a whole study (search, then confirmation seeds) on the same validation and test
splits: ``--ratio`` only cuts the training split. Each ratio gets an MLflow run of its own, under
which its approaches' parent runs nest; ``results/sweep/`` (``--out``) gets a table and a plot of
test macro-F1 and minority recall (mean and 95 % interval over the confirmation seeds) against the
imbalance. Everything, ``--out`` included, is checked before the first study starts.

Ctrl-C or SIGTERM pauses the sweep: the current ratio's study pauses, its run ends KILLED, exit
130 / 143. ``--resume`` with the same flags skips the finished ratios and resumes the current one
(the sweep's state is ``sweep.json`` in ``--out``; other flags are refused, each difference named).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from study import paths
from study.errors import Parser, StudyError, UsageError, fail
from study.plan import Plan, is_finished
from study.sources import parse_ratio
from study.tune import parser as study_parser
from study.tune import preflight, resumed

STATE = "sweep.json"  # in --out: the sweep's id, flags and each ratio's study, run and rows
LOCK = "sweep.lock"  # in --out: one driver per sweep
OUTPUTS = ("summary.csv", "summary.md", "sweep.png", STATE, LOCK)
RATIO_OUTPUTS = ("summary.csv", "summary.md", "comparison.png")  # what each ratio's study report writes
# flags a resume may change: they move no result (where trials run, how much is printed)
FREE_ON_RESUME = ("cpus_per_trial", "gpus_per_trial", "max_concurrent", "address", "verbose")
FIELDS = ("ratio", "imbalance", "approach", "n_seeds", "test_macro_f1_mean", "test_macro_f1_ci_low",
          "test_macro_f1_ci_high", "test_minority_recall_mean", "test_minority_recall_ci_low",
          "test_minority_recall_ci_high", "delta_vs_baseline", "delta_low", "delta_high", "verdict", "verdict_needs",
          "study_id")


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
        return [{"ratio": label, "imbalance": f"{1 / ratio:g}", "study_id": study_id,
                 **{k: r.get(k, "") for k in FIELDS[2:-1]}} for r in csv.DictReader(f)]


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
        for ax, key in zip(axes, ("test_macro_f1", "test_minority_recall"), strict=False):
            mean = [num(r[f"{key}_mean"]) for r in mine]
            low = [m - num(r[f"{key}_ci_low"]) for m, r in zip(mean, mine, strict=False)]
            high = [num(r[f"{key}_ci_high"]) - m for m, r in zip(mean, mine, strict=False)]
            ax.errorbar(x, mean, yerr=[low, high], marker="o", capsize=3, label=approach)
    for ax, title in zip(axes, ("test macro-F1", "test minority recall"), strict=False):
        ax.set_xscale("log")
        ax.set_xlabel("training imbalance (majority : minority images)")
        ax.set_title(f"{title}: mean and 95 % CI over seeds", fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=110)
    plt.close(fig)
    lines = [f"# Imbalance sweep\n\nCommand: `{command}`\n",
             "Test figures: mean [95 % t-interval] over each ratio's confirmation seeds; Δ vs baseline: mean paired "
             "difference in test macro-F1 [95 % posterior] and the verdict at that ratio, with the |Δ| a verdict "
             "needed at those seeds. Per-ratio tables: `ratio-*/summary.md`.\n",
             "| ratio | approach | seeds | test macro-F1 | 95 % CI | minority recall | 95 % CI | Δ vs baseline "
             "[95 % posterior] | verdict | \\|Δ\\| needed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: f"{num(v):.3f}" if v not in ("", None) else "–"  # noqa: E731
    sfmt = lambda v: f"{num(v):+.3f}" if v not in ("", None) else "–"  # noqa: E731
    for r in rows:
        delta = (f"{sfmt(r['delta_vs_baseline'])} [{sfmt(r['delta_low'])}, {sfmt(r['delta_high'])}]"
                 if r.get("delta_vs_baseline") not in ("", None) else "–")
        lines.append(f"| {r['ratio']} | {r['approach']} | {r['n_seeds']} | {fmt(r['test_macro_f1_mean'])} | "
                     f"[{fmt(r['test_macro_f1_ci_low'])}, {fmt(r['test_macro_f1_ci_high'])}] | "
                     f"{fmt(r['test_minority_recall_mean'])} | [{fmt(r['test_minority_recall_ci_low'])}, "
                     f"{fmt(r['test_minority_recall_ci_high'])}] | {delta} | {r.get('verdict') or '–'} | "
                     f"{fmt(r.get('verdict_needs'))} |")
    lines.append("\n![sweep](sweep.png)\n")
    (out / "summary.md").write_text("\n".join(lines))


def checked(argv: list[str]) -> tuple[argparse.Namespace, list[tuple[str, float, Plan]], Path]:
    """Every ratio's plan and the output folder, all checked before anything runs or is written."""
    ap = Parser(prog="python -m study.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                add_help=False, allow_abbrev=False)
    ap.add_argument("--ratios", required=True, help="training minority:majority ratios, e.g. 1:5,1:11,1:22,1:50")
    ap.add_argument("--out", default=None, help="where the sweep's table and plot go (default <results-dir>/sweep)")
    ap.add_argument("--resume", action="store_true", help="finish the paused sweep in --out (the same flags)")
    args, rest = ap.parse_known_args(argv)
    for flag in ("--ratio", "--counts", "--plan"):
        if any(a == flag or a.startswith(f"{flag}=") for a in rest):
            raise UsageError(f"{flag} cannot be used in a sweep: --ratios sets each study's ratio")
    args.rest = rest
    plans = [(label, ratio, preflight([*rest, "--ratio", label])) for label, ratio in parse_ratios(args.ratios)]
    out = paths.output_folder(args.out or plans[0][2].results_dir / "sweep", "--out")
    for name in OUTPUTS:
        paths.output_file(out / name, "--out")
    for label, _, _ in plans:
        folder = paths.output_folder(report_dir(out, label), "--out")
        for name in RATIO_OUTPUTS:
            paths.output_file(folder / name, "--out")
    return args, plans, out


def report_dir(out: Path, label: str) -> Path:
    return out / f"ratio-{label.replace(':', '-')}"


def flag_values(rest: list[str]) -> dict[str, Any]:
    """The study flags a sweep was given, by name, without those a resume may change."""
    values = vars(study_parser().parse_args(rest))
    return {k: v for k, v in values.items() if k not in (*FREE_ON_RESUME, "resume", "ratio", "counts")}


def resumed_series(out: Path, state_file: str, kind: str, items: str, given: Any, rest: list[str],
                   flags_of: Callable[[list[str]], dict[str, Any]]) -> dict[str, Any]:
    """A paused series' state (``kind`` sweep or board) in ``out``, refused when its flags differ from these (each
    difference named); ``items`` names the flag and state key of what the series runs over (ratios, data)."""
    path = out / state_file
    if not path.is_file():
        raise UsageError(f"--resume: no {kind} to resume in {out} (no {state_file}); start it without --resume")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        before, now, was = flags_of(state["flags"]), flags_of(rest), state[items]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"--resume: {path} is not a {kind}'s state ({err})") from None
    differences = [f"--{k.replace('_', '-')} {now[k]} (was {before.get(k)})" for k in now if now[k] != before.get(k)]
    if was != given:
        differences.insert(0, f"--{items} {given} (was {was})")
    if differences:
        raise UsageError(f"--resume: {kind} {state[f'{kind}_id']} ran with other flags: {'; '.join(differences)}; "
                         "resume it with the flags it started with")
    return state


def resumed_state(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The paused sweep's state in ``out``, refused when its flags differ from these (each difference named)."""
    return resumed_series(out, STATE, "sweep", "ratios", args.ratios, args.rest, flag_values)


def resume_paused(plans: list[tuple[str, Any, Plan]], state: dict[str, Any],
                  argv_of: Callable[[str, Any], list[str]]) -> list[tuple[str, Any, Plan]]:
    """The paused study's plan is its own (plan.json), checked against the flags (``argv_of(label, item)``) as
    ``study.tune --resume`` checks them; finished and new studies keep theirs."""
    out = []
    for label, item, plan in plans:
        entry = state["runs"].get(label)
        if entry is not None and not entry["done"]:
            plan = resumed(dataclasses.replace(plan, study_id=entry["study_id"], resume=True),
                           set(vars(study_parser(suppress=True).parse_args(argv_of(label, item)))))
        out.append((label, item, plan))
    return out


def resumed_plans(plans: list[tuple[str, float, Plan]], state: dict[str, Any],
                  rest: list[str]) -> list[tuple[str, float, Plan]]:
    """The paused ratio's plan is its study's own (plan.json); finished and new ratios keep theirs."""
    return resume_paused(plans, state, lambda label, _: [*rest, "--ratio", label])


def save_state(out: Path, state: dict[str, Any], state_file: str = STATE) -> None:
    paths.write_atomic(out / state_file, json.dumps(state, indent=1).encode(), "--out")


def run_ratio(label: str, ratio: float, plan: Plan, state: dict[str, Any], out: Path) -> int:
    """One ratio's study under its MLflow run, started or resumed; its rows saved in the state once it ends."""
    from study import store
    from study.engine import SIGNALS, Interrupted
    from study.runner import run_study

    entry = state["runs"].get(label)
    store.prepare_store(plan.tracking_uri)
    SIGNALS.deferred = True  # the ratio's run and the state that names it are written together
    try:
        if entry is None:
            local = plan.tracking_uri.startswith("sqlite:")
            tags = {"role": "sweep", "sweep_id": state["sweep_id"], "ratio": label, "study_id": plan.study_id}
            run = store.open_run(plan.tracking_uri, plan.space, f"ratio {label} · {state['sweep_id']}", tags,
                                 plan.results_dir / "mlartifacts" if local else None)  # artifacts where the study's go
            entry = state["runs"][label] = {"study_id": plan.study_id, "run_id": run, "done": False, "rows": []}
        else:  # paused: the same study resumes under the same run
            store.client(plan.tracking_uri).update_run(entry["run_id"], status="RUNNING")
        save_state(out, state)
    finally:
        SIGNALS.deferred = False
    try:
        SIGNALS.check()
        print(f"sweep: ratio {label} ({plan.study_id}{', resumed' if plan.resume else ''})", flush=True)
        if plan.resume and is_finished(plan.storage, plan.study_id):
            code = 0  # the study finished, the sweep was killed before it noted so: its report is there
        else:
            code = run_study(dataclasses.replace(plan, report_dir=report_dir(out, label), parent_run=entry["run_id"]))
    except BaseException as err:
        paused = isinstance(err, (Interrupted, KeyboardInterrupt))
        store.end_run(plan.tracking_uri, entry["run_id"], "KILLED" if paused else "FAILED")
        raise
    done = code in (0, 1) or (code in (130, 143) and is_finished(plan.storage, plan.study_id))  # 1: an approach
    # had no finished trial (the others have rows); 130/143 after the finish: a signal that waited for the report
    status = "FINISHED" if done else "KILLED" if code in (130, 143) else "FAILED"
    store.end_run(plan.tracking_uri, entry["run_id"], status)
    if done:
        summary = report_dir(out, label) / "summary.csv"
        entry.update(done=True, rows=rows_of(summary, label, ratio, plan.study_id) if summary.exists() else [])
        save_state(out, state)
    return code


def run_sweep(plans: list[tuple[str, float, Plan]], state: dict[str, Any], out: Path, command: str) -> int:
    """Every ratio not yet done, then the table and plot. SIGINT or SIGTERM pauses the sweep (exit 130 / 143)
    through the studies' own signal handling (study.engine.SIGNALS); during a finish a signal waits for it."""
    from study.engine import SIGNALS, Interrupted

    SIGNALS.install()
    label = plans[0][0]
    try:
        for label, ratio, plan in plans:
            entry = state["runs"].get(label)
            if entry and entry["done"]:
                print(f"sweep: ratio {label} done ({entry['study_id']})", flush=True)
                continue
            SIGNALS.check()  # a signal that waited for the last ratio's finish pauses the sweep here
            code = run_ratio(label, ratio, plan, state, out)
            if code in (130, 143) and not state["runs"][label]["done"]:
                raise Interrupted(code)
            if code == 2:
                return code
        SIGNALS.deferred = True  # the finish: a signal now waits until the table is written
        write_outputs([r for lbl, _, _ in plans for r in state["runs"][lbl]["rows"]], out, command)
    except (Interrupted, KeyboardInterrupt) as stop:
        SIGNALS.deferred = True  # a second Ctrl-C must not cut the line short
        print(f"interrupted: sweep {state['sweep_id']} paused at ratio {label}; finish it with the same command and "
              f"--resume (finished ratios are skipped, ratio {label} resumes)", file=sys.stderr)
        return getattr(stop, "code", SIGNALS.code)
    print(f"sweep summary: {out / 'summary.md'}")
    if SIGNALS.received is not None:
        print(f"a signal arrived while sweep {state['sweep_id']} was finishing; it finished first", file=sys.stderr)
        return SIGNALS.code
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    from study.lock import StudyLock

    try:
        args, plans, out = checked(argv)
        state = resumed_state(out, args) if args.resume else {"sweep_id": f"sweep-{time.strftime('%Y%m%d-%H%M%S')}",
                                                               "ratios": args.ratios, "flags": args.rest, "runs": {}}
        if all(state["runs"].get(label, {}).get("done") for label, _, _ in plans) and (out / "summary.md").exists():
            print(f"sweep {state['sweep_id']} is already finished; nothing to resume (summary: {out / 'summary.md'})")
            return 0
        plans = resumed_plans(plans, state, args.rest)
        out.mkdir(parents=True, exist_ok=True)
        with StudyLock(out / LOCK, state["sweep_id"]):  # a second driver of this sweep is refused
            command = "python -m study.sweep " + " ".join(a for a in argv if a != "--resume")
            return run_sweep(plans, state, out, command)
    except StudyError as err:
        return fail(err)


if __name__ == "__main__":
    sys.exit(main())
