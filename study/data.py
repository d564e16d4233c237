"""Data sets -> one in-memory form: uint8 N x C x H x W tensors per split, decoded once, cached.

Every data set is chosen by name (``animals``, ``animals_source``, ``digits``, ``digits_lt``)
or is a folder path in the seeds' Kaggle layout (checked, without torch, by ``study.sources``).
The result is a :class:`Dataset` whose train / validation / test splits are disjoint and
deterministic for a seed. A folder's images are decoded once, over every core (or with nvjpeg
on a GPU). The decoded tensors are cached under ``cache_dir`` (``results/cache/`` by default)
keyed by a hash of the content and the settings, so a re-run skips decoding and a changed file
invalidates the cache.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import mmap
import multiprocessing
import os
import pickle
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from study.sources import (  # noqa: F401 - DataError, DataWarning and the parsers are re-exported for callers
    ANIMAL_PAIRS,
    ANIMAL_TASK,
    ANIMALS,
    DATASETS,
    DIGIT_PAIR,
    DIGIT_PAIRS,
    JPEG_SUFFIXES,
    DataError,
    DataWarning,
    check_ratio,
    folder_layout,
    is_folder,
    parse_counts,
    parse_ratio,
)

DEFAULT_CACHE = Path("results/cache")
PAPER_RATIO = 1 / 11  # 1000 cats : 11000 dogs
# 2: exact duplicate animal images stay out of validation and test; 3: folder hold-out after decoding;
# 4: --ratio keeps the fewest-image class whole (folders), skipped files recorded in the entry
CACHE_VERSION = 4
DECODE_CHUNK = 64  # files per task of the decoding pool: large enough to amortise pickling, small for balance
GPU_BATCH = 128  # JPEGs per nvjpeg call
MAX_IMAGE_BYTES = 64 << 20  # a larger file is skipped unread, with the other unreadable ones


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

    @property
    def minority(self) -> int:
        """The label with the fewest training images (before any resampling; ties: the lowest label)."""
        counts = self.train.counts(self.num_classes)
        return min(range(self.num_classes), key=counts.__getitem__)  # min keeps the first of a tie

    @property
    def minority_name(self) -> str:
        return self.classes[self.minority]

    def summary(self) -> str:
        k = self.num_classes
        parts = [f"{s}={dict(zip(self.classes, getattr(self, s).counts(k), strict=False))}" for s in ("train", "val", "test")]
        return f"{self.name} {tuple(self.train.images.shape[1:])}: " + " ".join(parts)


# ---------------------------------------------------------------- training counts


def _pick(rng: np.random.Generator, idx: np.ndarray, n: int) -> np.ndarray:
    return np.sort(rng.permutation(idx)[:n])


def train_counts(
    available: dict[str, int], classes: tuple[str, ...], ratio: float | None, counts: dict[str, int] | None,
    minority: str | None = None,
) -> dict[str, int]:
    """Training images per class: explicit ``counts``, or for a ``ratio`` (minority / majority) the minority
    kept whole and every other class cut to ``round(n_min / ratio)``; when no other class has that many, the
    minority is cut instead, to ``ratio`` x the largest other class. The minority is the class with the
    fewest available images (ties: the lowest label) unless the task names it (``minority``)."""
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
        return {c: available[c] for c in classes}
    check_ratio(ratio)
    if len(classes) < 2:
        raise DataError(f"a ratio needs two or more classes, got {len(classes)}: {', '.join(classes)}")
    small = minority if minority is not None else min(classes, key=lambda c: available[c])  # min: first of a tie
    largest_other = max(available[c] for c in classes if c != small)
    majority = round(available[small] / ratio)
    if largest_other >= majority:
        return {c: available[c] if c == small else min(available[c], majority) for c in classes}
    # r * largest_other < n_min here, so the cut minority never asks for more images than exist
    return {c: max(1, round(ratio * largest_other)) if c == small else available[c] for c in classes}


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
    val_per_class: int = 150, test_per_class: int = 150, pair: tuple[int, int] = ANIMAL_TASK,
    default_ratio: float = PAPER_RATIO, name: str = "animals",
) -> Dataset:
    """Two Animal-MNIST classes, the minority first (cat vs dog by default): balanced validation and test,
    imbalanced training (``default_ratio``, 1:11 for cat vs dog, unless ``ratio`` or ``counts`` say otherwise)."""
    images, labels = _animal_arrays(raw)
    duplicated = _duplicated(images)
    classes = tuple(ANIMALS[i] for i in pair)
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": []}
    pools = {}
    for new, old in enumerate(pair):
        idx = _unique_first(rng.permutation(np.flatnonzero(labels == old)), duplicated)
        parts["val"].append(idx[:val_per_class])
        parts["test"].append(idx[val_per_class : val_per_class + test_per_class])
        pools[classes[new]] = idx[val_per_class + test_per_class :]
    wanted = train_counts({c: len(p) for c, p in pools.items()}, classes,
                          default_ratio if ratio is None and counts is None else ratio, counts)
    parts["train"] = [_pick(rng, pools[c], wanted[c]) for c in classes]  # 700 : 700 available, cat (label 0) cut
    remap = np.full(len(ANIMALS), -1)
    remap[list(pair)] = [0, 1]
    new_labels = remap[labels]
    tensor = resize(torch.from_numpy(images).unsqueeze(1), image_size)
    splits = {k: _split(tensor, new_labels, np.sort(np.concatenate(v))) for k, v in parts.items()}
    return Dataset(name, classes, **splits)


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
    pair: tuple[int, int] = DIGIT_PAIR, holdout: float = 0.25, default_ratio: float = PAPER_RATIO, name: str = "digits",
) -> Dataset:
    """scikit-learn's digits as a binary pair (the first digit is the minority, 1:11 by default)."""
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
    # the task names its minority: 3 has a few more images than 8 (93 : 88 at seed 0) and is still the one cut
    wanted = train_counts({c: len(p) for c, p in pools.items()}, classes,
                          default_ratio if ratio is None and counts is None else ratio, counts, minority=classes[0])
    parts["train"] = [_pick(rng, pools[c], wanted[c]) for c in classes]
    remap = np.full(10, -1)
    remap[list(pair)] = [0, 1]
    tensor = resize(torch.from_numpy(images).unsqueeze(1), image_size)
    splits = {k: _split(tensor, remap[labels], np.sort(np.concatenate(v))) for k, v in parts.items()}
    return Dataset(name, classes, **splits)


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


