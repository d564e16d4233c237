"""The board across data sets: which approach wins, ranked over several data sets.

    python -m study.board --space core --data animals,digits,digits_lt,<folder>,... [any study.tune flag]

    python -m study.board --resume --space core --data animals,digits,... [the same flags]

Every data set gets a whole study (search, then confirmation seeds), run as ``python -m study.tune``
would run it, each under an MLflow run of its own nested in one board run. Then the approaches are
ranked across the data sets by each one's test macro-F1 (the mean over its confirmation seeds), as
Demsar (JMLR 2006) and Benavoli et al. (JMLR 2017) set out:

- mean ranks (1 = best) and a Friedman test with the Nemenyi post-hoc and its critical-difference
  diagram (``autorank``; it needs at least five data sets, so fewer get mean ranks only);
- against ``baseline``, a Bayesian signed-rank test (``baycomp``) with a region of practical
  equivalence (``--rope``, default 0.02 macro-F1): P(better), P(equivalent), P(worse) and the verdict
  better / worse / practically equivalent / undecided at this budget (at probability >= 0.95).

``results/board/`` (``--out``) gets ``board.md``, ``board.csv`` and ``cd_diagram.png``; each data
set's own study report goes to ``data-<name>/``. A data set whose study fails is named in
``board.md`` and left out of the ranking; an approach without a score on some data set is left out
too. Everything, ``--out`` included, is checked before the first study starts.

Ctrl-C or SIGTERM pauses the board: the current data set's study pauses, its run and the board's end
KILLED, exit 130 / 143. ``--resume`` with the same flags skips the finished data sets and resumes the
current one (the board's state is ``board.json`` in ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import math
import os
import re
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study import paths
from study.errors import Parser, StudyError, UsageError, fail, one_line
from study.plan import Plan, is_finished
from study.sources import DATASETS, is_folder
from study.stats import BETTER, EQUIVALENT, UNDECIDED, WORSE
from study.sweep import FREE_ON_RESUME, resume_paused, resumed_series
from study.sweep import save_state as sweep_save_state
from study.tune import parser as study_parser
from study.tune import preflight

BASELINE = "baseline"
ALPHA = 0.05  # the Friedman test's and the Nemenyi post-hoc's level
THRESHOLD = 0.95  # a Bayesian verdict needs this posterior probability
MIN_DATA_SETS = 2  # a board of one data set is a study
MIN_RANKED = 5  # autorank's Friedman test needs at least five data sets
NSAMPLES = 50_000  # baycomp's posterior samples
STATE, LOCK = "board.json", "board.lock"
OUTPUTS = ("board.md", "board.csv", "cd_diagram.png", STATE, LOCK)
STUDY_OUTPUTS = ("summary.csv", "summary.md", "comparison.png")  # what each data set's study report writes
CSV_FIELDS = ("data_set", "study_id", "status", "approach", "n_seeds", "test_macro_f1_mean", "rank", "seed_scores")
NAN = float("nan")


# ---------------------------------------------------------------- the analysis (no study needed)


@dataclass(frozen=True)
class Comparison:
    """One approach against ``baseline`` over the data sets: the Bayesian signed-rank test's posterior."""

    approach: str
    mean_delta: float  # mean over data sets of (approach - baseline) test macro-F1
    p_better: float
    p_equivalent: float
    p_worse: float
    verdict: str


@dataclass(frozen=True)
class Ranking:
    """The approaches ranked across data sets (only data sets and approaches with every score)."""

    table: Any  # pandas DataFrame: data sets x approaches, mean test macro-F1
    ranks: Any  # the same shape: rank within each data set, 1 = best, ties averaged
    mean_ranks: dict[str, float]  # best first
    left_out: dict[str, list[str]]  # approach -> the data sets where it has no score
    comparisons: list[Comparison]
    rope: float
    omnibus: str = ""  # "friedman" where it ran
    p_value: float = NAN
    cd: float = NAN  # the Nemenyi critical difference in mean rank
    differ: list[tuple[str, str]] = field(default_factory=list)  # pairs further apart than cd, better first
    note: str = ""  # why there is no Friedman test
    result: Any = None  # autorank's RankResult (for the diagram)


