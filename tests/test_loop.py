"""The shared loop: it learns, it repeats itself for a seed, it feeds the model [0, 1] floats, it augments only the
marked images, frozen stages stay put, it builds nothing from Python lists per batch, it never waits for the GPU
inside an epoch, and it picks the CPU without GPUs."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

from study.data import load_dataset, subset
from study.loop import (
    EpochResult,
    augment,
    batch_bounds,
    evaluate,
    generator_on,
    pick_device,
    prepare_model,
    recalibrate_bn,
    to_input,
    train_one_epoch,
)
from study.losses import build_loss
from study.metrics import classification_metrics
from study.models import build_model, frozen_modules

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def animals():
    """Cats vs dogs from the embedded Animal-MNIST data at 16 px, balanced, 100 per class; no cache written."""
    return subset(load_dataset("animals", image_size=16, ratio=1.0, cache_dir=None), 100, seed=0)


def run(data, seed: int, epochs: int, augment_all: bool = False, lr: float = 1e-3):
    torch.manual_seed(seed)
    model = build_model(data.num_classes)
    loss = build_loss("ce", data.train.counts(data.num_classes), data.minority)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    mask = torch.arange(len(data.train)) % 2 == 0 if augment_all else None
    results = [train_one_epoch(model, data.train.images, data.train.labels, loss, optimizer, batch_size=32,
                               generator=generator, augment_mask=mask) for _ in range(epochs)]
    return model, loss, results


def test_a_few_epochs_beat_chance_macro_f1(animals) -> None:
    assert animals.train.counts(2) == [100, 100] and animals.val.counts(2) == [100, 100]
    model, loss, results = run(animals, seed=0, epochs=4)
    assert results[-1].loss < results[0].loss
    val = evaluate(model, animals.val.images, animals.val.labels, loss, batch_size=64)
    metrics = val.metrics(animals.classes, minority=0)
    # chance on a balanced split: 0.5 guessing at random, 0.33 always answering one class
    assert metrics["macro_f1"] > 0.65, metrics
    assert metrics["loss"] == pytest.approx(val.loss) and val.loss > 0
    assert metrics["minority_recall"] == metrics["recall_cat"]
    assert sum(map(sum, metrics["confusion"])) == 200
    assert val.probs.shape == (200, 2) and torch.allclose(val.probs.sum(1), torch.ones(200))
    assert torch.equal(val.y_pred, val.probs.argmax(1)) and torch.equal(val.y_true, animals.val.labels)
    train_metrics = results[-1].metrics(animals.classes, minority=1)
    assert train_metrics["minority_recall"] == train_metrics["recall_dog"]
    assert sum(map(sum, train_metrics["confusion"])) == 200  # every training image once per epoch
    assert sorted(results[-1].y_true.tolist()) == sorted(animals.train.labels.tolist())


def test_training_is_deterministic_on_cpu_for_a_seed(animals) -> None:
    small = subset(animals, 40, seed=1)
    a_model, _, a = run(small, seed=3, epochs=2, augment_all=True)
    b_model, _, b = run(small, seed=3, epochs=2, augment_all=True)
    assert [r.loss for r in a] == [r.loss for r in b]
    assert all(torch.equal(x.y_pred, y.y_pred) and torch.equal(x.y_true, y.y_true) for x, y in zip(a, b, strict=False))
    a_state, b_state = a_model.state_dict(), b_model.state_dict()
    assert all(torch.equal(a_state[k], b_state[k]) for k in a_state)
    _, _, c = run(small, seed=4, epochs=2, augment_all=True)  # another seed: another run
    assert [r.loss for r in a] != [r.loss for r in c]


def test_epoch_result_reads_tensors_once_and_needs_the_minority() -> None:
    result = EpochResult(torch.tensor(0.25), torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    assert result.loss == 0.25 and isinstance(result.loss, float)
    assert result.y_true.tolist() == [0, 1, 1] and result.probs is None
    metrics = result.metrics(("a", "b"), minority=1)
    assert metrics["loss"] == 0.25 and metrics["minority_recall"] == 0.5
    with pytest.raises(TypeError, match="minority"):
        result.metrics(("a", "b"))  # type: ignore[call-arg]


class Recorder(nn.Module):
    """A tiny classifier that keeps every input batch it sees."""

    def __init__(self, pixels: int, num_classes: int = 2) -> None:
        super().__init__()
        self.fc = nn.Linear(pixels, num_classes)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.fc(x.flatten(1))


def grey_images(n: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def one_batch(images: torch.Tensor, mask: torch.Tensor | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Train one epoch in a single batch; return the model's input and the epoch's sample order."""
    model = Recorder(3 * images.shape[-1] * images.shape[-2])
    labels = torch.arange(len(images)) % 2
    train_one_epoch(model, images, labels, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                    batch_size=len(images), generator=torch.Generator().manual_seed(seed), augment_mask=mask)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))  # the epoch's shuffle
    assert len(model.seen) == 1
    return model.seen[0], order


