"""Does recomputing BatchNorm statistics before each evaluation change the study's figures? A measurement, not a test.

    .venv/bin/python benchmarks/bn_recalibration.py

Each run is a study trial at the default budget (``study.trainable.build_parts``: plain cross-entropy, no
resampling, Adam lr 1e-3, batch 64, scratch weights) on the embedded ``animals`` data (cat vs dog, 1 cat : 11
dogs, one split), trained with the shared loop on one thread. After every epoch the same weights are scored on
validation (and test) twice: with the running statistics training left ("stale", what a study does today) and
after ``study.loop.recalibrate_bn`` over the training split ("recalibrated"); the stale statistics are then put
back, so both columns come from one training run, which recalibration does not alter (train mode normalises
with batch statistics, and recalibration draws nothing from the trial's generator). Also timed: the
recalibration pass against the epoch's training. Writes bn_recalibration.{json,md} under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from study.data import Dataset, load_dataset
from study.loop import evaluate, recalibrate_bn, train_one_epoch
from study.losses import start_epoch
from study.spaces import TRIAL_DEFAULTS
from study.trainable import EVAL_BATCH, build_parts

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "bench"
WAYS = ("stale", "recalibrated")


def scores(p, data: Dataset) -> dict[str, dict[str, float]]:
    """Validation and test macro-F1 and minority recall of the model as it is now."""
    out = {}
    for name, split in (("val", data.val), ("test", data.test)):
        m = evaluate(p.model, split.images, split.labels, p.loss, batch_size=EVAL_BATCH, device=p.device)
        m = m.metrics(data.classes, data.minority)
        out[name] = {"macro_f1": round(m["macro_f1"], 4), "minority_recall": round(m["minority_recall"], 4)}
    return out


def run(backbone: str, seed: int, data: Dataset, args: argparse.Namespace) -> dict:
    config = {**TRIAL_DEFAULTS, "trial_seed": seed, "lr": args.lr, "batch_size": args.batch_size,
              "epochs": args.epochs, "backbone": backbone, "cpus": 1, "gpus": 0}
    p = build_parts(config, data)
    generator = torch.Generator().manual_seed(seed)
    epochs = []
    for epoch in range(1, args.epochs + 1):
        start_epoch(p.loss, epoch)
        t = time.perf_counter()
        train_one_epoch(p.model, p.train.images, p.train.labels, p.loss, p.optimizer, batch_size=args.batch_size,
                        generator=generator, augment_mask=p.train.augment, device=p.device)
        train_s = time.perf_counter() - t
        stale = scores(p, data)
        kept = {k: v.clone() for k, v in p.model.state_dict().items() if "running_" in k or "num_batches" in k}
        t = time.perf_counter()
        recalibrate_bn(p.model, data.train.images, args.batch_size, p.device)
        recal_s = time.perf_counter() - t
        fresh = scores(p, data)
        p.model.load_state_dict(kept, strict=False)  # back to the stale statistics: the run goes on as without
        epochs.append({"epoch": epoch, "train_s": round(train_s, 2), "recalibrate_s": round(recal_s, 3),
                       "stale": stale, "recalibrated": fresh})
        print(f"{backbone} seed {seed} epoch {epoch}: val macro-F1 stale {stale['val']['macro_f1']:.3f} "
              f"recalibrated {fresh['val']['macro_f1']:.3f} (train {train_s:.1f} s, recalibrate {recal_s:.2f} s)",
              flush=True)
    return {"backbone": backbone, "image_size": args.sizes[backbone], "seed": seed, "epochs": epochs}


def spread(values: list[float]) -> dict:
    return {"mean": round(statistics.mean(values), 4),
            "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "min": round(min(values), 4), "max": round(max(values), 4), "n": len(values)}


def selected(r: dict, way: str) -> dict:
    """The validation-selected epoch (the first best, as a study keeps it) under one way of scoring."""
    best = max(r["epochs"], key=lambda e: (e[way]["val"]["macro_f1"], -e["epoch"]))
    return {"epoch": best["epoch"], "val_macro_f1": best[way]["val"]["macro_f1"],
            "test_macro_f1": best[way]["test"]["macro_f1"]}


def summarise(runs: list[dict]) -> dict:
    """Paired differences recalibrated - stale: over every (seed, epoch), per epoch, per seed, at the selected epoch."""
    out = {}
    for backbone in dict.fromkeys(r["backbone"] for r in runs):
        mine = [r for r in runs if r["backbone"] == backbone]
        diff = lambda e, s="val": e["recalibrated"][s]["macro_f1"] - e["stale"][s]["macro_f1"]  # noqa: E731
        n_epochs = len(mine[0]["epochs"])
        sel = {way: [selected(r, way) for r in mine] for way in WAYS}
        out[backbone] = {
            "val_diff_all": spread([diff(e) for r in mine for e in r["epochs"]]),
            "test_diff_all": spread([diff(e, "test") for r in mine for e in r["epochs"]]),
            "val_diff_per_seed_mean": spread([statistics.mean(diff(e) for e in r["epochs"]) for r in mine]),
            # the second half of the epochs, where a study's validation-selected epoch falls
            "val_diff_late_per_seed_mean": spread([statistics.mean(diff(e) for e in r["epochs"][n_epochs // 2:])
                                                   for r in mine]),
            "val_diff_per_epoch": [spread([diff(r["epochs"][i]) for r in mine]) for i in range(n_epochs)],
            "val_curve_mean": {way: [round(statistics.mean(r["epochs"][i][way]["val"]["macro_f1"] for r in mine), 4)
                                     for i in range(n_epochs)] for way in WAYS},
            "selected": {way: {"val_macro_f1": spread([s["val_macro_f1"] for s in sel[way]]),
                               "test_macro_f1": spread([s["test_macro_f1"] for s in sel[way]]),
                               "epochs": [s["epoch"] for s in sel[way]]} for way in WAYS},
            "selected_test_diff": spread([b["test_macro_f1"] - a["test_macro_f1"]
                                          for a, b in zip(sel["stale"], sel["recalibrated"], strict=False)]),
            "one_class_epochs": {way: sum(e[way]["val"]["macro_f1"] <= 1 / 3 + 1e-4 for r in mine for e in r["epochs"])
                                 for way in WAYS},
            "train_s_per_epoch": spread([e["train_s"] for r in mine for e in r["epochs"]]),
            "recalibrate_s_per_epoch": spread([e["recalibrate_s"] for r in mine for e in r["epochs"]]),
        }
        s = out[backbone]
        s["recalibrate_over_train"] = round(s["recalibrate_s_per_epoch"]["mean"] / s["train_s_per_epoch"]["mean"], 3)
    return out


def fmt(s: dict, signed: bool = False) -> str:
    return f"{s['mean']:+.3f} ± {s['sd']:.3f}" if signed else f"{s['mean']:.3f} ± {s['sd']:.3f}"


def verdict(backbone: str, s: dict) -> str:
    d, seeds = s["val_diff_all"], s["val_diff_per_seed_mean"]
    return (f"{backbone}: recalibrated − stale validation macro-F1, mean over {d['n']} (seed, epoch) pairs "
            f"{d['mean']:+.3f} (SD {d['sd']:.3f}, range {d['min']:+.3f} to {d['max']:+.3f}); per-seed means "
            f"{seeds['mean']:+.3f} ± {seeds['sd']:.3f} over {seeds['n']} seeds; at the validation-selected epoch test "
            f"macro-F1 {fmt(s['selected']['stale']['test_macro_f1'])} stale vs "
            f"{fmt(s['selected']['recalibrated']['test_macro_f1'])} recalibrated "
            f"(paired {fmt(s['selected_test_diff'], True)}); "
            f"epochs answering one class on validation: {s['one_class_epochs']['stale']} stale, "
            f"{s['one_class_epochs']['recalibrated']} recalibrated; the pass costs "
            f"{s['recalibrate_s_per_epoch']['mean']:.2f} s an epoch, {100 * s['recalibrate_over_train']:.0f} % of "
            f"the epoch's training ({s['train_s_per_epoch']['mean']:.1f} s).")


def conclusion(backbone: str, s: dict, rope: float = 0.02) -> str:
    """Plainly: does recalibration move this backbone's macro-F1 beyond noise (2 standard errors over seeds) and
    beyond +-rope, over every epoch, over the late epochs, and at the validation-selected epoch?"""

    def judged(d: dict) -> str:
        if d["n"] < 2:
            return f"{d['mean']:+.3f} (one seed: no standard error)"
        se = d["sd"] / d["n"] ** 0.5
        clear, practical = abs(d["mean"]) > 2 * se, abs(d["mean"]) >= rope
        word = ("higher" if d["mean"] > 0 else "lower") if clear else "no clear change"
        size = "" if not clear else (f", beyond ±{rope}" if practical else f", within ±{rope}")
        return f"{d['mean']:+.3f} (standard error {se:.3f} over {d['n']} seeds: {word}{size})"

    late = len(s["val_diff_per_epoch"]) // 2 + 1
    rung = s["val_diff_per_epoch"][min(1, len(s["val_diff_per_epoch"]) - 1)]
    return (f"{backbone}: recalibrated − stale validation macro-F1 over every epoch "
            f"{judged(s['val_diff_per_seed_mean'])}; at epoch 2, ASHA's first rung (grace period 2), {judged(rung)}; "
            f"from epoch {late} on {judged(s['val_diff_late_per_seed_mean'])}; test macro-F1 at the "
            f"validation-selected epoch {judged(s['selected_test_diff'])}.")


def write(figures: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bn_recalibration.json").write_text(json.dumps(figures, indent=2) + "\n")
    sections = []
    for backbone, s in figures["summary"].items():
        n = len(s["val_diff_per_epoch"])
        head = " | ".join(f"ep {i}" for i in range(1, n + 1))
        curves = "\n".join(f"| {way} | {' | '.join(f'{v:.3f}' for v in s['val_curve_mean'][way])} |" for way in WAYS)
        diffs = " | ".join(f"{d['mean']:+.3f} ± {d['sd']:.3f}" for d in s["val_diff_per_epoch"])
        curve = lambda r, way: " ".join(f"{e[way]['val']['macro_f1']:.2f}" for e in r["epochs"])  # noqa: E731
        per_run = "\n".join(f"| {r['seed']} | {curve(r, 'stale')} | {curve(r, 'recalibrated')} |"
                             for r in figures["runs"] if r["backbone"] == backbone)
        sel = s["selected"]
        sections.append(f"""## {backbone} from scratch at {figures['sizes'][backbone]} px

