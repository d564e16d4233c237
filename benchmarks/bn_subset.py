"""BatchNorm recalibration on a sample: validation macro-F1 after recomputing the statistics from all training images
against from a fixed random subset of 512, 256 or 128 (``study.loop.recalibrate_bn(at_most=...)``; the trainable uses
``study.trainable.BN_IMAGES``).

    .venv/bin/python benchmarks/bn_subset.py            # animals 64:700 at 32 px, ResNet-18, 3 seeds x 4 epochs

One training run per seed, as a study trial builds it (``study.trainable.build_parts``); after each epoch the
statistics are recomputed each way, the model evaluated on validation, and the training statistics put back, so
every way scores the same weights. Writes results/bench/bn_subset.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from study.data import load_dataset  # noqa: E402
from study.loop import evaluate, recalibrate_bn, train_one_epoch  # noqa: E402
from study.losses import start_epoch  # noqa: E402
from study.spaces import TRIAL_DEFAULTS  # noqa: E402
from study.trainable import BN_IMAGES, EVAL_BATCH, build_parts  # noqa: E402

CAPS = (None, 512, 256, 128)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("animals")
    rows = []
    for seed in range(args.seeds):
        config = {**TRIAL_DEFAULTS, "trial_seed": seed, "lr": 1e-3, "batch_size": 64, "epochs": args.epochs,
                  "cpus": 1, "gpus": 0}
        p, generator = build_parts(config, data), torch.Generator().manual_seed(seed)
        for epoch in range(1, args.epochs + 1):
            start_epoch(p.loss, epoch)
            train_one_epoch(p.model, p.train.images, p.train.labels, p.loss, p.optimizer, batch_size=64,
                            generator=generator, augment_mask=p.train.augment, device=p.device)
            kept = {k: v.clone() for k, v in p.model.state_dict().items() if "running_" in k or "num_batches" in k}
            row = {"seed": seed, "epoch": epoch}
            for cap in CAPS:
                t = time.perf_counter()
                recalibrate_bn(p.model, data.train.images, 64, p.device, at_most=cap)
                row[f"s_{cap or 'all'}"] = round(time.perf_counter() - t, 3)
                m = evaluate(p.model, data.val.images, data.val.labels, p.loss, batch_size=EVAL_BATCH, device=p.device)
                row[str(cap or "all")] = round(m.metrics(data.classes, data.minority)["macro_f1"], 4)
                p.model.load_state_dict(kept, strict=False)
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for cap in CAPS[1:]:
        diffs = [r[str(cap)] - r["all"] for r in rows]
        summary[cap] = {"mean_diff": round(statistics.mean(diffs), 4), "sd_diff": round(statistics.stdev(diffs), 4),
                        "max_abs_diff": round(max(map(abs, diffs)), 4),
                        "time_ratio": round(statistics.mean(r[f"s_{cap}"] for r in rows)
                                            / statistics.mean(r["s_all"] for r in rows), 3)}
    command = "python benchmarks/bn_subset.py " + " ".join(sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bn_subset.json").write_text(json.dumps({"command": command, "train_images": len(data.train),
                                                          "rows": rows, "summary": summary}, indent=1) + "\n")
    lines = ["# BatchNorm recalibration on a sample", "", f"Command: `{command}`; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             "", f"Animals (cats 64 : dogs 700 in training, 150 + 150 validation), 32 px, ResNet-18 from scratch, Adam "
             f"lr 1e-3, batch 64, 1 thread; {args.seeds} seeds x {args.epochs} epochs. Validation macro-F1 after "
             "recomputing the BatchNorm statistics from all training images or from a fixed random subset; the same "
             f"weights each way. The trainable uses {BN_IMAGES}.", "",
             "| subset | mean Δ vs all | SD of Δ | max \\|Δ\\| | pass time / all |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {cap} | {s['mean_diff']:+.4f} | {s['sd_diff']:.4f} | {s['max_abs_diff']:.4f} | {s['time_ratio']:.2f} |"
              for cap, s in summary.items()]
    lines += ["", "| seed | epoch | all | 512 | 256 | 128 |", "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['seed']} | {r['epoch']} | {r['all']:.3f} | {r['512']:.3f} | {r['256']:.3f} | {r['128']:.3f} |"
              for r in rows]
    (args.out / "bn_subset.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
