"""The peer of benchmarks/bench_vs_tutorial.py: a study written the way Ray Tune's PyTorch tutorial writes one.

    PYTHONPATH=benchmarks .venv/bin/python -c "import tutorial_trial, sys; sys.exit(tutorial_trial.main())" \
        --data FOLDER --storage ray --phases-out peer.json

As "Hyperparameter tuning with Ray Tune" (pytorch.org) does: each trial builds torchvision ``ImageFolder`` +
``DataLoader`` (the images decoded every epoch), trains, evaluates on validation and reports loss and accuracy
with a checkpoint (torch.save, read with weights_only; the tutorial pickles it) through ``tune.report``; random search over ``tune.loguniform`` lr with ASHA on
validation loss; afterwards the best trial's checkpoint is tested on the test folder. The model, optimiser and
loss are the study's baseline's (ResNet-18 from scratch, 2 classes, Adam, cross-entropy). Differences from
the tutorial: ``num_workers=0`` (the tutorial's 8 loader processes would break the 1-CPU-per-trial budget both
sides get), lr drawn from the study's range (1e-4..1e-2; the tutorial's reaches 1e-1), a fresh local Ray
(``address="local"``: a plain ``ray.init()`` joins any Ray already running on the machine) and phase
timers (``perf_counter``) reported as extra metrics, cumulative per trial. ImageFolder reads the grayscale PNGs
as RGB (its default loader), as our folder reader does. The trainable
lives in this importable module: Ray pickles ``__main__``'s functions by value.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()
PHASES = ("t_import", "t_build", "t_decode", "t_train", "t_val", "t_report")


def loaders(data_dir: str, batch_size: int) -> tuple[Any, Any]:
    """The tutorial's ``load_data``: ImageFolder + DataLoader, decoding each PNG every time it is read."""
    import torch
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
    train = datasets.ImageFolder(str(Path(data_dir) / "train"), transform=transform)
    val = datasets.ImageFolder(str(Path(data_dir) / "validation"), transform=transform)
    return (torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=0),
            torch.utils.data.DataLoader(val, batch_size=batch_size, shuffle=False, num_workers=0))


def timed_batches(loader: Any, timer: dict[str, float]):
    """The loader's batches; the time spent waiting for each (reading + decoding PNGs) goes to ``t_decode``."""
    it = iter(loader)
    while True:
        start = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            timer["t_decode"] += time.perf_counter() - start
            return
        timer["t_decode"] += time.perf_counter() - start
        yield batch


def evaluate(net: Any, batches: Any) -> tuple[float, float]:
    """Mean cross-entropy per batch and accuracy."""
    import torch

    loss, steps, correct, total = 0.0, 0, 0, 0
    net.eval()
    with torch.no_grad():
        for images, labels in batches:
            out = net(images)
            loss += torch.nn.functional.cross_entropy(out, labels).item()
            steps += 1
            correct += (out.argmax(1) == labels).sum().item()
            total += labels.size(0)
    return loss / max(steps, 1), correct / max(total, 1)


