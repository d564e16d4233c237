"""results/<space>/summary.{md,csv} and comparison.png, rebuilt from MLflow (the one source of truth).

    python -m study.report --space all
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from study.tracking import DEFAULT_TRACKING_URI, absolute_uri  # noqa: E402

CURVES = (("train_loss", "val_loss"), ("train_macro_f1", "macro_f1"))


def _parents(client: MlflowClient, experiment: str, study_id: str | None) -> list[Any]:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"error: no MLflow experiment '{experiment}' at {client.tracking_uri}")
    runs = client.search_runs([exp.experiment_id], "tags.role = 'parent' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1000)
    if not runs:
        raise SystemExit(f"error: experiment '{experiment}' has no finished study yet")
    study_id = study_id or runs[0].data.tags["study_id"]
    return sorted((r for r in runs if r.data.tags["study_id"] == study_id), key=lambda r: r.data.tags["approach"])


def _classes(run: Any) -> list[str]:
    return sorted({k[len("test_f1_"):] for k in run.data.metrics if k.startswith("test_f1_")})


def rows(parents: list[Any]) -> list[dict[str, Any]]:
    """One row per approach in the form of the seed paper's Table 1, validation and test."""
    out = []
    for run in parents:
        m, p = run.data.metrics, run.data.params
        row: dict[str, Any] = {"approach": run.data.tags["approach"], "best epoch": int(m.get("best_epoch", 0)),
                               "max epochs": p.get("best.epochs", ""), "trials": run.data.tags.get("trials", "")}
        for split, pre in (("val", "val_"), ("test", "test_")):
            row[f"{split} accuracy"] = m.get(f"{pre}accuracy")
            for k in ("precision", "recall", "f1"):
                key = "macro_f1" if (split == "val" and k == "f1") else f"{pre}macro_{k}"
                row[f"{split} macro {k[0].upper() if k != 'f1' else 'F1'}"] = m.get(key)
            for c in _classes(run):
                for k in ("precision", "recall", "f1"):
                    row[f"{split} {c} {k[0].upper() if k != 'f1' else 'F1'}"] = m.get(f"{pre}{k}_{c}")
        for split, pre in (("val", "val_"), ("test", "test_")):
            row[f"{split} expected cost"] = m.get(f"{pre}expected_cost", "")  # cost approaches only
        searched = run.data.tags.get("searched", "").split(",")
        row["best config"] = ", ".join(f"{k}={_short(p[f'best.{k}'])}" for k in searched if f"best.{k}" in p)
        out.append(row)
    return out


def _short(value: str) -> str:
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value


def _fmt(v: Any, column: str = "") -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if "cost" in column else f"{100 * v:.2f}"
    return str(v)


def write_markdown(table: list[dict[str, Any]], path: Path, experiment: str, study_id: str) -> None:
    cols = list(table[0])
    lines = [f"# {experiment}: study {study_id}", "",
             "Best trial per approach (validation picks it; test is its best-epoch checkpoint, touched once). "
             "Percentages; P/R/F1 are macro averages unless a class is named; expected cost is the mean "
             "misclassification cost per sample (cost approaches only).", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[c], c) for c in cols) + " |" for r in table]
    lines += ["", "![comparison](comparison.png)", ""]
    path.write_text("\n".join(lines))


def write_plot(client: MlflowClient, parents: list[Any], table: list[dict[str, Any]], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    names = [r["approach"] for r in table]
    x = range(len(names))
    axes[0].bar([i - 0.2 for i in x], [r["val macro F1"] or 0 for r in table], 0.4, label="validation")
    axes[0].bar([i + 0.2 for i in x], [r["test macro F1"] or 0 for r in table], 0.4, label="test")
    axes[0].set_xticks(list(x), names, rotation=30, ha="right")
    axes[0].set_ylabel("macro-F1")
    axes[0].set_ylim(0, 1.15)
    axes[0].set_title("best trial per approach")
    axes[0].legend(loc="upper center", ncol=2)
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(names)}  # one colour per approach
    for ax, (train_key, val_key) in zip(axes[1:], CURVES):
        for run in parents:
            child, approach = run.data.tags.get("best_run_id"), run.data.tags["approach"]
            if not child:
                continue
            for key, style in ((train_key, "--"), (val_key, "-")):
                hist = sorted(client.get_metric_history(child, key), key=lambda m: m.step)
                ax.plot([m.step for m in hist], [m.value for m in hist], style, color=colours.get(approach),
                        label=f"{approach} {'train' if key == train_key else 'val'}")
        ax.set_xlabel("epoch")
        ax.set_title("best trials: " + ("loss" if "loss" in val_key else "macro-F1") + " (dashed train, solid validation)",
                     fontsize=10)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(uri: str, experiment: str, out_dir: Path, study_id: str | None = None) -> Path:
    client = MlflowClient(tracking_uri=absolute_uri(uri))
    parents = _parents(client, experiment, study_id)
    table = rows(parents)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = parents[0].data.tags["study_id"]
    write_markdown(table, out_dir / "summary.md", experiment, study)
    with open(out_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    write_plot(client, parents, table, out_dir / "comparison.png")
    return out_dir / "summary.md"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m study.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", required=True, help="the space (MLflow experiment) to summarise")
    ap.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help=f"MLflow tracking URI (default {DEFAULT_TRACKING_URI})")
    ap.add_argument("--study-id", default=None, help="which study of the space (default: the latest finished)")
    ap.add_argument("--results-dir", default="results", help="writes <results-dir>/<space>/")
    args = ap.parse_args(argv)
    print(write_report(args.tracking_uri, args.space, Path(args.results_dir) / args.space, args.study_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
