"""results/<space>/summary.{md,csv} and comparison.png, rebuilt from MLflow (the one source of truth).

    python -m study.report --space all [--study-id ID] [--tracking-uri URI] [--results-dir DIR]

The verdict comes from the confirmation runs: each approach's final configuration retrained
from scratch over N trial seeds, each scored on the test split at its own validation-selected
epoch. Per approach: the mean over seeds with a 95 % Student-t interval; against ``baseline``:
paired tests over the seeds they share (t-test and Wilcoxon; the t-test p Holm-adjusted over
the approaches compared) and a paired bootstrap of the macro-F1 difference on their pooled
test predictions. Without confirmation runs the figures are single runs and nothing is ranked.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from study import importance, store
from study.names import TEST_MACRO_F1, VAL_MACRO_F1
from study.stats import holm, paired_bootstrap, paired_tests, t_interval

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BASELINE = "baseline"  # the approach every other one is compared with
ALPHA = 0.05  # significance level, after Holm
SUMMARY_METRICS = (TEST_MACRO_F1, "test_minority_recall", "test_balanced_accuracy", "test_expected_cost")
PREDICTIONS = "test_predictions.json"  # on each confirm run: {"y_true": [...], "y_pred": [...]}
CURVES = (("loss", "train_loss", "val_loss"), ("macro-F1", "train_macro_f1", VAL_MACRO_F1))
COLUMNS = ("approach", "n_seeds", "config_rank",
           "test_macro_f1_mean", "test_macro_f1_sd", "test_macro_f1_ci_low", "test_macro_f1_ci_high",
           *(f"{m}_{s}" for m in SUMMARY_METRICS[1:] for s in ("mean", "ci_low", "ci_high")),
           "delta_vs_baseline", "p_ttest", "p_wilcoxon", "p_holm",
           "bootstrap_delta", "bootstrap_delta_low", "bootstrap_delta_high",
           "search_val_macro_f1", "best_epoch", "searched", "config")
NAN = float("nan")


class ReportError(ValueError):
    """The report cannot be written from what the store holds: a one-line message."""


@dataclass(frozen=True)
class Approach:
    """What the report reads of one approach: its parent run, search trials and final-config seeds."""

    parent: store.Run
    trials: list[importance.Trial]  # search children with their best val macro-F1
    confirm: list[store.Run]  # FINISHED confirm runs of the final config that logged a test score
    rank: str  # the final config's rank among the top K

    @property
    def name(self) -> str:
        return self.parent.approach

    def scores(self, metric: str) -> dict[int, float]:
        """Test ``metric`` by confirmation seed."""
        return {int(r.tags["confirm_seed"]): r.metrics[metric] for r in self.confirm if metric in r.metrics}


def _latest_study(runs: list[store.Run], experiment: str) -> str:
    finished = [r for r in runs if r.status == "FINISHED"]  # runs come newest first
    if not finished:
        states = ", ".join(sorted({f"{r.approach} {r.status}" for r in runs}))
        raise ReportError(f"experiment {experiment!r} has no finished approach yet ({states})")
    return finished[0].study_id


def select(uri: str, experiment: str, study_id: str | None) -> tuple[str, list[store.Run], list[store.Run]]:
    """``(study_id, finished parents by approach, unfinished parents)``; the latest study with a
    finished approach when ``study_id`` is None. Unknown experiment or study: a ReportError."""
    runs = store.parents(uri, experiment)
    if not runs:
        raise ReportError(f"experiment {experiment!r} at {uri} holds no study (no parent run)")
    studies = list(dict.fromkeys(r.study_id for r in runs))
    if study_id is None:
        study_id = _latest_study(runs, experiment)
    elif study_id not in studies:
        raise ReportError(f"unknown study id {study_id!r} in experiment {experiment!r}; studies there: {', '.join(studies)}")
    mine = [r for r in runs if r.study_id == study_id]
    finished: dict[str, store.Run] = {}
    for r in mine:  # newest first: a re-created parent wins
        if r.status == "FINISHED":
            finished.setdefault(r.approach, r)
    if not finished:
        states = ", ".join(sorted(f"{r.approach} {r.status}" for r in mine))
        raise ReportError(f"study {study_id!r} of experiment {experiment!r} has no finished approach ({states})")
    unfinished = [r for r in mine if r.approach not in finished]
    return study_id, [finished[k] for k in sorted(finished)], unfinished


def gather(uri: str, experiment: str, parent: store.Run) -> Approach:
    """The confirm runs of the parent's final config (tag ``final_config_rank``; without it the lowest
    rank present), and its search trials."""
    confirm = [r for r in store.children(uri, experiment, parent.study_id, parent.approach, phase="confirm")
               if r.status == "FINISHED" and TEST_MACRO_F1 in r.metrics and "confirm_seed" in r.tags]
    ranks = sorted({r.tags.get("config_rank", "") for r in confirm}, key=lambda s: (len(s), s))
    rank = parent.tags.get("final_config_rank") or (ranks[0] if ranks else "")
    confirm = [r for r in confirm if r.tags.get("config_rank", "") == rank]
    return Approach(parent, importance.search_trials(uri, experiment, parent.study_id, parent.approach), confirm, rank)


def _predictions(uri: str, runs: list[store.Run]) -> dict[int, dict[str, list]]:
    out = {}
    for r in runs:
        try:
            out[int(r.tags["confirm_seed"])] = store.json_artifact(uri, r.run_id, PREDICTIONS)
        except store.StoreError:
            continue  # no predictions on this seed: the bootstrap uses the seeds that have them
    return out


def _bootstrap(uri: str, a: Approach, base: Approach, seeds: list[int]) -> tuple[float, float, float]:
    """Paired bootstrap of the macro-F1 difference on the test predictions pooled over shared seeds."""
    pa, pb = _predictions(uri, a.confirm), _predictions(uri, base.confirm)
    y_true, pred_a, pred_b = [], [], []
    for s in seeds:
        if s in pa and s in pb and pa[s]["y_true"] == pb[s]["y_true"]:  # same test split under this seed
            y_true += pa[s]["y_true"]
            pred_a += pa[s]["y_pred"]
            pred_b += pb[s]["y_pred"]
    if len(y_true) < 2:
        return NAN, NAN, NAN
    return paired_bootstrap(y_true, pred_a, pred_b)


def _short(value: str) -> str:
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value


def rows(uri: str, approaches: list[Approach]) -> list[dict[str, Any]]:
    """One row per approach, columns :data:`COLUMNS`; NaN where a figure does not exist."""
    base = next((a for a in approaches if a.name == BASELINE), None)
    out = []
    for a in approaches:
        p = a.parent
        config = {k[len("best."):]: v for k, v in sorted(p.params.items()) if k.startswith("best.")}
        searched = importance.searched_keys(a.trials, p.tags.get(importance.SEARCHED_TAG))
        row: dict[str, Any] = {"approach": a.name, "n_seeds": len(a.confirm), "config_rank": a.rank,
                               "search_val_macro_f1": p.metrics.get(VAL_MACRO_F1, NAN),
                               "best_epoch": p.metrics.get("best_epoch", NAN),
                               "searched": ",".join(k for k in searched if k in config), "config": json.dumps(config)}
        for m in SUMMARY_METRICS:
            values = list(a.scores(m).values())
            if values:
                mean, sd, low, high = t_interval(values)
            else:  # no confirmation runs: the parent's own test figure (a single run), if it logged one
                mean, sd, low, high = (NAN if a.confirm else p.metrics.get(m, NAN)), NAN, NAN, NAN
            row.update({f"{m}_mean": mean, f"{m}_ci_low": low, f"{m}_ci_high": high})
            if m == TEST_MACRO_F1:
                row[f"{m}_sd"] = sd
        row.update(delta_vs_baseline=NAN, p_ttest=NAN, p_wilcoxon=NAN, p_holm=NAN,
                   bootstrap_delta=NAN, bootstrap_delta_low=NAN, bootstrap_delta_high=NAN)
        if base is not None and a is not base:
            sa, sb = a.scores(TEST_MACRO_F1), base.scores(TEST_MACRO_F1)
            seeds = sorted(set(sa) & set(sb))
            if seeds:
                row["delta_vs_baseline"] = sum(sa[s] - sb[s] for s in seeds) / len(seeds)
                row["p_ttest"], row["p_wilcoxon"] = paired_tests([sa[s] for s in seeds], [sb[s] for s in seeds])
                row["bootstrap_delta"], row["bootstrap_delta_low"], row["bootstrap_delta_high"] = _bootstrap(uri, a, base, seeds)
            elif not a.confirm and not base.confirm:
                row["delta_vs_baseline"] = row[f"{TEST_MACRO_F1}_mean"] - base.parent.metrics.get(TEST_MACRO_F1, NAN)
        out.append({c: row[c] for c in COLUMNS})
    for r, adjusted in zip(out, holm([r["p_ttest"] for r in out])):
        r["p_holm"] = adjusted
    return out


def _nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _num(v: Any, digits: int = 3) -> str:
    return "–" if _nan(v) else f"{v:.{digits}f}"


def _p(v: float) -> str:
    return "–" if _nan(v) else (f"{v:.3f}" if v >= 0.001 else "<0.001")


def _ci(row: dict[str, Any], m: str) -> str:
    low, high = row[f"{m}_ci_low"], row[f"{m}_ci_high"]
    return "–" if _nan(low) else f"[{low:.3f}, {high:.3f}]"


def significant(row: dict[str, Any]) -> bool:
    return not _nan(row["p_holm"]) and row["p_holm"] < ALPHA


def config_text(row: dict[str, Any]) -> str:
    """The searched keys of the final config (all of it when nothing is known to be searched)."""
    config = json.loads(row["config"])
    keys = row["searched"].split(",") if row["searched"] else list(config)
    return ", ".join(f"{k}={_short(config[k])}" for k in keys if k in config) or "–"


def describe(row: dict[str, Any]) -> str:
    """A parent run's description (markdown, for ``mlflow.note.content``): final config and test macro-F1."""
    m, n = row[f"{TEST_MACRO_F1}_mean"], row["n_seeds"]
    if _nan(row[f"{TEST_MACRO_F1}_ci_low"]):
        score = f"test macro-F1 {_num(m)} ({'one seed' if n == 1 else 'a single run, no confirmation seeds'})"
    else:
        half = (row[f"{TEST_MACRO_F1}_ci_high"] - row[f"{TEST_MACRO_F1}_ci_low"]) / 2
        score = f"test macro-F1 {m:.3f} ± {half:.3f} (95 % CI over {n} seeds)"
    return f"**{row['approach']}** final config: {config_text(row)}\n\n{score}"


