"""results/<space>/summary.{md,csv} and its figures, rebuilt from MLflow (the one source of truth).

    python -m study.report --space all [--study-id ID] [--tracking-uri URI] [--results-dir DIR] [--rope R]

The verdict comes from the confirmation runs (children tagged ``phase=confirm``): each approach's final
configuration retrained over paired seeds (``confirm_seed``; ``baseline`` runs the same seeds), each
scored on the test split at its own validation-selected epoch. Per approach: the mean over seeds with a
95 % interval that stays in the metric's range (``study.stats.bounded_interval``). Against ``baseline``,
over the seeds both have: the verdict (better / worse / practically equivalent / undecided at this
budget) from the closed-form posterior of the mean paired difference with a region of practical
equivalence (``--rope``, else the parents' ``rope`` tag, else 0.02) and the resplit correction (the
parents' ``split_rho`` tag, else 0); the minimum detectable difference at those seeds; the test split's
sampling error; and, for reference only, the Holm-adjusted paired t-test and Wilcoxon. Writes
``comparison.png`` (forest plot), ``curves.png`` (learning curves) and ``front.png`` (the F1-cost front),
and sets each parent run's ``verdict`` tag, description and name. Without confirmation runs the figures
are single runs and nothing is ranked.
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

import numpy as np

from study import importance, store
from study.errors import Parser, StudyError, cli
from study.names import TEST_MACRO_F1, VAL_MACRO_F1
from study.stats import (
    BETTER,
    EQUIVALENT,
    UNDECIDED,
    WORSE,
    bounded_interval,
    holm,
    min_detectable_difference,
    paired_tests,
    test_sampling_error,
    verdict,
    verdict_needs,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BASELINE = "baseline"  # the approach every other one is compared with
ALPHA = 0.05  # significance level of the reference tests, after Holm
DEFAULT_ROPE, DEFAULT_RHO = 0.02, 0.0
COST, MEC_COST = "test_expected_cost", "test_mec_expected_cost"  # argmax decisions; minimum-expected-cost ones
SUMMARY_METRICS = (TEST_MACRO_F1, "test_minority_recall", "test_balanced_accuracy", COST, MEC_COST,
                   "test_final_macro_f1")  # the last: at the fixed final epoch, as papers report
UNBOUNDED_ABOVE = (COST, MEC_COST)  # >= 0; the rest lie in [0, 1]
PREDICTIONS = "test_predictions.json"  # on each confirm run: {"y_true": [...], "y_pred": [...], "probs": [[...]]}
CALIBRATION = ("val_temperature", "test_ece", "test_calibrated_ece", "test_brier", "test_calibrated_brier",
               "test_mec_uncalibrated_expected_cost", MEC_COST)
CURVES = (("loss", "train_loss", "val_loss"), ("macro-F1", "train_macro_f1", VAL_MACRO_F1))
COLOURS = {BETTER: "tab:green", WORSE: "tab:red", EQUIVALENT: "tab:blue", UNDECIDED: "tab:grey"}
COLUMNS = ("approach", "n_seeds", "config_rank",
           "test_macro_f1_mean", "test_macro_f1_sd", "test_macro_f1_ci_low", "test_macro_f1_ci_high",
           *(f"{m}_{s}" for m in SUMMARY_METRICS[1:] for s in ("mean", "ci_low", "ci_high")),
           "verdict", "p_better", "p_equivalent", "p_worse", "delta_vs_baseline", "delta_low", "delta_high",
           "paired_seeds", "rope", "split_rho", "verdict_needs", "min_detectable_difference", "test_sampling_error",
           "p_ttest", "p_wilcoxon", "p_holm", "search_val_macro_f1", "best_epoch", "searched", "config")
NAN = float("nan")


class ReportError(StudyError):
    """The report cannot be written from what the store holds (or was asked): a one-line message."""


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


def _noise_floor(uri: str, runs: list[store.Run]) -> float:
    """The test split's own sampling error of macro-F1, averaged (in variance) over the seeds with predictions."""
    variances = []
    for r in runs:
        try:
            pred = store.json_artifact(uri, r.run_id, PREDICTIONS)
        except store.StoreError:
            continue  # no predictions on this seed: the others give the figure
        variances.append(test_sampling_error(pred["y_true"], pred["y_pred"]) ** 2)
    return math.sqrt(sum(variances) / len(variances)) if variances else NAN


