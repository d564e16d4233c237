"""Data sets -> one in-memory form: uint8 N x C x H x W tensors per split, decoded once, cached.

Every data set is chosen by name (``animals``, ``animals_source``, ``digits``, ``digits_lt``)
or is a folder path in the seeds' Kaggle layout. The result is a :class:`Dataset` whose
train / validation / test splits are disjoint and deterministic for a seed. The decoded
tensors are cached under ``results/cache/`` keyed by a hash of the content and the settings,
so a re-run skips decoding and a changed file invalidates the cache.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_CACHE = Path("results/cache")
ANIMALS = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
ANIMAL_TASK = (2, 4)  # cat (minority, label 0) vs dog (majority, label 1), as in the seed paper
PAPER_RATIO = 1 / 11  # 1000 cats : 11000 dogs
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CACHE_VERSION = 3  # 2: exact duplicate animal images stay out of validation and test; 3: folder hold-out after decoding


class DataError(ValueError):
    """Bad data input: a clear one-line message for the user."""


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8, N x C x H x W
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.labels, minlength=num_classes).tolist()


@dataclass(frozen=True)
class Dataset:
    name: str
    classes: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    settings: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> str:
        k = self.num_classes
        parts = [f"{s}={dict(zip(self.classes, getattr(self, s).counts(k)))}" for s in ("train", "val", "test")]
        return f"{self.name} {tuple(self.train.images.shape[1:])}: " + " ".join(parts)


# ---------------------------------------------------------------- settings helpers


def parse_ratio(value: str | float | None) -> float | None:
    """'1:11', '0.0909' or a float -> minority/majority in (0, 1]."""
    if value is None:
        return None
    try:
        if isinstance(value, str) and ":" in value:
            a, b = (float(v) for v in value.split(":"))
            ratio = a / b
        else:
            ratio = float(value)
    except (ValueError, ZeroDivisionError):
        raise DataError(f"ratio must be a number in (0, 1] or 'a:b', got {value!r}") from None
    check_ratio(ratio)
    return ratio


def check_ratio(ratio: float) -> None:
    if not 0 < ratio <= 1:
        raise DataError(f"ratio must be in (0, 1] (minority / majority), got {ratio}")


def parse_counts(value: str | dict | None) -> dict[str, int] | None:
    """'cat=1000,dog=11000' -> {'cat': 1000, 'dog': 11000}."""
    if value is None or isinstance(value, dict):
        return value
    counts = {}
    for part in value.split(","):
        name, sep, num = part.partition("=")
        if not sep or not num.strip().isdigit():
            raise DataError(f"per-class counts must look like 'cat=1000,dog=11000', got {value!r}")
        counts[name.strip()] = int(num)
    return counts


def _pick(rng: np.random.Generator, idx: np.ndarray, n: int) -> np.ndarray:
    return np.sort(rng.permutation(idx)[:n])


def train_counts(
    available: dict[str, int], classes: tuple[str, ...], ratio: float | None, counts: dict[str, int] | None
) -> dict[str, int]:
    """Training images per class: explicit counts, or the first class cut to ``ratio`` of the largest."""
    if counts is not None:
        unknown = sorted(set(counts) - set(classes))
        if unknown:
            raise DataError(f"per-class counts name unknown classes {unknown}; classes are: {', '.join(classes)}")
        for name, n in counts.items():
            if n > available[name] or n < 1:
                raise DataError(
                    f"per-class count {name}={n} is out of range: {available[name]} training images available"
                )
        return {c: counts.get(c, available[c]) for c in classes}
    if ratio is None:
        return dict(available)
    check_ratio(ratio)
    majority = max(available[c] for c in classes[1:])
    minority = max(1, round(ratio * majority))
    if minority > available[classes[0]]:
        raise DataError(
            f"ratio {ratio:g} asks for {minority} training images of '{classes[0]}' "
            f"({majority} of the largest class), but only {available[classes[0]]} are available"
        )
    return {c: (minority if i == 0 else available[c]) for i, c in enumerate(classes)}


# ---------------------------------------------------------------- tensors


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 N x C x h x w -> uint8 N x C x size x size (bilinear, antialiased)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images.contiguous()
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def _split(images: torch.Tensor, labels: np.ndarray, idx: np.ndarray) -> Split:
    return Split(images[torch.from_numpy(idx)].contiguous(), torch.from_numpy(labels[idx]).long())


# ---------------------------------------------------------------- animals


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admit only what a pickled numpy array needs; anything else is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        if module.endswith("multiarray"):
            from numpy.core import multiarray  # numpy 1 name, aliased in numpy 2

            return getattr(multiarray, name)
        return getattr(np, name)


def read_numpy_pickle(raw: bytes) -> np.ndarray:
    """Read a gzip'd pickled numpy array with the restricted unpickler."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core alias in numpy 2
        array = _NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(raw))).load()
    if not isinstance(array, np.ndarray):
        raise DataError(f"expected a numpy array in the data file, got {type(array).__name__}")
    return array


