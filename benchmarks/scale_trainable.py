"""The null trainable of ``bench_scale.py`` and its search space, in a module of their own: Ray pickles a
``__main__`` function by value, and each worker would then import the whole benchmark (and torch with it).

A trial sleeps ``sleep_s`` per epoch, reports a synthetic validation macro-F1 that depends only on its
config (so the same config scores the same in every run), a few more metrics and a 2x2 confusion matrix
(the MLflow callback draws it, as in a study), and writes a tiny checkpoint every epoch.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from ray import tune

CHECKPOINT_FILE = "state.json"


def synthetic_f1(config: dict[str, Any], epoch: int) -> float:
    """A learning curve whose ceiling peaks at lr = 10^-2.5 and gamma = 2, with a little noise fixed by the config."""
    noise = zlib.crc32(f"{config['lr']:.6g}/{config['gamma']:.6g}".encode()) % 1000 / 1e5
    ceiling = 0.5 + 0.4 * math.exp(-((math.log10(config["lr"]) + 2.5) ** 2)) - 0.01 * (config["gamma"] - 2) ** 2
    return round(ceiling * (1 - math.exp(-epoch / 1.5)) + noise, 6)


def null_trial(config: dict[str, Any], data: Any = None, eval_costs: Any = None, weights: Any = None) -> None:
    """The study's trainable signature (``tune.with_parameters`` passes data, costs and weights), no work."""
    start = 0
    if (checkpoint := tune.get_checkpoint()) is not None:
        with checkpoint.as_directory() as d:
            start = json.loads((Path(d) / CHECKPOINT_FILE).read_text())["epoch"]
    for epoch in range(start + 1, config["epochs"] + 1):
        time.sleep(config["sleep_s"])
        f1 = synthetic_f1(config, epoch)
        hits = int(40 * f1)
        metrics = {"val_macro_f1": f1, "val_accuracy": f1, "val_balanced_accuracy": f1, "val_minority_recall": f1,
                   "val_loss": 1 - f1, "train_loss": 1.1 - f1, "train_macro_f1": f1 + 0.01, "val_expected_cost": 1 - f1,
                   "val_confusion": [[hits, 40 - hits], [40 - hits, hits]]}
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / CHECKPOINT_FILE).write_text(json.dumps({"epoch": epoch}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


class Space:
    """An Optuna define-by-run space: lr and gamma searched; with ``approaches`` (the plain run's one search over
    every approach) the approach too; ``constants`` join every config."""

    def __init__(self, constants: dict[str, Any], approaches: list[str] | None = None) -> None:
        self.constants, self.approaches = constants, approaches

    def __call__(self, trial: Any) -> dict[str, Any]:
        if self.approaches:
            trial.suggest_categorical("approach", self.approaches)
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_float("gamma", 0.0, 5.0)
        return dict(self.constants)
