"""The Ray Tune function trainable: build sampler, model and loss from the config, run the shared loop.

Seeds: the study's ``--seed`` fixes the data split and the search; each trial trains with its own
``trial_seed`` (weight initialisation, resampling draws, batch order, augmentation), which the
searcher derives from the study seed, the approach and the trial's turn, and a confirmation run
takes from its confirmation seed.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from study.calibration import apply_temperature, brier_score, expected_calibration_error, fit_temperature, log_probs
from study.costs import binary_cost_matrix, expected_cost, min_cost_decision, random_cost_matrix, rescaled_class_weights
from study.data import Dataset
from study.errors import StudyError, one_line
from study.loop import EpochResult, evaluate, pick_device, prepare_model, recalibrate_bn, train_one_epoch
from study.losses import build_loss, start_epoch
from study.models import build_model
from study.names import LOSS_OPTIONS, SAMPLER_OPTIONS, VAL_MACRO_F1
from study.sampling import Resampled, resample

CHECKPOINT_FILE = "state.pt"
ON_GPU_BYTES = 2**30  # a decoded training set smaller than this lives on the trial's GPU
EVAL_BATCH = 256
BN_IMAGES = 256  # BatchNorm recalibration's sample: validation macro-F1 within noise of the whole split (32 px)


@dataclass
class Parts:
    train: Resampled
    model: torch.nn.Module
    loss: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    decide: np.ndarray | None  # cost matrix for minimum-expected-cost decisions; None: argmax


def cost_matrix(config: dict[str, Any], counts: list[int], minority: int) -> np.ndarray | None:
    """The trial's training cost matrix. Two classes: the minority's FN:FP cost ratio; more: the
    paper's generator (consistent, seeded by the study seed so every trial of a ratio sees the same)."""
    if config["cost_ratio"] is None:
        return None
    if len(counts) == 2:
        return binary_cost_matrix(config["cost_ratio"], positive=minority)
    return random_cost_matrix(counts, np.random.default_rng(config["seed"]), kind="consistent", n=config["cost_ratio"])


def decide(result: EpochResult, costs: np.ndarray | None) -> EpochResult:
    """Argmax decisions, or with a cost matrix the minimum-expected-cost class."""
    if costs is None:
        return result
    return EpochResult(result.loss, result.y_true, torch.from_numpy(min_cost_decision(result.probs.numpy(), costs)),
                       result.probs)


def scored(result: EpochResult, data: Dataset, eval_costs: np.ndarray) -> dict[str, Any]:
    """Every metric of a decided evaluation, with its expected cost under the study's evaluation matrix."""
    out = result.metrics(data.classes, data.minority)
    out["expected_cost"] = expected_cost(result.y_true.numpy(), result.y_pred.numpy(), eval_costs)
    out["brier"] = brier_score(result.probs.numpy(), result.y_true.numpy())  # ASHA's tie-break (study.engine)
    return out


def build_parts(config: dict[str, Any], data: Dataset, weights: dict[str, dict] | None = None) -> Parts:
    """Everything an approach chooses: a sampler (train split only), a model, a loss, the optimizer."""
    seed = config["trial_seed"]
    torch.manual_seed(seed)
    options = {k: config[k] for k in SAMPLER_OPTIONS.get(config["sampler"], ())}
    train = resample(data.train, config["sampler"], config["ratio"], seed, **options)
    counts = torch.bincount(train.labels, minlength=data.num_classes).tolist()
    costs = cost_matrix(config, data.train.counts(data.num_classes), data.minority)
    use = config["cost_use"] if costs is not None else None
    device = pick_device(config.get("gpus", 0))
    if device.type == "cuda" and train.images.nbytes < ON_GPU_BYTES:
        train = Resampled(train.images.to(device), train.labels.to(device), train.augment.to(device))
    state = (weights or {}).get(f"{config['weights']}@{config['backbone']}")
    net = build_model(data.num_classes, config["model"], config["weights"], config["freeze"], state,
                      backbone=config["backbone"])
    model = prepare_model(net, device)
    options = {k: config[k] for k in LOSS_OPTIONS[config["loss"]]}
    if use in ("weights", "both"):  # the third seed's rescaling: class weights from the cost matrix
        options["class_weights"] = rescaled_class_weights(costs, counts).tolist()
    loss = build_loss(config["loss"], counts, data.minority, **options)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config["lr"], weight_decay=config["weight_decay"])
    return Parts(train, model, loss.to(device), optimizer, device, costs if use in ("threshold", "both") else None)


def epoch_metrics(train: dict, val: dict) -> dict[str, Any]:
    """``val_<m>`` and ``train_<m>`` for every metric (confusion matrices stay validation-only)."""
    out = {f"val_{k}": v for k, v in val.items()}
    out.update({f"train_{k}": v for k, v in train.items() if k != "confusion"})
    return out


