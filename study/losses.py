"""Losses: name -> factory. Every loss averages over the N samples of a batch, as the seeds' formulas do."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class LossError(ValueError):
    """Bad loss settings: a clear one-line message."""


def inverse_frequency(counts: Sequence[int]) -> torch.Tensor:
    """w_c = N / (k * N_c), the seeds' class weights (1000/11000 -> 6.0 and 0.545)."""
    n = torch.tensor(counts, dtype=torch.float64)
    return (n.sum() / (len(counts) * n)).float()


def ratio_weights(counts: Sequence[int], ratio: float) -> torch.Tensor:
    """Explicit minority:majority weight ratio: the largest class weighs 1, the smallest ``ratio``.

    Classes in between follow the same power of inverse frequency, w_c = (N_max / N_c) ** beta,
    with beta chosen so the smallest class gets ``ratio`` (for two classes: [ratio, 1]).
    """
    if ratio <= 0:
        raise LossError(f"class weight ratio must be > 0, got {ratio}")
    n = torch.tensor(counts, dtype=torch.float64)
    spread = math.log(n.max() / n.min())
    beta = math.log(ratio) / spread if spread > 0 else 0.0
    return ((n.max() / n) ** beta).float()


class WeightedCE(nn.Module):
    """-1/N * sum_i w_{y_i} log p_{y_i} (the seed's BCE_w generalised to k classes)."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weights", weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        nll = F.cross_entropy(logits, target, reduction="none")
        return (self.weights.to(nll.dtype)[target] * nll).mean()


class FocalLoss(nn.Module):
    """FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), averaged over N.

    The modulating factor uses the unweighted probability p_t; alpha_t only balances classes.
    """

    def __init__(self, gamma: float, alpha: torch.Tensor | None) -> None:
        super().__init__()
        if gamma < 0:
            raise LossError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = gamma
        self.register_buffer("alpha", alpha)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_pt = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -((1 - log_pt.exp()) ** self.gamma) * log_pt
        if self.alpha is not None:
            loss = self.alpha[target] * loss
        return loss.mean()


def focal_alpha(counts: Sequence[int], alpha: float | Sequence[float] | None) -> torch.Tensor | None:
    """alpha: None (no class weighting), per-class values, or a scalar in (0, 1) that the smallest
    training class gets while every other class gets 1 - alpha."""
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)):
        if not 0 < alpha < 1:
            raise LossError(f"focal alpha must be in (0, 1), got {alpha}")
        minority = min(range(len(counts)), key=lambda c: counts[c])
        return torch.tensor([alpha if c == minority else 1 - alpha for c in range(len(counts))])
    if len(alpha) != len(counts):
        raise LossError(f"focal alpha needs one value per class ({len(counts)}), got {len(alpha)}")
    return torch.tensor(list(alpha), dtype=torch.float32)


def _weighted_ce(
    counts: Sequence[int], weight_ratio: float | None = None, class_weights: Sequence[float] | None = None, **_: object
) -> nn.Module:
    """Explicit per-class weights (cost rescaling), an explicit ratio, or inverse frequency."""
    if class_weights is not None:
        return WeightedCE(torch.tensor(list(class_weights), dtype=torch.float32))
    weights = inverse_frequency(counts) if weight_ratio is None else ratio_weights(counts, weight_ratio)
    return WeightedCE(weights)


# name -> factory(class_counts, **hyperparameters) -> loss module
LOSSES: dict[str, Callable[..., nn.Module]] = {
    "ce": lambda counts, **_: nn.CrossEntropyLoss(),
    "weighted_ce": _weighted_ce,
    "focal": lambda counts, gamma=2.0, alpha=None, **_: FocalLoss(gamma, focal_alpha(counts, alpha)),
}


def check_loss(name: str) -> None:
    if name not in LOSSES:
        raise LossError(f"unknown loss '{name}'; choose one of: {', '.join(sorted(LOSSES))}")


def build_loss(name: str, counts: Sequence[int], **hyper: object) -> nn.Module:
    """The named loss for training-class counts ``counts`` (after resampling)."""
    check_loss(name)
    return LOSSES[name](list(counts), **hyper)