def test_the_model_gets_floats_in_0_1_with_grey_on_three_channels() -> None:
    """Normalisation belongs to the model (it knows its weights' statistics): the loop only scales to [0, 1]."""
    images = grey_images(16)
    seen, order = one_batch(images)
    grey = images[order].float() / 255
    assert seen.shape == (16, 3, 8, 8) and seen.dtype == torch.float32
    assert torch.allclose(seen, grey.expand(-1, 3, -1, -1))
    assert seen.min() >= 0 and seen.max() <= 1
    rgb = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    assert torch.equal(to_input(rgb, torch.device("cpu")), rgb.float() / 255)


def test_augmentation_changes_the_marked_images_only() -> None:
    images = grey_images(32, size=16, seed=1)
    mask = torch.zeros(32, dtype=torch.bool)
    mask[[1, 4, 5, 20, 31]] = True
    plain, order = one_batch(images)
    augmented, order_aug = one_batch(images, mask)
    assert torch.equal(order, order_aug)
    marked = mask[order]
    same = [torch.equal(a, b) for a, b in zip(plain, augmented, strict=False)]
    assert [not s for s in same] == marked.tolist()
    assert augmented.shape == plain.shape and augmented.dtype == plain.dtype
    assert augmented.min() >= 0 and augmented.max() <= 1  # augmented images stay in [0, 1]
    unflagged, _ = one_batch(images, torch.zeros(32, dtype=torch.bool))  # a mask with nothing marked changes nothing
    assert torch.equal(unflagged, plain)


def test_augment_keeps_shape_dtype_and_range_and_draws_fresh_changes() -> None:
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    first, second = augment(x, gen), augment(x, gen)
    for y in (first, second):
        assert y.shape == x.shape and y.dtype == x.dtype
        assert y.min() >= 0 and y.max() <= 1
        assert not torch.equal(y, x)
    assert not torch.equal(first, second)  # each draw is a new random transform
    assert torch.equal(augment(x, torch.Generator().manual_seed(0)), first)  # and repeats for a seed


def test_the_cpu_path_draws_from_the_trials_own_generator() -> None:
    gen = torch.Generator().manual_seed(5)
    assert generator_on(torch.device("cpu"), gen) is gen  # its state is what a checkpoint keeps


@pytest.mark.parametrize(("n", "batch_size", "sizes"), [
    (17, 8, [8, 9]),  # a last batch of one joins the batch before
    (16, 8, [8, 8]), (18, 8, [8, 8, 2]), (1, 8, [1]), (5, 8, [5]), (9, 4, [4, 5]),
])
def test_batch_bounds(n: int, batch_size: int, sizes: list[int]) -> None:
    bounds = batch_bounds(n, batch_size)
    assert [e - s for s, e in bounds] == sizes
    assert bounds[0][0] == 0 and bounds[-1][1] == n and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))


def test_frozen_stages_keep_weights_and_batchnorm_statistics() -> None:
    torch.manual_seed(0)
    model = build_model(2, "pretrained", "source", freeze="layer1", state=build_model(8).state_dict())
    frozen = frozen_modules(model)
    assert frozen
    frozen_before = [{k: v.clone() for k, v in m.state_dict().items()} for m in frozen]
    frozen_ids = {id(sub) for m in frozen for sub in m.modules()}
    moving = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and id(m) not in frozen_ids]
    moving_before = [m.running_mean.clone() for m in moving]
    trainable = [p for p in model.parameters() if p.requires_grad]
    params_before = [p.detach().clone() for p in trainable]
    images = grey_images(16, size=16)
    labels = torch.arange(16) % 2
    optimizer = torch.optim.Adam(trainable, lr=1e-2)
    train_one_epoch(model, images, labels, nn.CrossEntropyLoss(), optimizer, batch_size=8,
                    generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(before[k], v) for m, before in zip(frozen, frozen_before, strict=False) for k, v in m.state_dict().items())
    assert moving and all(not torch.equal(b, m.running_mean) for b, m in zip(moving_before, moving, strict=False))
    assert sum(not torch.equal(b, p) for b, p in zip(params_before, trainable, strict=False)) > len(trainable) // 2


