"""Pretrain ResNet-18 on the animals source task (the eight animals that are neither cat nor dog).

    python -m study.pretrain                 # -> results/checkpoints/source_resnet18_32px.pt

The transfer approach (``weights: source``) then starts from this checkpoint, offline.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from study import paths
from study.errors import Parser, UsageError, cli
from study.weights import source_checkpoint  # standard library only: flags are checked before torch loads

if TYPE_CHECKING:
    import torch

PROBE_BATCHES = 3  # timed batches behind the estimate printed before training starts
EVAL_COST = 1 / 3  # an evaluated image costs about a third of a trained one (forward only)
MIN_SIZE, MAX_SIZE = 16, 1024  # image side in pixels
MAX_EPOCHS, MAX_BATCH, SEED_MAX = 10_000, 65_536, 2**31 - 1


def estimate_seconds(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, loss: torch.nn.Module, *,
                     batch_size: int, device: torch.device) -> tuple[float, int]:
    """Seconds per trained image, timed over a few batches on a throwaway copy of the model (its training is
    untouched); and how many images were timed. One untimed batch first: lazy CUDA start-up, cuDNN autotuning."""
    import copy

    import torch

    from study.loop import train_one_epoch

    probe = copy.deepcopy(model)
    optimizer = torch.optim.Adam([p for p in probe.parameters() if p.requires_grad])
    generator = torch.Generator().manual_seed(0)
    n = min(len(labels), PROBE_BATCHES * batch_size)
    step = lambda k: train_one_epoch(probe, images[:k], labels[:k], loss, optimizer,  # noqa: E731
                                     batch_size=batch_size, generator=generator, device=device).loss  # waits for it
    step(min(n, batch_size))
    start = time.perf_counter()
    step(n)
    return (time.perf_counter() - start) / n, n


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def pretrain(
    out: Path, *, epochs: int = 6, image_size: int = 32, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
    smoke: bool = False, progress: bool = True, cache_dir: Path | None = Path("results/cache"),
) -> dict:
    """Train on the source task with the shared loop and save {state_dict, classes, metrics}."""
    import torch
    from tqdm import tqdm

    from study.data import load_dataset, subset
    from study.loop import evaluate, pick_device, prepare_model, train_one_epoch
    from study.losses import build_loss
    from study.models import build_model

    data = load_dataset("animals_source", image_size=image_size, seed=seed, cache_dir=cache_dir)
    data = subset(data, 40, seed) if smoke else data
    torch.manual_seed(seed)
    device = pick_device(1 if torch.cuda.is_available() else 0)
    model = prepare_model(build_model(data.num_classes), device)
    loss = build_loss("ce", data.train.counts(data.num_classes), data.minority).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    # the source task is small (6400 images): on a GPU it lives there, so batches never cross from the host
    train_x, train_y = data.train.images.to(device), data.train.labels.to(device)
    val_x, val_y = data.val.images.to(device), data.val.labels.to(device)
    per_image, timed = estimate_seconds(model, train_x, train_y, loss, batch_size=batch_size, device=device)
    total = epochs * per_image * (len(train_y) + EVAL_COST * len(val_y))
    print(f"pretraining {epochs} epoch(s) of {len(train_y)} images at {image_size} px on {device}: about "
          f"{duration(total)} ({per_image * 1e3:.2f} ms per image over {timed} timed images)", file=sys.stderr, flush=True)
    bar = tqdm(range(1, epochs + 1), desc="pretraining on the animals source task", unit="epoch", disable=not progress)
    for _ in bar:
        tr = train_one_epoch(model, train_x, train_y, loss, optimizer, batch_size=batch_size, generator=generator,
                             device=device)
        va = evaluate(model, val_x, val_y, loss, batch_size=256, device=device)
        metrics = va.metrics(data.classes, data.minority)
        bar.set_postfix(train_loss=f"{tr.loss:.3f}", val_acc=f"{metrics['accuracy']:.3f}", val_f1=f"{metrics['macro_f1']:.3f}")
    blob = {"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "classes": list(data.classes),
            "image_size": image_size, "epochs": epochs, "val_accuracy": metrics["accuracy"], "val_macro_f1": metrics["macro_f1"]}
    out = paths.output_file(out, "--out")  # checked again: a symlink's target is written, never a device node
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        torch.save(blob, tmp)
        paths.replace_into(tmp, out, "--out")
    finally:
        tmp.unlink(missing_ok=True)
    return blob


def check_args(args: argparse.Namespace, out: Path) -> Path:
    """Every bad flag, as 'what must hold, got what' (a UsageError naming them all); the checkpoint's path, resolved."""
    bad = [msg for ok, msg in (
        (1 <= args.epochs <= MAX_EPOCHS, f"--epochs must be in [1, {MAX_EPOCHS}], got {args.epochs}"),
        (MIN_SIZE <= args.image_size <= MAX_SIZE, f"--image-size must be in [{MIN_SIZE}, {MAX_SIZE}], got {args.image_size}"),
        (math.isfinite(args.lr) and 0 < args.lr <= 10, f"--lr must be a finite number in (0, 10], got {args.lr}"),
        (1 <= args.batch_size <= MAX_BATCH, f"--batch-size must be in [1, {MAX_BATCH}], got {args.batch_size}"),
        (0 <= args.seed <= SEED_MAX, f"--seed must be in [0, {SEED_MAX}], got {args.seed}"),
    ) if not ok]
    try:
        out = paths.output_file(out, "--out")
        paths.output_folder(args.results_dir, "--results-dir")  # the decoded-data cache goes there
    except UsageError as err:
        bad.append(str(err))
    if bad:
        raise UsageError("; ".join(bad))
    return out


def main(argv: list[str] | None = None) -> int:
    return cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    ap = Parser(prog="python -m study.pretrain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=6, help="training epochs (default 6)")
    ap.add_argument("--image-size", type=int, default=32,
                    help=f"image side in pixels, {MIN_SIZE} to {MAX_SIZE}; match the study's (default 32)")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    ap.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    ap.add_argument("--seed", type=int, default=0, help="seed for splits, initialisation and shuffling")
    ap.add_argument("--results-dir", type=Path, default=Path("results"),
                    help="where the checkpoint (<dir>/checkpoints/) and the decoded-data cache (<dir>/cache/) go "
                         "(default results)")
    ap.add_argument("--out", type=Path, default=None,
                    help="checkpoint path (default <results-dir>/checkpoints/source_resnet18_<size>px.pt)")
    ap.add_argument("--smoke", action="store_true", help="tiny subset, for tests")
    args = ap.parse_args(argv)
    shown = args.out or source_checkpoint(args.image_size, args.smoke, args.results_dir / "checkpoints")
    out = check_args(args, shown)
    blob = pretrain(out, epochs=args.epochs, image_size=args.image_size, lr=args.lr, batch_size=args.batch_size,
                    seed=args.seed, smoke=args.smoke, cache_dir=args.results_dir / "cache")
    print(f"saved {shown}: source-task validation accuracy {blob['val_accuracy']:.3f}, macro-F1 {blob['val_macro_f1']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
