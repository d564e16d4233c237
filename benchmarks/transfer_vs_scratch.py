"""Does transfer from the animals source task beat training from scratch? A measurement, not a test.

    .venv/bin/python benchmarks/transfer_vs_scratch.py

Two arms with everything else equal: ResNet-18 from scratch, and ResNet-18 pretrained from the
source checkpoint (``python -m study.pretrain``: the eight animals that are neither cat nor dog,
``study.models.source_checkpoint(image_size)``), both fine-tuned end to end (no frozen stages)
on the default study data (animals, cat vs dog at 1 cat : 11 dogs, one split for every run)
with plain cross-entropy, the same epochs, Adam learning rate and batch size, for several
seeds (a seed sets the new head's and the scratch model's initialisation and the shuffling).
Each run is built exactly as a study trial builds it (``study.trainable.build_parts``) and
trained with the shared loop on one thread, as a trial runs. Per run: validation macro-F1
after the last epoch and at the best validation epoch, and the test macro-F1 of that same
model (the test split never chooses anything). Writes transfer.{json,md} under ``--out`` (default results/bench).

If the source checkpoint is missing, the script pretrains it first with the defaults of
``python -m study.pretrain``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from study.data import load_dataset
from study.loop import evaluate, train_one_epoch
from study.models import load_state_dict, source_checkpoint
from study.spaces import TRIAL_DEFAULTS
from study.trainable import build_parts

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "bench"
ARMS = ("scratch", "source")


def ensure_checkpoint(path: Path, image_size: int) -> str:
    """The source checkpoint, pretrained now when it is missing (as a study does)."""
    if path.exists():
        return "found"
    from study.pretrain import pretrain

    print(f"no source checkpoint at {path}: pretraining it now (python -m study.pretrain --image-size {image_size})")
    pretrain(path, image_size=image_size)
    return "pretrained by this script"


def stats(values: list[float]) -> dict:
    return {"mean": round(statistics.mean(values), 4), "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "min": round(min(values), 4), "max": round(max(values), 4)}


def run(arm: str, seed: int, data, state: dict, args) -> dict:
    config = {**TRIAL_DEFAULTS, "trial_seed": seed, "lr": args.lr, "batch_size": args.batch_size, "epochs": args.epochs,
              "model": "scratch" if arm == "scratch" else "pretrained", "weights": None if arm == "scratch" else "source",
              "freeze": "none", "cpus": args.threads, "gpus": 0}
    p = build_parts(config, data, {f"source@{config['backbone']}": state})
    generator = torch.Generator().manual_seed(seed)
    curve, best, start = [], None, time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        train_one_epoch(p.model, p.train.images, p.train.labels, p.loss, p.optimizer, batch_size=args.batch_size,
                        generator=generator, augment_mask=p.train.augment, device=p.device)
        val = evaluate(p.model, data.val.images, data.val.labels, p.loss, batch_size=256, device=p.device)
        val = val.metrics(data.classes, data.minority)
        curve.append(round(val["macro_f1"], 4))
        if best is None or val["macro_f1"] > best[1]["macro_f1"]:  # the first best epoch, as a study keeps it
            best = (epoch, val, copy.deepcopy(p.model.state_dict()))
    final_test = evaluate(p.model, data.test.images, data.test.labels, p.loss, batch_size=256, device=p.device)
    final_test = final_test.metrics(data.classes, data.minority)
    p.model.load_state_dict(best[2])
    best_test = evaluate(p.model, data.test.images, data.test.labels, p.loss, batch_size=256, device=p.device)
    best_test = best_test.metrics(data.classes, data.minority)
    minority = data.minority_name
    return {
        "arm": arm, "seed": seed, "val_macro_f1_curve": curve, "seconds": round(time.perf_counter() - start, 1),
        "final": {"val_macro_f1": curve[-1], "test_macro_f1": round(final_test["macro_f1"], 4),
                  f"test_recall_{minority}": round(final_test[f"recall_{minority}"], 4)},
        "best": {"epoch": best[0], "val_macro_f1": round(best[1]["macro_f1"], 4),
                 "test_macro_f1": round(best_test["macro_f1"], 4),
                 f"test_recall_{minority}": round(best_test[f"recall_{minority}"], 4)},
    }


def summarise(runs: list[dict], minority: str) -> dict:
    out = {}
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        out[arm] = {f"{when}_{k}": stats([r[when][k] for r in mine])
                    for when in ("final", "best") for k in ("val_macro_f1", "test_macro_f1", f"test_recall_{minority}")}
        curves = [r["val_macro_f1_curve"] for r in mine]
        out[arm]["val_macro_f1_per_epoch_mean"] = [round(statistics.mean(c), 4) for c in zip(*curves, strict=False)]
    for when in ("final", "best"):
        for k in ("val_macro_f1", "test_macro_f1"):
            diffs = [s[when][k] - c[when][k] for s, c in zip((r for r in runs if r["arm"] == "source"),
                                                             (r for r in runs if r["arm"] == "scratch"), strict=False)]
            out.setdefault("source_minus_scratch", {})[f"{when}_{k}"] = {
                **stats(diffs), "seeds_where_source_wins": sum(d > 0 for d in diffs), "seeds": len(diffs)}
    return out


def fmt(s: dict) -> str:
    return f"{s['mean']:.3f} ± {s['std']:.3f}"


def write(figures: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "transfer.json").write_text(json.dumps(figures, indent=2) + "\n")
    s, m = figures["summary"], figures["minority"]
    d = s["source_minus_scratch"]
    n = len(figures["seeds"])
    rows = []
    for arm in ARMS:
        a = s[arm]
        rows.append(f"| {arm} | {fmt(a['final_val_macro_f1'])} | {fmt(a['final_test_macro_f1'])} | "
                    f"{fmt(a[f'final_test_recall_{m}'])} | {fmt(a['best_val_macro_f1'])} | {fmt(a['best_test_macro_f1'])} | "
                    f"{fmt(a[f'best_test_recall_{m}'])} |")
    rows.append(f"| source − scratch (paired by seed) | {fmt(d['final_val_macro_f1'])} | {fmt(d['final_test_macro_f1'])} | "
                f"| {fmt(d['best_val_macro_f1'])} | {fmt(d['best_test_macro_f1'])} | |")
    wins = {k: f"{v['seeds_where_source_wins']}/{v['seeds']}" for k, v in d.items()}
    per_run = "\n".join(
        f"| {r['arm']} | {r['seed']} | {' '.join(f'{v:.2f}' for v in r['val_macro_f1_curve'])} | {r['final']['test_macro_f1']:.3f} "
        f"| {r['best']['epoch']} | {r['best']['val_macro_f1']:.3f} | {r['best']['test_macro_f1']:.3f} | {r['seconds']} |"
        for r in figures["runs"])
    curves = "\n".join(f"| {arm} | {' | '.join(f'{v:.3f}' for v in s[arm]['val_macro_f1_per_epoch_mean'])} |"
                       for arm in ARMS)
    src = figures["source_checkpoint"]
    md = f"""# Transfer from the animals source task vs training from scratch

