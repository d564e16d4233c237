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

from study.weights import source_checkpoint  # standard library only: flags are checked before torch loads

if TYPE_CHECKING:
    import torch

PROBE_BATCHES = 3  # timed batches behind the estimate printed before training starts
EVAL_COST = 1 / 3  # an evaluated image costs about a third of a trained one (forward only)
MIN_SIZE, MAX_SIZE = 16, 1024  # image side in pixels


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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    torch.save(blob, tmp)
    os.replace(tmp, out)
    return blob


def unwritable(path: Path) -> str | None:
    """Why a file cannot be written at ``path`` (its folder need not exist yet), or None when it can."""
    if path.is_dir():
        return f"{path} is a folder"
    folder = path.parent
    while not folder.exists():  # the nearest folder that exists must let us make the rest
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"folder {folder} is not writable"
    return None


def check_args(args: argparse.Namespace, out: Path) -> list[str]:
    """Every bad flag, as 'what must hold, got what'; empty when all are fine."""
    bad = [msg for ok, msg in (
        (args.epochs >= 1, f"--epochs must be >= 1, got {args.epochs}"),
        (MIN_SIZE <= args.image_size <= MAX_SIZE, f"--image-size must be in [{MIN_SIZE}, {MAX_SIZE}], got {args.image_size}"),
        (math.isfinite(args.lr) and args.lr > 0, f"--lr must be a finite number > 0, got {args.lr}"),
        (args.batch_size >= 1, f"--batch-size must be >= 1, got {args.batch_size}"),
    ) if not ok]
    if (why := unwritable(out)) is not None:
        bad.append(f"cannot write the checkpoint {out}: {why}")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m study.pretrain", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
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
    out = args.out or source_checkpoint(args.image_size, args.smoke, args.results_dir / "checkpoints")
    bad = check_args(args, out)
    if bad:
        print(f"error: {'; '.join(bad)}", file=sys.stderr)
        return 2
    from study.data import DataError

    try:
        blob = pretrain(out, epochs=args.epochs, image_size=args.image_size, lr=args.lr, batch_size=args.batch_size,
                        seed=args.seed, smoke=args.smoke, cache_dir=args.results_dir / "cache")
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"saved {out}: source-task validation accuracy {blob['val_accuracy']:.3f}, macro-F1 {blob['val_macro_f1']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