def verdict(table: list[dict[str, Any]]) -> list[str]:
    """Plain words that claim only what the intervals and the Holm-adjusted tests support."""
    confirmed = [r for r in table if r["n_seeds"] >= 2]
    if not confirmed:
        return ["No confirmation runs: every figure above is a single run, with no interval. Seeds alone move "
                "a single run's test score, so these figures rank nothing; run the study with confirmation "
                "seeds for a verdict."]
    lines = []
    single = [r["approach"] for r in table if r["n_seeds"] < 2]
    if single:
        lines.append(f"- Fewer than 2 confirmation seeds, so no interval and no claim: {', '.join(single)}.")
    base = next((r for r in table if r["approach"] == BASELINE), None)
    if base is None:
        lines.append(f"- No `{BASELINE}` approach in this study: no paired comparison.")
    for r in confirmed:
        if base is None or r is base or _nan(r["p_ttest"]):
            if base is not None and r is not base:
                lines.append(f"- {r['approach']}: no paired test with {BASELINE} (fewer than 2 shared seeds, "
                             "or identical scores).")
            continue
        d, boot = r["delta_vs_baseline"], ""
        if not _nan(r["bootstrap_delta_low"]):
            boot = f"; pooled bootstrap interval [{r['bootstrap_delta_low']:+.3f}, {r['bootstrap_delta_high']:+.3f}]"
        if significant(r):
            word = "better" if d > 0 else "worse"
            lines.append(f"- **{r['approach']} is {word} than {BASELINE}**: {d:+.3f} test macro-F1 "
                         f"(Holm-adjusted p {_p(r['p_holm'])}{boot}).")
        else:
            lines.append(f"- {r['approach']} is not separated from {BASELINE}: {d:+.3f} test macro-F1, "
                         f"Holm-adjusted p {_p(r['p_holm'])}{boot}.")
    key = f"{TEST_MACRO_F1}_mean"
    top = max(confirmed, key=lambda r: r[key])
    overlap = [r["approach"] for r in confirmed if r is not top and r[f"{TEST_MACRO_F1}_ci_high"] >= top[f"{TEST_MACRO_F1}_ci_low"]]
    if len(confirmed) > 1:
        if overlap:
            lines.append(f"- Highest mean test macro-F1: {top['approach']} ({top[key]:.3f}); its 95 % interval overlaps "
                         f"those of {', '.join(overlap)}, so this study does not order them.")
        else:
            lines.append(f"- Highest mean test macro-F1: {top['approach']} ({top[key]:.3f}); its 95 % interval lies "
                         "above every other approach's.")
    return lines