def test_pick_device_is_the_cpu_without_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pick_device(0) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device(0.5) == torch.device("cpu") and pick_device(1) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device(0) == torch.device("cpu")  # a trial that asked for no GPU stays on the CPU
    assert pick_device(0.5).type == "cuda"


def test_a_last_batch_of_one_joins_the_batch_before() -> None:
    """17 images in batches of 8: a final batch of 1 would make BatchNorm raise at 32 px (1x1 maps in layer4);
    it trains with the previous batch instead, and every image is still seen once."""
    torch.manual_seed(0)
    model = build_model(2)
    images, labels = grey_images(17, size=32), torch.arange(17) % 2
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    result = train_one_epoch(model, images, labels, nn.CrossEntropyLoss(), optimizer, batch_size=8,
                             generator=torch.Generator().manual_seed(0))
    assert len(result.y_pred) == 17 and sorted(result.y_true.tolist()) == sorted(labels.tolist())
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        model(torch.zeros(1, 3, 32, 32))  # what the loop avoids


class TinyNet(nn.Sequential):
    """Conv + BatchNorm + linear head: small enough for many batches in a test, with BatchNorm's training rules."""

    def __init__(self) -> None:
        super().__init__(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2))


def test_no_tensor_is_built_from_python_lists_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU, ``torch.tensor([...], device=...)`` is a host-to-device copy: the count must not grow with batches."""
    torch.manual_seed(0)
    model = TinyNet()
    images, labels = grey_images(64, size=8), torch.arange(64) % 2
    mask = torch.arange(64) % 3 == 0  # the over_aug path too
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)

    def epoch(batch_size: int) -> None:
        result = train_one_epoch(model, images, labels, nn.CrossEntropyLoss(), optimizer, batch_size=batch_size,
                                 generator=generator, augment_mask=mask)
        evaluate(model, images, labels, nn.CrossEntropyLoss(), batch_size=batch_size).metrics(("a", "b"), 0)
        result.metrics(("a", "b"), 0)

    epoch(64)  # warm-up: Adam makes its step counters with torch.tensor on its first step
    calls = []
    real = torch.tensor

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "tensor", counting)
    counts = []
    for batch_size in (64, 8):  # one batch, then eight
        calls.clear()
        epoch(batch_size)
        counts.append(len(calls))
    assert counts[1] == counts[0], counts


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_no_host_synchronisation_inside_an_epoch_on_cuda() -> None:
    """The whole epoch (shuffle, cut, convert, augment, forward, loss, backward, Adam, keep loss and predictions)
    runs without the host waiting for the GPU; reading the result is the epoch's one transfer."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = prepare_model(TinyNet(), device)
    images, labels = grey_images(8 * 16 + 1, size=32).to(device), (torch.arange(8 * 16 + 1) % 2).to(device)
    mask = (torch.arange(len(labels)) % 3 == 0).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator, loss = torch.Generator().manual_seed(0), nn.CrossEntropyLoss()
    fit = lambda mask=None, batch_size=16: train_one_epoch(  # noqa: E731
        model, images, labels, loss, optimizer, batch_size=batch_size, generator=generator, augment_mask=mask,
        device=device)
    x = to_input(images[:4], device)  # channels_last floats in [0, 1], made on the GPU
    assert x.is_contiguous(memory_format=torch.channels_last) and x.shape == (4, 3, 32, 32)
    # the GPU divides by a reciprocal: within a float32 rounding step of the CPU's x / 255
    assert torch.allclose(x.cpu(), images[:4].cpu().float().div(255).expand(-1, 3, -1, -1), rtol=0, atol=1e-7)
    _ = fit(mask).loss  # warm-up: lazy CUDA initialisation, optimizer state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        train = fit()
        val = evaluate(model, images, labels, loss, batch_size=32, device=device)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert len(train.y_pred) == len(labels) and train.loss > 0 and val.probs.shape == (len(labels), 2)
    # with a mask, one question per epoch (is anything flagged?), however many batches
    syncs = []
    for batch_size in (64, 8):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fit(mask, batch_size)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        syncs.append(sum("synchroniz" in str(w.message) for w in caught))
    assert syncs == [1, 1], syncs
    # a CUDA epoch draws from a CUDA generator seeded by one draw from the trial's CPU generator: it repeats
    draws = [torch.rand(4, generator=generator_on(device, torch.Generator().manual_seed(1)), device=device)
             for _ in range(2)]
    assert torch.equal(draws[0], draws[1])


