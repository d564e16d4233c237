"""The one loop every approach uses: ``train_one_epoch`` and ``evaluate`` over uint8 tensors.

Batches are cut from tensors already in memory (decoded once per study) and converted to float
in [0, 1] on the fly; the model normalises its own input. ``over_aug`` copies get a fresh random
flip / rotation / colour change on the batch, every time they are drawn. CPU: deterministic for
a seed. CUDA: autocast (bf16 where supported), channels_last, and no host round trip per batch:
indices are shuffled where the data lives, random numbers are drawn on the device, loss and
predictions stay on the device, and the epoch's one transfer to the host happens when its result
is first read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from study.metrics import classification_metrics
from study.models import frozen_modules

ROTATE_DEGREES = 15.0  # over_aug: uniform rotation in [-15, 15] degrees
JITTER = 0.2  # over_aug: brightness and contrast factors in [0.8, 1.2]


class EpochResult:
    """An epoch's mean loss, labels and predictions (and, from ``evaluate``, softmax probabilities N x k).

    Built from tensors that may still be on the GPU: reading any field moves them all to the host at once,
    so the loop itself never waits for the device.
    """

    def __init__(self, loss: float | torch.Tensor, y_true: torch.Tensor, y_pred: torch.Tensor,
                 probs: torch.Tensor | None = None) -> None:
        self._fields: tuple = (loss, y_true, y_pred, probs)
        self._on_host = False

    def _host(self) -> tuple:
        if not self._on_host:
            loss, *tensors = self._fields
            self._fields = (float(loss), *(None if t is None else t.cpu() for t in tensors))
            self._on_host = True
        return self._fields

    @property
    def loss(self) -> float:
        return self._host()[0]

    @property
    def y_true(self) -> torch.Tensor:
        return self._host()[1]

    @property
    def y_pred(self) -> torch.Tensor:
        return self._host()[2]

    @property
    def probs(self) -> torch.Tensor | None:
        return self._host()[3]

    def metrics(self, classes: Sequence[str], minority: int) -> dict:
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


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 B x C x H x W -> float B x 3 x H x W on ``device``, in [0, 1] (the model normalises)."""
    x = images.to(device, non_blocking=True)
    if x.shape[1] == 1:  # grey silhouettes: the same plane on ResNet's three input channels
        x = x.expand(-1, 3, -1, -1)
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    out = torch.empty(x.shape, dtype=torch.float32, device=device, memory_format=layout)
    return torch.div(x, 255, out=out)  # one kernel: uint8 in, float in [0, 1] out, in the layout the model wants


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A fresh random horizontal flip, rotation and brightness/contrast change per sample (x in [0, 1]).

    Random numbers come from ``generator``, which must live on ``x``'s device (nothing crosses to the host)."""
    b = x.shape[0]
    rand = lambda: torch.rand(b, generator=generator, device=x.device)  # noqa: E731
    x = torch.where((rand() < 0.5).view(-1, 1, 1, 1), x.flip(-1), x)
    angle = (rand() * 2 - 1) * math.radians(ROTATE_DEGREES)
    zero = torch.zeros_like(angle)
    theta = torch.stack([torch.stack([angle.cos(), -angle.sin(), zero], 1), torch.stack([angle.sin(), angle.cos(), zero], 1)], 1)
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)
    contrast, brightness = (1 + (rand() * 2 - 1) * JITTER for _ in range(2))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (((x - mean) * contrast.view(-1, 1, 1, 1) + mean) * brightness.view(-1, 1, 1, 1)).clamp(0, 1)


def generator_on(device: torch.device, generator: torch.Generator) -> torch.Generator:
    """``generator`` itself on its own kind of device; on another, a fresh generator seeded from it.

    The trial's generator is a CPU one (its state goes into checkpoints); a CUDA epoch draws from a CUDA
    generator seeded once per epoch from it, so a run still repeats itself for a seed."""
    if device.type == generator.device.type:
        return generator
    seed = int(torch.randint(2**62, (), generator=generator))  # a CPU draw: no device synchronisation
    return torch.Generator(device=device).manual_seed(seed)


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, end) of each batch; a last batch of one joins the one before (BatchNorm cannot train on one
    sample: 1x1 maps in layer4 at 32 px)."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [(s, e) for s, e in zip(starts, starts[1:] + [n], strict=False)]