# The first seed paper's Table 1 (validation split, one run per method, 224 px photos of cats and dogs at
# 1000 : 11000, 10 to 50 epochs): macro-F1 in %, by the approach names of search_spaces/paper.yaml.
PAPER_TABLE1 = {"paper_over_aug": 78.49, "paper_over_dup": 58.90, "paper_over_smote": 69.24, "paper_under_cluster": 56.67,
                "paper_under_random": 62.51, "baseline": 57.60, "paper_class_weight": 67.31, "paper_focal": 51.76,
                "paper_transfer": 95.19}


def paper_section(table: list[dict[str, Any]]) -> list[str]:
    """The paper's macro-F1 beside ours, with what differs between the two."""
    lines = ["## The first seed paper's Table 1 beside ours", "",
             "The paper: one run per method, macro-F1 on its validation split, 224 px photos (Kaggle cats and dogs, "
             "1000 : 11000), 10 to 50 epochs, ImageNet weights for transfer. Ours: the same methods and settings "
             "(Adam at 1e-4, resampling to balance, mean = std = 0.5), but 32 px Animal-MNIST silhouettes at 1 : 11, "
             "one shared epoch budget, source-task weights standing in for ImageNet, and the test split, over the "
             "confirmation seeds. The data differ, so compare the ordering, not the numbers.", "",
             "| method | paper macro-F1 (%) | ours: test macro-F1 (%) | ours: 95 % CI | seeds |", "|---|---|---|---|---|"]
    for r in table:
        if r["approach"] not in PAPER_TABLE1:
            continue
        mean, low, high = (r[f"{TEST_MACRO_F1}_{k}"] for k in ("mean", "ci_low", "ci_high"))
        ours = "–" if _nan(mean) else f"{100 * mean:.1f}"
        ci = "–" if _nan(low) else f"[{100 * low:.1f}, {100 * high:.1f}]"
        lines.append(f"| {r['approach']} | {PAPER_TABLE1[r['approach']]:.2f} | {ours} | {ci} | {r['n_seeds']} |")
    return lines + [""]


