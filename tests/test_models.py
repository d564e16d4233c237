"""ResNet-18 builders: heads, pretrained backbones restored exactly, frozen stages, clear errors, safe loads."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from study.models import (
    FREEZE,
    IMAGENET_NORM,
    PAPER_NORM,
    ModelError,
    build_model,
    imagenet_file,
    normalisation,
    source_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread")

STAGE_PREFIXES = {"stem": ("conv1.", "bn1."), "layer1": ("layer1.",), "layer2": ("layer2.",), "layer3": ("layer3.",),
                  "layer4": ("layer4.",)}


def trained_like_state(num_classes: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """A ResNet-18 state dict unlike a fresh one: random weights and non-default BatchNorm statistics."""
    torch.manual_seed(seed)
    net = build_model(num_classes)
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if name.endswith("running_mean") or name.endswith("running_var"):
                buf.copy_(torch.rand_like(buf) + 0.5)
            elif name.endswith("num_batches_tracked"):
                buf.fill_(123)
    return {k: v.clone() for k, v in net.state_dict().items()}


def assert_backbone_equal(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    got = net.state_dict()
    backbone = [k for k in state if not k.startswith("fc.")]
    assert len(backbone) > 100 and set(backbone) == {k for k in got if not k.startswith("fc.")}
    for key in backbone:
        assert torch.equal(got[key], state[key]), key


# ---------------------------------------------------------------- scratch


@pytest.mark.parametrize("num_classes", [2, 8, 10])
def test_scratch_model_has_the_tasks_head(num_classes: int) -> None:
    net = build_model(num_classes)
    assert net.fc.in_features == 512 and net.fc.out_features == num_classes
    net.eval()
    with torch.no_grad():
        assert net(torch.rand(3, 3, 32, 32)).shape == (3, num_classes)
    assert all(p.requires_grad for p in net.parameters())


def test_scratch_models_differ_by_seed_and_repeat_for_one() -> None:
    torch.manual_seed(5)
    a = build_model(2).state_dict()
    torch.manual_seed(5)
    b = build_model(2).state_dict()
    torch.manual_seed(6)
    c = build_model(2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


# ---------------------------------------------------------------- pretrained


@pytest.mark.parametrize("wrapped", [True, False], ids=["checkpoint-blob", "bare-state-dict"])
def test_saved_state_dict_restores_the_backbone_exactly_and_replaces_the_head(tmp_path: Path, wrapped: bool) -> None:
    state = trained_like_state(8)
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": state, "classes": ["a"] * 8} if wrapped else state, path)
    net = build_model(2, "pretrained", str(path))
    assert_backbone_equal(net, state)
    assert net.fc.out_features == 2  # the source's 8-class head is gone


def test_head_is_fresh_even_when_the_saved_head_fits(tmp_path: Path) -> None:
    state = trained_like_state(2)
    path = tmp_path / "two.pt"
    torch.save(state, path)
    net = build_model(2, "pretrained", str(path))
    assert_backbone_equal(net, state)
    assert not torch.equal(net.fc.weight, state["fc.weight"])


def test_source_weights_come_from_the_source_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # checkpoints live under results/checkpoints relative to the working directory
    with pytest.raises(ModelError, match=r"weights file results/checkpoints/source_resnet18_32px\.pt does not exist "
                                         r"\(make it with: python -m study\.pretrain\)"):
        build_model(2, "pretrained", "source")
    state = trained_like_state(8)
    path = source_checkpoint(32)
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": state}, path)
    net = build_model(2, "pretrained", "source", freeze="layer2")
    assert_backbone_equal(net, state)
    assert (tmp_path / "results" / "checkpoints" / "source_resnet18_32px.pt").exists()


def test_an_in_memory_state_needs_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no source checkpoint here: the state passed in is used instead
    state = trained_like_state(8)
    assert_backbone_equal(build_model(2, "pretrained", "source", state=state), state)


def test_imagenet_weights_from_the_torch_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert imagenet_file() == expected
    with pytest.raises(ModelError, match=rf"ImageNet weights not found: put resnet18-f37072fd\.pth \(from "
                                         rf"https://download\.pytorch\.org/models/resnet18-f37072fd\.pth\) at {expected}"):
        build_model(2, "pretrained", "imagenet")
    assert not expected.exists()  # nothing was downloaded
    state = trained_like_state(1000)  # torchvision's file: a bare state dict with the 1000-class head
    expected.parent.mkdir(parents=True)
    torch.save(state, expected)
    assert_backbone_equal(build_model(2, "pretrained", "imagenet"), state)


def test_normalisation_per_weights_kind() -> None:
    assert normalisation("imagenet") == IMAGENET_NORM == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    for weights in (None, "source", "some/file.pt"):
        assert normalisation(weights) == PAPER_NORM == ((0.5,) * 3, (0.5,) * 3)


# ---------------------------------------------------------------- freezing


@pytest.mark.parametrize("freeze", FREEZE)
def test_freezing_freezes_exactly_the_named_stages(freeze: str) -> None:
    stages = list(STAGE_PREFIXES)
    frozen_stages = [] if freeze == "none" else stages[: stages.index(freeze) + 1]
    frozen_prefixes = tuple(p for s in frozen_stages for p in STAGE_PREFIXES[s])
    net = build_model(2, "pretrained", "source", freeze=freeze, state=trained_like_state(8))
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    expected = {n for n, _ in net.named_parameters() if n.startswith(frozen_prefixes)}
    assert frozen == expected
    assert all(not n.startswith("fc.") for n in frozen)  # the head always trains
    assert bool(frozen) == (freeze != "none")


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "resnet50"}, r"unknown model 'resnet50'; choose one of: pretrained, scratch"),
        ({"model": "pretrained", "weights": "source", "freeze": "layer5"},
         r"unknown freeze stage 'layer5'; choose one of: none, stem, layer1, layer2, layer3, layer4"),
        ({"model": "pretrained"}, r"model 'pretrained' needs weights: imagenet, source or a state-dict file"),
        ({"model": "scratch", "freeze": "layer2"}, r"freezing 'layer2' needs pretrained weights"),
        ({"model": "pretrained", "weights": "imagenett"}, r"weights file imagenett does not exist$"),
    ],
)
def test_bad_model_settings_are_clear_errors(kwargs: dict, message: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match=message):
        build_model(2, **kwargs)


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "weights.pt"
    with pytest.raises(ModelError, match=rf"weights file {missing} does not exist"):
        build_model(2, "pretrained", str(missing))


def test_weights_that_do_not_fit_resnet18_are_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ModelError, match=r"weights .*other\.pt do not fit ResNet-18: missing \['conv1\.weight'"):
        build_model(2, "pretrained", str(path))


class Payload:
    """Unpickling this runs os.makedirs(marker): what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


def test_checkpoint_loads_are_weights_only(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    state = trained_like_state(8)
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": state, "note": Payload(marker)}, path)
    with pytest.raises(pickle.UnpicklingError, match=r"Weights only load failed"):
        build_model(2, "pretrained", str(path))
    assert not marker.exists()  # the object was refused, never run
    # the same checkpoint without the object loads
    torch.save({"state_dict": state, "note": "plain"}, path)
    assert_backbone_equal(build_model(2, "pretrained", str(path)), state)