def _animal_files() -> tuple[bytes, bytes]:
    try:
        root = resources.files("animal_mnist").joinpath("data", "Animal_MNIST")
        return (
            root.joinpath("animal_data_version_3.gz").read_bytes(),
            root.joinpath("animal_label_version_3.gz").read_bytes(),
        )
    except (ModuleNotFoundError, FileNotFoundError):
        raise DataError(
            "the animals data set needs the package animal-mnist: pip install --no-deps animal-mnist==0.4"
        ) from None


def _animal_arrays(raw: tuple[bytes, bytes]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = (read_numpy_pickle(r) for r in raw)
    return images.astype(np.uint8), labels.astype(np.int64)


def _duplicated(images: np.ndarray) -> np.ndarray:
    """True for every image whose exact pixels occur more than once (Animal-MNIST holds 284 such pairs)."""
    _, inverse, counts = np.unique(images.reshape(len(images), -1), axis=0, return_inverse=True, return_counts=True)
    return counts[inverse.ravel()] > 1


def _unique_first(idx: np.ndarray, duplicated: np.ndarray) -> np.ndarray:
    """Images without an exact copy first (validation and test take those), duplicated ones last (training),
    so that no image appears in two splits."""
    return np.concatenate([idx[~duplicated[idx]], idx[duplicated[idx]]])


def build_animals(
    raw: tuple[bytes, bytes], *, image_size: int, seed: int, ratio: float | None, counts: dict | None,
    val_per_class: int = 150, test_per_class: int = 150,
) -> Dataset:
    """Cat (0) vs dog (1): balanced validation and test, imbalanced training (1:11 by default)."""
    images, labels = _animal_arrays(raw)
    duplicated = _duplicated(images)
    classes = tuple(ANIMALS[i] for i in ANIMAL_TASK)
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": []}
    pools = {}
    for new, old in enumerate(ANIMAL_TASK):
        idx = _unique_first(rng.permutation(np.flatnonzero(labels == old)), duplicated)
        parts["val"].append(idx[:val_per_class])
        parts["test"].append(idx[val_per_class : val_per_class + test_per_class])
        pools[classes[new]] = idx[val_per_class + test_per_class :]
    wanted = train_counts({c: len(p) for c, p in pools.items()}, classes, PAPER_RATIO if ratio is None and counts is None else ratio, counts)
    parts["train"] = [_pick(rng, pools[c], wanted[c]) for c in classes]
    remap = np.full(len(ANIMALS), -1)
    remap[list(ANIMAL_TASK)] = [0, 1]
    new_labels = remap[labels]
    tensor = resize(torch.from_numpy(images).unsqueeze(1), image_size)
    splits = {k: _split(tensor, new_labels, np.sort(np.concatenate(v))) for k, v in parts.items()}
    return Dataset("animals", classes, **splits)


def build_animals_source(raw: tuple[bytes, bytes], *, image_size: int, seed: int, **_: object) -> Dataset:
    """The eight animals that are neither cat nor dog: the source task for pretraining (80/10/10)."""
    images, labels = _animal_arrays(raw)
    duplicated = _duplicated(images)
    keep = [i for i in range(len(ANIMALS)) if i not in ANIMAL_TASK]
    classes = tuple(ANIMALS[i] for i in keep)
    remap = np.full(len(ANIMALS), -1)
    remap[keep] = np.arange(len(keep))
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": []}
    for old in keep:
        idx = _unique_first(rng.permutation(np.flatnonzero(labels == old)), duplicated)
        n_val = n_test = len(idx) // 10
        parts["val"].append(idx[:n_val])
        parts["test"].append(idx[n_val : n_val + n_test])
        parts["train"].append(idx[n_val + n_test :])
    tensor = resize(torch.from_numpy(images).unsqueeze(1), image_size)
    splits = {k: _split(tensor, remap[labels], np.sort(np.concatenate(v))) for k, v in parts.items()}
    return Dataset("animals_source", classes, **splits)


# ---------------------------------------------------------------- digits


def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images * (255 / 16)).round().astype(np.uint8), d.target.astype(np.int64)