def _short(value: str) -> str:
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value


def _setting(parent: store.Run, tag: str, default: float) -> float:
    try:
        return float(parent.tags.get(tag, default))
    except ValueError:
        raise ReportError(f"parent run {parent.run_id} has a malformed {tag!r} tag: {parent.tags[tag]!r}") from None


def _comparison(a: Approach, base: Approach, rope: float, rho: float, comparisons: int) -> dict[str, Any]:
    """The verdict columns of ``a`` against ``base`` over the seeds both have."""
    sa, sb = a.scores(TEST_MACRO_F1), base.scores(TEST_MACRO_F1)
    seeds = sorted(set(sa) & set(sb))
    diffs = [sa[s] - sb[s] for s in seeds]
    v = verdict(diffs, rope, rho=rho)
    sd = float(sum((d - v.mean) ** 2 for d in diffs) / (len(diffs) - 1)) ** 0.5 if len(diffs) > 1 else NAN
    p_t, p_w = paired_tests([sa[s] for s in seeds], [sb[s] for s in seeds])
    return {"verdict": v.verdict, "p_better": v.p_better, "p_equivalent": v.p_equivalent, "p_worse": v.p_worse,
            "delta_vs_baseline": v.mean, "delta_low": v.low, "delta_high": v.high,
            "paired_seeds": " ".join(map(str, seeds)), "p_ttest": p_t, "p_wilcoxon": p_w,
            "verdict_needs": verdict_needs(sd, len(seeds), rope, rho=rho),
            "min_detectable_difference": min_detectable_difference(sd, len(seeds), ALPHA, comparisons=comparisons)}


def _row(uri: str, a: Approach) -> dict[str, Any]:
    """An approach's own columns: its final config and each metric's mean over seeds with its interval."""
    p = a.parent
    config = {k[len("best."):]: v for k, v in sorted(p.params.items()) if k.startswith("best.")}
    searched = importance.searched_keys(a.trials, p.tags.get(importance.SEARCHED_TAG))
    row: dict[str, Any] = {c: NAN for c in COLUMNS} | {
        "approach": a.name, "n_seeds": len(a.confirm), "config_rank": a.rank, "verdict": "", "paired_seeds": "",
        "search_val_macro_f1": p.metrics.get(VAL_MACRO_F1, NAN), "best_epoch": p.metrics.get("best_epoch", NAN),
        "searched": ",".join(k for k in searched if k in config), "config": json.dumps(config),
        "test_sampling_error": _noise_floor(uri, a.confirm)}
    for m in SUMMARY_METRICS:
        values = list(a.scores(m).values())
        if values:
            mean, sd, low, high = bounded_interval(values, upper=None if m in UNBOUNDED_ABOVE else 1.0)
        else:  # no confirmation runs: the parent's own test figure (a single run), if it logged one
            mean, sd, low, high = (NAN if a.confirm else p.metrics.get(m, NAN)), NAN, NAN, NAN
        row.update({f"{m}_mean": mean, f"{m}_ci_low": low, f"{m}_ci_high": high})
        if m == TEST_MACRO_F1:
            row[f"{m}_sd"] = sd
    return row


def rows(uri: str, approaches: list[Approach], rope: float | None = None) -> list[dict[str, Any]]:
    """One row per approach, columns :data:`COLUMNS`; NaN (or "") where a figure does not exist. ``rope``
    overrides the parents' ``rope`` tags; the Holm family is the approaches compared with ``baseline``."""
    base = next((a for a in approaches if a.name == BASELINE), None)
    compared = [a for a in approaches if base is not None and a is not base and a.confirm and base.confirm]
    out = []
    for a in approaches:
        row = _row(uri, a)
        row["rope"] = _setting(a.parent, "rope", DEFAULT_ROPE) if rope is None else rope
        row["split_rho"] = _setting(a.parent, "split_rho", DEFAULT_RHO)
        if a in compared:
            row.update(_comparison(a, base, row["rope"], row["split_rho"], len(compared)))
        elif base is not None and a is not base and not a.confirm and not base.confirm:
            row["delta_vs_baseline"] = row[f"{TEST_MACRO_F1}_mean"] - base.parent.metrics.get(TEST_MACRO_F1, NAN)
        out.append({c: row[c] for c in COLUMNS})
    for r, adjusted in zip(out, holm([r["p_ttest"] for r in out]), strict=False):
        r["p_holm"] = adjusted
    return out


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """The names whose ``(macro-F1, cost)`` no other point dominates (F1 at least as high and cost at least
    as low, one of them strictly), by cost; points with a NaN are left out."""
    ok = {k: v for k, v in points.items() if not any(math.isnan(x) for x in v)}
    front = [k for k, (f, c) in ok.items()
             if not any(f2 >= f and c2 <= c and (f2 > f or c2 < c) for f2, c2 in ok.values())]
    return sorted(front, key=lambda k: (ok[k][1], -ok[k][0]))