{verdict(backbone, s)}

Validation macro-F1 per epoch, mean over seeds, and the paired difference (recalibrated − stale, mean ± SD
over seeds):

| | {head} |
|---|{'---|' * n}
{curves}
| difference | {diffs} |

At the validation-selected epoch (a study's choice): stale val {fmt(sel['stale']['val_macro_f1'])} (epochs
{sel['stale']['epochs']}), test {fmt(sel['stale']['test_macro_f1'])}; recalibrated val
{fmt(sel['recalibrated']['val_macro_f1'])} (epochs {sel['recalibrated']['epochs']}), test
{fmt(sel['recalibrated']['test_macro_f1'])}. Test difference over every (seed, epoch):
{fmt(s['test_diff_all'], True)}.

| seed | val macro-F1 per epoch, stale | recalibrated |
|---|---|---|
{per_run}
""")
    md = f"""# BatchNorm recalibration before each evaluation

Command: `{figures['command']}` (wall {figures['wall_s']} s; runs done: {figures['runs_done']})
{figures.get('note', '')}

Machine: {figures['machine']}; torch {figures['torch']}, Python {figures['python']}, 1 thread per run. Seconds are
wall time on that shared machine: compare the two columns of one run, not runs with each other.

Setting: data `animals` (data seed {figures['data_seed']}): training {figures['train_counts']}, validation
{figures['val_counts']}, test {figures['test_counts']}; plain cross-entropy, no resampling, Adam lr {figures['lr']},
batch {figures['batch_size']}, {figures['epochs']} epochs, seeds {figures['seeds']}. Each run is
built by `study.trainable.build_parts`, as a study trial. "stale": eval mode with the running statistics training
left (momentum 0.1), what the study does today. "recalibrated": the same weights after
`recalibrate_bn(model, data.train.images, batch_size, device)` (every trained BatchNorm layer's statistics
recomputed over the training split, one pass in batches of {figures['batch_size']}); the stale statistics are put
back afterwards, so both come from one training run.

