"""Losses: name -> factory(counts, minority, **options). Every loss averages over the N samples of a
batch, as the seeds' formulas do.

``counts`` are the training-class counts after resampling (what the model sees); ``minority`` is the
data set's minority class before resampling (what "the minority" means to focal's scalar alpha and
weighted_ce's ratio). The options each loss takes are the trial-config keys in
``study.names.LOSS_OPTIONS``; anything else is an error. A loss that changes with the epoch (LDAM-DRW)
has ``set_epoch(epoch)``; the trainable calls ``start_epoch(loss, epoch)`` before each epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from study.errors import StudyError
from study.names import BASE_LOSSES, LOSS_OPTIONS

LDAM_SCALE = 30.0  # LDAM's logit scale s (Cao et al. use s = 30 throughout)
DRW_BETA = 0.9999  # DRW's effective-number beta (Cao et al.)
EXTRA_OPTIONS = {"weighted_ce": ("class_weights",)}  # options that are not trial-config keys


class LossError(StudyError):
    """Bad loss settings: a clear one-line message."""


def _number(what: str, value: object, rule: str, ok: Callable[[float], bool]) -> None:
    """A finite real number passing ``ok``, or a LossError stating the rule and the value."""
    real = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not real or not math.isfinite(value) or not ok(value):
        raise LossError(f"{what} must be {rule}, got {value!r}")


def inverse_frequency(counts: Sequence[int]) -> torch.Tensor:
    """w_c = N / (k * N_c), the seeds' class weights (1000/11000 -> 6.0 and 0.545)."""
    n = torch.tensor(counts, dtype=torch.float64)
    return (n.sum() / (len(counts) * n)).float()


def ratio_weights(counts: Sequence[int], minority: int, ratio: float) -> torch.Tensor:
    """Explicit minority:majority weight ratio: ``minority`` weighs ``ratio``, the largest class 1.

    Classes in between follow the same power of inverse frequency, w_c = (N_max / N_c) ** b, with b
    chosen so ``minority`` gets ``ratio`` (two classes: [ratio, 1]). When resampling made the minority
    as large as the largest class, the minority weighs ``ratio`` and every other class 1.
    """
    _number("class weight ratio", ratio, "> 0", lambda v: v > 0)
    n = torch.tensor(counts, dtype=torch.float64)
    spread = math.log(n.max() / n[minority])
    if spread == 0:
        w = torch.ones(len(counts), dtype=torch.float64)
        w[minority] = ratio
        return w.float()
    return ((n.max() / n) ** (math.log(ratio) / spread)).float()


def effective_number_weights(counts: Sequence[int], beta: float) -> torch.Tensor:
    """Cui et al. (CVPR 2019): w_c = (1 - beta) / (1 - beta^n_c), normalised so sum_c w_c = k."""
    _number("class-balanced beta", beta, "in (0, 1)", lambda v: 0 < v < 1)
    n = torch.tensor(counts, dtype=torch.float64)
    w = (1 - beta) / (1 - beta**n)
    return (w * len(counts) / w.sum()).float()


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
        _number("focal gamma", gamma, ">= 0", lambda v: v >= 0)
        self.gamma = gamma
        self.register_buffer("alpha", alpha)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_pt = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -((1 - log_pt.exp()) ** self.gamma) * log_pt
        if self.alpha is not None:
            loss = self.alpha[target] * loss
        return loss.mean()


class OffsetCE(nn.Module):
    """Cross-entropy on logits + offset_c, averaged over N: logit adjustment (tau log prior_c) and
    balanced softmax (log n_c). The offsets only shape training; predictions stay argmax of the logits."""

    def __init__(self, offsets: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("offsets", offsets)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float() + self.offsets, target)


class LDAMDRW(nn.Module):
    """LDAM with deferred re-weighting (Cao et al., NeurIPS 2019), averaged over N:

    L = w_y * CE(s * (z - m_y e_y), y), margins m_c = C / n_c^(1/4) with C such that max_c m_c =
    ``max_margin``, s = 30. DRW: w_c = 1 before epoch ``drw_epoch`` (epochs count from 1, as the
    trainable's do), the effective-number weights with beta 0.9999 from it on. The paper pairs s with a
    cosine (normalised) classifier; here it scales the model's plain logits.
    """

    def __init__(self, counts: Sequence[int], max_margin: float, drw_epoch: int) -> None:
        super().__init__()
        _number("ldam_drw max_margin", max_margin, "> 0", lambda v: v > 0)
        if isinstance(drw_epoch, bool) or not isinstance(drw_epoch, int) or drw_epoch < 1:
            raise LossError(f"ldam_drw drw_epoch must be an integer >= 1, got {drw_epoch!r}")
        inv_root = torch.tensor(counts, dtype=torch.float64) ** -0.25
        self.register_buffer("margins", (inv_root * (max_margin / inv_root.max())).float())
        self.register_buffer("drw_weights", effective_number_weights(counts, DRW_BETA))
        self.drw_epoch = drw_epoch
        self.reweight = False  # set by set_epoch: the trainable calls it before every epoch, also after a resume

    def set_epoch(self, epoch: int) -> None:
        self.reweight = epoch >= self.drw_epoch

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = logits.float()
        z = z - F.one_hot(target, z.shape[1]) * self.margins[target][:, None]  # the margin on the true class only
        nll = F.cross_entropy(LDAM_SCALE * z, target, reduction="none")
        if self.reweight:
            nll = self.drw_weights[target] * nll
        return nll.mean()


