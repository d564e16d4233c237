"""The Ray Tune function trainable: build sampler, model and loss from the config, run the shared loop."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from study.data import Dataset
from study.costs import binary_cost_matrix, expected_cost, min_cost_decision, random_cost_matrix, rescaled_class_weights
from study.loop import EpochResult, evaluate, pick_device, prepare_model, train_one_epoch
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
    costs: np.ndarray | None  # misclassification costs: rescaled training weights, min-cost decisions


def cost_matrix(config: dict[str, Any], counts: list[int]) -> np.ndarray | None:
    """Two classes: the minority's FN:FP cost ratio; more: the paper's generator (consistent, seeded)."""
    if config["cost_ratio"] is None:
        return None
    small = int(np.argmin(counts))
    if len(counts) == 2:
        return binary_cost_matrix(config["cost_ratio"], positive=small)
    return random_cost_matrix(counts, np.random.default_rng(config["seed"]), kind="consistent", n=config["cost_ratio"])


def scored(result: EpochResult, classes: tuple[str, ...], costs: np.ndarray | None) -> dict[str, Any]:
    """Metrics of an evaluation; with costs, decisions are the minimum-expected-cost class."""
    if costs is None:
        return result.metrics(classes)
    decided = EpochResult(result.loss, result.y_true, torch.from_numpy(min_cost_decision(result.probs.numpy(), costs)))
    return {**decided.metrics(classes), "expected_cost": expected_cost(decided.y_true.numpy(), decided.y_pred.numpy(), costs)}


def build_parts(config: dict[str, Any], data: Dataset, weights: dict[str, dict] | None = None) -> Parts:
    """Everything an approach chooses: a sampler (train split only), a model, a loss, the optimizer."""
    torch.manual_seed(config["seed"])
    train = resample(data.train, config["sampler"], config["ratio"], config["seed"], k_neighbors=config["k_neighbors"])
    counts = torch.bincount(train.labels, minlength=data.num_classes).tolist()
    costs = cost_matrix(config, data.train.counts(data.num_classes))
    class_weights = None if costs is None else rescaled_class_weights(costs, counts).tolist()
    device = pick_device(config.get("gpus", 0))
    if device.type == "cuda" and train.images.nbytes < ON_GPU_BYTES:
        train = Resampled(train.images.to(device), train.labels.to(device), train.augment.to(device))
    state = (weights or {}).get(config["weights"])
    model = prepare_model(build_model(data.num_classes, config["model"], config["weights"], config["freeze"], state), device)
    loss = build_loss(config["loss"], counts, gamma=config["gamma"], alpha=config["alpha"],
                      weight_ratio=config["weight_ratio"], class_weights=class_weights)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config["lr"], weight_decay=config["weight_decay"])
    return Parts(train, model, loss.to(device), optimizer, normalisation(config["weights"]), device, costs)


def epoch_metrics(train: dict, val: dict) -> dict[str, Any]:
    """Validation macro-F1 first (what ASHA and Optuna read), then every other metric."""
    out = {"macro_f1": val["macro_f1"]}
    out.update({f"val_{k}": v for k, v in val.items() if k != "macro_f1"})
    out.update({f"train_{k}": v for k, v in train.items() if k != "confusion"})
    return out


def train_trial(config: dict[str, Any], data: Dataset, weights: dict[str, dict] | None = None) -> None:
    """Report every epoch with a checkpoint; resume from the latest checkpoint after a failure."""
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # a "Checkpoint created" line per epoch
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
            metrics = epoch_metrics(tr.metrics(data.classes), scored(va, data.classes, p.costs))
            tune.report({**metrics, "node_id": node, "resumed_from": start}, checkpoint=tune.Checkpoint.from_directory(d))
