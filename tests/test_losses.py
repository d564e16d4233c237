"""Losses against their papers' formulas on hand-computed values: focal, weighted CE, class weights,
class-balanced, LDAM-DRW, logit adjustment, balanced softmax; the registry and its options."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from study import names
from study.losses import (
    LOSSES,
    LossError,
    build_loss,
    effective_number_weights,
    inverse_frequency,
    loss_options,
    ratio_weights,
    start_epoch,
)
from study.spaces import TRIAL_DEFAULTS

# logits (ln 3, 0) -> softmax (0.75, 0.25): every probability below is exact by hand
LOGITS = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])
TARGET = torch.tensor([0, 1])  # p_t = 0.75 for the first sample, 0.25 for the second


def focal_by_hand(p_t: float, gamma: float, alpha_t: float = 1.0) -> float:
    """FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), the seed formula."""
    return -alpha_t * (1 - p_t) ** gamma * math.log(p_t)


# ---------------------------------------------------------------- focal


def test_focal_equals_the_seed_formula_on_hand_computed_values() -> None:
    loss = build_loss("focal", [500, 500], 0, gamma=2.0)(LOGITS, TARGET)
    # (0.25^2 * -ln 0.75 + 0.75^2 * -ln 0.25) / 2 = (0.017980 + 0.779791) / 2
    expected = (focal_by_hand(0.75, 2.0) + focal_by_hand(0.25, 2.0)) / 2
    assert expected == pytest.approx(0.398886, abs=1e-6)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 3.0])
def test_focal_follows_the_formula_for_other_gammas(gamma: float) -> None:
    loss = build_loss("focal", [500, 500], 0, gamma=gamma)(LOGITS, TARGET)
    assert loss.item() == pytest.approx((focal_by_hand(0.75, gamma) + focal_by_hand(0.25, gamma)) / 2, rel=1e-6)


def test_focal_with_alpha_weights_the_scalar_alpha_on_the_minority_class() -> None:
    # class 0 is the minority (10 vs 100): alpha_0 = 0.25, alpha_1 = 1 - 0.25 = 0.75
    loss = build_loss("focal", [10, 100], 0, gamma=2.0, alpha=0.25)(LOGITS, TARGET)
    expected = (focal_by_hand(0.75, 2.0, 0.25) + focal_by_hand(0.25, 2.0, 0.75)) / 2
    assert expected == pytest.approx(0.294669, abs=1e-6)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_focal_scalar_alpha_goes_to_the_given_minority_not_the_smallest_count() -> None:
    logits = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    ones, zeros = torch.ones(16, dtype=torch.long), torch.zeros(16, dtype=torch.long)
    plain = build_loss("focal", [10, 100], 0, gamma=2.0)
    minority_first = build_loss("focal", [10, 100], 0, gamma=2.0, alpha=0.2)
    minority_second = build_loss("focal", [10, 100], 1, gamma=2.0, alpha=0.2)  # after resampling: counts no longer tell
    # a batch of class-1 samples only: weighted by 1 - alpha when class 1 is the majority, by alpha when the minority
    assert minority_first(logits, ones).item() == pytest.approx(0.8 * plain(logits, ones).item(), rel=1e-6)
    assert minority_second(logits, ones).item() == pytest.approx(0.2 * plain(logits, ones).item(), rel=1e-6)
    assert minority_second(logits, zeros).item() == pytest.approx(0.8 * plain(logits, zeros).item(), rel=1e-6)
    assert build_loss("focal", [50, 50], 1, alpha=0.25).alpha.tolist() == [0.75, 0.25]  # balanced by over-sampling


@pytest.mark.parametrize(("alpha", "weights"), [(0.0, [0.0, 1.0]), (1.0, [1.0, 0.0])])
def test_focal_alpha_bounds_are_lin_et_al_s_closed_interval(alpha: float, weights: list[float]) -> None:
    assert build_loss("focal", [10, 100], 0, alpha=alpha).alpha.tolist() == weights


def test_focal_per_class_alpha() -> None:
    loss = build_loss("focal", [10, 20, 30], 0, gamma=1.0, alpha=[0.5, 0.3, 0.2])
    logits = torch.zeros(3, 3)  # p_t = 1/3 for every sample
    target = torch.tensor([0, 1, 2])
    expected = sum(focal_by_hand(1 / 3, 1.0, a) for a in (0.5, 0.3, 0.2)) / 3
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_focal_modulating_factor_uses_the_unweighted_probability() -> None:
    # alpha scales the loss linearly; it must not enter (1 - p_t)^gamma
    logits = torch.tensor([[2.0, -1.0]])
    target = torch.tensor([0])
    p_t = math.exp(2.0) / (math.exp(2.0) + math.exp(-1.0))
    loss = build_loss("focal", [10, 100], 0, gamma=2.0, alpha=0.1)(logits, target)
    assert loss.item() == pytest.approx(focal_by_hand(p_t, 2.0, 0.1), rel=1e-6)


def test_focal_at_gamma_zero_without_alpha_is_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(1)
    logits, target = torch.randn(64, 3, generator=gen) * 3, torch.randint(0, 3, (64,), generator=gen)
    loss = build_loss("focal", [5, 50, 500], 0, gamma=0.0)(logits, target)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-6)
    assert loss.item() == pytest.approx(build_loss("ce", [5, 50, 500], 0)(logits, target).item(), rel=1e-6)


def test_focal_down_weights_easy_examples() -> None:
    easy, hard = torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 4.0]])
    target = torch.tensor([0])
    for logits in (easy, hard):
        ce = F.cross_entropy(logits, target).item()
        assert build_loss("focal", [1, 1], 0, gamma=2.0)(logits, target).item() < ce
    ratio_easy = build_loss("focal", [1, 1], 0, gamma=2.0)(easy, target).item() / F.cross_entropy(easy, target).item()
    ratio_hard = build_loss("focal", [1, 1], 0, gamma=2.0)(hard, target).item() / F.cross_entropy(hard, target).item()
    assert ratio_easy < 0.001 < 0.9 < ratio_hard


@pytest.mark.parametrize(
    ("hyper", "message"),
    [
        ({"gamma": -1.0}, r"focal gamma must be >= 0, got -1.0"),
        ({"gamma": float("nan")}, r"focal gamma must be >= 0, got nan"),
        ({"gamma": "2"}, r"focal gamma must be >= 0, got '2'"),
        ({"alpha": 1.5}, r"focal alpha must be in \[0, 1\], got 1.5"),
        ({"alpha": -0.1}, r"focal alpha must be in \[0, 1\], got -0.1"),
        ({"alpha": float("nan")}, r"focal alpha must be in \[0, 1\], got nan"),
        ({"alpha": [0.5, 0.3, 0.2]}, r"focal alpha needs one value per class \(2\), got 3"),
    ],
)
def test_bad_focal_settings_are_clear_errors(hyper: dict, message: str) -> None:
    with pytest.raises(LossError, match=message):
        build_loss("focal", [10, 100], 0, **hyper)


# ---------------------------------------------------------------- weighted cross-entropy


def test_inverse_frequency_gives_the_seeds_weights_for_1000_11000() -> None:
    # class 0 = minority (cat, label 0 in the study), as the counts are ordered by label
    w = inverse_frequency([1000, 11000])
    assert w[0].item() == pytest.approx(6.0)
    assert w[1].item() == pytest.approx(0.545, abs=5e-4)
    assert w.tolist() == pytest.approx([12000 / 2000, 12000 / 22000])
    assert inverse_frequency([11000, 1000]).tolist() == pytest.approx([12000 / 22000, 6.0])  # follows label order


def test_inverse_frequency_gives_the_seeds_other_weights_for_1000_22000() -> None:
    w = inverse_frequency([1000, 22000])  # N = 23000, k = 2
    assert w[0].item() == pytest.approx(11.5)
    assert w[1].item() == pytest.approx(0.52, abs=5e-3)
    assert w[1].item() == pytest.approx(0.5227, abs=1e-4)


def test_inverse_frequency_for_many_classes_and_balanced_data() -> None:
    assert inverse_frequency([10, 20, 70]).tolist() == pytest.approx([100 / 30, 100 / 60, 100 / 210])
    assert inverse_frequency([40, 40]).tolist() == pytest.approx([1.0, 1.0])


def test_weighted_ce_uses_inverse_frequency_by_default() -> None:
    assert build_loss("weighted_ce", [1000, 11000], 0).weights.tolist() == pytest.approx([6.0, 12000 / 22000])


def test_weighted_ce_matches_the_formula() -> None:
    # -1/N sum_i w_{y_i} log p_{y_i}, averaged over N (not over the sum of weights)
    loss = build_loss("weighted_ce", [1000, 11000], 0)(LOGITS, TARGET)
    expected = -(6.0 * math.log(0.75) + (12000 / 22000) * math.log(0.25)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss.item() != pytest.approx(F.cross_entropy(LOGITS, TARGET, weight=torch.tensor([6.0, 12 / 22])).item())


def test_weighted_ce_with_explicit_class_weights() -> None:
    loss = build_loss("weighted_ce", [1, 1], 0, class_weights=[2.0, 3.0])(LOGITS, TARGET)
    assert loss.item() == pytest.approx(-(2.0 * math.log(0.75) + 3.0 * math.log(0.25)) / 2, rel=1e-6)


def test_ratio_weights_two_classes() -> None:
    assert ratio_weights([100, 1000], 0, 5.0).tolist() == pytest.approx([5.0, 1.0])
    assert ratio_weights([1000, 100], 1, 5.0).tolist() == pytest.approx([1.0, 5.0])  # the given minority gets the ratio
    assert ratio_weights([100, 1000], 0, 0.5).tolist() == pytest.approx([0.5, 1.0])
    loss = build_loss("weighted_ce", [100, 1000], 0, weight_ratio=4.0)
    assert loss.weights.tolist() == pytest.approx([4.0, 1.0])
    assert loss(LOGITS, TARGET).item() == pytest.approx(-(4.0 * math.log(0.75) + math.log(0.25)) / 2, rel=1e-6)


def test_ratio_weights_give_the_ratio_to_the_given_minority_even_when_resampling_balanced_the_counts() -> None:
    assert ratio_weights([50, 50], 1, 4.0).tolist() == pytest.approx([1.0, 4.0])
    assert build_loss("weighted_ce", [50, 50], 0, weight_ratio=4.0).weights.tolist() == pytest.approx([4.0, 1.0])


def test_weighted_ce_takes_a_ratio_or_class_weights_not_both() -> None:
    with pytest.raises(LossError, match=r"weighted_ce takes weight_ratio or class_weights, not both; got weight_ratio=2.0"):
        build_loss("weighted_ce", [10, 100], 0, weight_ratio=2.0, class_weights=[1.0, 1.0])
    with pytest.raises(LossError, match=r"weighted_ce class_weights needs one value per class \(2\), got 3"):
        build_loss("weighted_ce", [10, 100], 0, class_weights=[1.0, 1.0, 1.0])


def test_ratio_weights_in_between_classes_follow_a_power_of_inverse_frequency() -> None:
    # ratio 10 over a 100x spread of counts: beta = ln 10 / ln 100 = 0.5, w_c = (1000 / N_c) ** 0.5
    assert ratio_weights([10, 100, 1000], 0, 10.0).tolist() == pytest.approx([10.0, math.sqrt(10), 1.0])


@pytest.mark.parametrize("ratio", [0.0, -2.0])
def test_ratio_weights_reject_non_positive_ratios(ratio: float) -> None:
    with pytest.raises(LossError, match=rf"class weight ratio must be > 0, got {ratio}"):
        build_loss("weighted_ce", [10, 100], 0, weight_ratio=ratio)


# ---------------------------------------------------------------- class-balanced (Cui et al., CVPR 2019)


def test_effective_number_weights_on_hand_computed_values() -> None:
    # counts [1, 3], beta 0.5: w_1 = (1 - 0.5) / (1 - 0.5^1) = 1; w_3 = 0.5 / (1 - 0.125) = 4/7;
    # sum 11/7, normalised to sum k = 2: [2 * 1 * 7/11, 2 * 4/7 * 7/11] = [14/11, 8/11]
    assert effective_number_weights([1, 3], 0.5).tolist() == pytest.approx([14 / 11, 8 / 11])
    # beta -> 1 approaches inverse frequency, beta -> 0 equal weights
    w = effective_number_weights([10, 1000], 0.99999)
    assert (w[0] / w[1]).item() == pytest.approx(100, rel=0.01)
    assert effective_number_weights([10, 1000], 1e-6).tolist() == pytest.approx([1.0, 1.0])


def test_class_balanced_on_cross_entropy_equals_the_formula() -> None:
    # CB = -1/N sum_i w_{y_i} log p_{y_i}: (14/11 * -ln 0.75 + 8/11 * -ln 0.25) / 2 = (0.366141 + 1.008214) / 2
    loss = build_loss("class_balanced", [1, 3], 0, beta=0.5, base_loss="ce")(LOGITS, TARGET)
    expected = -(14 / 11 * math.log(0.75) + 8 / 11 * math.log(0.25)) / 2
    assert expected == pytest.approx(0.687177, abs=1e-6)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_class_balanced_on_focal_equals_the_formula() -> None:
    # CB_focal = -1/N sum_i w_{y_i} (1 - p_t)^gamma log p_t, gamma 2:
    # (14/11 * 0.25^2 * -ln 0.75 + 8/11 * 0.75^2 * -ln 0.25) / 2 = (0.022884 + 0.567120) / 2
    loss = build_loss("class_balanced", [1, 3], 0, beta=0.5, base_loss="focal", gamma=2.0)(LOGITS, TARGET)
    expected = (focal_by_hand(0.75, 2.0, 14 / 11) + focal_by_hand(0.25, 2.0, 8 / 11)) / 2
    assert expected == pytest.approx(0.295002, abs=1e-6)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"beta": 1.0}, r"class-balanced beta must be in \(0, 1\), got 1.0"),
        ({"beta": 0}, r"class-balanced beta must be in \(0, 1\), got 0"),
        ({"base_loss": "bce"}, r"class_balanced base_loss must be one of: ce, focal, got 'bce'"),
        ({"base_loss": "focal", "gamma": -0.5}, r"focal gamma must be >= 0, got -0.5"),
    ],
)
def test_bad_class_balanced_settings_are_clear_errors(options: dict, message: str) -> None:
    with pytest.raises(LossError, match=message):
        build_loss("class_balanced", [10, 100], 0, **options)


# ---------------------------------------------------------------- LDAM-DRW (Cao et al., NeurIPS 2019)

# counts [16, 1]: n^(-1/4) = [1/2, 1]; max_margin 0.5 -> C = 0.5, margins [0.25, 0.5]
LDAM_LOGITS = torch.tensor([[0.5, 0.0], [0.0, 0.5]])
LDAM_TARGET = torch.tensor([0, 1])
# sample 0: (0.5 - 0.25, 0) * 30 = (7.5, 0) -> -log(e^7.5 / (e^7.5 + 1)) = ln(1 + e^-7.5) = 0.000553
# sample 1: (0, 0.5 - 0.5) * 30 = (0, 0) -> ln 2
LDAM_PER_SAMPLE = (math.log1p(math.exp(-7.5)), math.log(2.0))


def test_ldam_margins_follow_n_to_the_minus_quarter_scaled_to_max_margin() -> None:
    assert build_loss("ldam_drw", [16, 1], 0, max_margin=0.5).margins.tolist() == pytest.approx([0.25, 0.5])
    # three classes: 1/81^(1/4) = 1/3, 1/16^(1/4) = 1/2, 1; max margin 0.9 -> [0.3, 0.45, 0.9]
    assert build_loss("ldam_drw", [81, 16, 1], 0, max_margin=0.9).margins.tolist() == pytest.approx([0.3, 0.45, 0.9])


def test_ldam_before_drw_equals_the_formula() -> None:
    loss = build_loss("ldam_drw", [16, 1], 0, max_margin=0.5, drw_epoch=3)
    expected = sum(LDAM_PER_SAMPLE) / 2
    assert expected == pytest.approx(0.346850, abs=1e-6)
    for epoch in (1, 2):
        start_epoch(loss, epoch)
        assert loss(LDAM_LOGITS, LDAM_TARGET).item() == pytest.approx(expected, rel=1e-5)


def test_ldam_reweights_from_drw_epoch_on_with_beta_0_9999() -> None:
    loss = build_loss("ldam_drw", [16, 1], 0, max_margin=0.5, drw_epoch=3)
    # w_16 = (1 - 0.9999) / (1 - 0.9999^16) = 1e-4 / 0.0015988006 = 0.0625469, w_1 = 1e-4 / 1e-4 = 1;
    # normalised to sum 2: [2 * 0.0625469 / 1.0625469, 2 / 1.0625469] = [0.117730, 1.882270]
    w = [2 * 0.0625469 / 1.0625469, 2 / 1.0625469]
    assert w == pytest.approx([0.117730, 1.882270], abs=1e-6)
    expected = (w[0] * LDAM_PER_SAMPLE[0] + w[1] * LDAM_PER_SAMPLE[1]) / 2
    for epoch in (3, 7):
        start_epoch(loss, epoch)
        assert loss(LDAM_LOGITS, LDAM_TARGET).item() == pytest.approx(expected, rel=1e-5)
    start_epoch(loss, 1)  # a resumed trial restarts earlier: the switch follows the epoch, both ways
    assert loss(LDAM_LOGITS, LDAM_TARGET).item() == pytest.approx(sum(LDAM_PER_SAMPLE) / 2, rel=1e-5)


def test_ldam_margin_is_subtracted_from_the_true_class_only() -> None:
    # counts [16, 16, 1]: margins [0.25, 0.25, 0.5]; only the target's logit moves, then everything is scaled by 30
    loss = build_loss("ldam_drw", [16, 16, 1], 0, max_margin=0.5)
    logits = torch.tensor([[0.1, 0.3, -0.2]])
    for target, shifted in ((0, [0.1 - 0.25, 0.3, -0.2]), (2, [0.1, 0.3, -0.2 - 0.5])):
        z = 30 * torch.tensor(shifted)
        by_hand = -(z[target] - torch.logsumexp(z, 0)).item()
        assert loss(logits, torch.tensor([target])).item() == pytest.approx(by_hand, rel=1e-5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_margin": 0.0}, r"ldam_drw max_margin must be > 0, got 0.0"),
        ({"max_margin": float("inf")}, r"ldam_drw max_margin must be > 0, got inf"),
        ({"drw_epoch": 0}, r"ldam_drw drw_epoch must be an integer >= 1, got 0"),
        ({"drw_epoch": 2.5}, r"ldam_drw drw_epoch must be an integer >= 1, got 2.5"),
    ],
)
def test_bad_ldam_settings_are_clear_errors(options: dict, message: str) -> None:
    with pytest.raises(LossError, match=message):
        build_loss("ldam_drw", [10, 100], 0, **options)


# ---------------------------------------------------------------- logit adjustment and balanced softmax


def test_logit_adjusted_equals_the_formula() -> None:
    # counts [1, 3]: prior [1/4, 3/4]. tau 1: (ln 3 + ln 1/4, 0 + ln 3/4) = (ln 3/4, ln 3/4) -> p = (1/2, 1/2): ln 2 each
    assert build_loss("logit_adjusted", [1, 3], 0, tau=1.0)(LOGITS, TARGET).item() == pytest.approx(math.log(2), rel=1e-6)
    # tau 2: (ln 3 + 2 ln 1/4, 2 ln 3/4) = (ln 3/16, ln 9/16) -> p = (1/4, 3/4); targets 0, 1: (ln 4 + ln 4/3) / 2
    expected = (math.log(4) + math.log(4 / 3)) / 2
    assert expected == pytest.approx(0.836988, abs=1e-6)
    assert build_loss("logit_adjusted", [1, 3], 0, tau=2.0)(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-6)
    # tau 0: plain cross-entropy, (-ln 0.75 - ln 0.25) / 2
    plain = -(math.log(0.75) + math.log(0.25)) / 2
    assert build_loss("logit_adjusted", [1, 3], 0, tau=0.0)(LOGITS, TARGET).item() == pytest.approx(plain, rel=1e-6)


def test_balanced_softmax_equals_the_formula() -> None:
    # counts [2, 6]: (ln 3 + ln 2, 0 + ln 6) = (ln 6, ln 6) -> p = (1/2, 1/2): ln 2 for each sample
    assert build_loss("balanced_softmax", [2, 6], 0)(LOGITS, TARGET).item() == pytest.approx(math.log(2), rel=1e-6)
    # log n_c and log prior_c differ by a constant (log N), which softmax ignores: logit adjustment at tau 1
    gen = torch.Generator().manual_seed(2)
    logits, target = torch.randn(32, 3, generator=gen) * 2, torch.randint(0, 3, (32,), generator=gen)
    counts = [7, 40, 300]
    assert build_loss("balanced_softmax", counts, 0)(logits, target).item() == pytest.approx(
        build_loss("logit_adjusted", counts, 0, tau=1.0)(logits, target).item(), rel=1e-6)


def test_logit_adjusted_rejects_a_negative_tau() -> None:
    with pytest.raises(LossError, match=r"logit_adjusted tau must be >= 0, got -1.0"):
        build_loss("logit_adjusted", [10, 100], 0, tau=-1.0)


# ---------------------------------------------------------------- registry


def test_registry_holds_the_names_the_cli_checks() -> None:
    assert set(LOSSES) == set(names.LOSSES) == set(names.LOSS_OPTIONS)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_each_factory_takes_exactly_its_options_with_the_trial_defaults(name: str) -> None:
    params = list(inspect.signature(LOSSES[name]).parameters.values())
    assert [p.name for p in params[:2]] == ["counts", "minority"]
    assert tuple(p.name for p in params[2:]) == loss_options(name)
    for p in params[2:]:
        assert p.kind is p.POSITIONAL_OR_KEYWORD
        assert p.default == TRIAL_DEFAULTS.get(p.name), f"{name}.{p.name} defaults as the trial config does"
    assert set(names.LOSS_OPTIONS[name]) <= set(TRIAL_DEFAULTS)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_each_loss_builds_from_the_trial_defaults_and_trains(name: str) -> None:
    loss = build_loss(name, [5, 50, 500], 0, **{k: TRIAL_DEFAULTS[k] for k in names.LOSS_OPTIONS[name]})
    start_epoch(loss, 1)
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(8, 3, generator=gen, requires_grad=True)
    target = torch.randint(0, 3, (8,), generator=gen)
    value = loss(logits, target)
    value.backward()
    assert value.dim() == 0 and math.isfinite(value.item()) and value.item() > 0
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    right = torch.nn.functional.one_hot(target, 3).float() * 20
    assert loss(right, target).item() < loss(-right, target).item(), "confident and right costs less than wrong"


def test_start_epoch_skips_losses_that_do_not_change_with_the_epoch() -> None:
    loss = build_loss("ce", [10, 100], 0)
    start_epoch(loss, 5)
    assert not hasattr(loss, "set_epoch")


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("focal", {"beta": 0.9}, r"loss 'focal': unknown option 'beta'; it takes: gamma, alpha"),
        ("ce", {"gamma": 2.0}, r"loss 'ce': unknown option 'gamma'; it takes no options"),
        ("weighted_ce", {"weights": [1, 2]}, r"loss 'weighted_ce': unknown option 'weights'; it takes: weight_ratio, "
                                              r"class_weights"),
        ("ldam_drw", {"s": 30}, r"loss 'ldam_drw': unknown option 's'; it takes: max_margin, drw_epoch"),
        ("balanced_softmax", {"tau": 1.0}, r"loss 'balanced_softmax': unknown option 'tau'; it takes no options"),
    ],
)
def test_unknown_options_are_rejected_with_the_known_ones(name: str, options: dict, message: str) -> None:
    with pytest.raises(LossError, match=message):
        build_loss(name, [10, 100], 0, **options)


@pytest.mark.parametrize(
    ("counts", "minority", "message"),
    [
        ([10, 0], 0, r"every class needs at least one training sample, got counts \[10, 0\]"),
        ([], 0, r"every class needs at least one training sample, got counts \[\]"),
        ([10, 100], 2, r"minority must be a class index in \[0, 1\], got 2"),
        ([10, 100], -1, r"minority must be a class index in \[0, 1\], got -1"),
    ],
)
def test_bad_counts_or_minority_are_clear_errors(counts: list[int], minority: int, message: str) -> None:
    with pytest.raises(LossError, match=message):
        build_loss("ce", counts, minority)


def test_plain_ce_is_cross_entropy() -> None:
    assert build_loss("ce", [1, 11], 0)(LOGITS, TARGET).item() == pytest.approx(-(math.log(0.75) + math.log(0.25)) / 2)


@pytest.mark.parametrize("name", ["cross_entropy", "Focal", ""])
def test_unknown_loss_is_a_clear_error(name: str) -> None:
    with pytest.raises(LossError, match=rf"unknown loss '{name}'; choose one of: balanced_softmax, ce, class_balanced, focal, "
                                         r"ldam_drw, logit_adjusted, weighted_ce"):
        build_loss(name, [10, 100], 0)
