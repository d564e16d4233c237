"""GPU packing on a simulated cluster: nodes that declare GPUs (``num_gpus`` on CPU-only nodes) run as many trials
at once as ``--gpus-per-trial`` allows, each trial sees its ``CUDA_VISIBLE_DEVICES``, the trainable's device falls
back to the CPU where CUDA is absent, and ``auto`` is resolved from the cluster's resources once Ray is up."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from study.plan import gpu_share

pytestmark = pytest.mark.engine


def sleepy(config: dict, data: dict, eval_costs, weights=None) -> None:
    """Reports its GPU ids and device, and how many trials it saw running at once: each leaves a marker file while
    it runs and waits (a loaded machine starts actors seconds apart) until ``config['expect']`` markers are there,
    then 1.5 s more, counting them."""
    import os

    from ray import tune

    from study.loop import pick_device

    markers = Path(config["markers"])
    mine = markers / str(config["trial_seed"])
    mine.touch()
    seen, reached, deadline = 0, None, time.time() + 30
    while time.time() < deadline and (reached is None or time.time() - reached < 1.5):
        seen = max(seen, len(list(markers.iterdir())))
        if reached is None and seen >= config["expect"]:
            reached = time.time()
        time.sleep(0.05)
    mine.unlink()
    tune.report({"val_macro_f1": 0.5, "seen": seen, "device": str(pick_device(config["gpus"])),
                 "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES", "")})


@pytest.fixture(scope="module")
def gpu_cluster():
    import ray
    from ray import cloudpickle
    from ray.cluster_utils import Cluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests folder
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        c.add_node(num_cpus=4, num_gpus=1)  # a CPU-only node that declares one GPU
        c.wait_for_nodes()
        ray.init(address=c.address, logging_level="WARNING")
        yield c
    finally:
        ray.shutdown()
        c.shutdown()  # also on failure: a dead cluster left behind makes the next ray.init hang


def setup(tmp_path: Path, gpus: float):
    from study.engine import TuneSetup
    from study.store import Tracker

    trackers = {"a": {"uri": f"sqlite:///{tmp_path}/m.db", "experiment": "gpu", "study_id": f"gpu-{gpus}",
                      "approach": "a", "artifact_root": tmp_path / "art", "classes": ["cat", "dog"], "minority": "cat",
                      "data": "toy"}}
    Tracker(**trackers["a"])
    return TuneSetup(trainable=sleepy, data={0: None}, eval_costs=None, bank={}, cpus=0.5, gpus=gpus,
                     max_concurrent=None, local=False, storage=str(tmp_path / f"ray-{gpus}"), trackers=trackers,
                     checkpoint_file="state.pt", verbose=False)


# make test packs four trials on the GPU; the half and whole GPU cases (40 s) run in make test-slow
@pytest.mark.parametrize("gpus, at_once", [(0.25, 4), pytest.param(0.5, 2, marks=pytest.mark.slow),
                                           pytest.param(1.0, 1, marks=pytest.mark.slow)])
def test_trials_pack_on_a_gpu_by_their_share(tmp_path: Path, gpu_cluster, gpus: float, at_once: int) -> None:
    from study import engine

    markers = tmp_path / "running"
    markers.mkdir()
    configs = [{"approach": "a", "phase": "confirm", "epochs": 1, "trial_seed": i, "gpus": gpus, "confirm_seed": i,
                "config_rank": 0, "markers": str(markers), "expect": at_once} for i in range(4)]
    result = engine.retrain(setup(tmp_path, gpus), "pack", configs, epochs=1, resume=False)
    assert len(result.outcomes) == 4
    assert max(o.last["seen"] for o in result.outcomes) == at_once
    assert {o.last["cuda_visible"] for o in result.outcomes} == {"0"}  # Ray hands each trial its GPU
    assert {o.last["device"] for o in result.outcomes} == {"cpu"}  # no CUDA here: the trainable falls back


def test_auto_is_resolved_from_the_clusters_gpus(gpu_cluster) -> None:
    from study import engine

    assert engine.resolve_gpus("auto", 32, 64) == gpu_share(32, 64) == 0.25
    assert engine.resolve_gpus("auto", 224, 256) == 1.0 and engine.resolve_gpus(0.5, 32, 64) == 0.5


def test_auto_on_a_cluster_waits_for_ray_and_is_zero_without_gpus(monkeypatch) -> None:
    from study import tune

    assert tune.auto_gpus(32, 64, address="10.0.0.1:6379") == "auto"
    monkeypatch.setattr(tune, "local_gpus", lambda: 0)
    assert tune.auto_gpus(32, 64, address=None) == 0.0
