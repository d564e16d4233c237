"""Names the command lines check before anything heavy loads: registry keys and metric names.

Standard library only: ``python -m study.tune`` validates a search space against these names
without importing torch, Ray or MLflow. Each registry (``study.sampling.SAMPLERS``,
``study.losses.LOSSES``, ``study.models``) is tested to hold exactly these keys.
"""

from __future__ import annotations

SAMPLERS = ("none", "over_aug", "over_dup", "over_smote", "under_cluster", "under_random")
LOSSES = ("balanced_softmax", "ce", "class_balanced", "focal", "ldam_drw", "logit_adjusted", "weighted_ce")
MODELS = ("pretrained", "scratch")
BACKBONES = ("resnet18", "mobilenet_v2", "efficientnet_lite0")  # resnet18 is the default
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")  # freezing "layerN" freezes every stage up to it
FREEZE = ("none", *STAGES)
BASE_LOSSES = ("ce", "focal")  # class_balanced's base loss, re-weighted by the effective number of samples
COST_USES = ("weights", "threshold", "both")  # a cost matrix as class weights, as min-expected-cost decisions, or both

# The trial-config keys each registry entry takes as options: the trainable passes exactly
# ``{k: config[k] for k in LOSS_OPTIONS[name]}`` and the factories reject anything else.
# weighted_ce also takes ``class_weights`` (per-class weights from a cost matrix), which is no config key.
LOSS_OPTIONS: dict[str, tuple[str, ...]] = {
    "balanced_softmax": (),
    "ce": (),
    "class_balanced": ("beta", "base_loss", "gamma"),  # gamma: only with base_loss focal
    "focal": ("gamma", "alpha"),
    "ldam_drw": ("max_margin", "drw_epoch"),
    "logit_adjusted": ("tau",),
    "weighted_ce": ("weight_ratio",),
}
SAMPLER_OPTIONS: dict[str, tuple[str, ...]] = {name: ("k_neighbors",) if name == "over_smote" else () for name in SAMPLERS}

# Metrics: one name everywhere (Ray results, MLflow, summary tables). A split prefix and a base name:
# train_<m> (the batches as trained), val_<m> (validation, per epoch), test_<m> (the held-out split).
BASE_METRICS = ("loss", "accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1",
                "minority_precision", "minority_recall", "minority_f1", "expected_cost", "brier")
VAL_MACRO_F1 = "val_macro_f1"  # what Optuna, ASHA and checkpoint ranking read: validation macro-F1
VAL_BRIER = "val_brier"  # ASHA's tie-break between equal validation macro-F1 (study.engine.tie_broken)
TEST_MACRO_F1 = "test_macro_f1"
