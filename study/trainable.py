"""The Ray Tune function trainable: build sampler, model and loss from the config, run the shared loop."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import ray
from ray import tune

from study.data import Dataset
from study.loop import evaluate, pick_device, prepare_model, train_one_epoch
from study.losses import build_loss
from study.models import build_model, normalisation
from study.sampling import Resampled, resample

CHECKPOINT_FILE = "state.pt"
ON_GPU_BYTES = 2**30  # a decoded training set smaller than this lives on the trial's GPU


@dataclass
class Parts:
    train: Resampled
    model: torch.nn.Module
    loss: torch.nn.Module
    optimizer: torch.optim.Optimizer
    norm: tuple
    device: torch.device


def build_parts(config: dict[str, Any], data: Dataset, weights: dict[str, dict] | None = None) -> Parts:
    """Everything an approach chooses: a sampler (train split only), a model, a loss, the optimizer."""
    torch.manual_seed(config["seed"])
    train = resample(data.train, config["sampler"], config["ratio"], config["seed"], k_neighbors=config["k_neighbors"])
    counts = torch.bincount(train.labels, minlength=data.num_classes).tolist()
    device = pick_device(config.get("gpus", 0))
    if device.type == "cuda" and train.images.nbytes < ON_GPU_BYTES:
        train = Resampled(train.images.to(device), train.labels.to(device), train.augment.to(device))
    state = (weights or {}).get(config["weights"])
    model = prepare_model(build_model(data.num_classes, config["model"], config["weights"], config["freeze"], state), device)
    loss = build_loss(config["loss"], counts, gamma=config["gamma"], alpha=config["alpha"], weight_ratio=config["weight_ratio"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config["lr"], weight_decay=config["weight_decay"])
    return Parts(train, model, loss.to(device), optimizer, normalisation(config["weights"]), device)


def epoch_metrics(train: dict, val: dict) -> dict[str, Any]:
    """Validation macro-F1 first (what ASHA and Optuna read), then every other metric."""
    out = {"macro_f1": val["macro_f1"]}
    out.update({f"val_{k}": v for k, v in val.items() if k != "macro_f1"})
    out.update({f"train_{k}": v for k, v in train.items() if k != "confusion"})
    return out


def train_trial(config: dict[str, Any], data: Dataset, weights: dict[str, dict] | None = None) -> None:
    """Report every epoch with a checkpoint; resume from the latest checkpoint after a failure."""
    torch.set_num_threads(max(1, int(config.get("cpus", 1))))
    p = build_parts(config, data, weights)
    generator, start = torch.Generator().manual_seed(config["seed"]), 0
    if (checkpoint := tune.get_checkpoint()) is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / CHECKPOINT_FILE, map_location=p.device, weights_only=True)
        p.model.load_state_dict(state["model"])
        p.optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start = state["epoch"]
    node = ray.get_runtime_context().get_node_id()
    val_x, val_y = data.val.images.to(p.device), data.val.labels.to(p.device)
    for epoch in range(start + 1, config["epochs"] + 1):
        tr = train_one_epoch(p.model, p.train.images, p.train.labels, p.loss, p.optimizer, batch_size=config["batch_size"],
                             norm=p.norm, generator=generator, augment_mask=p.train.augment, device=p.device)
        va = evaluate(p.model, val_x, val_y, p.loss, batch_size=256, norm=p.norm, device=p.device)
        state = {"model": p.model.state_dict(), "optimizer": p.optimizer.state_dict(),
                 "generator": generator.get_state(), "epoch": epoch}
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, Path(d) / CHECKPOINT_FILE)
            metrics = epoch_metrics(tr.metrics(data.classes), va.metrics(data.classes))
            tune.report({**metrics, "node_id": node, "resumed_from": start}, checkpoint=tune.Checkpoint.from_directory(d))