def verdict_of(p_better: float, p_equivalent: float, p_worse: float, threshold: float = THRESHOLD) -> str:
    """The project's words for a posterior: the first outcome at ``threshold`` or above, else undecided."""
    return next((w for w, p in ((BETTER, p_better), (WORSE, p_worse), (EQUIVALENT, p_equivalent)) if p >= threshold),
                UNDECIDED)


def score_table(means: Mapping[str, Mapping[str, float]]) -> tuple[Any, dict[str, list[str]]]:
    """Data sets x approaches; an approach without a finite score on some data set is left out (named)."""
    import pandas as pd

    table = pd.DataFrame({d: dict(per) for d, per in means.items()}, dtype=float).T
    missing = {a: [d for d in table.index if not math.isfinite(table.at[d, a])] for a in table.columns}
    left_out = {a: ds for a, ds in missing.items() if ds}
    return table.drop(columns=list(left_out)), left_out


def signed_rank(table: Any, rope: float, nsamples: int = NSAMPLES, seed: int = 0) -> list[Comparison]:
    """Each approach against ``baseline`` (baycomp's SignedRankTest: Benavoli et al., ICML 2014; no Stan)."""
    from baycomp import SignedRankTest

    if BASELINE not in table.columns:
        return []
    base = table[BASELINE].to_numpy()
    out = []
    for approach in (a for a in table.columns if a != BASELINE):
        x = table[approach].to_numpy()
        # (left, rope, right): left is x above y by more than the rope, i.e. the approach better than baseline
        better, equivalent, worse = (float(p) for p in SignedRankTest.probs(x, base, rope=rope, nsamples=nsamples,
                                                                            random_state=seed))
        out.append(Comparison(approach, float((x - base).mean()), better, equivalent, worse,
                              verdict_of(better, equivalent, worse)))
    return out


def friedman(table: Any, alpha: float = ALPHA) -> Any:
    """autorank's Friedman test with the Nemenyi post-hoc (forced: no parametric test on a handful of data sets)."""
    from autorank import autorank

    with contextlib.redirect_stdout(io.StringIO()):  # it prints that the normality tests are ignored
        return autorank(table, alpha=alpha, verbose=False, order="descending", force_mode="nonparametric")


def rank_approaches(means: Mapping[str, Mapping[str, float]], rope: float = 0.02, alpha: float = ALPHA,
                    nsamples: int = NSAMPLES, seed: int = 0) -> Ranking:
    """Mean ranks, the Friedman test and Nemenyi post-hoc (five data sets or more, three approaches or more) and
    the Bayesian signed-rank comparison of each approach with ``baseline``."""
    table, left_out = score_table(means)
    ranks = table.rank(axis=1, ascending=False)
    mean_ranks = ranks.mean().sort_values()
    base = Ranking(table, ranks, {a: float(r) for a, r in mean_ranks.items()}, left_out,
                   signed_rank(table, rope, nsamples, seed) if len(table) >= MIN_DATA_SETS else [], rope)
    n, k = table.shape
    if n < MIN_RANKED or k < 3:
        why = f"{n} data sets (it needs at least {MIN_RANKED})" if n < MIN_RANKED else f"{k} approaches (it needs 3)"
        return dataclasses.replace(base, note=f"no Friedman test: {why}")
    result = friedman(table, alpha)
    cd = float(result.cd) if result.cd is not None else NAN
    order = list(mean_ranks.index)
    differ = [(a, b) for i, a in enumerate(order) for b in order[i + 1:] if mean_ranks[b] - mean_ranks[a] > cd]
    return dataclasses.replace(base, omnibus=result.omnibus, p_value=float(result.pvalue), cd=cd, differ=differ,
                               result=result)


def cd_figure(ranking: Ranking) -> Any:
    """autorank's critical-difference diagram, or None without a Friedman test."""
    if ranking.result is None or ranking.omnibus != "friedman":
        return None
    import matplotlib

    matplotlib.use("Agg")
    from autorank import plot_stats

    ax = plot_stats(ranking.result, allow_insignificant=True)
    ax.set_title(f"Nemenyi critical difference {ranking.cd:.2f} (Friedman p = {ranking.p_value:.3g}, "
                 f"{len(ranking.table)} data sets)", fontsize=9)
    return ax.figure


# ---------------------------------------------------------------- the board's files


