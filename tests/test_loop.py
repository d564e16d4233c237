"""The shared loop: it learns, it repeats itself for a seed, it augments only the marked images, it normalises
per weights kind, frozen stages stay put, and it picks the CPU without GPUs."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from study.data import load_dataset, subset
from study.loop import augment, evaluate, pick_device, train_one_epoch
from study.losses import build_loss
from study.models import IMAGENET_NORM, PAPER_NORM, build_model, normalisation

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def animals():
    """Cats vs dogs from the embedded Animal-MNIST data at 16 px, balanced, 100 per class; no cache written."""
    return subset(load_dataset("animals", image_size=16, ratio=1.0, cache_dir=None), 100, seed=0)


def run(data, seed: int, epochs: int, augment_all: bool = False, lr: float = 1e-3):
    torch.manual_seed(seed)
    model = build_model(data.num_classes)
    loss = build_loss("ce", data.train.counts(data.num_classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator, norm = torch.Generator().manual_seed(seed), normalisation(None)
    mask = torch.arange(len(data.train)) % 2 == 0 if augment_all else None
    results = [train_one_epoch(model, data.train.images, data.train.labels, loss, optimizer, batch_size=32, norm=norm,
                               generator=generator, augment_mask=mask) for _ in range(epochs)]
    return model, loss, results


def test_a_few_epochs_beat_chance_macro_f1(animals) -> None:
    assert animals.train.counts(2) == [100, 100] and animals.val.counts(2) == [100, 100]
    model, loss, results = run(animals, seed=0, epochs=4)  # seeds 0-5 all reach 0.72-0.86
    assert results[-1].loss < results[0].loss
    val = evaluate(model, animals.val.images, animals.val.labels, loss, batch_size=64, norm=normalisation(None))
    metrics = val.metrics(animals.classes)
    # chance on a balanced split: 0.5 guessing at random, 0.33 always answering one class
    assert metrics["macro_f1"] > 0.65, metrics
    assert metrics["loss"] == pytest.approx(val.loss) and val.loss > 0
    assert sum(map(sum, metrics["confusion"])) == 200
    assert val.probs.shape == (200, 2) and torch.allclose(val.probs.sum(1), torch.ones(200))
    assert torch.equal(val.y_pred, val.probs.argmax(1)) and torch.equal(val.y_true, animals.val.labels)
    train_metrics = results[-1].metrics(animals.classes)
    assert sum(map(sum, train_metrics["confusion"])) == 200  # every training image once per epoch
    assert sorted(results[-1].y_true.tolist()) == sorted(animals.train.labels.tolist())


def test_training_is_deterministic_on_cpu_for_a_seed(animals) -> None:
    small = subset(animals, 40, seed=1)
    a_model, _, a = run(small, seed=3, epochs=2, augment_all=True)
    b_model, _, b = run(small, seed=3, epochs=2, augment_all=True)
    assert [r.loss for r in a] == [r.loss for r in b]
    assert all(torch.equal(x.y_pred, y.y_pred) and torch.equal(x.y_true, y.y_true) for x, y in zip(a, b))
    a_state, b_state = a_model.state_dict(), b_model.state_dict()
    assert all(torch.equal(a_state[k], b_state[k]) for k in a_state)
    _, _, c = run(small, seed=4, epochs=2, augment_all=True)  # another seed: another run
    assert [r.loss for r in a] != [r.loss for r in c]


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


def one_batch(images: torch.Tensor, norm, mask: torch.Tensor | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Train one epoch in a single batch; return the model's input and the epoch's sample order."""
    model = Recorder(3 * images.shape[-1] * images.shape[-2])
    labels = torch.arange(len(images)) % 2
    train_one_epoch(model, images, labels, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                    batch_size=len(images), norm=norm, generator=torch.Generator().manual_seed(seed), augment_mask=mask)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))  # the epoch's shuffle
    assert len(model.seen) == 1
    return model.seen[0], order


@pytest.mark.parametrize("weights", [None, "source", "imagenet"])
def test_inputs_are_normalised_per_weights_kind(weights: str | None) -> None:
    images = grey_images(16)
    seen, order = one_batch(images, normalisation(weights))
    mean, std = IMAGENET_NORM if weights == "imagenet" else ((0.5,) * 3, (0.5,) * 3)
    grey = images[order].double() / 255
    expected = torch.cat([(grey - m) / s for m, s in zip(mean, std)], 1)  # grey plane on all three channels
    assert seen.shape == (16, 3, 8, 8) and seen.dtype == torch.float32
    assert torch.allclose(seen.double(), expected, atol=1e-5)
    if weights != "imagenet":
        assert seen.min() >= -1 and seen.max() <= 1 and normalisation(weights) == PAPER_NORM


def test_augmentation_changes_the_marked_images_only() -> None:
    images = grey_images(32, size=16, seed=1)
    mask = torch.zeros(32, dtype=torch.bool)
    mask[[1, 4, 5, 20, 31]] = True
    plain, order = one_batch(images, PAPER_NORM)
    augmented, order_aug = one_batch(images, PAPER_NORM, mask)
    assert torch.equal(order, order_aug)
    marked = mask[order]
    same = [torch.equal(a, b) for a, b in zip(plain, augmented)]
    assert [not s for s in same] == marked.tolist()
    assert augmented.shape == plain.shape and augmented.dtype == plain.dtype
    assert augmented.min() >= -1 and augmented.max() <= 1  # augmented images stay in the normalised range


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


def test_frozen_stages_keep_weights_and_batchnorm_statistics() -> None:
    torch.manual_seed(0)
    model = build_model(2, "pretrained", "source", freeze="layer1", state=build_model(8).state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = grey_images(16, size=16)
    labels = torch.arange(16) % 2
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    train_one_epoch(model, images, labels, nn.CrossEntropyLoss(), optimizer, batch_size=8, norm=PAPER_NORM,
                    generator=torch.Generator().manual_seed(0))
    after = model.state_dict()
    frozen = [k for k in after if k.startswith(("conv1.", "bn1.", "layer1."))]
    moving = [k for k in after if k.startswith(("layer2.", "layer3.", "layer4.", "fc."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["layer2.0.bn1.running_mean"], after["layer2.0.bn1.running_mean"])
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert sum(not torch.equal(before[k], after[k]) for k in moving) > len(moving) // 2


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
    result = train_one_epoch(model, images, labels, nn.CrossEntropyLoss(), optimizer, batch_size=8, norm=PAPER_NORM,
                             generator=torch.Generator().manual_seed(0))
    assert len(result.y_pred) == 17 and sorted(result.y_true.tolist()) == sorted(labels.tolist())
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        model(torch.zeros(1, 3, 32, 32))  # what the loop avoids
