"""study.publish: a trained network logged to a real SQLite store, registered, and loaded back by its registry name."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from study import store
from study.costs import CostMatrixError
from study.models import build_model
from study.publish import METADATA_KEY, log_model, metadata, register, tracking

SIZE = 16
COSTS = [[0, 5], [1, 0]]
META = dict(classes=["cat", "dog"], image_size=SIZE, channels=1, minority=0, eval_costs=COSTS, temperature=1.5)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A grey 2-class ResNet-18 (one step trained, so BatchNorm's running statistics differ from their init),
    logged to its run and registered once as 'core-ce'."""
    tmp = tmp_path_factory.mktemp("publish")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    run_id = store.open_run(uri, "core", "ce-confirm", {"approach": "ce"}, artifact_root=tmp / "mlartifacts")
    torch.manual_seed(0)
    model = build_model(2)
    x = torch.rand(8, 3, SIZE, SIZE)
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1] * 4)).backward()  # a train-mode forward
    logged = log_model(uri, run_id, model, **META, config={"lr": np.float64(1e-3), "batch": np.int64(64)})
    return {"uri": uri, "run_id": run_id, "model": model, "logged": logged, "name": register(uri, run_id, "core-ce"),
            "tmp": tmp}


def test_registered_model_predicts_as_the_original(published: dict) -> None:
    import mlflow

    assert published["name"] == "models:/core-ce/1"
    assert published["model"].training, "log_model changed the caller's model (it logs a copy in eval mode)"
    with tracking(published["uri"]):
        loaded = mlflow.pytorch.load_model("models:/core-ce/1")
    grey = torch.rand(5, 1, SIZE, SIZE)  # a batch of 5 although the example had 2: the batch size is free
    with torch.no_grad():
        want = published["model"].eval()(grey.expand(-1, 3, -1, -1))
        published["model"].train()
        got = loaded(grey)
    torch.testing.assert_close(got, want)
    assert mlflow.get_tracking_uri() != published["uri"], "tracking() left MLflow pointed at the test's store"


def test_signature_example_and_metadata_travel_with_the_model(published: dict) -> None:
    import mlflow

    with tracking(published["uri"]):
        info = mlflow.models.get_model_info("models:/core-ce/1")
    assert [s.shape for s in info.signature.inputs.inputs] == [(-1, 1, SIZE, SIZE)]
    assert [s.shape for s in info.signature.outputs.inputs] == [(-1, 2)]
    assert info.saved_input_example_info is not None
    assert info.run_id == published["run_id"]
    assert info.metadata[METADATA_KEY] == {
        "classes": ["cat", "dog"], "minority": 0, "image_size": SIZE, "channels": 1,
        "eval_costs": [[0.0, 5.0], [1.0, 0.0]], "temperature": 1.5, "input": "float32 N x C x H x W in [0, 1]",
        "output": "logits", "config": {"lr": 1e-3, "batch": 64}}
    # the model's files lie under the experiment's artifact root, not in the working directory
    assert any((published["tmp"] / "mlartifacts" / "core").rglob("MLmodel"))


def test_registering_again_makes_the_next_version(published: dict) -> None:
    assert register(published["uri"], published["run_id"], "core-ce-again") == "models:/core-ce-again/1"
    assert register(published["uri"], published["run_id"], "core-ce-again") == "models:/core-ce-again/2"


def test_a_run_without_a_logged_model_is_refused(published: dict) -> None:
    bare = store.open_run(published["uri"], "core", "no-model", {"approach": "ce"})
    with pytest.raises(ValueError, match=rf"^run {bare} has no logged model 'model': log it with "
                                         r"study\.publish\.log_model first$"):
        register(published["uri"], bare, "core-none")


@pytest.mark.parametrize(("change", "error", "message"), [
    ({"classes": ["cat"]}, ValueError, r"a classifier needs at least 2 classes, got \['cat'\]"),
    ({"channels": 2}, ValueError, r"channels must be 1 \(grey\) or 3 \(RGB\), got 2"),
    ({"minority": 2}, ValueError, r"minority must be a label in 0\.\.1, got 2"),
    ({"temperature": 0.0}, ValueError, r"temperature must be a finite number > 0, got 0\.0"),
    ({"temperature": math.nan}, ValueError, r"temperature must be a finite number > 0, got nan"),
    ({"eval_costs": [[0, 1, 1], [1, 0, 1], [1, 1, 0]]}, CostMatrixError,
     r"cost matrix size must match the number of classes \(2\), but got 3x3"),
    ({"eval_costs": [[0, -1], [1, 0]]}, CostMatrixError,
     r"cost matrix entries must be non-negative, but got cm\[0\]\[1\]=-1"),
])
def test_metadata_refuses_what_a_predictor_cannot_use(change: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=f"^{message}$"):
        metadata(**{**META, **change}, config={})


def test_metadata_is_json(tmp_path: Path) -> None:
    meta = metadata(**META, config={"space": ("a", 1), "path": tmp_path, "n": np.int64(3)})
    assert meta["config"] == {"space": ["a", 1], "path": str(tmp_path), "n": 3}
