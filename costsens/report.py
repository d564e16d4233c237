"""The third seed's experiment, reproduced offline: a decision tree with misclassification costs.

    python -m costsens.report                       # hypothyroid + glass, 10 repetitions
    python -m costsens.report --ann-dir ~/data/ann  # also the paper's own 'ann' thyroid files

For each data set and repetition: a stratified 1:1 train/test split; an entropy decision tree
(scikit-learn's stand-in for C4.5/J48) trained three ways — no cost; direct rescaling with a
generated *consistent* cost matrix; one-vs-one with a generated *inconsistent* matrix (three or
more classes only) — and scored on accuracy and on recall and precision of the smallest class.
Two protocols: a new split every repetition, and the paper's apparent one (one split, only the
cost matrices redrawn). Writes a markdown report with the paper's numbers beside ours.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from costsens import cli, tabular
from costsens.learners import MIN_LEAF_WEIGHT
from study import paths
from study.errors import Parser, StudyError, fail

DEFAULT_OUT = Path("results/cost_sensitive.md")
DEFAULT_SEED = 2013


def parser() -> Parser:
    ap = Parser(prog="python -m costsens.report", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"markdown report to write (default: {DEFAULT_OUT})")
    ap.add_argument("--repetitions", type=int, default=10, help="splits / cost draws per protocol (default: 10)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of splits, matrices, trees (default: {DEFAULT_SEED})")
    ap.add_argument("--ann-dir", type=Path, default=None,
                    help="folder with the paper's ann-train.data / ann-test.data (UCI thyroid); optional")
    ap.add_argument("--datasets", nargs="*", default=list(tabular.DATASETS), metavar="NAME",
                    help=f"packaged data sets to run: {', '.join(tabular.DATASETS)} (default: all; "
                         "give none to run only --ann-dir)")
    ap.add_argument("--min-leaf-weight", type=float, default=MIN_LEAF_WEIGHT,
                    help=f"smallest sample weight a leaf may hold, like J48's -M (default: {MIN_LEAF_WEIGHT:g}; 0 = grow fully)")
    return ap


def checked(argv: Sequence[str]) -> tuple[argparse.Namespace, list[tabular.Table]]:
    """Parse and check every flag, then read every data set: all before scikit-learn loads."""
    args = parser().parse_args(argv)
    cli.at_least("--repetitions", args.repetitions, 2, " (a standard deviation needs two)")
    cli.seed(args.seed)
    cli.finite_non_negative("--min-leaf-weight", args.min_leaf_weight)
    args.out = paths.output_file(args.out, "--out")  # a FIFO or a device would hang or be replaced
    if not args.datasets and args.ann_dir is None:
        raise cli.FlagError("nothing to run: give --datasets or --ann-dir")
    tables = [tabular.load(n) for n in args.datasets]
    if args.ann_dir is not None:
        tables.append(tabular.read_ann(args.ann_dir.expanduser()))
    return args, tables


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, tables = checked(argv)
    except StudyError as err:
        return fail(err)
    from costsens.experiment import PROTOCOLS, run_experiment  # scikit-learn: only once the flags are good
    from costsens.markdown import render

    start = time.perf_counter()
    results = {
        t.name: [run_experiment(t, args.repetitions, args.seed, p, args.min_leaf_weight) for p in PROTOCOLS]
        for t in tables
    }
    command = "python -m costsens.report" + (" " + shlex.join(argv) if argv else "")
    text = render(results, command, args.seed, time.perf_counter() - start, args.min_leaf_weight)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