def _f(value: float, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _table_lines(ranking: Ranking, means: Mapping[str, Mapping[str, float]], studies: Mapping[str, str]) -> list[str]:
    approaches = list(dict.fromkeys(a for per in means.values() for a in per))
    lines = [f"| data set | study | {' | '.join(approaches)} |", "|---|---|" + "---|" * len(approaches)]
    for d, per in means.items():
        cells = []
        for a in approaches:
            rank = ranking.ranks.at[d, a] if a in ranking.ranks.columns and d in ranking.ranks.index else None
            cells.append(_f(per.get(a, NAN)) + (f" ({rank:g})" if rank is not None else ""))
        lines.append(f"| {d} | {studies.get(d, '')} | {' | '.join(cells)} |")
    return lines


def _friedman_lines(ranking: Ranking) -> list[str]:
    if not ranking.omnibus:
        return [f"{ranking.note[:1].upper()}{ranking.note[1:]}; the mean ranks above are all there is.\n"]
    if ranking.omnibus != "friedman":
        return [f"autorank ran {ranking.omnibus} (p = {ranking.p_value:.3g}), not a Friedman test.\n"]
    pairs = ", ".join(f"{a} > {b}" for a, b in ranking.differ) or "none"
    return [f"Friedman test over {len(ranking.table)} data sets and {len(ranking.table.columns)} approaches: "
            f"p = {ranking.p_value:.3g} (level {ALPHA}). Nemenyi post-hoc: critical difference "
            f"{ranking.cd:.2f} in mean rank; pairs further apart: {pairs}.\n",
            "![critical difference](cd_diagram.png)\n"]


def _bayes_lines(ranking: Ranking) -> list[str]:
    if not ranking.comparisons:
        return [f"No comparison: `{BASELINE}` is not among the ranked approaches.\n" if len(ranking.table) >= 2 else
                "No comparison: fewer than two data sets.\n"]
    lines = [f"Bayesian signed-rank test (Benavoli et al. 2014, `baycomp`) over {len(ranking.table)} data sets, region "
             f"of practical equivalence {ranking.rope:g} macro-F1, verdict at probability >= {THRESHOLD}.\n",
             "| approach | mean Δ vs baseline | P(better) | P(equivalent) | P(worse) | verdict |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {c.approach} | {c.mean_delta:+.3f} | {c.p_better:.3f} | {c.p_equivalent:.3f} | {c.p_worse:.3f} | "
              f"{c.verdict} |" for c in ranking.comparisons]
    return lines


def board_markdown(ranking: Ranking, means: Mapping[str, Mapping[str, float]], studies: Mapping[str, str],
                   failed: Mapping[str, str], command: str) -> str:
    lines = [f"# Board across data sets\n\nCommand: `{command}`\n",
             "Scores: test macro-F1, the mean over each approach's confirmation seeds; in parentheses its rank on "
             "that data set (1 = best, ties averaged). Each data set's own report: `data-<name>/summary.md`.\n",
             *_table_lines(ranking, means, studies), ""]
    lines += [f"Left out (the study failed): **{d}**: {why}" for d, why in failed.items()]
    lines += [f"Left out of the ranking (no score on {', '.join(ds)}): **{a}**" for a, ds in ranking.left_out.items()]
    lines += ["\n## Mean ranks\n", "| approach | mean rank |", "|---|---|"]
    lines += [f"| {a} | {r:.2f} |" for a, r in ranking.mean_ranks.items()]
    lines += ["\n## Friedman test and Nemenyi post-hoc\n", *_friedman_lines(ranking)]
    lines += ["\n## Against baseline\n", *_bayes_lines(ranking)]
    return "\n".join(lines) + "\n"


def board_rows(ranking: Ranking, means: Mapping[str, Mapping[str, float]], seeds: Mapping[str, Mapping[str, Any]],
               studies: Mapping[str, str], failed: Mapping[str, str]) -> list[dict[str, Any]]:
    rows = []
    for d, per in means.items():
        for a, mean in per.items():
            ranked = a in ranking.ranks.columns and d in ranking.ranks.index
            scores = seeds.get(d, {}).get(a, {})
            rows.append({"data_set": d, "study_id": studies.get(d, ""), "status": "ranked" if ranked else "left out",
                         "approach": a, "n_seeds": len(scores), "test_macro_f1_mean": "" if math.isnan(mean) else mean,
                         "rank": ranking.ranks.at[d, a] if ranked else "",
                         "seed_scores": " ".join(f"{s}:{v:.6g}" for s, v in sorted(scores.items()))})
    rows += [{"data_set": d, "study_id": studies.get(d, ""), "status": f"failed: {why}"} for d, why in failed.items()]
    return rows


def write_board(out: Path, ranking: Ranking, means: Mapping[str, Mapping[str, float]],
                seeds: Mapping[str, Mapping[str, Any]], studies: Mapping[str, str], failed: Mapping[str, str],
                command: str) -> list[Path]:
    """``board.md``, ``board.csv`` and (with a Friedman test) ``cd_diagram.png`` in ``out``; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "board.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(CSV_FIELDS))
        writer.writeheader()
        writer.writerows(board_rows(ranking, means, seeds, studies, failed))
    (out / "board.md").write_text(board_markdown(ranking, means, studies, failed, command), encoding="utf-8")
    written = [out / "board.md", out / "board.csv"]
    figure = cd_figure(ranking)
    (out / "cd_diagram.png").unlink(missing_ok=True)  # a diagram from an earlier board must not stay beside this one
    if figure is not None:
        import matplotlib.pyplot as plt

        figure.savefig(out / "cd_diagram.png", dpi=120, bbox_inches="tight")
        plt.close(figure)
        written.append(out / "cd_diagram.png")
    return written


# ---------------------------------------------------------------- the command line: checks


def parse_data(value: str) -> list[tuple[str, str]]:
    """'animals,digits,~/x' -> [(label, data)]: a built-in by its name, a folder by its own name (for data-<label>/)."""
    items = [part.strip() for part in value.split(",") if part.strip()]
    if len(items) < MIN_DATA_SETS:
        raise UsageError(f"--data needs at least {MIN_DATA_SETS} data sets, e.g. animals,digits (the Friedman test and "
                         f"its diagram need {MIN_RANKED}), got {value!r}")
    if len(set(items)) != len(items):
        raise UsageError(f"--data lists a data set twice: {value!r}")
    out: list[tuple[str, str]] = []
    for item in items:
        folder = item not in DATASETS and is_folder(item)
        label = Path(os.path.abspath(os.path.expanduser(item))).name if folder else item
        label = re.sub(r"[^A-Za-z0-9_.-]", "_", label) or "_"
        twin = next((data for lbl, data in out if lbl == label), None)
        if twin is not None:
            raise UsageError(f"--data: {twin!r} and {item!r} would both be called {label!r} on the board; give the "
                             "folders different names")
        out.append((label, item))
    return out


def report_dir(out: Path, label: str) -> Path:
    return out / f"data-{label}"


def checked(argv: list[str]) -> tuple[argparse.Namespace, list[tuple[str, str, Plan]], Path]:
    """Every data set's plan and the output folder, all checked before anything runs or is written."""
    ap = Parser(prog="python -m study.board", add_help=False, allow_abbrev=False)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("--resume", action="store_true")
    args, rest = ap.parse_known_args(argv)
    if not any(a == "--space" or a.startswith("--space=") for a in rest):
        raise UsageError("--space is required, e.g. --space core")
    for flag, why in (("--counts", "it names one data set's classes"), ("--plan", "a plan holds one data set")):
        if any(a == flag or a.startswith(f"{flag}=") for a in rest):
            raise UsageError(f"{flag} cannot be used on a board: {why}")
    args.rest = rest
    data = parse_data(args.data)
    plans = [(label, item, preflight([*rest, "--data", item])) for label, item in data]
    out = paths.output_folder(args.out or plans[0][2].results_dir / "board", "--out")
    for name in OUTPUTS:
        paths.output_file(out / name, "--out")
    for label, _, _ in plans:
        folder = paths.output_folder(report_dir(out, label), "--out")
        for name in STUDY_OUTPUTS:
            paths.output_file(folder / name, "--out")
    return args, plans, out


def board_flags(rest: list[str]) -> dict[str, Any]:
    """The study flags a board was given, by name, without those a resume may change."""
    values = vars(study_parser().parse_args(rest))
    return {k: v for k, v in values.items() if k not in (*FREE_ON_RESUME, "resume", "data")}


def resumed_state(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The paused board's state in ``out``, refused when its flags differ from these (each difference named)."""
    return resumed_series(out, STATE, "board", "data", args.data, args.rest, board_flags)


def resumed_plans(plans: list[tuple[str, str, Plan]], state: dict[str, Any],
                  rest: list[str]) -> list[tuple[str, str, Plan]]:
    """The paused data set's plan is its study's own (plan.json), checked as ``study.tune --resume`` checks it."""
    return resume_paused(plans, state, lambda _, item: [*rest, "--data", item])


# ---------------------------------------------------------------- the command line: the studies and the board


def save_state(out: Path, state: dict[str, Any]) -> None:
    sweep_save_state(out, state, STATE)


def _artifacts(plan: Plan) -> Path | None:
    return plan.results_dir / "mlartifacts" if plan.tracking_uri.startswith("sqlite:") else None  # as the study's


def open_board_run(plan: Plan, state: dict[str, Any], out: Path) -> None:
    """The board's own MLflow run, opened (or set running again on --resume) before its first study."""
    from study import store
    from study.engine import SIGNALS

    store.prepare_store(plan.tracking_uri)
    SIGNALS.deferred = True  # the run and the state that names it are written together
    try:
        if state.get("run_id") is None:
            tags = {"role": "board", "board_id": state["board_id"], "data": state["data"]}
            state["run_id"] = store.open_run(plan.tracking_uri, plan.space, f"board · {state['board_id']}", tags,
                                             _artifacts(plan))
            save_state(out, state)
        else:
            store.client(plan.tracking_uri).update_run(state["run_id"], status="RUNNING")
    finally:
        SIGNALS.deferred = False


def _open_data_run(label: str, plan: Plan, state: dict[str, Any], out: Path) -> dict[str, Any]:
    from study import store
    from study.engine import SIGNALS

    entry = state["runs"].get(label)
    SIGNALS.deferred = True  # the data set's run and the state that names it are written together
    try:
        if entry is None:
            tags = {"role": "board_data", "board_id": state["board_id"], "data_set": label, "study_id": plan.study_id,
                    "mlflow.parentRunId": state["run_id"]}
            name = f"{label} · {state['board_id']}"
            run = store.open_run(plan.tracking_uri, plan.space, name, tags, _artifacts(plan))
            entry = state["runs"][label] = {"study_id": plan.study_id, "run_id": run, "done": False, "failed": ""}
        else:  # paused: the same study resumes under the same run
            store.client(plan.tracking_uri).update_run(entry["run_id"], status="RUNNING")
        save_state(out, state)
    finally:
        SIGNALS.deferred = False
    return entry


def run_data_set(label: str, plan: Plan, state: dict[str, Any], out: Path) -> int:
    """One data set's study under its MLflow run, started or resumed. A study that fails (an exit code other than
    0, 1 and a pause, or an exception) is recorded as failed and the board goes on without it."""
    from study import store
    from study.engine import SIGNALS, Interrupted
    from study.runner import run_study

    entry = _open_data_run(label, plan, state, out)
    try:
        SIGNALS.check()
        print(f"board: data set {label} ({plan.study_id}{', resumed' if plan.resume else ''})", flush=True)
        code = run_study(dataclasses.replace(plan, report_dir=report_dir(out, label), parent_run=entry["run_id"]))
    except (Interrupted, KeyboardInterrupt):
        store.end_run(plan.tracking_uri, entry["run_id"], "KILLED")
        raise
    except Exception as err:  # noqa: BLE001 - one data set's crash is named on the board, with its traceback here
        traceback.print_exc()
        code, entry["failed"] = 2, f"{type(err).__name__}: {one_line(err, 200)}"
    paused = code in (130, 143) and not is_finished(plan.storage, plan.study_id)  # 130/143 after the finish: a
    # signal that waited for the study's report
    if not paused and code not in (0, 1, 130, 143) and not entry["failed"]:
        entry["failed"] = f"the study exited with code {code}"
    status = "KILLED" if paused else "FAILED" if entry["failed"] else "FINISHED"
    store.end_run(plan.tracking_uri, entry["run_id"], status)
    if not paused:
        entry["done"] = True
        save_state(out, state)
    return code


def read_scores(uri: str, space: str, study_id: str) -> tuple[dict[str, float], dict[str, dict[int, float]]]:
    """Each finished approach's test macro-F1 of one study from MLflow: the mean over its confirmation seeds
    (without confirmation, its parent's single test figure) and the scores by seed."""
    from study.names import TEST_MACRO_F1
    from study.report import gather, select

    _, finished, _ = select(uri, space, study_id)
    means, seeds = {}, {}
    for parent in finished:
        approach = gather(uri, space, parent)
        seeds[approach.name] = approach.scores(TEST_MACRO_F1)
        values = list(seeds[approach.name].values())
        means[approach.name] = sum(values) / len(values) if values else parent.metrics.get(TEST_MACRO_F1, NAN)
    return means, seeds


def finish(plans: list[tuple[str, str, Plan]], state: dict[str, Any], out: Path, command: str) -> dict[str, str]:
    """Every data set's scores from MLflow, the ranking and the board's files, logged to the board run; the
    data sets that failed, with why."""
    from study import store

    plan = plans[0][2]
    means, seeds, studies, failed = {}, {}, {}, {}
    for label, _, _ in plans:
        entry = state["runs"][label]
        studies[label] = entry["study_id"]
        try:
            if entry["failed"]:
                raise StudyError(entry["failed"])
            means[label], seeds[label] = read_scores(plan.tracking_uri, plan.space, entry["study_id"])
        except StudyError as err:  # the study failed, or its store holds no finished approach
            failed[label] = one_line(err, 200)
    ranking = rank_approaches(means, rope=plan.confirm.rope, nsamples=NSAMPLES, seed=plan.seed)
    for path in write_board(out, ranking, means, seeds, studies, failed, command):
        store.client(plan.tracking_uri).log_artifact(state["run_id"], str(path), "board")
    store.end_run(plan.tracking_uri, state["run_id"], "FINISHED")
    return failed


def run_board(plans: list[tuple[str, str, Plan]], state: dict[str, Any], out: Path, command: str) -> int:
    """Every data set not yet done, then the board. SIGINT or SIGTERM pauses it (exit 130 / 143) through the
    studies' own signal handling (study.engine.SIGNALS); during the finish a signal waits for it. Exit 1 when a
    data set failed (the board names it), else 0."""
    from study import store
    from study.engine import SIGNALS, Interrupted

    SIGNALS.install()
    label, uri = plans[0][0], plans[0][2].tracking_uri
    try:
        open_board_run(plans[0][2], state, out)
        for label, _, plan in plans:
            entry = state["runs"].get(label)
            if entry and entry["done"]:
                print(f"board: data set {label} done ({entry['study_id']})", flush=True)
                continue
            SIGNALS.check()  # a signal that waited for the last data set's finish pauses the board here
            code = run_data_set(label, plan, state, out)
            if code in (130, 143) and not state["runs"][label]["done"]:
                raise Interrupted(code)
        SIGNALS.deferred = True  # the finish: a signal now waits until the board is written
        failed = finish(plans, state, out, command)
    except (Interrupted, KeyboardInterrupt) as stop:
        SIGNALS.deferred = True  # a second Ctrl-C must not cut the line short
        if state.get("run_id"):
            store.end_run(uri, state["run_id"], "KILLED")
        print(f"interrupted: board {state['board_id']} paused at data set {label}; finish it with the same command "
              f"and --resume (finished data sets are skipped, {label} resumes)", file=sys.stderr)
        return getattr(stop, "code", SIGNALS.code)
    print(f"board: {out / 'board.md'}" + (f" ({len(failed)} data sets failed: {', '.join(failed)})" if failed else ""))
    if SIGNALS.received is not None:
        print(f"a signal arrived while board {state['board_id']} was finishing; it finished first", file=sys.stderr)
        return SIGNALS.code
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    from study.lock import StudyLock

    try:
        args, plans, out = checked(argv)
        state = resumed_state(out, args) if args.resume else {
            "board_id": f"board-{time.strftime('%Y%m%d-%H%M%S')}", "data": args.data, "flags": args.rest,
            "run_id": None, "runs": {}}
        if all(state["runs"].get(label, {}).get("done") for label, _, _ in plans) and (out / "board.md").exists():
            print(f"board {state['board_id']} is already finished; nothing to resume (board: {out / 'board.md'})")
            return 0
        plans = resumed_plans(plans, state, args.rest)
        out.mkdir(parents=True, exist_ok=True)
        with StudyLock(out / LOCK, state["board_id"]):  # a second driver of this board is refused
            command = "python -m study.board " + " ".join(a for a in argv if a != "--resume")
            return run_board(plans, state, out, command)
    except StudyError as err:
        return fail(err)


if __name__ == "__main__":
    sys.exit(main())