def build_digits(
    raw: tuple[np.ndarray, np.ndarray], *, image_size: int, seed: int, ratio: float | None, counts: dict | None,
    pair: tuple[int, int] = (3, 8), holdout: float = 0.25,
) -> Dataset:
    """scikit-learn's digits as a binary pair (first digit the minority, 1:11 by default)."""
    images, labels = raw
    classes = tuple(str(d) for d in pair)
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": []}
    pools = {}
    for digit in pair:
        idx = rng.permutation(np.flatnonzero(labels == digit))
        n = int(len(idx) * holdout)
        parts["val"].append(idx[:n])
        parts["test"].append(idx[n : 2 * n])
        pools[str(digit)] = idx[2 * n :]
    wanted = train_counts({c: len(p) for c, p in pools.items()}, classes, PAPER_RATIO if ratio is None and counts is None else ratio, counts)
    parts["train"] = [_pick(rng, pools[c], wanted[c]) for c in classes]
    remap = np.full(10, -1)
    remap[list(pair)] = [0, 1]
    tensor = resize(torch.from_numpy(images).unsqueeze(1), image_size)
    splits = {k: _split(tensor, remap[labels], np.sort(np.concatenate(v))) for k, v in parts.items()}
    return Dataset("digits", classes, **splits)


def build_digits_lt(
    raw: tuple[np.ndarray, np.ndarray], *, image_size: int, seed: int, ratio: float | None, counts: dict | None,
    holdout: float = 0.2,
) -> Dataset:
    """All ten digits, long-tailed training set: class i keeps n_max * ratio ** (i / 9) images."""
    images, labels = raw
    classes = tuple(str(d) for d in range(10))
    ratio = 0.1 if ratio is None else ratio
    check_ratio(ratio)
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": []}
    pools = {}
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        n = int(len(idx) * holdout)
        parts["val"].append(idx[:n])
        parts["test"].append(idx[n : 2 * n])
        pools[str(digit)] = idx[2 * n :]
    n_max = min(len(p) for p in pools.values())
    profile = {c: max(1, round(n_max * ratio ** (i / 9))) for i, c in enumerate(classes)}
    wanted = train_counts({c: len(p) for c, p in pools.items()}, classes, None, counts or profile)
    parts["train"] = [_pick(rng, pools[c], wanted[c]) for c in classes]
    tensor = resize(torch.from_numpy(images).unsqueeze(1), image_size)
    splits = {k: _split(tensor, labels, np.sort(np.concatenate(v))) for k, v in parts.items()}
    return Dataset("digits_lt", classes, **splits)


# ---------------------------------------------------------------- folder (Kaggle layout)


def _class_dirs(split_dir: Path) -> dict[str, list[Path]]:
    if not split_dir.is_dir():
        raise DataError(f"missing folder {split_dir} (expected <root>/train/<class>/, <root>/validation/<class>/)")
    dirs = sorted(d for d in split_dir.iterdir() if d.is_dir())
    if not dirs:
        raise DataError(f"no class folders in {split_dir}")
    files = {}
    for d in dirs:
        found = sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not found:
            raise DataError(f"class folder {d} is empty")
        files[d.name] = found
    return files