Command: `{figures['command']}` (wall {figures['wall_s']} s)

Machine: {figures['machine']}; torch {figures['torch']}, Python {figures['python']}, {figures['threads']} thread(s) per run.

Setting, the same for both arms: data `{figures['data']}` at {figures['image_size']} px, one split (data seed
{figures['data_seed']}): training {figures['train_counts']} (1 : 11), validation {figures['val_counts']}, test
{figures['test_counts']}; plain cross-entropy, no resampling, Adam lr {figures['lr']}, batch {figures['batch_size']},
{figures['epochs']} epoch(s), nothing frozen, seeds {', '.join(map(str, figures['seeds']))} (a seed sets initialisation
and shuffling). `scratch`: ResNet-18 with random weights. `source`: ResNet-18 from `{src['path']}`
({src['how']}; pretrained {src['epochs']} epochs on the eight other animals, source-task validation accuracy
{src['val_accuracy']:.3f}) with a fresh 2-class head. Each run is built by `study.trainable.build_parts`, as a study trial.

Macro-F1, mean ± standard deviation over {n} seeds. "Final": after the last epoch. "Best": the epoch with the best
validation macro-F1 (what a study keeps), and the test figures of that same model; the test split chooses nothing.

| arm | final val macro-F1 | final test macro-F1 | final test {m} recall | best val macro-F1 | test macro-F1 at best val | test {m} recall at best val |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Seeds where source beats scratch: final val {wins['final_val_macro_f1']}, final test {wins['final_test_macro_f1']},
best val {wins['best_val_macro_f1']}, test at best val {wins['best_test_macro_f1']}.