def write_markdown(table: list[dict[str, Any]], results: list[importance.Importance], path: Path, experiment: str,
                   study_id: str, parent: store.Run, unfinished: list[store.Run]) -> None:
    minority = parent.tags.get("minority", "minority")
    confirmed = any(r["n_seeds"] for r in table)
    intro = (f"Each approach's final configuration (its `config_rank` among the search's top configurations) retrained "
             f"from scratch for the full epoch budget, no early stopping, over several trial seeds; each seed is scored "
             f"on the test split at its own validation-selected epoch. Mean over seeds with its 95 % Student-t "
             f"interval. Δ: mean paired difference to `{BASELINE}` over shared seeds; p: paired t-test and Wilcoxon "
             f"signed-rank over those seeds; Holm: the t-test p adjusted over the comparisons with `{BASELINE}`; "
             f"bootstrap: 95 % paired bootstrap interval of the macro-F1 difference on the pooled test predictions. "
             f"`*`: Holm-adjusted p < {ALPHA}." if confirmed else
             "No confirmation runs: each figure is a single run (the search's best trial), no interval, no test.")
    cols = ["approach", "seeds", "test macro-F1", "95 % CI", f"{minority} recall", "balanced acc.", "expected cost",
            "Δ vs baseline", "p t-test", "p Wilcoxon", "p Holm", "bootstrap Δ 95 %", "search val macro-F1", "final config"]
    lines = [f"# {experiment}: study {study_id}", "", f"Data: {parent.tags.get('data', '?')}; classes "
             f"{', '.join(json.loads(parent.tags.get('classes', '[]')))}; minority {minority}.", "", intro, "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in table:
        boot = "–" if _nan(r["bootstrap_delta_low"]) else f"[{r['bootstrap_delta_low']:+.3f}, {r['bootstrap_delta_high']:+.3f}]"
        cells = [r["approach"], str(r["n_seeds"]), _num(r[f"{TEST_MACRO_F1}_mean"]), _ci(r, TEST_MACRO_F1),
                 _num(r["test_minority_recall_mean"]), _num(r["test_balanced_accuracy_mean"]),
                 _num(r["test_expected_cost_mean"]),
                 "–" if _nan(r["delta_vs_baseline"]) else f"{r['delta_vs_baseline']:+.3f}" + ("*" if significant(r) else ""),
                 _p(r["p_ttest"]), _p(r["p_wilcoxon"]), _p(r["p_holm"]), boot, _num(r["search_val_macro_f1"]),
                 config_text(r)]
        lines.append("| " + " | ".join(cells) + " |")
    if unfinished:
        lines += ["", "Not finished, left out: " + ", ".join(f"{r.approach} ({r.status})" for r in unfinished) + "."]
    lines += ["", "## What the numbers support", "", *verdict(table), "", "![comparison](comparison.png)", ""]
    if any(r["approach"] in PAPER_TABLE1 and r["approach"] != BASELINE for r in table):
        lines += paper_section(table)
    lines += importance.markdown(results)
    path.write_text("\n".join(lines) + "\n")


def _curve(uri: str, run_ids: list[str], key: str) -> tuple[list[int], list[float]]:
    """The per-epoch mean over runs (each epoch over the runs that reached it)."""
    by_step: dict[int, list[float]] = {}
    for run_id in run_ids:
        for step, value in store.history(uri, run_id, key):
            by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    return steps, [sum(by_step[s]) / len(by_step[s]) for s in steps]


def _curve_runs(a: Approach) -> list[str]:
    """The runs an approach's learning curve averages: its confirm runs, else its best search trial."""
    if a.confirm:
        return [r.run_id for r in a.confirm]
    return [max(a.trials, key=lambda t: t.value).run_id] if a.trials else []


def comparison_figure(uri: str, approaches: list[Approach], table: list[dict[str, Any]]) -> Figure:
    """Test macro-F1 per approach with its 95 % interval; learning curves (loss on a log axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    colours = {a.name: plt.get_cmap("tab10")(i % 10) for i, a in enumerate(approaches)}
    ax, key = axes[0], f"{TEST_MACRO_F1}_mean"
    for i, r in enumerate(table):
        mean, low, high = r[key], r[f"{TEST_MACRO_F1}_ci_low"], r[f"{TEST_MACRO_F1}_ci_high"]
        yerr = None if _nan(low) else [[mean - low], [high - mean]]
        ax.errorbar([i], [mean], yerr=yerr, fmt="o", capsize=6, color=colours[r["approach"]])
        if r["approach"] == BASELINE and not _nan(mean):
            ax.axhline(mean, ls=":", color="grey", lw=1)
    ax.set_xticks(range(len(table)), [r["approach"] for r in table], rotation=30, ha="right")
    ax.set_xlim(-0.5, len(table) - 0.5)
    ax.set_ylabel("test macro-F1")
    confirmed = any(r["n_seeds"] >= 2 for r in table)
    ax.set_title("mean over seeds, 95 % interval" if confirmed else "single runs (no confirmation seeds)", fontsize=10)
    for ax, (label, train_key, val_key) in zip(axes[1:], CURVES):
        for a in approaches:
            for k, style in ((train_key, "--"), (val_key, "-")):
                steps, values = _curve(uri, _curve_runs(a), k)
                if steps:
                    ax.plot(steps, values, style, color=colours[a.name], label=f"{a.name} {k.split('_')[0]}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        if label == "loss":
            ax.set_yscale("log")
        source = "confirm runs (mean over seeds)" if any(a.confirm for a in approaches) else "best search trial"
        ax.set_title(f"{label}: {source}; dashed train, solid validation", fontsize=9)
        if ax.lines:
            ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def write_report(uri: str, experiment: str, out_dir: Path, study_id: str | None = None) -> Path:
    """Write ``summary.md``, ``summary.csv`` and ``comparison.png`` under ``out_dir`` and attach each
    approach's hyperparameter importance to its parent run; returns the summary's path."""
    study_id, finished, unfinished = select(uri, experiment, study_id)
    approaches = [gather(uri, experiment, p) for p in finished]
    table = rows(uri, approaches)
    results = [importance.for_parent(uri, a.parent, a.trials) for a in approaches]
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows({k: "" if _nan(v) else v for k, v in r.items()} for r in table)
    write_markdown(table, results, out_dir / "summary.md", experiment, study_id, finished[0], unfinished)
    import matplotlib.pyplot as plt

    fig = comparison_figure(uri, approaches, table)
    fig.savefig(out_dir / "comparison.png", dpi=110)
    plt.close(fig)
    return out_dir / "summary.md"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m study.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", required=True, help="the space (MLflow experiment) to summarise")
    ap.add_argument("--tracking-uri", default=store.DEFAULT_TRACKING_URI,
                    help=f"MLflow tracking URI (default {store.DEFAULT_TRACKING_URI})")
    ap.add_argument("--study-id", default=None, help="which study of the space (default: the latest with a finished approach)")
    ap.add_argument("--results-dir", default="results", help="writes <results-dir>/<space>/")
    args = ap.parse_args(argv)
    # a server that dies mid-report: MLflow's client would retry each request for minutes by default
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    uri = store.absolute_uri(args.tracking_uri)
    try:
        store.check_uri(uri, exists=True)
        out = write_report(uri, args.space, Path(args.results_dir) / args.space, args.study_id)
    except (ReportError, store.StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