def folder_files(root: Path) -> dict[str, dict[str, list[Path]]]:
    """{split: {class: [files]}} for a Kaggle-layout folder; validates the layout."""
    if not root.exists():
        raise DataError(f"data path {root} does not exist")
    layout = {"train": _class_dirs(root / "train"), "validation": _class_dirs(root / "validation")}
    if (root / "test").is_dir():
        layout["test"] = _class_dirs(root / "test")
    for split, per_class in layout.items():
        if sorted(per_class) != sorted(layout["train"]):
            raise DataError(
                f"class folders of {root / split} ({', '.join(per_class)}) differ from train ({', '.join(layout['train'])})"
            )
    return layout


def _decode(path: Path, size: int) -> torch.Tensor | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()  # raises on truncated or corrupt data
            rgb = img.convert("RGB").resize((size, size), Image.BILINEAR)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)


def decode_files(files: list[tuple[Path, int]], size: int, what: str) -> tuple[torch.Tensor, torch.Tensor, list[Path]]:
    """Decode images once (with a progress bar); return tensors, labels and the files skipped."""
    from tqdm import tqdm

    images, labels, skipped = [], [], []
    for path, label in tqdm(files, desc=f"decoding {what}", unit="img", disable=None, leave=False):
        tensor = _decode(path, size)
        if tensor is None:
            skipped.append(path)
        else:
            images.append(tensor)
            labels.append(label)
    stacked = torch.stack(images) if images else torch.empty(0, 3, size, size, dtype=torch.uint8)
    return stacked, torch.tensor(labels, dtype=torch.long), skipped


