"""ResNet-18 builders: scratch, pretrained (imagenet | source | a state-dict file), frozen stages.

Nothing downloads: ImageNet weights come from the local torch hub cache, the source-task
weights from ``python -m study.pretrain``. Every checkpoint load uses ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from torchvision.models import ResNet18_Weights, resnet18

CHECKPOINT_DIR = Path("results/checkpoints")
MODELS = ("pretrained", "scratch")
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")  # freezing "layerN" freezes every stage up to it
FREEZE = ("none", *STAGES)
STAGE_MODULES = {"stem": ("conv1", "bn1"), **{s: (s,) for s in STAGES[1:]}}
PAPER_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class ModelError(ValueError):
    """Bad model settings or a missing weights file: a clear one-line message."""


def imagenet_file() -> Path:
    url = ResNet18_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def source_checkpoint(image_size: int = 32, smoke: bool = False) -> Path:
    """Where ``python -m study.pretrain`` saves the animals source-task ResNet-18 for this image size."""
    return CHECKPOINT_DIR / f"source_resnet18_{image_size}px{'_smoke' if smoke else ''}.pt"


def weights_path(weights: str, source: Path | None = None) -> Path:
    """'imagenet' | 'source' | a state-dict file -> an existing path, or a clear error."""
    if weights == "imagenet":
        path = imagenet_file()
        if not path.exists():
            raise ModelError(
                f"ImageNet weights not found: put {path.name} (from {ResNet18_Weights.IMAGENET1K_V1.url}) at {path}"
            )
        return path
    path = (source or source_checkpoint()) if weights == "source" else Path(weights).expanduser()
    if not path.exists():
        hint = " (make it with: python -m study.pretrain)" if weights == "source" else ""
        raise ModelError(f"weights file {path} does not exist{hint}")
    return path


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return blob.get("state_dict", blob)


def normalisation(weights: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet statistics for ImageNet weights; the paper's mean = std = 0.5 otherwise."""
    return IMAGENET_NORM if weights == "imagenet" else PAPER_NORM


def check_model(model: str, weights: str | None, freeze: str, need_file: bool = True) -> None:
    if model not in MODELS:
        raise ModelError(f"unknown model '{model}'; choose one of: {', '.join(MODELS)}")
    if freeze not in FREEZE:
        raise ModelError(f"unknown freeze stage '{freeze}'; choose one of: {', '.join(FREEZE)}")
    if model == "pretrained":
        if not weights:
            raise ModelError("model 'pretrained' needs weights: imagenet, source or a state-dict file")
        if need_file:
            weights_path(weights)
    elif freeze != "none":
        raise ModelError(f"freezing '{freeze}' needs pretrained weights; a scratch model has nothing to keep")


def frozen_modules(model: nn.Module) -> list[nn.Module]:
    return [getattr(model, name) for stage in getattr(model, "frozen_stages", ()) for name in STAGE_MODULES[stage]]


def build_model(
    num_classes: int,
    model: str = "scratch",
    weights: str | None = None,
    freeze: str = "none",
    state: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """torchvision ResNet-18 with a fresh ``num_classes`` head; backbone from ``weights`` if pretrained.

    ``state``: the weights' state dict when the caller already holds it (a study ships it to its
    trials through Ray's object store, so nodes need no copy of the file).
    """
    check_model(model, weights, freeze, need_file=state is None)
    net = resnet18(weights=None)
    if model == "pretrained":
        state = load_state_dict(weights_path(weights)) if state is None else state
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
            raise ModelError(f"weights {weights} do not fit ResNet-18: missing {missing[:3]}, unexpected {unexpected[:3]}")
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    net.frozen_stages = STAGES[: STAGES.index(freeze) + 1] if freeze != "none" else ()
    for module in frozen_modules(net):
        module.requires_grad_(False)
    return net