# ---------------------------------------------------------------- folder (Kaggle layout): decoding


def _too_large(path: Path) -> bool:
    """Larger than MAX_IMAGE_BYTES (or gone): skipped unread, like an unreadable image."""
    try:
        return path.stat().st_size > MAX_IMAGE_BYTES
    except OSError:
        return True


def _decode(path: Path, size: int) -> np.ndarray | None:
    """One file -> uint8 3 x size x size (PIL, bilinear), or None when it is no readable image: corrupt, truncated,
    over MAX_IMAGE_BYTES, or over PIL's MAX_IMAGE_PIXELS (a decompression bomb)."""
    from PIL import Image, UnidentifiedImageError

    if _too_large(path):
        return None
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; both are refused alike
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # raises on truncated or corrupt data
                rgb = img.convert("RGB").resize((size, size), Image.BILINEAR)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning):
        return None
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def _decode_into(out: np.ndarray, start: int, paths: list[Path]) -> np.ndarray:
    """Decode ``paths`` into ``out[start:]`` (uint8 N x 3 x size x size); return which were readable."""
    ok = np.zeros(len(paths), dtype=bool)
    for i, path in enumerate(paths):
        image = _decode(path, out.shape[-1])
        if image is not None:
            out[start + i], ok[i] = image, True
    return ok


_OUT: np.ndarray | None = None  # a pool worker's view of the parent's shared output buffer


def _adopt(out: np.ndarray) -> None:
    global _OUT
    _OUT = out