def build_folder(
    layout: dict[str, dict[str, list[Path]]], *, root: Path, image_size: int, seed: int,
    ratio: float | None, counts: dict | None,
) -> Dataset:
    """A Kaggle-layout folder; without test/, half of each validation class's readable images is held out (seeded)."""
    classes = tuple(sorted(layout["train"]))
    rng = np.random.default_rng(seed)
    wanted = train_counts({c: len(layout["train"][c]) for c in classes}, classes, ratio, counts)
    chosen: dict[str, list[tuple[Path, int]]] = {"train": [], "val": [], "test": []}
    for label, c in enumerate(classes):
        train = layout["train"][c]
        chosen["train"] += [(train[i], label) for i in _pick(rng, np.arange(len(train)), wanted[c])]
        chosen["val"] += [(p, label) for p in layout["validation"][c]]
        chosen["test"] += [(p, label) for p in layout.get("test", {}).get(c, [])]
    splits, skipped = {}, []
    for name, files in chosen.items():
        if not files:  # no test/ folder: held out of validation below
            continue
        images, labels, bad = decode_files(files, image_size, name)
        skipped += bad
        for label, c in enumerate(classes):
            if not (labels == label).any():
                raise DataError(
                    f"class '{c}' has no readable image in the {name} split of {root} ({len(bad)} unreadable files skipped)"
                )
        splits[name] = Split(images, labels)
    if "test" not in splits:  # split what decoded, so that unreadable files cannot empty one half
        halves = [rng.permutation(np.flatnonzero(splits["val"].labels.numpy() == label)) for label in range(len(classes))]
        test_idx = np.sort(np.concatenate([h[: len(h) // 2] for h in halves]))
        val_idx = np.sort(np.concatenate([h[len(h) // 2 :] for h in halves]))
        whole = splits["val"]
        splits["val"] = Split(whole.images[val_idx], whole.labels[val_idx])
        splits["test"] = Split(whole.images[test_idx], whole.labels[test_idx])
        for label, c in enumerate(classes):
            if not (splits["test"].labels == label).any():
                raise DataError(f"class '{c}' has one readable validation image in {root}: too few to hold out a test half")
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} corrupt, truncated or non-image files under {root} (first: {skipped[0]})",
            stacklevel=2,
        )
    return Dataset(f"folder:{root.name}", classes, **splits)


# ---------------------------------------------------------------- registry, cache, entry point


def _hash_bytes(h: "hashlib._Hash", *chunks: bytes) -> None:
    for c in chunks:
        h.update(hashlib.sha256(c).digest())


Source = tuple[object, Callable[["hashlib._Hash"], None], Callable[..., Dataset]]


def _animals_source(builder: Callable[..., Dataset]) -> Callable[[], Source]:
    def source() -> Source:
        raw = _animal_files()
        return raw, lambda h: _hash_bytes(h, *raw), builder

    return source


def _digits_source(builder: Callable[..., Dataset]) -> Callable[[], Source]:
    def source() -> Source:
        raw = _digits_raw()
        return raw, lambda h: _hash_bytes(h, raw[0].tobytes(), raw[1].tobytes()), builder

    return source


# name -> () -> (raw content, content hasher, builder)
DATASETS: dict[str, Callable[[], Source]] = {
    "animals": _animals_source(build_animals),
    "animals_source": _animals_source(build_animals_source),
    "digits": _digits_source(build_digits),
    "digits_lt": _digits_source(build_digits_lt),
}


def _folder_source(root: Path) -> Source:
    layout = folder_files(root)

    def hasher(h: "hashlib._Hash") -> None:
        for split in sorted(layout):
            for c in sorted(layout[split]):
                for p in layout[split][c]:
                    h.update(str(p.relative_to(root)).encode())
                    _hash_bytes(h, p.read_bytes())

    return layout, hasher, lambda lay, **kw: build_folder(lay, root=root, **kw)


def resolve_source(data: str) -> tuple[str, Source]:
    """A data-set name or a folder path -> (display name, source); unknown names list the choices."""
    if data in DATASETS:
        return data, DATASETS[data]()
    path = Path(data).expanduser()
    if os.sep in data or path.exists() or data.startswith("."):
        return f"folder:{path}", _folder_source(path)
    raise DataError(f"unknown data set '{data}'; choose one of: {', '.join(sorted(DATASETS))}, or a folder path")


def load_dataset(
    data: str = "animals",
    *,
    image_size: int = 32,
    seed: int = 0,
    ratio: float | None = None,
    counts: dict[str, int] | str | None = None,
    cache_dir: Path | str | None = DEFAULT_CACHE,
) -> Dataset:
    """Build (or load from the cache) the data set's three uint8 splits."""
    if ratio is not None:
        check_ratio(ratio)
    counts = parse_counts(counts)
    name, (raw, hasher, builder) = resolve_source(data)
    settings = {"data": name, "image_size": image_size, "seed": seed, "ratio": ratio, "counts": counts}
    h = hashlib.sha256(json.dumps({**settings, "v": CACHE_VERSION}, sort_keys=True).encode())
    hasher(h)
    key = h.hexdigest()[:20]
    cache = Path(cache_dir) / f"{name.split(':')[0]}-{key}.pt" if cache_dir is not None else None
    if cache is not None and cache.exists():
        blob = torch.load(cache, weights_only=True)
        splits = {s: Split(blob[f"{s}_x"], blob[f"{s}_y"]) for s in ("train", "val", "test")}
        return Dataset(blob["name"], tuple(blob["classes"]), **splits, settings={**settings, "cache": str(cache)})
    ds = builder(raw, image_size=image_size, seed=seed, ratio=ratio, counts=counts)
    ds = Dataset(ds.name, ds.classes, ds.train, ds.val, ds.test, settings={**settings, "cache": str(cache)})
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        blob = {"name": ds.name, "classes": list(ds.classes)}
        for s in ("train", "val", "test"):
            blob[f"{s}_x"], blob[f"{s}_y"] = getattr(ds, s).images, getattr(ds, s).labels
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save(blob, tmp)
        os.replace(tmp, cache)  # atomic: a killed run never leaves half a cache file
    return ds


def subset(ds: Dataset, largest: int, seed: int = 0, floor: int = 8) -> Dataset:
    """Shrink every split so its largest class has ``largest`` images, keeping the class proportions
    (each class keeps at least ``floor``, so SMOTE's k = 5 still works): what ``--smoke`` runs on."""
    rng = np.random.default_rng(seed)

    def cut(split: Split) -> Split:
        labels = split.labels.numpy()
        sizes = np.bincount(labels, minlength=ds.num_classes)
        scale = min(1.0, largest / sizes.max())
        keep = [min(n, max(floor, round(n * scale))) for n in sizes]
        idx = np.concatenate([_pick(rng, np.flatnonzero(labels == c), keep[c]) for c in range(ds.num_classes)])
        return _split(split.images, labels, np.sort(idx))

    return Dataset(ds.name, ds.classes, cut(ds.train), cut(ds.val), cut(ds.test), {**ds.settings, "subset": largest})
