"""Pretrain ResNet-18 on the animals source task (the eight animals that are neither cat nor dog).

    python -m study.pretrain                 # -> results/checkpoints/source_resnet18_32px.pt

The transfer approach (``weights: source``) then starts from this checkpoint, offline.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from study.data import DataError, load_dataset, subset
from study.loop import evaluate, pick_device, prepare_model, train_one_epoch
from study.losses import build_loss
from study.models import build_model, normalisation, source_checkpoint


def pretrain(
    out: Path, *, epochs: int = 6, image_size: int = 32, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
    smoke: bool = False, progress: bool = True,
) -> dict:
    """Train on the source task with the shared loop and save {state_dict, classes, metrics}."""
    from tqdm import tqdm

    data = load_dataset("animals_source", image_size=image_size, seed=seed)
    data = subset(data, 40, seed) if smoke else data
    torch.manual_seed(seed)
    device = pick_device(1 if torch.cuda.is_available() else 0)
    model = prepare_model(build_model(data.num_classes), device)
    loss = build_loss("ce", data.train.counts(data.num_classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator, norm = torch.Generator().manual_seed(seed), normalisation(None)
    bar = tqdm(range(1, epochs + 1), desc="pretraining on the animals source task", unit="epoch", disable=not progress)
    for epoch in bar:
        tr = train_one_epoch(model, data.train.images, data.train.labels, loss, optimizer, batch_size=batch_size,
                             norm=norm, generator=generator, device=device)
        va = evaluate(model, data.val.images, data.val.labels, loss, batch_size=256, norm=norm, device=device)
        metrics = va.metrics(data.classes)
        bar.set_postfix(train_loss=f"{tr.loss:.3f}", val_acc=f"{metrics['accuracy']:.3f}", val_f1=f"{metrics['macro_f1']:.3f}")
    blob = {"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "classes": list(data.classes),
            "image_size": image_size, "epochs": epochs, "val_accuracy": metrics["accuracy"], "val_macro_f1": metrics["macro_f1"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    torch.save(blob, tmp)
    os.replace(tmp, out)
    return blob


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m study.pretrain", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=6, help="training epochs (default 6)")
    ap.add_argument("--image-size", type=int, default=32, help="image side in pixels; match the study's (default 32)")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    ap.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    ap.add_argument("--seed", type=int, default=0, help="seed for splits, initialisation and shuffling")
    ap.add_argument("--out", type=Path, default=None, help="checkpoint path (default results/checkpoints/source_resnet18_<size>px.pt)")
    ap.add_argument("--smoke", action="store_true", help="tiny subset, for tests")
    args = ap.parse_args(argv)
    bad = [msg for ok, msg in ((args.epochs >= 1, "--epochs must be >= 1"), (args.image_size >= 8, "--image-size must be >= 8"),
                               (args.lr > 0, "--lr must be > 0"), (args.batch_size >= 1, "--batch-size must be >= 1")) if not ok]
    if bad:
        print(f"error: {'; '.join(bad)}", file=sys.stderr)
        return 2
    out = args.out or source_checkpoint(args.image_size, args.smoke)
    try:
        blob = pretrain(out, epochs=args.epochs, image_size=args.image_size, lr=args.lr, batch_size=args.batch_size,
                        seed=args.seed, smoke=args.smoke)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"saved {out}: source-task validation accuracy {blob['val_accuracy']:.3f}, macro-F1 {blob['val_macro_f1']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
