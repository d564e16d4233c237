"""The study on one GPU at the hardware's pace: the loop, a captured step, concurrent trials, decoding, the data path.

    python benchmarks/bench_gpu.py                      # a GPU: 2 to 3 minutes (4 at most) -> results/bench/gpu.{json,md}
    python benchmarks/bench_gpu.py --tiny --out /tmp/b  # every part in seconds on the CPU (what the tests run)

Imports only study.loop, study.models, study.losses and study.data (with torch, torchvision, numpy
and PIL): a GPU machine needs no Ray, MLflow, Optuna or imbalanced-learn. Each section has its
own time box; a section out of time skips what is left and says so, a section that fails
records its error and the others still run. Parts:

1. **loop vs bare**: ``study.loop.train_one_epoch`` over uint8 tensors on the GPU (shuffle, cut,
   convert, forward with the model's own normalisation, loss, backward, Adam, loss and
   predictions kept) against a bare AMP + channels_last step over pre-normalised float batches
   (forward, loss, backward, Adam, nothing else) of the same ResNet-18, at 32 / 64 / 224 px and
   batch 64 / 256 / 512. Target: loop >= 0.95 x bare in every cell.
2. **captured step**: the loop's whole step (gather, convert, forward, loss, backward, Adam with
   ``capturable=True``) captured once in a ``torch.cuda.CUDAGraph`` and replayed per batch with
   a new index vector, against the eager loop, at 32 px (GPU only).
3. **concurrent trials**: 1 vs 4 trial processes training at once on the one GPU at 32 px,
   batch 64 (eager, and captured when the GPU allows): the total images/s. Target: >= 3 x
   today's per-GPU throughput (one eager trial per GPU).
4. **decode**: ``study.data.decode_files`` over generated 224 px JPEGs, files/s, with one worker,
   every core, and nvjpeg on the GPU where the function offers it.
5. **data path**: an epoch of decoded tensors (shuffle, cut, convert, normalise on the GPU)
   against torchvision ``ImageFolder`` + ``DataLoader`` (ToTensor, Normalize, worker processes)
   over the same JPEGs at 224 px, data alone. Target: tensors >= 10 x DataLoader.

The summary derives trials per GPU from part 1: a batch-64 trial's share of the GPU is its bare
images/s over the bare images/s at the largest batch; ``--gpus-per-trial`` = 1 / round(1 / share),
at most 4 trials per GPU.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from study import data as study_data  # noqa: E402
from study.loop import prepare_model, to_input, train_one_epoch  # noqa: E402
from study.losses import build_loss  # noqa: E402
from study.models import build_model  # noqa: E402

OUT = ROOT / "results" / "bench"
CLASSES = 10
TARGETS = {"loop_over_bare": 0.95, "tensors_over_dataloader": 10.0, "over_today_at_32px": 3.0}
MAX_TRIALS_PER_GPU = 4


@dataclass(frozen=True)
class Settings:
    sizes: tuple[int, ...] = (32, 64, 224)
    batches: tuple[int, ...] = (64, 256, 512)
    run_seconds: float = 0.5  # each timed run of part 1 lasts about this long
    min_steps: int = 5
    max_steps: int = 200
    reps: int = 5
    graph_batches: tuple[int, ...] = (64, 128)
    small_size: int = 32  # parts 2 and 3
    small_batch: int = 64
    processes: tuple[int, ...] = (1, 4)
    process_seconds: float = 5.0
    process_images: int = 64 * 50  # a trial's training set in part 3
    jpegs: int = 2048
    jpeg_size: int = 224
    loader_workers: int = 8
    budgets: tuple[tuple[str, float], ...] = (
        ("loop_vs_bare", 100), ("captured_graph", 20), ("concurrent", 70), ("decode", 25), ("data_path", 25))


TINY = Settings(sizes=(16,), batches=(4, 8), run_seconds=0.0, min_steps=2, max_steps=2, reps=1, graph_batches=(8,),
                small_size=16, small_batch=8, processes=(1, 2), process_seconds=0.3, process_images=16, jpegs=16,
                jpeg_size=32, loader_workers=1,
                budgets=(("loop_vs_bare", 60), ("captured_graph", 10), ("concurrent", 60), ("decode", 20), ("data_path", 20)))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def synthetic(n: int, size: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 RGB images and labels, made where they are used (speed does not depend on content)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen, device=device)
    return images, torch.randint(0, CLASSES, (n,), generator=gen, device=device)


def fresh_model(device: torch.device, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return prepare_model(build_model(CLASSES), device)


def ce_loss(device: torch.device) -> torch.nn.Module:
    return build_loss("ce", [1] * CLASSES, 0).to(device)


def loop_epoch(model, optimizer, images, labels, batch: int, generator, device) -> Callable[[], float]:
    loss = ce_loss(device)
    return lambda: train_one_epoch(model, images, labels, loss, optimizer, batch_size=batch, generator=generator,
                                   device=device).loss  # reading the loss is the epoch's one wait for the GPU


def amp(device: torch.device, cache: bool = True) -> torch.autocast:
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled, cache_enabled=cache)


# ---------------------------------------------------------------- 1. the loop against a bare step


def bare_steps(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int, device: torch.device):
    """A bare AMP + channels_last step over pre-normalised float batches (a few distinct ones, cycled)."""
    net = getattr(model, "net", model)  # without the model's own normalisation: the batches come normalised
    mean, std = getattr(model, "mean", 0.5), getattr(model, "std", 0.5)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    batches = [((to_input(images[s : s + batch], device) - mean) / std, labels[s : s + batch])
               for s in range(0, min(len(labels), 4 * batch), batch)]
    batches = [(x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x, y) for x, y in batches]
    mode = amp(device)

    def run(steps: int) -> None:
        net.train()
        for i in range(steps):
            x, y = batches[i % len(batches)]
            with mode:
                loss = F.cross_entropy(net(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return run


def loop_vs_bare_cell(size: int, batch: int, s: Settings, device: torch.device) -> dict:
    steps = s.min_steps
    if s.run_seconds > 0:  # calibrate: a few bare steps say how many make a timed run of about run_seconds
        probe_images, probe_labels = synthetic(4 * batch, size, device)
        probe = bare_steps(fresh_model(device), probe_images, probe_labels, batch, device)
        probe(2)  # warm-up: cuDNN picks its kernels, the allocator grows
        per_step = timed(lambda: probe(3), device) / 3
        steps = max(s.min_steps, min(s.max_steps, math.ceil(s.run_seconds / max(per_step, 1e-6))))
        del probe, probe_images, probe_labels
    images, labels = synthetic(steps * batch, size, device, seed=1)
    loop_model, bare_model = fresh_model(device), fresh_model(device)
    loop = loop_epoch(loop_model, torch.optim.Adam(loop_model.parameters(), lr=1e-3), images, labels, batch,
                      torch.Generator().manual_seed(0), device)
    bare = bare_steps(bare_model, images, labels, batch, device)
    loop()
    bare(steps)  # warm-up of each arm
    times: dict[str, list[float]] = {"loop": [], "bare": []}
    for rep in range(s.reps):
        for arm in (("loop", "bare") if rep % 2 == 0 else ("bare", "loop")):  # alternate: neither always first
            times[arm].append(timed(loop if arm == "loop" else (lambda: bare(steps)), device))
    n = steps * batch
    ratios = [b / lp for lp, b in zip(times["loop"], times["bare"], strict=False)]
    cell = {"image_size": size, "batch_size": batch, "steps": steps, "images": n,
            "loop_images_per_s": round(n / statistics.median(times["loop"]), 1),
            "bare_images_per_s": round(n / statistics.median(times["bare"]), 1),
            "ratio": round(statistics.median(ratios), 4), "ratio_min": round(min(ratios), 4),
            "ratio_max": round(max(ratios), 4)}
    cell["meets_target"] = cell["ratio"] >= TARGETS["loop_over_bare"]
    return cell


def part_loop_vs_bare(s: Settings, device: torch.device, deadline: float) -> dict:
    cells, skipped = [], []
    for size in s.sizes:
        for batch in s.batches:
            if time.monotonic() > deadline:
                skipped.append({"image_size": size, "batch_size": batch, "why": "time box"})
                continue
            cells.append(loop_vs_bare_cell(size, batch, s, device))
            c = cells[-1]
            log(f"  loop vs bare {size} px batch {batch}: loop {c['loop_images_per_s']:.0f} img/s, "
                f"bare {c['bare_images_per_s']:.0f} img/s, ratio {c['ratio']:.3f}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return {"cells": cells, "skipped": skipped}


# ---------------------------------------------------------------- 2. a captured training step


class CapturedStep:
    """The loop's whole training step captured once in a CUDA graph, replayed per batch with a new index vector.

    Static buffers: the uint8 training tensors on the GPU, an index vector, the loss and the predictions. Adam
    runs with ``capturable=True`` (its step counters on the GPU); autocast's weight cache is off, as graphs need.
    Full batches only (an epoch drops the remainder)."""

    def __init__(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int) -> None:
        device = images.device
        self.images, self.labels, self.batch = images, labels, batch
        self.idx = torch.arange(batch, device=device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
        loss_fn, mode = ce_loss(device), amp(device, cache=False)

        def step() -> tuple[torch.Tensor, torch.Tensor]:
            with mode:
                logits = model(to_input(images[self.idx], device))
                loss = loss_fn(logits.float(), labels[self.idx])
            loss.backward()
            optimizer.step()
            return loss.detach(), logits.detach().argmax(1)

        model.train()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up outside the graph: lazy state (Adam's moments, cuDNN plans)
            for _ in range(3):
                optimizer.zero_grad(set_to_none=True)
                step()
        torch.cuda.current_stream(device).wait_stream(side)
        optimizer.zero_grad(set_to_none=True)  # the graph's backward then writes the gradients, never adds to them
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss, self.pred = step()

    def epoch(self, generator: torch.Generator) -> float:
        n = len(self.labels) // self.batch * self.batch
        order = torch.randperm(len(self.labels), generator=generator, device=self.labels.device)[:n]
        total, preds = torch.zeros((), device=self.labels.device), torch.empty_like(order)
        for s in range(0, n, self.batch):
            self.idx.copy_(order[s : s + self.batch])
            self.graph.replay()
            total.add_(self.loss, alpha=self.batch)
            preds[s : s + self.batch].copy_(self.pred)
        return float(total) / n


def part_captured(s: Settings, device: torch.device, deadline: float) -> dict:
    if device.type != "cuda":
        return {"cells": [], "skipped": [{"why": "CUDA graphs need a CUDA GPU"}]}
    cells, skipped = [], []
    size = s.small_size
    for batch in s.graph_batches:
        if time.monotonic() > deadline:
            skipped.append({"image_size": size, "batch_size": batch, "why": "time box"})
            continue
        images, labels = synthetic(s.process_images // s.small_batch * batch, size, device)
        eager_model, graph_model = fresh_model(device), fresh_model(device)
        eager = loop_epoch(eager_model, torch.optim.Adam(eager_model.parameters(), lr=1e-3), images, labels, batch,
                           torch.Generator().manual_seed(0), device)
        captured = CapturedStep(graph_model, images, labels, batch)
        gen = torch.Generator(device=device).manual_seed(0)
        losses = [captured.epoch(gen) for _ in range(2)]  # warm-up; the model learns the random labels a little
        eager()
        t_eager = [timed(eager, device) for _ in range(s.reps)]
        t_graph = [timed(lambda: losses.append(captured.epoch(gen)), device) for _ in range(s.reps)]  # noqa: B023, F821
        n = len(labels)
        cell = {"image_size": size, "batch_size": batch, "images": n,
                "eager_images_per_s": round(n / statistics.median(t_eager), 1),
                "captured_images_per_s": round(n / statistics.median(t_graph), 1),
                "captured_losses": [round(v, 4) for v in losses], "finite": all(math.isfinite(v) for v in losses)}
        cell["ratio"] = round(cell["captured_images_per_s"] / cell["eager_images_per_s"], 3)
        cells.append(cell)
        log(f"  captured step {size} px batch {batch}: eager {cell['eager_images_per_s']:.0f} img/s, "
            f"captured {cell['captured_images_per_s']:.0f} img/s ({cell['ratio']:.2f}x)")
        del captured, eager_model, graph_model
        torch.cuda.empty_cache()
    return {"cells": cells, "skipped": skipped}


# ---------------------------------------------------------------- 3. concurrent trial processes


def worker(args: argparse.Namespace) -> int:
    """One trial-like process training at 32 px: set up and warm up, say 'ready', then for each 'go' on stdin train
    for ``--seconds`` and print the images trained and the seconds taken."""
    s = TINY if args.tiny else Settings()
    torch.set_num_threads(1)
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    images, labels = synthetic(s.process_images, s.small_size, device, seed=os.getpid())
    model = fresh_model(device)
    if args.mode == "captured":
        captured = CapturedStep(model, images, labels, s.small_batch)
        gen = torch.Generator(device=device).manual_seed(0)
        epoch: Callable[[], object] = lambda: captured.epoch(gen)  # noqa: E731
    else:
        epoch = loop_epoch(model, torch.optim.Adam(model.parameters(), lr=1e-3), images, labels, s.small_batch,
                           torch.Generator().manual_seed(0), device)
    epoch()  # warm-up
    print("ready", flush=True)
    for _ in sys.stdin:  # one line per run; end of input ends the worker
        start, seen = time.perf_counter(), 0
        while time.perf_counter() - start < args.seconds:
            epoch()  # ends with a wait for the GPU: every image counted has been trained on
            seen += len(labels)
        print(json.dumps({"images": seen, "seconds": time.perf_counter() - start}), flush=True)
    return 0


def read_line(proc: subprocess.Popen, deadline: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
    return proc.stdout.readline().strip() if ready else ""


def concurrent_runs(mode: str, s: Settings, tiny: bool, deadline: float) -> tuple[list[dict], list[dict]]:
    """Start the most workers any run needs, once; each run then sets the first n of them going together."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--mode", mode, "--seconds", str(s.process_seconds)]
    procs = [subprocess.Popen(cmd + (["--tiny"] if tiny else []), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for _ in range(max(s.processes))]
    runs, skipped = [], []
    try:
        if any(read_line(p, deadline) != "ready" for p in procs):
            return runs, [{"mode": mode, "why": f"{len(procs)} {mode} worker(s) not ready within the time box"}]
        for n in s.processes:
            if time.monotonic() > deadline:
                skipped.append({"processes": n, "mode": mode, "why": "time box"})
                continue
            for p in procs[:n]:  # every worker is set up and idle: these n start together
                p.stdin.write("go\n")
                p.stdin.flush()
            results = [read_line(p, time.monotonic() + s.process_seconds + 60) for p in procs[:n]]
            if not all(results):
                skipped.append({"processes": n, "mode": mode, "why": "a worker gave no result"})
                break
            per = [r["images"] / r["seconds"] for r in map(json.loads, results)]
            runs.append({"processes": n, "mode": mode, "images_per_s": round(sum(per), 1),
                         "per_process": [round(v, 1) for v in per]})
            log(f"  {n} concurrent {mode} trial(s) at {s.small_size} px batch {s.small_batch}: {sum(per):.0f} img/s")
    finally:
        for p in procs:
            p.stdin.close()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    return runs, skipped


def part_concurrent(s: Settings, device: torch.device, tiny: bool, deadline: float) -> dict:
    runs, skipped = [], []
    for mode in ("eager", "captured"):
        if mode == "captured" and device.type != "cuda":
            skipped.append({"mode": mode, "why": "CUDA graphs need a CUDA GPU"})
        elif time.monotonic() > deadline:
            skipped.append({"mode": mode, "why": "time box"})
        else:
            got, missed = concurrent_runs(mode, s, tiny, deadline)
            runs += got
            skipped += missed
    base = next((r["images_per_s"] for r in runs if r["processes"] == 1 and r["mode"] == "eager"), None)
    for r in runs:
        r["over_one_eager_trial"] = round(r["images_per_s"] / base, 3) if base else None
    return {"image_size": s.small_size, "batch_size": s.small_batch, "seconds_per_run": s.process_seconds,
            "runs": runs, "skipped": skipped}


# ---------------------------------------------------------------- 4 and 5. decoding and the data path


def write_jpegs(root: Path, n: int, size: int, seed: int = 0) -> list[tuple[Path, int]]:
    """Photo-like JPEGs (smooth colour fields plus grain, quality 90) in ImageFolder's layout: root/<class>/<i>.jpg."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    grain = [rng.normal(0, 12, (size, size, 3)) for _ in range(8)]
    files = []
    for i in range(n):
        label = i % 2
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC))
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(np.clip(base + grain[i % len(grain)], 0, 255).astype(np.uint8)).save(path, quality=90)
        files.append((path, label))
    return files


def part_decode(files: list[tuple[Path, int]], s: Settings, device: torch.device, deadline: float) -> tuple[dict, torch.Tensor | None]:
    decode = getattr(study_data, "decode_files", None)
    if decode is None:
        return {"runs": [], "skipped": [{"why": "study.data.decode_files is missing"}]}, None
    params = inspect.signature(decode).parameters
    setups: list[dict] = []
    if "workers" in params:
        setups += [{"workers": 1}, {"workers": None}]
    else:
        setups.append({})
    if "device" in params and device.type == "cuda":
        setups.append({"device": "cuda"})
    runs, skipped, images = [], [], None
    if "workers" not in params:
        skipped.append({"why": "study.data.decode_files takes no workers: decoded in one process"})
    for kwargs in setups:
        if time.monotonic() > deadline:
            skipped.append({**kwargs, "why": "time box"})
            continue
        start = time.perf_counter()
        out, _, bad = decode(files, s.jpeg_size, "bench", **kwargs)
        seconds = time.perf_counter() - start
        images = out if images is None else images
        every_core = getattr(study_data, "default_workers", os.cpu_count)
        label = {"workers": kwargs["workers"] or every_core()} if "workers" in kwargs else {}
        runs.append({**label, "device": kwargs.get("device", "cpu"), "files": len(files), "skipped_files": len(bad),
                     "seconds": round(seconds, 3), "files_per_s": round(len(files) / seconds, 1)})
        log(f"  decode {runs[-1]}")
    return {"size": s.jpeg_size, "runs": runs, "skipped": skipped}, images


def pil_decode(files: list[tuple[Path, int]]) -> torch.Tensor:
    from PIL import Image

    return torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p, _ in files])


def part_data_path(files: list[tuple[Path, int]], images: torch.Tensor | None, root: Path, s: Settings,
                   device: torch.device, deadline: float) -> dict:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    note = []
    if images is None:
        images, note = pil_decode(files), ["decoded here with PIL: study.data.decode_files was not there"]
    images = images.to(device)
    batch, mean, std = s.small_batch, 0.5, 0.5
    gen = torch.Generator(device=device).manual_seed(0)

    def tensors() -> None:
        order = torch.randperm(len(images), generator=gen, device=device)
        for start in range(0, len(order), batch):
            (to_input(images[order[start : start + batch]], device) - mean) / std  # what the model gets, normalised

    norm = transforms.Normalize((mean,) * 3, (std,) * 3)
    folder = datasets.ImageFolder(str(root), transform=transforms.Compose([transforms.ToTensor(), norm]))
    loader = DataLoader(folder, batch_size=batch, shuffle=True, num_workers=s.loader_workers,
                        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0))

    def dataloader() -> None:
        for x, _ in loader:
            x.to(device, non_blocking=True)

    runs: dict[str, list[float]] = {"tensors": [], "dataloader": []}
    tensors()
    dataloader()  # warm-up: page cache, worker start-up paths, lazy imports
    for rep in range(max(2, s.reps)):
        if rep and time.monotonic() > deadline:
            note.append(f"time box: {rep} repetition(s)")
            break
        runs["tensors"].append(timed(tensors, device))
        runs["dataloader"].append(timed(dataloader, device))
    n = len(images)
    rate = {k: n / statistics.median(v) for k, v in runs.items()}
    out = {"size": s.jpeg_size, "images": n, "batch_size": batch, "dataloader_workers": s.loader_workers,
           "tensors_images_per_s": round(rate["tensors"], 1), "dataloader_images_per_s": round(rate["dataloader"], 1),
           "ratio": round(rate["tensors"] / rate["dataloader"], 2), "notes": note}
    log(f"  data path: tensors {out['tensors_images_per_s']:.0f} img/s, DataLoader {out['dataloader_images_per_s']:.0f}"
        f" img/s ({out['ratio']:.1f}x)")
    return out


# ---------------------------------------------------------------- summary and report


def trials_per_gpu(cells: list[dict]) -> dict:
    """Per image size: a batch-64 trial's share of the GPU (its bare images/s over the largest batch's) and the
    trials per GPU that fill it, 1 / share rounded, at most MAX_TRIALS_PER_GPU."""
    out = {}
    for size in sorted({c["image_size"] for c in cells}):
        mine = sorted((c for c in cells if c["image_size"] == size), key=lambda c: c["batch_size"])
        if len(mine) < 2:
            continue
        share = mine[0]["bare_images_per_s"] / max(c["bare_images_per_s"] for c in mine)
        n = max(1, min(MAX_TRIALS_PER_GPU, round(1 / share)))
        out[str(size)] = {"batch_size": mine[0]["batch_size"], "gpu_share": round(share, 3), "trials_per_gpu": n,
                          "gpus_per_trial": round(1 / n, 3)}
    return out


def summarise(parts: dict) -> dict:
    cells = parts["loop_vs_bare"].get("cells", [])
    runs = parts["concurrent"].get("runs", [])
    captured = parts["captured_graph"].get("cells", [])
    today = next((r["images_per_s"] for r in runs if r["processes"] == 1 and r["mode"] == "eager"), None)
    best = max(runs, key=lambda r: r["images_per_s"], default=None)
    return {
        "loop_over_bare_min": min((c["ratio"] for c in cells), default=None),
        "loop_meets_target_everywhere": bool(cells) and all(c["meets_target"] for c in cells),
        "tensors_over_dataloader": parts["data_path"].get("ratio"),
        "today_images_per_s_at_32px": today,
        "best_at_32px": {k: best[k] for k in ("processes", "mode", "images_per_s")} if best else None,
        "best_over_today_at_32px": round(best["images_per_s"] / today, 3) if best and today else None,
        "captured_over_eager_at_32px": max((c["ratio"] for c in captured), default=None),
        "trials_per_gpu": trials_per_gpu(cells),
    }


def verdict(value, target: float) -> str:
    return "not measured" if value is None else ("**met**" if value >= target else "**missed**")


def markdown(figures: dict) -> str:
    p, sm = figures["parts"], figures["summary"]
    lines = [
        "# The study on one GPU: loop, captured step, concurrent trials, decoding, data path", "",
        f"Command: `{figures['command']}` (wall {figures['wall_s']} s)", "",
        f"Machine: {figures['device_name']}; torch {figures['torch']}, torchvision {figures['torchvision']}, "
        f"Python {figures['python']}, {figures['cpu_count']} CPU cores." + (" **Tiny run on the CPU: sizes, batches and "
                                                                             "times are toy values, not measurements.**"
                                                                             if figures["tiny"] else ""), "",
        "## Targets", "",
        "| target | measured | verdict |", "|---|---|---|",
        f"| loop >= {TARGETS['loop_over_bare']} x bare in every cell | worst cell {sm['loop_over_bare_min']} | "
        f"{verdict(sm['loop_over_bare_min'], TARGETS['loop_over_bare'])} |",
        f"| decoded tensors >= {TARGETS['tensors_over_dataloader']:.0f} x ImageFolder + DataLoader | "
        f"{sm['tensors_over_dataloader']} x | {verdict(sm['tensors_over_dataloader'], TARGETS['tensors_over_dataloader'])} |",
        f"| >= {TARGETS['over_today_at_32px']:.0f} x today's per-GPU throughput at {p['concurrent'].get('image_size')} px "
        f"(one eager trial per GPU) | {sm['best_over_today_at_32px']} x ({sm['best_at_32px']}) | "
        f"{verdict(sm['best_over_today_at_32px'], TARGETS['over_today_at_32px'])} |", "",
        "## 1. The loop against a bare AMP + channels_last step", "",
        "Loop: `train_one_epoch` over uint8 tensors on the device (model normalises inside). Bare: forward, loss, "
        "backward, Adam over pre-normalised float batches, nothing else. Same ResNet-18, bf16 autocast, channels_last. "
        "Median of alternating repetitions; ratio = bare time / loop time per repetition, median (range).", "",
        "| image size | batch | steps | loop img/s | bare img/s | loop / bare | >= target |", "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {c['image_size']} px | {c['batch_size']} | {c['steps']} | {c['loop_images_per_s']:.0f} | "
              f"{c['bare_images_per_s']:.0f} | **{c['ratio']:.3f}** ({c['ratio_min']:.3f} to {c['ratio_max']:.3f}) | "
              f"{'yes' if c['meets_target'] else 'no'} |" for c in p["loop_vs_bare"].get("cells", [])]
    lines += skipped_lines(p["loop_vs_bare"])
    lines += ["", "## 2. The whole step captured in a CUDA graph", "",
              "Gather, convert, forward, loss, backward and Adam (`capturable=True`) captured once, replayed per batch "
              "with a new index vector; against the eager loop on the same data.", "",
              "| image size | batch | eager img/s | captured img/s | captured / eager | losses finite |", "|---|---|---|---|---|---|"]
    lines += [f"| {c['image_size']} px | {c['batch_size']} | {c['eager_images_per_s']:.0f} | {c['captured_images_per_s']:.0f} | "
              f"**{c['ratio']:.2f}** | {c['finite']} |" for c in p["captured_graph"].get("cells", [])]
    lines += skipped_lines(p["captured_graph"])
    c3 = p["concurrent"]
    lines += ["", f"## 3. Concurrent trial processes on one GPU ({c3.get('image_size')} px, batch {c3.get('batch_size')})", "",
              f"Each process trains its own ResNet-18 for {c3.get('seconds_per_run')} s after all are set up; total "
              "images/s is the sum of the processes'.", "",
              "| processes | step | total img/s | per process | over one eager trial |", "|---|---|---|---|---|"]
    lines += [f"| {r['processes']} | {r['mode']} | {r['images_per_s']:.0f} | {', '.join(f'{v:.0f}' for v in r['per_process'])} "
              f"| **{r['over_one_eager_trial']}** |" for r in c3.get("runs", [])]
    lines += skipped_lines(c3)
    d4 = p["decode"]
    lines += ["", f"## 4. Decoding JPEGs once (`study.data.decode_files`, {d4.get('size')} px)", "",
              "| workers | device | files | files/s |", "|---|---|---|---|"]
    lines += [f"| {r.get('workers', '-')} | {r['device']} | {r['files']} | {r['files_per_s']:.0f} |" for r in d4.get("runs", [])]
    lines += skipped_lines(d4)
    d5 = p["data_path"]
    if "ratio" in d5:
        lines += ["", f"## 5. An epoch of decoded tensors against ImageFolder + DataLoader ({d5['size']} px, data alone)", "",
                  f"{d5['images']} JPEGs, batch {d5['batch_size']}; DataLoader with {d5['dataloader_workers']} worker "
                  "processes, ToTensor + Normalize, batches copied to the device; tensors: shuffle, cut, convert and "
                  "normalise on the device.", "",
                  "| tensors img/s | DataLoader img/s | ratio |", "|---|---|---|",
                  f"| {d5['tensors_images_per_s']:.0f} | {d5['dataloader_images_per_s']:.0f} | **{d5['ratio']:.1f}** |"]
        lines += [f"- {n}" for n in d5.get("notes", [])]
    else:
        lines += ["", "## 5. Data path", "", f"Not measured: {d5.get('error', d5)}"]
    lines += ["", "## Trials per GPU, from part 1", "",
              "A batch-64 trial's share of the GPU = its bare images/s over the bare images/s at the largest batch; "
              f"trials per GPU = round(1 / share), 1 to {MAX_TRIALS_PER_GPU}.", "",
              "| image size | share | trials per GPU | --gpus-per-trial |", "|---|---|---|---|"]
    lines += [f"| {size} px | {t['gpu_share']} | {t['trials_per_gpu']} | {t['gpus_per_trial']} |"
              for size, t in sm["trials_per_gpu"].items()]
    errors = [f"- {name}: {part['error']}" for name, part in p.items() if "error" in part]
    if errors:
        lines += ["", "## Errors", "", *errors]
    return "\n".join(lines) + "\n"


def skipped_lines(part: dict) -> list[str]:
    out = [f"- skipped: {s}" for s in part.get("skipped", [])]
    if "error" in part:
        out.append(f"- error: {part['error']}")
    return [""] + out if out else []


def guarded(name: str, fn: Callable[[], dict]) -> dict:
    """A part's figures, or its error: one broken part must not lose the others' measurements."""
    log(f"{name} ...")
    start = time.perf_counter()
    try:
        out = fn()
    except Exception as err:  # noqa: BLE001 - recorded in the report, and the other parts still run
        log(f"  {name} failed: {type(err).__name__}: {err}")
        out = {"error": f"{type(err).__name__}: {err}"}
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="every part in seconds on the CPU, toy sizes (for tests)")
    ap.add_argument("--out", type=Path, default=None, help="folder for gpu.json and gpu.md (default results/bench; "
                    "with --tiny, results/bench/tiny: a toy run never replaces measured figures)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # part 3's trial processes
    ap.add_argument("--mode", choices=("eager", "captured"), default="eager", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=5.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    args.out = args.out or (OUT / "tiny" if args.tiny else OUT)
    if args.tiny and args.out.resolve() == OUT.resolve():
        print(f"error: --tiny would write over the measured figures in {OUT}; choose another --out", file=sys.stderr)
        return 2
    s = TINY if args.tiny else Settings()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if device.type == "cpu" and not args.tiny:
        log(f"warning: no CUDA GPU: the full run on the CPU measures nothing this benchmark is for (try --tiny, which "
            f"writes to {OUT / 'tiny'})")
    if device.type == "cpu":
        torch.set_num_threads(1)  # as a study trial; the tiny run then leaves cores to the worker processes
    budgets = dict(s.budgets)
    deadline = lambda name: time.monotonic() + budgets[name]  # noqa: E731
    import torchvision

    start = time.perf_counter()
    parts: dict[str, dict] = {}
    parts["loop_vs_bare"] = guarded("1. loop vs bare", lambda: part_loop_vs_bare(s, device, deadline("loop_vs_bare")))
    parts["captured_graph"] = guarded("2. captured step", lambda: part_captured(s, device, deadline("captured_graph")))
    parts["concurrent"] = guarded("3. concurrent trials",
                                  lambda: part_concurrent(s, device, args.tiny, deadline("concurrent")))
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        root = Path(tmp) / "train"
        log(f"writing {s.jpegs} JPEGs of {s.jpeg_size} px ...")
        files = write_jpegs(root, s.jpegs, s.jpeg_size)
        decoded: dict[str, torch.Tensor | None] = {"images": None}

        def decode_part() -> dict:
            out, decoded["images"] = part_decode(files, s, device, deadline("decode"))
            return out

        parts["decode"] = guarded("4. decode", decode_part)
        parts["data_path"] = guarded("5. data path", lambda: part_data_path(files, decoded["images"], root, s, device,
                                                                           deadline("data_path")))
    figures = {
        "command": " ".join(["python benchmarks/bench_gpu.py", *(sys.argv[1:] if argv is None else argv)]),
        "tiny": args.tiny, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})",
        "torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "settings": asdict(s), "targets": TARGETS,
        "wall_s": round(time.perf_counter() - start, 1), "parts": parts,
    }
    figures["summary"] = summarise(parts)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(figures, indent=2) + "\n")
    (args.out / "gpu.md").write_text(markdown(figures))
    log(json.dumps(figures["summary"], indent=2))
    log(f"wrote {args.out / 'gpu.json'} and {args.out / 'gpu.md'} in {figures['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