def train_resnet(config: dict[str, Any], data_dir: str = "", epochs: int = 3, batch_size: int = 64) -> None:
    """One trial, as the tutorial's ``train_cifar`` (ResNet-18 / Adam instead of its small CNN / SGD)."""
    start = time.perf_counter()
    import torch
    import torchvision
    from ray import tune
    from ray.tune import Checkpoint

    timer = dict.fromkeys(PHASES, 0.0)
    timer["t_import"] = time.perf_counter() - start  # the tutorial imports at its top: the worker pays it alike
    start = time.perf_counter()
    net = torchvision.models.resnet18(num_classes=2)
    optimizer = torch.optim.Adam(net.parameters(), lr=config["lr"])
    criterion = torch.nn.CrossEntropyLoss()
    train_loader, val_loader = loaders(data_dir, batch_size)
    timer["t_build"] = time.perf_counter() - start
    for epoch in range(epochs):
        net.train()
        for images, labels in timed_batches(train_loader, timer):
            start = time.perf_counter()
            optimizer.zero_grad()
            criterion(net(images), labels).backward()
            optimizer.step()
            timer["t_train"] += time.perf_counter() - start
        val_timer = {"t_decode": 0.0}
        start = time.perf_counter()
        val_loss, accuracy = evaluate(net, timed_batches(val_loader, val_timer))
        timer["t_val"] += time.perf_counter() - start - val_timer["t_decode"]
        timer["t_decode"] += val_timer["t_decode"]
        start = time.perf_counter()
        state = {"epoch": epoch, "net_state_dict": net.state_dict(), "optimizer_state_dict": optimizer.state_dict()}
        with tempfile.TemporaryDirectory() as folder:
            # the tutorial pickles its checkpoint; torch.save writes the same dict, read back with weights_only
            torch.save(state, Path(folder) / "data.pt")
            # the report's own time shows in the next epoch's figures (the last epoch's is not reported)
            tune.report({"loss": val_loss, "accuracy": accuracy, **timer}, checkpoint=Checkpoint.from_directory(folder))
        timer["t_report"] += time.perf_counter() - start


def test_best(result: Any, data_dir: str, batch_size: int) -> float:
    """The tutorial's ``test_best_model``: the best checkpoint on the test folder."""
    import torch
    import torchvision
    from torchvision import datasets, transforms

    net = torchvision.models.resnet18(num_classes=2)
    with result.checkpoint.as_directory() as folder:
        net.load_state_dict(torch.load(Path(folder) / "data.pt", weights_only=True)["net_state_dict"])
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
    test = datasets.ImageFolder(str(Path(data_dir) / "test"), transform=transform)
    return evaluate(net, torch.utils.data.DataLoader(test, batch_size=batch_size, num_workers=0))[1]


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="Kaggle-layout folder: train/, validation/, test/")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-concurrent", type=int, default=2)
    ap.add_argument("--grace-period", type=int, default=1)
    ap.add_argument("--reduction-factor", type=int, default=2)
    ap.add_argument("--storage", required=True, help="Ray Tune storage folder")
    ap.add_argument("--phases-out", type=Path, required=True, help="the JSON of phase times to write")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The tutorial's ``main``: Tuner(ASHA, random search), then the best trial tested; phase times to JSON."""
    args = parse(argv)
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    phases = {"imports_s": time.perf_counter() - STARTED}
    start = time.perf_counter()
    ray.init(address="local", include_dashboard=False)  # a fresh local Ray, as ours starts (never a running one)
    phases["ray_init_s"] = time.perf_counter() - start
    scheduler = ASHAScheduler(metric="loss", mode="min", max_t=args.epochs, grace_period=args.grace_period,
                              reduction_factor=args.reduction_factor)
    trainable = tune.with_parameters(train_resnet, data_dir=str(Path(args.data).resolve()), epochs=args.epochs,
                                     batch_size=args.batch_size)
    tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}),
                       tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=args.trials,
                                                   max_concurrent_trials=args.max_concurrent),
                       param_space={"lr": tune.loguniform(1e-4, 1e-2)},
                       run_config=tune.RunConfig(storage_path=str(Path(args.storage).resolve()), verbose=0))
    start = time.perf_counter()
    results = tuner.fit()
    phases["fit_s"] = time.perf_counter() - start
    start = time.perf_counter()
    accuracy = test_best(results.get_best_result("loss", "min"), args.data, args.batch_size)
    phases["test_best_s"] = time.perf_counter() - start
    trials = [{k: r.metrics.get(k, 0.0) for k in (*PHASES, "time_total_s", "training_iteration")} for r in results]
    start = time.perf_counter()
    ray.shutdown()
    phases["ray_shutdown_s"] = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    args.phases_out.write_text(json.dumps({"phases": phases, "trials": trials, "test_accuracy": accuracy,
                                           "driver_cpu_s": usage.ru_utime + usage.ru_stime}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