CPU = torch.device("cpu")


def bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}


def test_recalibrated_statistics_are_the_training_sets_statistics_of_the_batchnorm_input() -> None:
    torch.manual_seed(0)
    model = TinyNet().eval()
    images = grey_images(60, size=8)
    weights = {k: v.clone() for k, v in model.state_dict().items() if k not in bn_state(model)}
    with torch.no_grad():
        h = model[0](to_input(images, CPU))  # what the BatchNorm layer sees
    mean, var = h.mean((0, 2, 3)), h.transpose(0, 1).flatten(1).var(1)  # unbiased, as BatchNorm keeps it
    bn = model[1]
    assert not torch.allclose(bn.running_mean, mean, atol=1e-3)  # stale before: the initial 0 / 1
    recalibrate_bn(model, images, batch_size=64, device=CPU)  # one batch: exactly the set's statistics
    assert torch.allclose(bn.running_mean, mean, atol=1e-6) and torch.allclose(bn.running_var, var, rtol=1e-5)
    recalibrate_bn(model, images, batch_size=20, device=CPU)  # three batches of 20: the mean of their statistics
    assert int(bn.num_batches_tracked) == 3
    assert torch.allclose(bn.running_mean, mean, atol=1e-6)  # equal batches: still the exact mean
    assert torch.allclose(bn.running_var, var, rtol=0.1) and not torch.allclose(bn.running_var, var, rtol=1e-4)
    assert bn.momentum == 0.1 and not model.training and not bn.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())  # the weights are fixed


def test_recalibration_at_most_n_images_takes_a_fixed_random_subset() -> None:
    torch.manual_seed(0)
    model = TinyNet().eval()
    images = grey_images(60, size=8)
    pick = torch.randperm(60, generator=torch.Generator().manual_seed(0))[:16]  # the pass's own draw
    with torch.no_grad():
        h = model[0](to_input(images[pick], CPU))
    recalibrate_bn(model, images, batch_size=64, device=CPU, at_most=16)  # one batch of the 16 drawn
    assert int(model[1].num_batches_tracked) == 1
    assert torch.allclose(model[1].running_mean, h.mean((0, 2, 3)), atol=1e-6)
    recalibrate_bn(model, images, batch_size=64, device=CPU, at_most=100)  # more than there are: all 60
    with torch.no_grad():
        assert torch.allclose(model[1].running_mean, model[0](to_input(images, CPU)).mean((0, 2, 3)), atol=1e-6)


def test_recalibration_restores_every_modules_mode_and_keeps_frozen_statistics() -> None:
    """Frozen stages keep their transferred statistics: the layers after them learned on those, and the loop
    never updates them (it keeps them in eval mode)."""
    torch.manual_seed(0)
    model = build_model(2, "pretrained", "source", freeze="layer1", state=build_model(8).state_dict())
    model.train()
    for module in frozen_modules(model):
        module.eval()  # as train_one_epoch leaves it
    modes = [m.training for m in model.modules()]
    frozen = {id(sub) for m in frozen_modules(model) for sub in m.modules()}
    before = bn_state(model)
    names = {id(m): name for name, m in model.named_modules()}
    rng = torch.get_rng_state()
    recalibrate_bn(model, grey_images(40, size=16), batch_size=16, device=CPU)
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rng)  # draws nothing from the global generator a trial trains with
    after = bn_state(model)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            key = f"{names[id(m)]}.running_mean"
            assert torch.equal(before[key], after[key]) == (id(m) in frozen), key
            assert m.momentum == 0.1