{chr(10).join(sections)}
## Conclusion

{figures['conclusion']}
"""
    (out / "bn_recalibration.md").write_text(md)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["resnet18", "mobilenet_v2"],
                    choices=["resnet18", "mobilenet_v2"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="ResNet-18's seeds")
    ap.add_argument("--mnv2-seeds", type=int, nargs="+", default=[0, 1], help="MobileNetV2's (slower at 64 px)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--render", type=Path, help="only rewrite the report from this JSON's runs (no training)")
    ap.add_argument("--note", default="", help="with --render: a sentence on how the runs went, for the report")
    args = ap.parse_args(argv)
    if args.render:
        figures = json.loads(args.render.read_text())
        figures["summary"] = summarise(figures["runs"])
        figures["conclusion"] = " ".join(conclusion(b, s) for b, s in figures["summary"].items())
        figures["note"] = args.note or figures.get("note", "")
        write(figures, args.out)
        print(figures["conclusion"])
        return 0
    args.sizes = {"resnet18": 32, "mobilenet_v2": 64}  # the study's default; MobileNetV2 as transfer_imagenet runs it
    torch.set_num_threads(1)
    command = " ".join([".venv/bin/python benchmarks/bn_recalibration.py", *(sys.argv[1:] if argv is None else argv)])
    start = time.perf_counter()
    sizes = {args.sizes[b] for b in args.backbones}
    data = {size: load_dataset("animals", image_size=size, seed=args.data_seed, ratio=1 / 11,
                               cache_dir=ROOT / "results" / "cache") for size in sizes}
    seeds = {"resnet18": args.seeds, "mobilenet_v2": args.mnv2_seeds}
    plan = [(b, seed) for b in args.backbones for seed in seeds[b]]
    d = next(iter(data.values()))
    k = d.num_classes
    runs: list[dict] = []
    for backbone, seed in plan:  # the report is rewritten after every run: an interrupted run keeps what it finished
        runs.append(run(backbone, seed, data[args.sizes[backbone]], args))
        summary = summarise(runs)
        figures = {
            "command": command, "wall_s": round(time.perf_counter() - start, 1),
            "runs_done": f"{len(runs)} of {len(plan)}",
            "machine": f"{os.cpu_count()} cores shared with other engineers' jobs (noisy), no GPU",
            "torch": torch.__version__, "python": platform.python_version(), "data_seed": args.data_seed,
            "sizes": {b: args.sizes[b] for b in args.backbones},
            "train_counts": dict(zip(d.classes, d.train.counts(k), strict=False)),
            "val_counts": dict(zip(d.classes, d.val.counts(k), strict=False)),
            "test_counts": dict(zip(d.classes, d.test.counts(k), strict=False)), "lr": args.lr, "batch_size": args.batch_size,
            "epochs": args.epochs, "seeds": {b: seeds[b] for b in args.backbones}, "summary": summary,
            "conclusion": " ".join(conclusion(b, s) for b, s in summary.items()), "runs": runs,
        }
        write(figures, args.out)
    print(figures["conclusion"])
    print(f"wrote {args.out / 'bn_recalibration.json'} and {args.out / 'bn_recalibration.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
