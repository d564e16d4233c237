"""Losses against the seeds' formulas on hand-computed values: focal, weighted CE, class weights, the registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from study.losses import LossError, build_loss, inverse_frequency, ratio_weights

# logits (ln 3, 0) -> softmax (0.75, 0.25): every probability below is exact by hand
LOGITS = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])
TARGET = torch.tensor([0, 1])  # p_t = 0.75 for the first sample, 0.25 for the second


def focal_by_hand(p_t: float, gamma: float, alpha_t: float = 1.0) -> float:
    """FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), the seed formula."""
    return -alpha_t * (1 - p_t) ** gamma * math.log(p_t)


# ---------------------------------------------------------------- focal


def test_focal_equals_the_seed_formula_on_hand_computed_values() -> None:
    loss = build_loss("focal", [500, 500], gamma=2.0)(LOGITS, TARGET)
    # (0.25^2 * -ln 0.75 + 0.75^2 * -ln 0.25) / 2 = (0.017980 + 0.779791) / 2
    expected = (focal_by_hand(0.75, 2.0) + focal_by_hand(0.25, 2.0)) / 2
    assert expected == pytest.approx(0.398886, abs=1e-6)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 3.0])
def test_focal_follows_the_formula_for_other_gammas(gamma: float) -> None:
    loss = build_loss("focal", [500, 500], gamma=gamma)(LOGITS, TARGET)
    assert loss.item() == pytest.approx((focal_by_hand(0.75, gamma) + focal_by_hand(0.25, gamma)) / 2, rel=1e-6)


def test_focal_with_alpha_weights_the_scalar_alpha_on_the_minority_class() -> None:
    # class 0 is the minority (10 vs 100): alpha_0 = 0.25, alpha_1 = 1 - 0.25 = 0.75
    loss = build_loss("focal", [10, 100], gamma=2.0, alpha=0.25)(LOGITS, TARGET)
    expected = (focal_by_hand(0.75, 2.0, 0.25) + focal_by_hand(0.25, 2.0, 0.75)) / 2
    assert expected == pytest.approx(0.294669, abs=1e-6)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_focal_scalar_alpha_follows_the_minority_wherever_it_is() -> None:
    logits = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    ones, zeros = torch.ones(16, dtype=torch.long), torch.zeros(16, dtype=torch.long)
    plain = build_loss("focal", [10, 100], gamma=2.0)
    minority_first = build_loss("focal", [10, 100], gamma=2.0, alpha=0.2)
    minority_second = build_loss("focal", [100, 10], gamma=2.0, alpha=0.2)
    # a batch of class-1 samples only: weighted by 1 - alpha when class 1 is the majority, by alpha when the minority
    assert minority_first(logits, ones).item() == pytest.approx(0.8 * plain(logits, ones).item(), rel=1e-6)
    assert minority_second(logits, ones).item() == pytest.approx(0.2 * plain(logits, ones).item(), rel=1e-6)
    assert minority_second(logits, zeros).item() == pytest.approx(0.8 * plain(logits, zeros).item(), rel=1e-6)


def test_focal_per_class_alpha() -> None:
    loss = build_loss("focal", [10, 20, 30], gamma=1.0, alpha=[0.5, 0.3, 0.2])
    logits = torch.zeros(3, 3)  # p_t = 1/3 for every sample
    target = torch.tensor([0, 1, 2])
    expected = sum(focal_by_hand(1 / 3, 1.0, a) for a in (0.5, 0.3, 0.2)) / 3
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_focal_modulating_factor_uses_the_unweighted_probability() -> None:
    # alpha scales the loss linearly; it must not enter (1 - p_t)^gamma
    logits = torch.tensor([[2.0, -1.0]])
    target = torch.tensor([0])
    p_t = math.exp(2.0) / (math.exp(2.0) + math.exp(-1.0))
    loss = build_loss("focal", [10, 100], gamma=2.0, alpha=0.1)(logits, target)
    assert loss.item() == pytest.approx(focal_by_hand(p_t, 2.0, 0.1), rel=1e-6)


def test_focal_at_gamma_zero_without_alpha_is_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(1)
    logits, target = torch.randn(64, 3, generator=gen) * 3, torch.randint(0, 3, (64,), generator=gen)
    loss = build_loss("focal", [5, 50, 500], gamma=0.0)(logits, target)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-6)
    assert loss.item() == pytest.approx(build_loss("ce", [5, 50, 500])(logits, target).item(), rel=1e-6)


def test_focal_down_weights_easy_examples() -> None:
    easy, hard = torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 4.0]])
    target = torch.tensor([0])
    for logits in (easy, hard):
        ce = F.cross_entropy(logits, target).item()
        assert build_loss("focal", [1, 1], gamma=2.0)(logits, target).item() < ce
    ratio_easy = build_loss("focal", [1, 1], gamma=2.0)(easy, target).item() / F.cross_entropy(easy, target).item()
    ratio_hard = build_loss("focal", [1, 1], gamma=2.0)(hard, target).item() / F.cross_entropy(hard, target).item()
    assert ratio_easy < 0.001 < 0.9 < ratio_hard


@pytest.mark.parametrize(
    ("hyper", "message"),
    [
        ({"gamma": -1.0}, r"focal gamma must be >= 0, got -1.0"),
        ({"alpha": 1.5}, r"focal alpha must be in \(0, 1\), got 1.5"),
        ({"alpha": 0}, r"focal alpha must be in \(0, 1\), got 0"),
        ({"alpha": [0.5, 0.3, 0.2]}, r"focal alpha needs one value per class \(2\), got 3"),
    ],
)
def test_bad_focal_settings_are_clear_errors(hyper: dict, message: str) -> None:
    with pytest.raises(LossError, match=message):
        build_loss("focal", [10, 100], **hyper)


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
    assert build_loss("weighted_ce", [1000, 11000]).weights.tolist() == pytest.approx([6.0, 12000 / 22000])


def test_weighted_ce_matches_the_formula() -> None:
    # -1/N sum_i w_{y_i} log p_{y_i}, averaged over N (not over the sum of weights)
    loss = build_loss("weighted_ce", [1000, 11000])(LOGITS, TARGET)
    expected = -(6.0 * math.log(0.75) + (12000 / 22000) * math.log(0.25)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss.item() != pytest.approx(F.cross_entropy(LOGITS, TARGET, weight=torch.tensor([6.0, 12 / 22])).item())


def test_weighted_ce_with_explicit_class_weights() -> None:
    loss = build_loss("weighted_ce", [1, 1], class_weights=[2.0, 3.0])(LOGITS, TARGET)
    assert loss.item() == pytest.approx(-(2.0 * math.log(0.75) + 3.0 * math.log(0.25)) / 2, rel=1e-6)


def test_ratio_weights_two_classes() -> None:
    assert ratio_weights([100, 1000], 5.0).tolist() == pytest.approx([5.0, 1.0])
    assert ratio_weights([1000, 100], 5.0).tolist() == pytest.approx([1.0, 5.0])  # the smallest class gets the ratio
    assert ratio_weights([100, 1000], 0.5).tolist() == pytest.approx([0.5, 1.0])
    loss = build_loss("weighted_ce", [100, 1000], weight_ratio=4.0)
    assert loss.weights.tolist() == pytest.approx([4.0, 1.0])
    assert loss(LOGITS, TARGET).item() == pytest.approx(-(4.0 * math.log(0.75) + math.log(0.25)) / 2, rel=1e-6)


def test_ratio_weights_in_between_classes_follow_a_power_of_inverse_frequency() -> None:
    # ratio 10 over a 100x spread of counts: beta = ln 10 / ln 100 = 0.5, w_c = (1000 / N_c) ** 0.5
    assert ratio_weights([10, 100, 1000], 10.0).tolist() == pytest.approx([10.0, math.sqrt(10), 1.0])


@pytest.mark.parametrize("ratio", [0.0, -2.0])
def test_ratio_weights_reject_non_positive_ratios(ratio: float) -> None:
    with pytest.raises(LossError, match=rf"class weight ratio must be > 0, got {ratio}"):
        build_loss("weighted_ce", [10, 100], weight_ratio=ratio)


# ---------------------------------------------------------------- registry


def test_plain_ce_is_cross_entropy() -> None:
    assert build_loss("ce", [1, 11])(LOGITS, TARGET).item() == pytest.approx(-(math.log(0.75) + math.log(0.25)) / 2)


@pytest.mark.parametrize("name", ["cross_entropy", "Focal", ""])
def test_unknown_loss_is_a_clear_error(name: str) -> None:
    with pytest.raises(LossError, match=rf"unknown loss '{name}'; choose one of: ce, focal, weighted_ce"):
        build_loss(name, [10, 100])