{figures['verdict']}

Validation macro-F1 per epoch, mean over the seeds (the learning curves):

| arm | {' | '.join(f'epoch {e}' for e in range(1, figures['epochs'] + 1))} |
|---|{'---|' * figures['epochs']}
{curves}

## Per run

| arm | seed | val macro-F1 per epoch | final test macro-F1 | best epoch | best val macro-F1 | test macro-F1 at best | seconds |
|---|---|---|---|---|---|---|---|
{per_run}
"""
    (out / "transfer.md").write_text(md)


def verdict(summary: dict) -> str:
    d = summary["source_minus_scratch"]
    parts = []
    for key, name in (("best_test_macro_f1", "test macro-F1 at the best validation epoch"),
                      ("final_test_macro_f1", "final test macro-F1")):
        diff = d[key]
        sign = "higher" if diff["mean"] > 0 else "lower"
        clear = abs(diff["mean"]) > 2 * diff["std"] / (diff["seeds"] ** 0.5) if diff["seeds"] > 1 else False
        parts.append(f"{name}: source is {abs(diff['mean']):.3f} {sign} on average "
                     f"({diff['seeds_where_source_wins']}/{diff['seeds']} seeds; "
                     f"{'more' if clear else 'less'} than two standard errors of the paired difference)")
    return "Reading: " + "; ".join(parts) + "."


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3, the study's default)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--data-seed", type=int, default=0, help="the split, the same for every run")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1, as a study trial)")
    ap.add_argument("--out", type=Path, default=OUT, help="folder for transfer.json and transfer.md (default results/bench)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = ".venv/bin/python benchmarks/transfer_vs_scratch.py" + (
        " " + " ".join(sys.argv[1:] if argv is None else argv) if (argv or sys.argv[1:]) else "")
    start = time.perf_counter()
    path = source_checkpoint(args.image_size)
    if not path.is_absolute():
        path = ROOT / path
    how = ensure_checkpoint(path, args.image_size)
    blob = torch.load(path, map_location="cpu", weights_only=True)  # how it was pretrained, for the report
    state = load_state_dict(path)
    data = load_dataset("animals", image_size=args.image_size, seed=args.data_seed, cache_dir=ROOT / "results" / "cache")
    print(data.summary(), flush=True)
    runs = []
    for seed in args.seeds:
        for arm in ARMS:
            r = run(arm, seed, data, state, args)
            runs.append(r)
            print(f"{arm:8s} seed {seed}: val macro-F1 per epoch {r['val_macro_f1_curve']}, final test "
                  f"{r['final']['test_macro_f1']:.3f}, best epoch {r['best']['epoch']} test {r['best']['test_macro_f1']:.3f} "
                  f"({r['seconds']} s)", flush=True)
    k = data.num_classes
    summary = summarise(runs, data.minority_name)
    figures = {
        "command": command, "wall_s": round(time.perf_counter() - start, 1),
        "machine": f"{os.cpu_count()} cores, no GPU, shared with other jobs (noisy)", "torch": torch.__version__,
        "python": platform.python_version(), "threads": args.threads, "data": "animals", "image_size": args.image_size,
        "data_seed": args.data_seed, "classes": list(data.classes), "minority": data.minority_name,
        "train_counts": dict(zip(data.classes, data.train.counts(k), strict=False)), "val_counts": dict(zip(data.classes, data.val.counts(k), strict=False)),
        "test_counts": dict(zip(data.classes, data.test.counts(k), strict=False)), "lr": args.lr, "batch_size": args.batch_size,
        "epochs": args.epochs, "seeds": args.seeds,
        "source_checkpoint": {"path": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path), "how": how,
                              "epochs": blob.get("epochs"), "val_accuracy": blob.get("val_accuracy")},
        "summary": summary, "verdict": verdict(summary), "runs": runs,
    }
    write(figures, args.out)
    for arm in ARMS:
        a = summary[arm]
        print(f"{arm}: best-val macro-F1 {fmt(a['best_val_macro_f1'])}, test at best {fmt(a['best_test_macro_f1'])}; "
              f"final val {fmt(a['final_val_macro_f1'])}, final test {fmt(a['final_test_macro_f1'])}")
    print(figures["verdict"])
    print(f"wrote {args.out / 'transfer.json'} and {args.out / 'transfer.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
