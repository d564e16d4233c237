"""The validated plan of a study: what the CLI hands to everything below it (nothing below sees argparse).

Standard library only, like the CLI that builds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from study.spaces import Space


@dataclass(frozen=True)
class Budget:
    """The shared budget of every approach of a study (a space's defaults, overridden by flags)."""

    epochs: int  # max epochs per trial (ASHA's max_t), also every confirmation run's length
    num_samples: int  # search trials per approach
    batch_size: int
    image_size: int  # pixels, square
    grace_period: int  # ASHA: epochs before a trial can be stopped
    reduction_factor: int  # ASHA: keep the top 1/rf at each rung


@dataclass(frozen=True)
class Confirm:
    """The confirmation phase: each approach's top configs retrained from scratch over several seeds."""

    top: int = 1  # configs per approach, by best validation macro-F1
    seeds: int = 0  # trial seeds per config; 0 turns the phase off
    resplit: bool = False  # also redraw the train/validation/test split for each seed


@dataclass(frozen=True)
class Resources:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    address: str | None = None  # an existing Ray cluster ("auto"); None: a fresh local Ray


@dataclass(frozen=True)
class Plan:
    space: str  # the space named on the command line ("all" for the composite)
    spaces: tuple[Space, ...]  # its approaches
    data: str  # a data set name or a folder path
    ratio: float | None  # training minority:majority ratio
    counts: dict[str, int] | None  # explicit training images per class
    budget: Budget
    seed: int  # data split and the search (each trial derives its own seed from it)
    resources: Resources
    tracking_uri: str  # absolute sqlite:////... or http(s)://
    storage: str  # absolute path or URI
    results_dir: Path  # absolute
    study_id: str
    resume: bool = False
    smoke: bool = False
    confirm: Confirm = field(default_factory=Confirm)
    eval_costs: tuple[float, float] | None = None  # FN:FP for the minority (two classes); None: the default
    weights: dict[str, Path] = field(default_factory=dict)  # pretrained weights by name -> file
    verbose: bool = False
    report_dir: Path | None = None  # where summary.{md,csv} and comparison.png go (default <results_dir>/<space>)
    parent_run: str | None = None  # an MLflow run the approaches' parent runs nest under (a sweep's ratio)

    @property
    def cache_dir(self) -> Path:
        return self.results_dir / "cache"

    @property
    def checkpoint_dir(self) -> Path:
        return self.results_dir / "checkpoints"