def test_figures(p: Parts, data: Dataset, eval_costs: np.ndarray, val: EpochResult | None = None) -> dict[str, Any]:
    """The held-out test split, scored like validation, with the predictions for paired tests; and, for every
    approach, its probabilities calibrated by a temperature fitted on validation (``val``; Guo et al. 2017) and
    decided at minimum expected cost under the study's evaluation matrix (``test_mec_*``), so that expected cost
    compares models under one decision rule. Calibration error (ECE, Brier) before and after, and the cost of the
    same rule on the uncalibrated probabilities."""
    raw = evaluate(p.model, data.test.images, data.test.labels, p.loss, batch_size=EVAL_BATCH, device=p.device)
    result = decide(raw, p.decide)
    figures = {f"test_{k}": v for k, v in scored(result, data, eval_costs).items()}
    probs, y = raw.probs.numpy().astype(np.float64), raw.y_true.numpy()
    t = fit_temperature(log_probs(val.probs.numpy()), val.y_true.numpy()) if val is not None else 1.0
    calibrated = apply_temperature(log_probs(probs), t)
    mec = scored(EpochResult(raw.loss, raw.y_true, torch.from_numpy(min_cost_decision(calibrated, eval_costs)),
                             torch.from_numpy(calibrated)), data, eval_costs)
    figures.update({f"test_mec_{k}": mec[k] for k in ("macro_f1", "expected_cost", "minority_recall")})
    figures.update(test_mec_uncalibrated_expected_cost=expected_cost(y, min_cost_decision(probs, eval_costs), eval_costs),
                   test_ece=expected_calibration_error(probs, y),
                   test_calibrated_ece=expected_calibration_error(calibrated, y),
                   test_calibrated_brier=brier_score(calibrated, y), val_temperature=t)
    figures["test_y_true"], figures["test_y_pred"] = result.y_true.tolist(), result.y_pred.tolist()
    figures["test_probs"] = calibrated.round(5).tolist()  # the reliability diagram's input (an artifact, not a metric)
    return figures


def train_trial(config: dict[str, Any], data: dict[int, Dataset], eval_costs: np.ndarray,
                weights: dict[str, dict] | None = None) -> None:
    """Report every epoch with a checkpoint; resume from the latest checkpoint after a failure.

    ``data`` maps a split seed to its data set (one entry unless confirmation runs redraw the split).
    A confirmation run (``phase: confirm``) also scores the test split whenever validation macro-F1
    improves, and reports those figures, taken at its validation-selected epoch, with its last epoch.
    """
    torch.set_num_threads(max(1, int(config.get("cpus", 1))))
    ds = data[config["split_seed"]]
    try:
        p = build_parts(config, ds, weights)
    except StudyError as err:  # a user error fails the same way on every retry: tell the driver, once
        tune.report({"fatal_error": one_line(err), VAL_MACRO_F1: 0.0})
        return
    confirm = config.get("phase") == "confirm"
    generator, start, best = torch.Generator().manual_seed(config["trial_seed"]), 0, {VAL_MACRO_F1: float("-inf")}
    if (checkpoint := tune.get_checkpoint()) is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / CHECKPOINT_FILE, map_location=p.device, weights_only=True)
        p.model.load_state_dict(state["model"])
        p.optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start, best = state["epoch"], state["best"]
    node = ray.get_runtime_context().get_node_id()
    val_x, val_y = ds.val.images.to(p.device), ds.val.labels.to(p.device)
    train_x = ds.train.images.to(p.device)  # before resampling: BatchNorm statistics of the data as it is
    steps = -(-len(ds.train) // config["batch_size"]) if config.get("match_steps") else None  # the baseline's
    for epoch in range(start + 1, config["epochs"] + 1):
        start_epoch(p.loss, epoch)
        tr = train_one_epoch(p.model, p.train.images, p.train.labels, p.loss, p.optimizer, batch_size=config["batch_size"],
                             generator=generator, augment_mask=p.train.augment, device=p.device, steps=steps)
        # Running statistics after few steps are stale (MobileNetV2 answered one class; ResNet-18's epoch-2 rung lost
        # 0.25 macro-F1, results/bench/bn_recalibration.md): recompute them with the weights fixed before evaluating.
        recalibrate_bn(p.model, train_x, config["batch_size"], p.device, at_most=BN_IMAGES)
        va = decide(evaluate(p.model, val_x, val_y, p.loss, batch_size=EVAL_BATCH, device=p.device), p.decide)
        metrics = epoch_metrics(tr.metrics(ds.classes, ds.minority), scored(va, ds, eval_costs))
        if confirm and metrics[VAL_MACRO_F1] > best[VAL_MACRO_F1]:
            best = {VAL_MACRO_F1: metrics[VAL_MACRO_F1], "selected_epoch": epoch, **test_figures(p, ds, eval_costs, va)}
        state = {"model": p.model.state_dict(), "optimizer": p.optimizer.state_dict(),
                 "generator": generator.get_state(), "epoch": epoch, "best": best}
        final = {k: v for k, v in best.items() if k != VAL_MACRO_F1} if confirm and epoch == config["epochs"] else {}
        if final:  # the fixed final epoch too, as papers that train a set number of epochs report
            final["test_final_macro_f1"] = test_figures(p, ds, eval_costs)["test_macro_f1"]
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, Path(d) / CHECKPOINT_FILE)
            tune.report({**metrics, **final, "node_id": node, "resumed_from": start},
                        checkpoint=tune.Checkpoint.from_directory(d))