def train_one_epoch(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    batch_size: int,
    generator: torch.Generator,
    augment_mask: torch.Tensor | None = None,
    device: torch.device = torch.device("cpu"),
    steps: int | None = None,
) -> EpochResult:
    """One shuffled pass over the (resampled) training tensors; metrics from the batches as trained.

    ``steps``: exactly this many optimizer steps instead (shuffled passes back to back, the last one cut), so that
    approaches whose resampling changes the training set's size train equally long (the paper protocol).
    ``images``, ``labels`` and ``augment_mask`` may live on the CPU or on ``device`` (all three on the same)."""
    model.train()
    for module in frozen_modules(model):
        module.eval()  # frozen stages keep their BatchNorm statistics too
    n, amp = len(labels), autocast(device)
    device_gen = generator_on(device, generator)
    data_gen = device_gen if images.device.type == device.type else generator  # shuffle where the data lives
    total_n = n if steps is None else steps * batch_size
    order = torch.cat([torch.randperm(n, generator=data_gen, device=images.device)
                       for _ in range(-(-total_n // n))])[:total_n]
    if augment_mask is not None and not bool(augment_mask.any()):  # once per epoch (on a GPU, one wait): most flag nothing
        augment_mask = None
    total, preds = torch.zeros((), device=device), torch.empty(total_n, dtype=torch.long, device=device)
    for start, end in batch_bounds(total_n, batch_size):
        idx = order[start:end]
        x = to_input(images[idx], device)
        if augment_mask is not None:  # the whole batch, kept where flagged: no data-dependent shapes, no sync
            flagged = augment_mask[idx].to(device, non_blocking=True).view(-1, 1, 1, 1)
            x = torch.where(flagged, augment(x, device_gen), x)
        y = labels[idx].to(device, non_blocking=True)
        with amp:
            logits = model(x)
            loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total.add_(loss.detach(), alpha=end - start)
        torch.argmax(logits.detach(), 1, out=preds[start:end])  # straight into the epoch's buffer: one kernel
    return EpochResult(total / max(1, total_n), labels[order], preds)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: nn.Module,
    *,
    batch_size: int,
    device: torch.device = torch.device("cpu"),
) -> EpochResult:
    """Loss, predictions and probabilities on an untouched split (validation or test)."""
    model.eval()
    amp, n = autocast(device), len(labels)
    total, probs = torch.zeros((), device=device), []
    for start in range(0, n, batch_size):
        x = to_input(images[start : start + batch_size], device)
        y = labels[start : start + batch_size].to(device, non_blocking=True)
        with amp:
            logits = model(x).float()
        total.add_(loss_fn(logits, y), alpha=len(y))
        probs.append(logits.softmax(1))
    p = torch.cat(probs)
    return EpochResult(total / max(1, n), labels, p.argmax(1), p)


def trained_batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers whose running statistics training updates: all but those in frozen stages."""
    frozen = {id(m) for stage in frozen_modules(model) for m in stage.modules()}
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and id(m) not in frozen]


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
    augment_mask: torch.Tensor | None = None,
    at_most: int | None = None,
) -> None:
    """Recompute the running statistics of ``trained_batchnorms`` over ``images`` with the weights fixed.

    At momentum 0.1 the running statistics lag the weights (after a few dozen steps they still hold much of the
    initial 0 / 1), so eval mode can answer one class while the same weights on batch statistics do well. This
    resets them and averages every batch's (momentum None), in one shuffled pass in train mode; frozen stages keep
    their transferred statistics (the layers after them learned on those). ``augment_mask``: flagged images are
    augmented as in training, from a fixed seed (the trial's generator is not touched). Batches are near-equal
    in size (exactly equal: the running mean is the set's mean); the running variance is the mean of batch variances.
    Each module's mode and momentum are restored; a model without BatchNorm is left alone. ``at_most``: a fixed
    random subset of that many images instead of all (the pass then costs a fraction of an epoch).
    """
    layers = trained_batchnorms(model)
    if not layers or len(images) == 0:
        return
    if augment_mask is not None and not bool(augment_mask.any()):
        augment_mask = None
    amp = autocast(device)
    order = torch.randperm(len(images), generator=torch.Generator(images.device).manual_seed(0), device=images.device)
    order = order[:at_most]
    n = len(order)
    aug_gen = torch.Generator(device).manual_seed(0) if augment_mask is not None else None
    modes, momenta = {m: m.training for m in model.modules()}, [m.momentum for m in layers]
    try:
        model.train()
        for module in frozen_modules(model):
            module.eval()
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the pass's batches
        for idx in order.tensor_split(-(-n // batch_size)):  # near-equal batches: no batch of one (1 x 1 maps)
            x = to_input(images[idx], device)
            if augment_mask is not None:
                flagged = augment_mask[idx].to(device, non_blocking=True).view(-1, 1, 1, 1)
                x = torch.where(flagged, augment(x, aug_gen), x)
            with amp:
                model(x)
    finally:
        for m, momentum in zip(layers, momenta, strict=False):
            m.momentum = momentum
        for m, training in modes.items():
            m.training = training
