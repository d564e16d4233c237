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
import json
import math
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
from study.sweep import flag_values
from study.tune import parser as study_parser
from study.tune import preflight, resumed

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
        return [f"{ranking.note.capitalize()}; the mean ranks above are all there is.\n"]
    if ranking.omnibus != "friedman":
        return [f"autorank ran {ranking.omnibus} (p = {ranking.p_value:.3g}), not a Friedman test.\n"]
    pairs = ", ".join(f"{a} > {b}" for a, b in ranking.differ) or "none"
    return [f"Friedman test over {len(ranking.table)} data sets and {len(ranking.table.columns)} approaches: "
            f"p = {ranking.p_value:.3g} (level {ALPHA}). Nemenyi post-hoc: critical difference "
            f"{ranking.cd:.2f} in mean rank; pairs further apart: {pairs}.\n", "![critical difference](cd_diagram.png)\n"]


def _bayes_lines(ranking: Ranking) -> list[str]:
    if not ranking.comparisons:
        return [f"No comparison: `{BASELINE}` is not among the ranked approaches.\n" if len(ranking.table) >= 2 else
                "No comparison: fewer than two data sets.\n"]
    lines = [f"Bayesian signed-rank test (Benavoli et al. 2014, `baycomp`) over {len(ranking.table)} data sets, region "
             f"of practical equivalence {ranking.rope:g} macro-F1, verdict at probability >= {THRESHOLD}.\n",
             "| approach | mean Δ vs baseline | P(better) | P(equivalent) | P(worse) | verdict |", "|---|---|---|---|---|---|"]
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