def fronts(table: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The F1-cost front per decision rule whose cost the study logged: argmax, minimum expected cost."""
    out = {}
    for label, key in (("argmax decisions", COST), ("minimum-expected-cost decisions", MEC_COST)):
        points = {r["approach"]: (r[f"{TEST_MACRO_F1}_mean"], r[f"{key}_mean"]) for r in table}
        front = pareto_front(points)
        if front:
            out[label] = front
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


def config_text(row: dict[str, Any]) -> str:
    """The searched keys of the final config (all of it when nothing is known to be searched)."""
    config = json.loads(row["config"])
    keys = row["searched"].split(",") if row["searched"] else list(config)
    return ", ".join(f"{k}={_short(config[k])}" for k in keys if k in config) or "–"


def _delta(row: dict[str, Any]) -> str:
    if _nan(row["delta_low"]):
        return "–" if _nan(row["delta_vs_baseline"]) else f"{row['delta_vs_baseline']:+.3f}"
    return f"{row['delta_vs_baseline']:+.3f} [{row['delta_low']:+.3f}, {row['delta_high']:+.3f}]"


def _seeds(row: dict[str, Any]) -> int:
    return len(row["paired_seeds"].split())


def describe(row: dict[str, Any]) -> str:
    """A parent run's description (markdown): its verdict, final config and test macro-F1."""
    m, n = row[f"{TEST_MACRO_F1}_mean"], row["n_seeds"]
    if _nan(row[f"{TEST_MACRO_F1}_ci_low"]):
        score = f"test macro-F1 {_num(m)} ({'one seed' if n == 1 else 'a single run, no confirmation seeds'})"
    else:
        score = f"test macro-F1 {m:.3f}, 95 % interval {_ci(row, TEST_MACRO_F1)} over {n} seeds"
    text = f"**{row['approach']}** final config: {config_text(row)}\n\n{score}"
    if row["verdict"]:
        text += (f"\n\n**Verdict against {BASELINE}: {row['verdict']}** (ROPE ±{row['rope']:g} macro-F1, "
                 f"{_seeds(row)} paired seeds): Δ {_delta(row)}, P(better) {_num(row['p_better'])}, "
                 f"P(equivalent) {_num(row['p_equivalent'])}, P(worse) {_num(row['p_worse'])}")
    return text


def claims(table: list[dict[str, Any]]) -> list[str]:
    """Plain words that claim only what the verdicts support."""
    confirmed = [r for r in table if r["n_seeds"] >= 2]
    if not confirmed:
        return ["No confirmation runs: every figure above is a single run, with no interval. Seeds alone move "
                "a single run's test score, so these figures rank nothing; run the study with confirmation "
                "seeds for a verdict."]
    lines = []
    single = [r["approach"] for r in table if r["n_seeds"] < 2]
    if single:
        lines.append(f"- Fewer than 2 confirmation seeds, so no interval and no claim: {', '.join(single)}.")
    if not any(r["approach"] == BASELINE for r in table):
        lines.append(f"- This space has no `{BASELINE}` approach, so it gives **no verdict against the baseline**. "
                     "Each approach's tuned configuration, with its 95 % interval over seeds:")
        lines += [f"  - {r['approach']}: test macro-F1 {_num(r[f'{TEST_MACRO_F1}_mean'])} {_ci(r, TEST_MACRO_F1)} over "
                  f"{r['n_seeds']} seeds ({config_text(r)})" for r in confirmed]
        return lines
    for r in table:
        if not r["verdict"]:
            continue
        words = {BETTER: f"is **better** than {BASELINE}", WORSE: f"is **worse** than {BASELINE}",
                 EQUIVALENT: f"is **practically equivalent** to {BASELINE} (within ±{r['rope']:g})",
                 UNDECIDED: f"is **undecided at this budget** against {BASELINE}"}[r["verdict"]]
        lines.append(f"- {r['approach']} {words}: Δ {_delta(r)} test macro-F1 over {_seeds(r)} paired seeds; "
                     f"P(better) {_num(r['p_better'])}, P(equivalent) {_num(r['p_equivalent'])}, "
                     f"P(worse) {_num(r['p_worse'])}"
                     + (f"; a verdict needed |Δ| ≥ {_num(r['verdict_needs'])} at these seeds." if r["verdict"] == UNDECIDED
                        else "."))
    return lines


# The first seed paper's Table 1 (validation split, one run per method, 224 px photos of cats and dogs at
# 1000 : 11000, 10 to 50 epochs): macro-F1 in %, by the approach names of search_spaces/paper.yaml.
PAPER_TABLE1 = {"paper_over_aug": 78.49, "paper_over_dup": 58.90, "paper_over_smote": 69.24, "paper_under_cluster": 56.67,
                "paper_under_random": 62.51, "baseline": 57.60, "paper_class_weight": 67.31, "paper_focal": 51.76,
                "paper_transfer": 95.19}


def paper_section(table: list[dict[str, Any]]) -> list[str]:
    """The paper's macro-F1 beside ours (at the validation-selected epoch and at the fixed final epoch, as the paper
    reports), Table 1's ordering and ours, and their Spearman rank correlation."""
    from scipy.stats import spearmanr

    rows = [r for r in table if r["approach"] in PAPER_TABLE1]
    lines = ["## The first seed paper's Table 1 beside ours", "",
             "The paper: one run per method, macro-F1 on its validation split after a fixed number of epochs, 224 px "
             "photos (Kaggle cats and dogs, 1000 : 11000), ImageNet weights for transfer. Ours: the same methods and "
             "settings (Adam at 1e-4, resampling to balance), every method trained for the baseline's number of "
             "optimizer steps per epoch (`match_steps`), 32 px Animal-MNIST silhouettes at 1 : 11, source-task weights "
             "standing in for ImageNet, the test split, over the confirmation seeds; figures at the validation-selected "
             "epoch and at the fixed final epoch. The data differ, so compare the ordering, not the numbers.", "",
             "| method | paper macro-F1 (%) | paper rank | ours: test macro-F1 (%) [95 % CI] | ours: final epoch (%) "
             "| our rank | seeds |", "|---|---|---|---|---|---|---|"]
    paper_rank = {a: i + 1 for i, a in enumerate(sorted(PAPER_TABLE1, key=PAPER_TABLE1.__getitem__, reverse=True))}
    ours = {r["approach"]: r[f"{TEST_MACRO_F1}_mean"] for r in rows if not _nan(r[f"{TEST_MACRO_F1}_mean"])}
    our_rank = {a: i + 1 for i, a in enumerate(sorted(ours, key=ours.__getitem__, reverse=True))}
    for r in sorted(rows, key=lambda r: paper_rank[r["approach"]]):
        a, mean, low, high = r["approach"], *(r[f"{TEST_MACRO_F1}_{k}"] for k in ("mean", "ci_low", "ci_high"))
        shown = "–" if _nan(mean) else f"{100 * mean:.1f}" + ("" if _nan(low) else f" [{100 * low:.1f}, {100 * high:.1f}]")
        final = r.get("test_final_macro_f1_mean", NAN)
        lines.append(f"| {a} | {PAPER_TABLE1[a]:.2f} | {paper_rank[a]} | {shown} | "
                     f"{'–' if _nan(final) else f'{100 * final:.1f}'} | {our_rank.get(a, '–')} | {r['n_seeds']} |")
    common = [a for a in ours if a in PAPER_TABLE1]
    if len(common) >= 3:
        rho, p = spearmanr([PAPER_TABLE1[a] for a in common], [ours[a] for a in common])
        lines += ["", f"Spearman rank correlation between the paper's ordering and ours over {len(common)} methods: "
                      f"{rho:+.2f} (p {p:.2f}). Table 1's order, best first: "
                      + " > ".join(sorted(PAPER_TABLE1, key=PAPER_TABLE1.__getitem__, reverse=True)) + "."]
    return lines + [""]


def _metrics_table(table: list[dict[str, Any]], minority: str) -> list[str]:
    cols = ["approach", "seeds", "test macro-F1", "95 % interval", f"{minority} recall", "balanced acc.",
            "expected cost (argmax)", "expected cost (min. expected cost)", "test sampling error",
            "search val macro-F1", "final config"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in table:
        cells = [r["approach"], str(r["n_seeds"]), _num(r[f"{TEST_MACRO_F1}_mean"]), _ci(r, TEST_MACRO_F1),
                 f"{_num(r['test_minority_recall_mean'])} {_ci(r, 'test_minority_recall')}",
                 _num(r["test_balanced_accuracy_mean"]), f"{_num(r[f'{COST}_mean'])} {_ci(r, COST)}",
                 f"{_num(r[f'{MEC_COST}_mean'])} {_ci(r, MEC_COST)}", _num(r["test_sampling_error"]),
                 _num(r["search_val_macro_f1"]), config_text(r)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _verdict_table(table: list[dict[str, Any]]) -> list[str]:
    compared = [r for r in table if r["verdict"]]
    if not compared:
        return []
    rope = ", ".join(sorted({f"±{r['rope']:g}" for r in compared}))
    rho = ", ".join(sorted({f"{r['split_rho']:.3g}" for r in compared}))
    cols = ["approach", "verdict", "P(better)", "P(equivalent)", "P(worse)", "Δ macro-F1 [95 % posterior]",
            "paired seeds", "\\|Δ\\| a verdict needs", "min. detectable Δ (t-test)", "noise floor", "p t-test", "p Wilcoxon",
            "p Holm"]
    lines = ["## Verdicts against `baseline`", "",
             f"Posterior of the mean paired difference (approach − {BASELINE}, over the seeds both ran): "
             f"Student-t with n−1 df, scale sd·√(1/n + ρ/(1−ρ)) (ρ = n_test/(n_test + n_train) = {rho}: "
             "Nadeau & Bengio's correction for overlapping resplits, 0 for one fixed split; it widens the posterior, "
             "so a verdict needs more seeds than the plain paired t-test beside it). Region of practical equivalence "
             f"{rope} macro-F1; a verdict needs posterior probability ≥ 0.95, else it is undecided at this budget. "
             "|Δ| a verdict needs: the smallest mean difference called better (or worse) at those seeds and the "
             "observed paired SD, correction included (what this budget could decide). "
             f"Minimum detectable Δ: the true difference a paired t-test at {ALPHA} / (comparisons) detects with 80 % "
             "power at those seeds and the observed paired SD (without the resplit correction). Noise floor: the "
             "standard error of macro-F1 from the test split's finite size alone (bootstrap over its images). The "
             "paired t-test, Wilcoxon and Holm's adjustment are for reference only: nominal only under a fixed seed "
             "count, which a race does not have.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in compared:
        cells = [r["approach"], r["verdict"], _num(r["p_better"]), _num(r["p_equivalent"]), _num(r["p_worse"]),
                 _delta(r), f"{_seeds(r)} ({r['paired_seeds'] or '–'})", _num(r["verdict_needs"]),
                 _num(r["min_detectable_difference"]),
                 _num(r["test_sampling_error"]), _p(r["p_ttest"]), _p(r["p_wilcoxon"]), _p(r["p_holm"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def calibration_section(approaches: list[Approach]) -> list[str]:
    """Per approach, means over its seeds: the temperature fitted on validation, ECE and Brier score on test before
    and after it, and the minimum-expected-cost rule's cost on the raw and on the calibrated probabilities."""
    rows = []
    for a in approaches:
        means = {k: float(np.mean(list(a.scores(k).values()))) if a.scores(k) else NAN for k in CALIBRATION}
        if not _nan(means["val_temperature"]):
            rows.append(f"| {a.name} | {_num(means['val_temperature'], 2)} | {_num(means['test_ece'])} → "
                        f"{_num(means['test_calibrated_ece'])} | {_num(means['test_brier'])} → "
                        f"{_num(means['test_calibrated_brier'])} | {_num(means['test_mec_uncalibrated_expected_cost'])} → "
                        f"{_num(means[MEC_COST])} |")
    if not rows:
        return []
    return ["## Calibration", "",
            "Minimum-expected-cost decisions assume calibrated probabilities; reweighting and resampling distort them. "
            "Each confirmation run fits one temperature on validation (Guo et al. 2017) and decides its test images at "
            "minimum expected cost from the calibrated probabilities. Means over seeds, before → after; reliability "
            "diagrams (calibrated, pooled over seeds): `reliability_<approach>.png`.", "",
            "| approach | temperature | ECE (test) | Brier (test) | expected cost, min-expected-cost rule |",
            "|---|---|---|---|---|", *rows, ""]


def reliability_figures(uri: str, approaches: list[Approach], out_dir: Path) -> None:
    """``reliability_<approach>.png``: the calibrated test probabilities of every seed, pooled."""
    from study.calibration import reliability_diagram

    for a in approaches:
        probs, labels = [], []
        for r in a.confirm:
            try:
                pred = store.json_artifact(uri, r.run_id, PREDICTIONS)
            except store.StoreError:
                continue
            if pred.get("probs"):
                probs += pred["probs"]
                labels += pred["y_true"]
        if probs:
            _save(reliability_diagram(np.asarray(probs), np.asarray(labels), 15, title=f"{a.name} (calibrated)"),
                  out_dir / f"reliability_{a.name}.png")


def _front_section(table: list[dict[str, Any]]) -> list[str]:
    found = fronts(table)
    if not found:
        return []
    lines = ["## The F1-cost front", "", "Approaches no other beats on both mean test macro-F1 (higher) and mean "
             "expected cost (lower), by decision rule; intervals in the table above and in front.png.", ""]
    for label, names in found.items():
        key = COST if label.startswith("argmax") else MEC_COST
        by = {r["approach"]: r for r in table}
        points = ", ".join(f"{n} (F1 {by[n][f'{TEST_MACRO_F1}_mean']:.3f}, cost {by[n][f'{key}_mean']:.3f})"
                           for n in names)
        lines.append(f"- {label}: {points}")
    return lines + ["", "![F1-cost front](front.png)", ""]


def write_markdown(table: list[dict[str, Any]], results: list[importance.Importance], path: Path, experiment: str,
                   study_id: str, parent: store.Run, unfinished: list[store.Run], calibration: list[str]) -> None:
    minority = parent.tags.get("minority", "minority")
    confirmed = any(r["n_seeds"] for r in table)
    intro = ("Each approach's final configuration retrained from scratch over paired trial seeds, each scored on the "
             "test split at its own validation-selected epoch. Mean over seeds with a 95 % interval that stays in the "
             "metric's range (a Student-t interval on the logit scale; log scale for expected cost). Expected cost: "
             "argmax decisions, and minimum-expected-cost decisions from each model's own probabilities where logged "
             "(the one rule that compares models)." if confirmed else
             "No confirmation runs: each figure is a single run (the search's best trial), no interval, no test.")
    lines = [f"# {experiment}: study {study_id}", "", f"Data: {parent.tags.get('data', '?')}; classes "
             f"{', '.join(json.loads(parent.tags.get('classes', '[]')))}; minority {minority}.", "", intro, "",
             *_metrics_table(table, minority), ""]
    if unfinished:
        lines += ["Not finished, left out: " + ", ".join(f"{r.approach} ({r.status})" for r in unfinished) + ".", ""]
    lines += _verdict_table(table)
    lines += ["## What the numbers support", "", *claims(table), "", "![comparison](comparison.png)", "",
              "![learning curves](curves.png)", ""]
    lines += _front_section(table)
    lines += calibration
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


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _errorbar(ax: Any, x: float, y: float, xerr: tuple[float, float] | None, yerr: tuple[float, float] | None,
              **style: Any) -> None:
    def err(v: float, span: tuple[float, float] | None) -> Any:
        return None if span is None or _nan(span[0]) else [[v - span[0]], [span[1] - v]]

    ax.errorbar([x], [y], xerr=err(x, xerr), yerr=err(y, yerr), capsize=4, **style)


def comparison_figure(table: list[dict[str, Any]]) -> Figure:
    """The forest plot: Δ test macro-F1 vs ``baseline`` per approach, sorted, with its 95 % posterior interval,
    the ROPE shaded and each point coloured by its verdict. Without verdicts: each approach's test macro-F1."""
    plt = _pyplot()
    compared = sorted((r for r in table if r["verdict"]), key=lambda r: r["delta_vs_baseline"])
    shown = compared or sorted((r for r in table if not _nan(r[f"{TEST_MACRO_F1}_mean"])),
                               key=lambda r: r[f"{TEST_MACRO_F1}_mean"])
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * max(len(shown), 1)))
    if compared:
        rope = compared[0]["rope"]
        ax.axvspan(-rope, rope, color="tab:blue", alpha=0.12, label=f"ROPE ±{rope:g}")
        ax.axvline(0, color="grey", lw=1, ls=":")
        for i, r in enumerate(compared):
            _errorbar(ax, r["delta_vs_baseline"], i, (r["delta_low"], r["delta_high"]), None, fmt="o",
                      color=COLOURS[r["verdict"]])
        for word, colour in COLOURS.items():
            ax.plot([], [], "o", color=colour, label=word)
        ax.set_xlabel(f"Δ test macro-F1 vs {BASELINE} (mean paired difference, 95 % posterior interval)")
        ax.legend(fontsize=7, loc="best")
        ax.set_title("verdicts against the baseline", fontsize=10)
    else:
        for i, r in enumerate(shown):
            span = (r[f"{TEST_MACRO_F1}_ci_low"], r[f"{TEST_MACRO_F1}_ci_high"])
            _errorbar(ax, r[f"{TEST_MACRO_F1}_mean"], i, span, None, fmt="o", color="tab:grey")
        ax.set_xlabel("test macro-F1 (mean over seeds, 95 % interval)")
        ax.set_title(f"no {BASELINE} in this space: no verdict against the baseline", fontsize=10)
    ax.set_yticks(range(len(shown)), [r["approach"] for r in shown])
    ax.set_ylim(-0.7, len(shown) - 0.3)
    fig.tight_layout()
    return fig


def curves_figure(uri: str, approaches: list[Approach]) -> Figure:
    """Learning curves as small multiples, one panel per approach: macro-F1 (left axis) and loss (right, log);
    dashed train, solid validation."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    cols = min(4, max(len(approaches), 1))
    nrows = max(1, math.ceil(len(approaches) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 2.8 * nrows), squeeze=False, sharex=True)
    source = "confirm runs, mean over seeds" if any(a.confirm for a in approaches) else "best search trial"
    for ax, a in zip(axes.flat, approaches, strict=False):
        twin = ax.twinx()
        panels = ((twin, CURVES[0], "tab:orange"), (ax, CURVES[1], "tab:blue"))  # loss on the log twin
        for target, (label, train_key, val_key), colour in panels:
            for key, style in ((train_key, "--"), (val_key, "-")):
                steps, values = _curve(uri, _curve_runs(a), key)
                if steps:
                    target.plot(steps, values, style, color=colour, label=f"{label} {key.split('_')[0]}")
        twin.set_yscale("log")
        ax.set_title(a.name, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("macro-F1", fontsize=8, color="tab:blue")
        twin.set_ylabel("loss", fontsize=8, color="tab:orange")
    for ax in list(axes.flat)[len(approaches):]:
        ax.set_visible(False)
    fig.suptitle(f"learning curves ({source}); dashed train, solid validation", fontsize=10)
    fig.tight_layout()
    return fig


def front_figure(table: list[dict[str, Any]]) -> Figure:
    """Mean test macro-F1 against mean expected cost per approach, with both intervals; the Pareto front
    (higher F1, lower cost) joined, per decision rule logged (filled: argmax, hollow: min. expected cost)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    found = fronts(table)
    for label, key, face in (("argmax decisions", COST, None), ("minimum-expected-cost decisions", MEC_COST, "none")):
        for i, r in enumerate(table):
            x, y = r[f"{key}_mean"], r[f"{TEST_MACRO_F1}_mean"]
            if _nan(x) or _nan(y):
                continue
            colour = plt.get_cmap("tab20")(i % 20)
            _errorbar(ax, x, y, (r[f"{key}_ci_low"], r[f"{key}_ci_high"]),
                      (r[f"{TEST_MACRO_F1}_ci_low"], r[f"{TEST_MACRO_F1}_ci_high"]), fmt="o", color=colour,
                      mfc=face or colour, label=r["approach"] if key == COST else None)
        if label in found:
            by = {r["approach"]: r for r in table}
            xs = [by[n][f"{key}_mean"] for n in found[label]]
            ys = [by[n][f"{TEST_MACRO_F1}_mean"] for n in found[label]]
            ax.plot(xs, ys, "-" if face is None else ":", color="black", lw=1, label=f"front, {label}")
    ax.set_xlabel("test expected cost (lower is better)")
    ax.set_ylabel("test macro-F1 (higher is better)")
    ax.set_title("F1-cost front (95 % intervals)", fontsize=10)
    if ax.lines:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def _save(fig: Figure, path: Path) -> None:
    plt = _pyplot()
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def mark_parents(uri: str, approaches: list[Approach], table: list[dict[str, Any]]) -> None:
    """Each parent's description (its verdict, config and score); where there is a verdict, also its
    ``verdict`` tag and the name ``<approach> · <verdict> · <study id>``. Rebuilt from the table: idempotent."""
    for a, row in zip(approaches, table, strict=False):
        store.set_description(uri, a.parent.run_id, describe(row))
        if row["verdict"]:
            name = f"{a.name} · {row['verdict']} · {a.parent.study_id}"
            store.set_verdict(uri, a.parent.run_id, row["verdict"], name)


def write_report(uri: str, experiment: str, out_dir: Path, study_id: str | None = None,
                 rope: float | None = None) -> Path:
    """Write ``summary.md``, ``summary.csv``, ``comparison.png``, ``curves.png`` and ``front.png`` under
    ``out_dir``, attach each approach's hyperparameter importance to its parent run and mark the parents
    with their verdicts; returns the summary's path. ``rope`` overrides the parents' ``rope`` tags."""
    study_id, finished, unfinished = select(uri, experiment, study_id)
    approaches = [gather(uri, experiment, p) for p in finished]
    table = rows(uri, approaches, rope)
    results = [importance.for_parent(uri, a.parent, a.trials) for a in approaches]
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows({k: "" if _nan(v) else v for k, v in r.items()} for r in table)
    write_markdown(table, results, out_dir / "summary.md", experiment, study_id, finished[0], unfinished,
                   calibration_section(approaches))
    reliability_figures(uri, approaches, out_dir)
    _save(comparison_figure(table), out_dir / "comparison.png")
    _save(curves_figure(uri, approaches), out_dir / "curves.png")
    _save(front_figure(table), out_dir / "front.png")
    mark_parents(uri, approaches, table)
    return out_dir / "summary.md"


def _rope(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1) (a macro-F1 difference), got {text}")
    return value


UI = "http://127.0.0.1:5000"  # where `make ui` serves MLflow's UI


def runs_table_link(uri: str, experiment: str, study_id: str, ui: str = UI) -> str:
    """The MLflow UI link that opens the runs table on this study's parent runs, best test macro-F1 first (MLflow 3
    keeps the filter and the order in the URL; the verdict is in each run's name, which the table always shows)."""
    from urllib.parse import quote

    query = quote(f"tags.role = 'parent' and tags.study_id = '{study_id}'", safe="")
    order = quote("metrics.`test_macro_f1_mean`", safe="")
    return (f"{ui}/#/experiments/{store.experiment_id(uri, experiment)}/runs?searchFilter={query}"
            f"&orderByKey={order}&orderByAsc=false")


def print_links(uri: str) -> None:
    """``make ui``: the runs-table link of each experiment's latest study."""
    for experiment in store.client(uri).search_experiments():
        found = store.parents(uri, experiment.name)
        if found:
            print(f"{experiment.name}: {runs_table_link(uri, experiment.name, _latest_study(found, experiment.name))}")


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m study.report", description=__doc__, allow_abbrev=False,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", required=True, help="the space (MLflow experiment) to summarise")
    ap.add_argument("--tracking-uri", default=store.DEFAULT_TRACKING_URI,
                    help=f"MLflow tracking URI (default {store.DEFAULT_TRACKING_URI})")
    ap.add_argument("--study-id", default=None, help="which study of the space (default: the latest with a finished approach)")
    ap.add_argument("--results-dir", default="results", help="writes <results-dir>/<space>/")
    ap.add_argument("--rope", type=_rope, default=None, help="region of practical equivalence on test macro-F1 "
                    f"(default: the study's `rope` tag, else {DEFAULT_ROPE})")
    args = ap.parse_args(argv)
    # a server that dies mid-report: MLflow's client would retry each request for minutes by default
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    uri = store.absolute_uri(args.tracking_uri)
    try:
        store.check_uri(uri, exists=True)
        out = write_report(uri, args.space, Path(args.results_dir) / args.space, args.study_id, args.rope)
        study_id = args.study_id or _latest_study(store.parents(uri, args.space), args.space)
        link = runs_table_link(uri, args.space, study_id)
    except store.StoreError as err:  # a store that cannot answer is the user's to fix, as a bad flag is
        raise ReportError(str(err)) from None
    print(out)
    print(f"MLflow runs table (make ui): {link}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
