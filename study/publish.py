"""The winner as a model you load: a trained network logged to its MLflow run, then registered by name.

:func:`log_model` logs a :class:`study.models.Classifier` (or any network taking float images in [0, 1],
B x 3 x H x W, to logits) with ``mlflow.pytorch`` in torch.export's ``pt2`` format, the one MLflow 3 loads
without unpickling code (its pickle format is refused on load unless ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION``
is set), so loading it needs torch and mlflow only, not this package. The logged network takes float32
images in [0, 1], N x C x H x W with the data set's channel count C (a grey channel is copied to the three
the backbone wants inside it) and a batch of any size, and returns logits; the normalisation is inside.
Beside it, in the model's ``metadata`` (MLmodel file), is what a predictor needs (:data:`METADATA_KEY`):
classes, minority, image size, channels, the evaluation cost matrix, the temperature fitted on validation
and the study's config. :func:`register` puts a run's logged model into MLflow's model registry.

Loading one from plain Python::

    import mlflow
    mlflow.set_tracking_uri("sqlite:///results/mlflow.db")
    net = mlflow.pytorch.load_model("models:/core-ce_rw/1")   # float32 N x C x H x W in [0, 1] -> logits
    meta = mlflow.models.get_model_info("models:/core-ce_rw/1").metadata["study"]

``python -m study.predict`` does this for a folder of images (see its ``--help``).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from numpy.typing import ArrayLike

from study.costs import validate_cost_matrix
from study.store import absolute_uri

MODEL_NAME = "model"  # the logged model's name under its run: runs:/<run_id>/model
METADATA_KEY = "study"  # the MLmodel metadata entry that holds what a predictor needs
EXAMPLE_BATCH = 2  # torch.export makes a size-1 dimension static: a batch of 2 keeps the batch size free


class ImageModel(nn.Module):
    """float32 N x C x H x W in [0, 1] -> logits: a grey channel copied to the backbone's three, then ``net``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.expand(-1, 3, -1, -1))  # C = 3: unchanged; C = 1: the plane three times, as in training


@contextmanager
def tracking(uri: str) -> Iterator[None]:
    """MLflow's fluent API pointed at ``uri`` for the block (Model.log and register_model read the global)."""
    import mlflow

    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def _jsonable(value: Any) -> Any:
    """``value`` as JSON holds it: numpy scalars as numbers, tuples as lists, anything else as its str."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))


def metadata(*, classes: Sequence[str], image_size: int, channels: int, minority: int, eval_costs: ArrayLike,
             temperature: float, config: Mapping[str, Any]) -> dict[str, Any]:
    """What a predictor needs, checked: the value stored under :data:`METADATA_KEY`."""
    k = len(classes)
    if k < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {list(classes)}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if not 0 <= minority < k:
        raise ValueError(f"minority must be a label in 0..{k - 1}, got {minority}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    return _jsonable({"classes": list(classes), "minority": minority, "image_size": image_size, "channels": channels,
                      "eval_costs": validate_cost_matrix(eval_costs, k).tolist(), "temperature": float(temperature),
                      "input": "float32 N x C x H x W in [0, 1]", "output": "logits", "config": dict(config)})


def _signature(net: nn.Module, example: np.ndarray) -> Any:
    """The model signature of ``example`` -> logits, with the batch dimension -1 (any size) in and out."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import Schema, TensorSpec

    with torch.no_grad():
        logits = net(torch.from_numpy(example)).numpy()
    inferred = infer_signature(example, logits)
    free = [Schema([TensorSpec(spec.type, (-1, *spec.shape[1:]))]) for spec in
            (inferred.inputs.inputs[0], inferred.outputs.inputs[0])]
    return ModelSignature(inputs=free[0], outputs=free[1])


def log_model(uri: str, run_id: str, model: nn.Module, *, classes: Sequence[str], image_size: int, channels: int,
              minority: int, eval_costs: ArrayLike, temperature: float = 1.0, config: Mapping[str, Any]) -> str:
    """Log ``model`` (a copy on the CPU, in eval mode) to run ``run_id`` as :data:`MODEL_NAME`, with a signature,
    an input example and the predictor's metadata; returns the logged model's URI (``models:/m-...``)."""
    import mlflow

    meta = metadata(classes=classes, image_size=image_size, channels=channels, minority=minority,
                    eval_costs=eval_costs, temperature=temperature, config=config)
    net = ImageModel(copy.deepcopy(model)).cpu().float().eval().requires_grad_(False)  # the caller's stays as it is
    net = net.to(memory_format=torch.contiguous_format)  # a CUDA trial's copy may be channels_last
    example = np.random.default_rng(0).random((EXAMPLE_BATCH, channels, image_size, image_size), dtype=np.float32)
    uri = absolute_uri(uri)
    client = mlflow.MlflowClient(uri)
    # created here so that it lands in the run's experiment: Model.log would put it in the active (default) one
    logged = client.create_logged_model(client.get_run(run_id).info.experiment_id, name=MODEL_NAME,
                                        source_run_id=run_id)
    with tracking(uri):
        info = mlflow.pytorch.log_model(
            net, name=MODEL_NAME, run_id=run_id, model_id=logged.model_id, serialization_format="pt2",
            signature=_signature(net, example), input_example=example, metadata={METADATA_KEY: meta},
            # no requirement inference (it loads the model in a subprocess); no serving check (it loads it again)
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"],
            validate_serving_input=False)
    return info.model_uri


def register(uri: str, run_id: str, name: str) -> str:
    """Register run ``run_id``'s logged :data:`MODEL_NAME` as a new version of ``name``: ``models:/<name>/<v>``."""
    import mlflow

    uri = absolute_uri(uri)
    client = mlflow.MlflowClient(uri)
    outputs = client.get_run(run_id).outputs
    ids = [out.model_id for out in (outputs.model_outputs if outputs else [])]
    named = [m for m in (client.get_logged_model(i) for i in ids) if m.name == MODEL_NAME]
    if not named:
        raise ValueError(f"run {run_id} has no logged model {MODEL_NAME!r}: log it with study.publish.log_model first")
    # the model's own URI: runs:/<run_id>/model registers the same one, with a warning that the run has no artifacts
    with tracking(uri):
        version = mlflow.register_model(f"models:/{named[-1].model_id}", name)
    return f"models:/{name}/{version.version}"
