"""Predict images with a model a study logged (study.publish): a CSV of classes, probabilities and cost decisions.

    python -m study.predict --model models:/core-ce_rw/1 photos/            # every image under photos/
    python -m study.predict --model models:/core-ce_rw/1 --out p.csv cat.png

Each image is decoded as the study decodes a folder (PIL, RGB, resized to the model's image size; to grey as
PIL's ``convert("L")`` does when the model was trained on grey images). One CSV row per readable image: its path, the
predicted class (highest probability), each class's probability after the temperature fitted on validation
(``p_<class>``), and the class of least expected cost under the study's evaluation cost matrix
(``min_cost``). Unreadable files under a folder are skipped with a warning.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import stat
import sys
from pathlib import Path
from typing import Any

from study.errors import Parser, StudyError, UsageError, cli
from study.paths import kind, output_file, tracking_uri, write_atomic
from study.sources import IMAGE_SUFFIXES
from study.store import DEFAULT_TRACKING_URI

MODEL_SCHEMES = ("models:/", "runs:/")
CHUNK = 1024  # images decoded and predicted at a time: memory stays bounded on a large folder
BATCH = 256  # images per forward pass
LUMA = (19595, 38470, 7471)  # PIL's RGB -> L weights (ITU-R 601-2) in 1/65536: a grey image stays exact


class PredictError(StudyError):
    """A model that cannot be loaded, or images that cannot be read."""


def _model_uri(value: str) -> str:
    if not value.startswith(MODEL_SCHEMES) or not value.split(":/", 1)[1].strip("/"):
        raise UsageError(f"--model {value!r}: use models:/<name>/<version> (or runs:/<run_id>/model)")
    return value


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:  # a dangling link, a symlink loop
        return False


def _images(target: Path) -> tuple[list[Path], list[Path]]:
    """The image file ``target``, or every file with an image suffix under the folder ``target`` (sorted, links
    to folders not followed), and those of them that are no regular file (never opened: a FIFO would hang);
    anything else is a UsageError."""
    try:
        mode = os.stat(target).st_mode
    except OSError as err:
        raise UsageError(f"{target}: {err.strerror}") from None
    if stat.S_ISREG(mode):
        return [target], []
    if not stat.S_ISDIR(mode):
        raise UsageError(f"{target}: {kind(mode)}, not an image or a folder")
    found = sorted(Path(root) / name for root, _, names in os.walk(target) for name in names
                   if Path(name).suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise UsageError(f"{target}: no image files under it ({', '.join(sorted(IMAGE_SUFFIXES))})")
    regular = [p for p in found if _regular(p)]
    return regular, sorted(set(found) - set(regular))


def _store(uri: str) -> str:
    """A tracking URI to read from: a server that answers, or an SQLite file that exists (MLflow makes a new one)."""
    checked = tracking_uri(uri)
    if checked.startswith("sqlite:///") and not Path(checked[len("sqlite:///"):]).is_file():
        raise UsageError(f"--tracking-uri {uri}: no MLflow tracking store there (the file does not exist)")
    return checked


def load(model_uri: str, uri: str) -> tuple[Any, dict[str, Any]]:
    """The logged network (eval mode, CPU) and its study metadata; a PredictError when either is not there."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from study.publish import METADATA_KEY, tracking

    try:
        with tracking(uri):
            meta = (mlflow.models.get_model_info(model_uri).metadata or {}).get(METADATA_KEY)
            if meta is None:
                raise PredictError(f"--model {model_uri}: not a model logged by study.publish (no {METADATA_KEY!r} "
                                   "metadata)")
            return mlflow.pytorch.load_model(model_uri), meta
    except MlflowException as err:
        raise PredictError(f"--model {model_uri}: {str(err.message).splitlines()[0]}") from None


def decode(paths: list[Path], size: int, channels: int) -> tuple[Any, list[Path], list[Path]]:
    """uint8 N x channels x size x size of the readable ``paths``, those paths, and the unreadable ones."""
    import torch

    from study.data import decode_files

    images, _, bad = decode_files([(p, 0) for p in paths], size, "images")
    if channels == 1:  # as PIL's convert("L") of the RGB image, in integers
        w = torch.tensor(LUMA, dtype=torch.int32).view(1, 3, 1, 1)
        images = ((images.int() * w).sum(1, keepdim=True) + 0x8000).div(1 << 16, rounding_mode="floor")
        images = images.to(torch.uint8)
    skipped = set(bad)
    return images, [p for p in paths if p not in skipped], bad


def predict(net: Any, images: Any, meta: dict[str, Any]) -> list[tuple[int, list[float], int]]:
    """(argmax class, calibrated probabilities, least-expected-cost class) per image."""
    import numpy as np
    import torch

    from study.calibration import apply_temperature
    from study.costs import min_cost_decision

    with torch.no_grad():
        logits = torch.cat([net(images[i : i + BATCH].float() / 255) for i in range(0, len(images), BATCH)])
    probs = apply_temperature(logits.double().numpy(), meta["temperature"])
    decisions = min_cost_decision(probs, np.asarray(meta["eval_costs"]))
    return [(int(p.argmax()), p.tolist(), int(d)) for p, d in zip(probs, decisions, strict=False)]


def _parser() -> Parser:
    ap = Parser(prog="python -m study.predict", description=__doc__, allow_abbrev=False,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True,
                    help="the registered model, models:/<name>/<version> (the study registers <space>-<approach>)")
    ap.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI,
                    help=f"MLflow tracking URI with the model registry (default {DEFAULT_TRACKING_URI})")
    ap.add_argument("--out", default="predictions.csv", help="the CSV to write (default predictions.csv)")
    ap.add_argument("input", type=Path, help="an image file, or a folder: every image under it, recursively")
    return ap


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    _model_uri(args.model)  # checked here: argparse would bury a type's message in its own
    out = output_file(args.out, "--out")
    paths, skipped = _images(args.input)
    uri = _store(args.tracking_uri)
    net, meta = load(args.model, uri)  # torch and mlflow load here, after every flag is checked
    classes, rows = meta["classes"], []
    for start in range(0, len(paths), CHUNK):
        images, readable, bad = decode(paths[start : start + CHUNK], meta["image_size"], meta["channels"])
        skipped += bad
        if readable:
            rows += [[str(p), classes[top], *(f"{q:.6f}" for q in probs), classes[cost]]
                     for p, (top, probs, cost) in zip(readable, predict(net, images, meta), strict=False)]
    if not rows:
        raise PredictError(f"{args.input}: no readable image ({len(skipped)} unreadable)")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "predicted", *(f"p_{c}" for c in classes), "min_cost"])
    writer.writerows(rows)
    write_atomic(out, text.getvalue().encode(), "--out")
    for path in skipped:
        print(f"warning: skipped {path}: not a readable image", file=sys.stderr)
    print(f"wrote {len(rows)} predictions to {args.out}" + (f" ({len(skipped)} unreadable skipped)" if skipped else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