def _decode_task(start: int, paths: list[Path]) -> np.ndarray:
    return _decode_into(_OUT, start, paths)


def default_workers() -> int:
    """Every core this process may use; 1 inside a daemonic process (it may not have children)."""
    if multiprocessing.current_process().daemon:
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _decode_cpu(
    paths: list[Path], out: np.ndarray, workers: int, chunk: int, progress: Callable[[int], object]
) -> np.ndarray:
    """PIL over a pool of forked processes, in chunks, each writing its images straight into ``out`` (shared
    memory, nothing is pickled back but the readable masks); the same bytes in the same order as one process."""
    ok = np.zeros(len(paths), dtype=bool)
    if "fork" not in multiprocessing.get_all_start_methods():
        workers = 1
    chunk = max(1, min(chunk, -(-len(paths) // (4 * workers))))  # at least 4 tasks per worker: even finish
    starts = range(0, len(paths), chunk)
    workers = min(workers, len(starts))
    if workers <= 1:
        for start in starts:
            ok[start : start + chunk] = _decode_into(out, start, paths[start : start + chunk])
            progress(len(paths[start : start + chunk]))
        return ok
    # fork: the workers inherit the shared buffer and need no re-import of torch (seconds each under spawn);
    # they only run PIL and numpy
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_adopt, initargs=(out,)) as pool:
        for start, good in zip(starts, pool.map(_decode_task, starts, [paths[s : s + chunk] for s in starts]), strict=False):
            ok[start : start + len(good)] = good
            progress(len(good))
    return ok


def _shared_buffer(n: int, size: int) -> np.ndarray:
    """uint8 n x 3 x size x size in anonymous shared memory (what forked workers write into; not /dev/shm,
    which containers often cap at 64 MB)."""
    if n == 0:
        return np.empty((0, 3, size, size), dtype=np.uint8)
    return np.frombuffer(mmap.mmap(-1, n * 3 * size * size), dtype=np.uint8).reshape(n, 3, size, size)


def _whole_jpeg(raw: bytes) -> bool:
    """Starts with SOI and ends with EOI: worth handing to nvjpeg (a truncated file goes to PIL, which rejects
    it, so that both decoders skip the same files)."""
    return raw[:2] == b"\xff\xd8" and raw.rstrip(b"\0\r\n ")[-2:] == b"\xff\xd9"


def _device_decode(raws: list[bytes], device: str) -> list[torch.Tensor | None]:
    """JPEG bytes -> RGB uint8 3 x h x w tensors on ``device``, one batched call; when the decoder refuses the
    batch (one bad file fails it all), each file alone, None for those it refuses."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not raws:
        return []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision 0.29 deprecates its decoders for TorchCodec
            return list(decode_jpeg([torch.frombuffer(bytearray(r), dtype=torch.uint8) for r in raws],
                                    mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        return [None] if len(raws) == 1 else [_device_decode([r], device)[0] for r in raws]


def _decode_jpegs(paths: list[Path], out: np.ndarray, device: str, progress: Callable[[int], object]) -> np.ndarray:
    """JPEGs in batches with torchvision's decoder on ``device`` (nvjpeg on CUDA), resized there (bilinear,
    antialiased), into ``out``; files that do not look whole, or that the decoder refuses, go through PIL
    (which also decides whether they are readable at all)."""
    ok = np.zeros(len(paths), dtype=bool)
    for start in range(0, len(paths), GPU_BATCH):
        batch = list(range(start, min(start + GPU_BATCH, len(paths))))
        raws = {i: b"" if _too_large(paths[i]) else paths[i].read_bytes() for i in batch}  # b"": PIL skips it
        whole = [i for i in batch if _whole_jpeg(raws[i])]
        decoded = [(i, image) for i, image in zip(whole, _device_decode([raws[i] for i in whole], device), strict=False)
                   if image is not None]
        if decoded:  # resized on the device, one copy back per batch (not one synchronisation per image)
            done = [i for i, _ in decoded]
            out[done] = torch.stack([resize(image.unsqueeze(0), out.shape[-1])[0] for _, image in decoded]).cpu().numpy()
            ok[done] = True
        for i in batch:
            if not ok[i]:
                ok[i] = _decode_into(out, i, [paths[i]])[0]
        progress(len(batch))
    return ok


GPU_DECODE_BELOW_CORES = 8  # results/bench/gpu.md (H200): nvjpeg 1971 files/s; 16 CPU workers 4662, one 1040


def decode_device(files: list[Path]) -> str:
    """'cuda' (nvjpeg in batches) when a GPU is there, every file is a JPEG and the machine has few cores
    (a pool over 8+ cores outruns it); 'cpu' (PIL over every core) otherwise."""
    few_cores = (os.cpu_count() or 1) < GPU_DECODE_BELOW_CORES
    if files and few_cores and torch.cuda.is_available() and all(p.suffix.lower() in JPEG_SUFFIXES for p in files):
        return "cuda"
    return "cpu"


def decode_files(
    files: list[tuple[Path, int]], size: int, what: str, *, workers: int | None = None, device: str = "cpu",
    chunk: int = DECODE_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor, list[Path]]:
    """Decode images once (with a progress bar): uint8 N x 3 x size x size, labels, and the files skipped.

    ``device='cpu'``: PIL in ``workers`` processes (default: every core; 1: in this process), identical
    results in file order whatever the count. Another device: torchvision's JPEG decoder there, in batches.
    """
    from tqdm import tqdm

    paths = [p for p, _ in files]
    labels = torch.tensor([label for _, label in files], dtype=torch.long)
    out = _shared_buffer(len(paths), size)
    with tqdm(total=len(paths), desc=f"decoding {what}", unit="img", disable=None, leave=False) as bar:
        if device == "cpu":
            ok = _decode_cpu(paths, out, default_workers() if workers is None else workers, chunk, bar.update)
        else:
            ok = _decode_jpegs(paths, out, device, bar.update)
    images = torch.from_numpy(out if ok.all() else out[ok])  # unreadable files leave rows that are cut here
    return images, labels[torch.from_numpy(ok)], [p for p, good in zip(paths, ok, strict=False) if not good]


def build_folder(
    layout: dict[str, dict[str, list[Path]]], *, root: Path, image_size: int, seed: int,
    ratio: float | None, counts: dict | None, workers: int | None = None, device: str = "cpu",
) -> Dataset:
    """A Kaggle-layout folder; without test/, half of each validation class's readable images is held out (seeded).
    The files skipped as unreadable are in ``settings['skipped']``."""
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
        images, labels, bad = decode_files(files, image_size, name, workers=workers, device=device)
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
    return Dataset(f"folder:{root.name}", classes, **splits, settings={"skipped": [str(p) for p in skipped]})


# ---------------------------------------------------------------- registry, cache, entry point


def _hash_bytes(h: hashlib._Hash, *chunks: bytes) -> None:
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


# name -> () -> (raw content, content hasher, builder); the names are study.sources.DATASETS
BUILDERS: dict[str, Callable[[], Source]] = {
    "animals": _animals_source(build_animals),
    "animals_source": _animals_source(build_animals_source),
    "digits": _digits_source(build_digits),
    "digits_lt": _digits_source(build_digits_lt),
    **{name: _animals_source(functools.partial(build_animals, pair=pair, default_ratio=ratio, name=name))
       for name, (pair, ratio) in ANIMAL_PAIRS.items()},
    **{name: _digits_source(functools.partial(build_digits, pair=pair, default_ratio=ratio, name=name))
       for name, (pair, ratio) in DIGIT_PAIRS.items()},
}


def _folder_source(root: Path, workers: int | None) -> Source:
    layout = folder_layout(root)
    device = decode_device([p for per_class in layout.values() for files in per_class.values() for p in files])

    def hasher(h: hashlib._Hash) -> None:
        h.update(device.encode())  # nvjpeg + torch resizing differ from PIL by a few levels: its own entry
        for split in sorted(layout):
            for c in sorted(layout[split]):
                for p in layout[split][c]:
                    h.update(str(p.relative_to(root)).encode())
                    _hash_bytes(h, p.read_bytes())

    return layout, hasher, lambda lay, **kw: build_folder(lay, root=root, workers=workers, device=device, **kw)


def resolve_source(data: str, *, workers: int | None = None) -> tuple[str, Source]:
    """A data-set name or a folder path -> (display name, source); unknown names list the choices."""
    if data in BUILDERS:
        return data, BUILDERS[data]()
    if is_folder(data):
        path = Path(data).expanduser()
        return f"folder:{path}", _folder_source(path, workers)
    raise DataError(f"unknown data set '{data}'; choose one of: {', '.join(sorted(DATASETS))}, or a folder path")


def _read_cache(path: Path) -> Dataset | None:
    """A cache entry, or None (with a warning) when it cannot be read: it is rebuilt, never a traceback."""
    try:
        blob = torch.load(path, weights_only=True)
        splits = {s: Split(blob[f"{s}_x"], blob[f"{s}_y"]) for s in ("train", "val", "test")}
        for s, split in splits.items():
            if not (split.images.dtype == torch.uint8 and split.images.ndim == 4 and split.labels.dtype == torch.int64
                    and len(split.images) == len(split.labels)):
                raise ValueError(f"malformed {s} split")
        return Dataset(str(blob["name"]), tuple(blob["classes"]), **splits, settings={"skipped": list(blob["skipped"])})
    except Exception as err:  # whatever a truncated or foreign file raises: the entry is derived, rebuild it
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        warnings.warn(f"cache entry {path} is unreadable ({reason[:200]}); rebuilding it", DataWarning, stacklevel=3)
        return None


def _write_cache(path: Path, ds: Dataset) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"name": ds.name, "classes": list(ds.classes), "skipped": list(ds.settings.get("skipped", []))}
    for s in ("train", "val", "test"):
        blob[f"{s}_x"], blob[f"{s}_y"] = getattr(ds, s).images, getattr(ds, s).labels
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(blob, tmp)
    os.replace(tmp, path)  # atomic: a killed run never leaves half a cache file


def load_dataset(
    data: str = "animals",
    *,
    image_size: int = 32,
    seed: int = 0,
    ratio: float | None = None,
    counts: dict[str, int] | str | None = None,
    cache_dir: Path | str | None = DEFAULT_CACHE,
    workers: int | None = None,
) -> Dataset:
    """Build (or load from the cache under ``cache_dir``; None: no cache) the data set's three uint8 splits.

    ``workers``: decoding processes for a folder (default every core). Files skipped as unreadable are
    warned about (DataWarning) on every load, from the cache too, and listed in ``settings['skipped']``.
    """
    if ratio is not None:
        check_ratio(ratio)
    counts = parse_counts(counts)
    name, (raw, hasher, builder) = resolve_source(data, workers=workers)
    settings = {"data": name, "image_size": image_size, "seed": seed, "ratio": ratio, "counts": counts}
    h = hashlib.sha256(json.dumps({**settings, "v": CACHE_VERSION}, sort_keys=True).encode())
    hasher(h)
    cache = Path(cache_dir) / f"{name.split(':')[0]}-{h.hexdigest()[:20]}.pt" if cache_dir is not None else None
    ds = _read_cache(cache) if cache is not None and cache.exists() else None
    if ds is None:
        ds = builder(raw, image_size=image_size, seed=seed, ratio=ratio, counts=counts)
        if cache is not None:
            _write_cache(cache, ds)
    skipped = ds.settings.get("skipped", [])
    if skipped:
        warnings.warn(f"skipped {len(skipped)} corrupt, truncated, oversized or non-image files under "
                      f"{name.split(':', 1)[-1]} (first: {skipped[0]})", DataWarning, stacklevel=2)
    return Dataset(ds.name, ds.classes, ds.train, ds.val, ds.test,
                   settings={**settings, "cache": str(cache), "skipped": skipped})


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