def test_a_model_without_batchnorm_is_left_alone() -> None:
    model = Recorder(3 * 8 * 8).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recalibrate_bn(model, grey_images(10), batch_size=4, device=CPU)
    assert model.seen == [] and model.training  # not even run
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_recalibration_augments_only_when_images_are_flagged_and_repeats_itself() -> None:
    torch.manual_seed(0)
    model, images = TinyNet(), grey_images(32, size=8)
    stats = []
    for mask in (None, torch.zeros(32, dtype=torch.bool), torch.arange(32) % 2 == 0, torch.arange(32) % 2 == 0):
        recalibrate_bn(model, images, batch_size=8, device=CPU, augment_mask=mask)
        stats.append(model[1].running_var.clone())
    assert torch.equal(stats[0], stats[1])  # nothing flagged: as no mask
    assert not torch.equal(stats[0], stats[2])  # flagged images are augmented
    assert torch.equal(stats[2], stats[3])  # from a fixed seed


def test_stale_batchnorm_statistics_cause_mobilenet_v2s_one_class_answers() -> None:
    """The cause of MobileNetV2's one-class collapse (issue 20 part 5), confirmed: after a few epochs from scratch
    it answers one class in eval mode on training and validation images alike, while the same weights on batch
    statistics score well on the training images; recomputing only the BatchNorm running statistics (weights
    fixed) gives back both classes and the batch-statistics figures."""
    data = subset(load_dataset("animals", image_size=32, ratio=1.0, cache_dir=None), 100, seed=0)
    torch.manual_seed(0)
    model = build_model(2, backbone="mobilenet_v2")
    loss = build_loss("ce", data.train.counts(2), data.minority)
    optimizer, generator = torch.optim.Adam(model.parameters(), lr=2e-3), torch.Generator().manual_seed(0)
    for _ in range(4):  # 28 steps
        train_one_epoch(model, data.train.images, data.train.labels, loss, optimizer, batch_size=32,
                        generator=generator)

    def answers(split, train_mode: bool) -> torch.Tensor:
        model.train(train_mode)
        with torch.no_grad():
            return model(to_input(split.images, CPU)).argmax(1)

    def f1(split, pred: torch.Tensor) -> float:
        return classification_metrics(split.labels, pred, data.classes, 0)["macro_f1"]

    splits = (data.train, data.val)
    stale = [answers(s, False) for s in splits]
    batch = [answers(s, True) for s in splits]  # the whole split as one batch: its own statistics
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running_" not in k and "num_batches" not in k}
    recalibrate_bn(model, data.train.images, batch_size=32, device=CPU)
    fresh = [answers(s, False) for s in splits]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert [len(p.unique()) for p in stale] == [1, 1]  # one class for every image: macro-F1 1/3
    assert f1(data.train, batch[0]) > 0.8  # the weights have learned the training images
    assert [len(p.unique()) for p in fresh] == [2, 2]
    assert f1(data.train, fresh[0]) > f1(data.train, batch[0]) - 0.03 and (fresh[0] == batch[0]).float().mean() > 0.9
    assert f1(data.val, fresh[1]) > 0.55 > f1(data.val, stale[1])


def test_steps_train_exactly_that_many_optimizer_steps_over_shuffled_passes() -> None:
    """The paper protocol's step matching: an under-sampled set of 7 images trains 5 steps of 4, like a larger one."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))  # the loop feeds three channels
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []
    optimizer.register_step_post_hook(lambda *_: calls.append(1))
    images, labels = torch.randint(0, 255, (7, 1, 4, 4), dtype=torch.uint8), torch.tensor([0, 1] * 3 + [0])
    result = train_one_epoch(model, images, labels, nn.CrossEntropyLoss(), optimizer, batch_size=4,
                             generator=torch.Generator().manual_seed(1), steps=5)
    assert len(calls) == 5 and len(result.y_true) == 20
    assert sorted(result.y_true.tolist()[:7]) == sorted(labels.tolist())  # each pass sees every image once
    calls.clear()
    train_one_epoch(model, images, labels, nn.CrossEntropyLoss(), optimizer, batch_size=4,
                    generator=torch.Generator().manual_seed(1))
    assert len(calls) == 2  # without steps: one pass