def start_epoch(loss: nn.Module, epoch: int) -> None:
    """Tell ``loss`` that ``epoch`` (from 1) begins, if it changes with the epoch."""
    set_epoch = getattr(loss, "set_epoch", None)
    if set_epoch is not None:
        set_epoch(epoch)


def focal_alpha(counts: Sequence[int], minority: int, alpha: float | Sequence[float] | None) -> torch.Tensor | None:
    """alpha: None (no class weighting), per-class values, or a scalar in [0, 1] that ``minority``
    gets while every other class gets 1 - alpha (Lin et al.'s alpha_t)."""
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)):
        _number("focal alpha", alpha, "in [0, 1]", lambda v: 0 <= v <= 1)
        return torch.tensor([alpha if c == minority else 1 - alpha for c in range(len(counts))], dtype=torch.float32)
    if len(alpha) != len(counts):
        raise LossError(f"focal alpha needs one value per class ({len(counts)}), got {len(alpha)}")
    return torch.tensor(list(alpha), dtype=torch.float32)


# Factory keyword defaults equal study.spaces.TRIAL_DEFAULTS (a test holds them together).


def _ce(counts: list[int], minority: int) -> nn.Module:
    return nn.CrossEntropyLoss()


def _weighted_ce(
    counts: list[int], minority: int, weight_ratio: float | None = None, class_weights: Sequence[float] | None = None
) -> nn.Module:
    """Explicit per-class weights (cost rescaling), an explicit minority ratio, or inverse frequency."""
    if class_weights is not None:
        if weight_ratio is not None:
            raise LossError(f"weighted_ce takes weight_ratio or class_weights, not both; got weight_ratio={weight_ratio!r}")
        if len(class_weights) != len(counts):
            raise LossError(f"weighted_ce class_weights needs one value per class ({len(counts)}), got {len(class_weights)}")
        return WeightedCE(torch.tensor(list(class_weights), dtype=torch.float32))
    return WeightedCE(inverse_frequency(counts) if weight_ratio is None else ratio_weights(counts, minority, weight_ratio))


def _focal(counts: list[int], minority: int, gamma: float = 2.0, alpha: float | Sequence[float] | None = None) -> nn.Module:
    return FocalLoss(gamma, focal_alpha(counts, minority, alpha))


def _class_balanced(counts: list[int], minority: int, beta: float = 0.9999, base_loss: str = "ce",
                    gamma: float = 2.0) -> nn.Module:
    """The base loss (ce or focal) with each sample weighted by its class's effective-number weight."""
    if base_loss not in BASE_LOSSES:
        raise LossError(f"class_balanced base_loss must be one of: {', '.join(BASE_LOSSES)}, got {base_loss!r}")
    weights = effective_number_weights(counts, beta)
    return WeightedCE(weights) if base_loss == "ce" else FocalLoss(gamma, weights)


def _ldam_drw(counts: list[int], minority: int, max_margin: float = 0.5, drw_epoch: int = 8) -> nn.Module:
    return LDAMDRW(counts, max_margin, drw_epoch)


def _logit_adjusted(counts: list[int], minority: int, tau: float = 1.0) -> nn.Module:
    """Menon et al. (ICLR 2021): CE on logits + tau * log prior_c, prior_c = n_c / N."""
    _number("logit_adjusted tau", tau, ">= 0", lambda v: v >= 0)
    n = torch.tensor(counts, dtype=torch.float64)
    return OffsetCE((tau * torch.log(n / n.sum())).float())


def _balanced_softmax(counts: list[int], minority: int) -> nn.Module:
    """Ren et al. (NeurIPS 2020): CE on logits + log n_c."""
    return OffsetCE(torch.log(torch.tensor(counts, dtype=torch.float64)).float())


# name -> factory(counts, minority, **options) -> loss module
LOSSES: dict[str, Callable[..., nn.Module]] = {
    "balanced_softmax": _balanced_softmax,
    "ce": _ce,
    "class_balanced": _class_balanced,
    "focal": _focal,
    "ldam_drw": _ldam_drw,
    "logit_adjusted": _logit_adjusted,
    "weighted_ce": _weighted_ce,
}


def check_loss(name: str) -> None:
    if name not in LOSSES:
        raise LossError(f"unknown loss '{name}'; choose one of: {', '.join(sorted(LOSSES))}")


def loss_options(name: str) -> tuple[str, ...]:
    """Every option the named loss takes: its trial-config keys, then any extra (weighted_ce's class_weights)."""
    return LOSS_OPTIONS[name] + EXTRA_OPTIONS.get(name, ())


def build_loss(name: str, counts: Sequence[int], minority: int, **options: object) -> nn.Module:
    """The named loss for training-class counts ``counts`` (after resampling) and the data set's
    ``minority`` class (before resampling). Unknown options are an error listing the known ones."""
    check_loss(name)
    known = loss_options(name)
    for key in options:
        if key not in known:
            raise LossError(f"loss '{name}': unknown option '{key}'; "
                            + (f"it takes: {', '.join(known)}" if known else "it takes no options"))
    counts = [int(c) for c in counts]
    if not counts or min(counts) < 1:
        raise LossError(f"every class needs at least one training sample, got counts {counts}")
    if isinstance(minority, bool) or not isinstance(minority, int) or not 0 <= minority < len(counts):
        raise LossError(f"minority must be a class index in [0, {len(counts) - 1}], got {minority!r}")
    return LOSSES[name](counts, minority, **options)
