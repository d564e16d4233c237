"""The one loop every approach uses: ``train_one_epoch`` and ``evaluate`` over uint8 tensors.

Batches are cut from tensors already in memory (decoded once per study), converted to float
and normalised on the fly; ``over_aug`` copies get a fresh random flip / rotation / colour
change on the batch, every time they are drawn. CPU: deterministic for a seed. CUDA: autocast
(bf16 where supported), channels_last and non_blocking copies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from study.metrics import classification_metrics
from study.models import frozen_modules

ROTATE_DEGREES = 15.0  # over_aug: uniform rotation in [-15, 15] degrees
JITTER = 0.2  # over_aug: brightness and contrast factors in [0.8, 1.2]


@dataclass
class EpochResult:
    loss: float
    y_true: torch.Tensor
    y_pred: torch.Tensor
    probs: torch.Tensor | None = None  # evaluate only: softmax probabilities, N x k

    def metrics(self, classes: Sequence[str], minority: int = 0) -> dict:
        return {"loss": self.loss, **classification_metrics(self.y_true, self.y_pred, classes, minority)}


def pick_device(gpus: float = 0) -> torch.device:
    """The trial's device: its assigned GPU when it asked for one and CUDA is there, else the CPU."""
    return torch.device("cuda") if gpus > 0 and torch.cuda.is_available() else torch.device("cpu")


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA devices that support it; plain fp32 elsewhere."""
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model


def to_input(images: torch.Tensor, norm: tuple[Sequence[float], Sequence[float]], device: torch.device) -> torch.Tensor:
    """uint8 B x C x H x W -> float B x 3 x H x W on ``device``, in [0, 1] (not yet normalised)."""
    x = images.to(device, non_blocking=True).float().div_(255)
    if x.shape[1] == 1:  # grey silhouettes: the same plane on ResNet's three input channels
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def normalise(x: torch.Tensor, norm: tuple[Sequence[float], Sequence[float]]) -> torch.Tensor:
    mean = torch.tensor(norm[0], device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(norm[1], device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A fresh random horizontal flip, rotation and brightness/contrast change per sample (x in [0, 1])."""
    b = x.shape[0]
    rand = lambda: torch.rand(b, generator=generator).to(x.device)  # noqa: E731
    x = torch.where((rand() < 0.5).view(-1, 1, 1, 1), x.flip(-1), x)
    angle = (rand() * 2 - 1) * math.radians(ROTATE_DEGREES)
    zero = torch.zeros_like(angle)
    theta = torch.stack([torch.stack([angle.cos(), -angle.sin(), zero], 1), torch.stack([angle.sin(), angle.cos(), zero], 1)], 1)
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)
    contrast, brightness = (1 + (rand() * 2 - 1) * JITTER for _ in range(2))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (((x - mean) * contrast.view(-1, 1, 1, 1) + mean) * brightness.view(-1, 1, 1, 1)).clamp(0, 1)


def train_one_epoch(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    batch_size: int,
    norm: tuple[Sequence[float], Sequence[float]],
    generator: torch.Generator,
    augment_mask: torch.Tensor | None = None,
    device: torch.device = torch.device("cpu"),
) -> EpochResult:
    """One shuffled pass over the (resampled) training tensors; metrics from the batches as trained."""
    model.train()
    for module in frozen_modules(model):
        module.eval()  # frozen stages keep their BatchNorm statistics too
    order = torch.randperm(len(labels), generator=generator)
    total, preds = torch.zeros((), device=device), []
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:  # BatchNorm cannot train on one sample (1x1 maps at 32 px)
        batches[-2:] = [torch.cat(batches[-2:])]
    for idx in batches:
        x = to_input(images[idx.to(images.device)], norm, device)
        if augment_mask is not None:
            flagged = augment_mask[idx]
            if flagged.any():
                x = x.clone()
                x[flagged.to(device)] = augment(x[flagged.to(device)], generator)
        y = labels[idx.to(labels.device)].to(device, non_blocking=True)
        with autocast(device):
            logits = model(normalise(x, norm))
            loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(idx)
        preds.append(logits.detach().argmax(1))
    y_true = labels[order.to(labels.device)].cpu()
    return EpochResult(float(total) / len(order), y_true, torch.cat(preds).cpu())


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: nn.Module,
    *,
    batch_size: int,
    norm: tuple[Sequence[float], Sequence[float]],
    device: torch.device = torch.device("cpu"),
) -> EpochResult:
    """Loss, predictions and probabilities on an untouched split (validation or test)."""
    model.eval()
    total, probs = torch.zeros((), device=device), []
    for start in range(0, len(labels), batch_size):
        x = to_input(images[start : start + batch_size], norm, device)
        y = labels[start : start + batch_size].to(device, non_blocking=True)
        with autocast(device):
            logits = model(normalise(x, norm)).float()
        total += loss_fn(logits, y) * len(y)
        probs.append(logits.softmax(1))
    p = torch.cat(probs).cpu()
    return EpochResult(float(total) / max(1, len(labels)), labels.cpu(), p.argmax(1), p)
