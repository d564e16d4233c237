"""The shared loop's training speed against bare forward + backward + step of the same ResNet-18.

    .venv/bin/python benchmarks/bench_loop.py

For each image size (32 and 64 px) on the CPU: ``study.loop.train_one_epoch`` on the animals
training split's uint8 tensors (what a trial does every epoch: shuffle, cut batches, uint8 ->
float in [0, 1], grey -> 3 channels, forward, loss, backward, Adam step, keep loss and
predictions) against a bare loop over the same batches already converted to float tensors
(forward, cross-entropy, zero_grad, backward, Adam step, nothing else). Same model (built by
``study.models.build_model`` from the same seed; it normalises its input itself, in both arms),
batch size, image size and number of images. One untimed warm-up of each, then repetitions
that run loop, bare and a control (a second identical bare run: the noise floor) back to back
in a rotating order; images/s are
medians, and the ratio is the median of the per-repetition ratios (a repetition's runs are back
to back, so load from other processes hits them alike).
Threads: 1 by default, what a study trial uses (``--cpus-per-trial 1``).
Writes loop.json and loop.md under ``--out`` (default results/bench).
The same comparison on a GPU, at several sizes and batches: benchmarks/bench_gpu.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from study.data import load_dataset
from study.loop import to_input, train_one_epoch
from study.models import build_model

OUT = Path(__file__).resolve().parent.parent / "results" / "bench"
TARGET = 0.9
ARMS = ["loop", "bare", "bare_control"]  # bare_control: a second, identical bare run, the noise floor


def make_model(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = build_model(2)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def run_loop(images: torch.Tensor, labels: torch.Tensor, batch_size: int, model, optimizer, generator) -> float:
    loss = torch.nn.CrossEntropyLoss()
    start = time.perf_counter()
    _ = train_one_epoch(model, images, labels, loss, optimizer, batch_size=batch_size, generator=generator).loss  # waits
    return time.perf_counter() - start


def bare_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same batch sizes as the loop's, converted to float once, outside any timing."""
    cpu = torch.device("cpu")
    return [(to_input(images[s : s + batch_size], cpu).contiguous(), labels[s : s + batch_size])
            for s in range(0, len(labels), batch_size)]


def run_bare(batches, model, optimizer) -> float:
    model.train()
    start = time.perf_counter()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def profile_loop(images, labels, batch_size: int, seed: int) -> str:
    """Where one loop epoch (after a warm-up epoch) spends its time: torch.profiler's operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    model, optimizer = make_model(seed)
    generator = torch.Generator().manual_seed(seed)
    run_loop(images, labels, batch_size, model, optimizer, generator)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_loop(images, labels, batch_size, model, optimizer, generator)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def bench_size(size: int, args) -> dict:
    data = load_dataset("animals", image_size=size, seed=args.seed, cache_dir=None)  # decode only, write nothing
    n = min(len(data.train), args.batches * args.batch_size)
    images, labels = data.train.images[:n].contiguous(), data.train.labels[:n].contiguous()
    batches = bare_batches(images, labels, args.batch_size)
    generator = torch.Generator().manual_seed(args.seed)
    models = {arm: make_model(args.seed) for arm in ARMS}
    runs = {
        "loop": lambda: run_loop(images, labels, args.batch_size, *models["loop"], generator),
        "bare": lambda: run_bare(batches, *models["bare"]),
        "bare_control": lambda: run_bare(batches, *models["bare_control"]),
    }
    for arm in ARMS:  # warm-up
        runs[arm]()
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for rep in range(args.reps):
        for arm in ARMS[rep % 3:] + ARMS[: rep % 3]:  # rotate the order: no arm always first or last
            times[arm].append(runs[arm]())
        print(f"  {size} px rep {rep + 1}/{args.reps}: " + ", ".join(f"{a} {n / times[a][-1]:.1f} img/s" for a in ARMS),
              flush=True)
    # the loop's own work besides the model: cutting batches from uint8 and converting them
    prep = []
    for _ in range(3):
        start = time.perf_counter()
        order = torch.randperm(n, generator=generator)
        for s in range(0, n, args.batch_size):
            idx = order[s : s + args.batch_size]
            to_input(images[idx], torch.device("cpu"))
        prep.append(time.perf_counter() - start)
    ratios = [b / lp for lp, b in zip(times["loop"], times["bare"], strict=False)]
    control = [b / c for c, b in zip(times["bare_control"], times["bare"], strict=False)]
    med = {arm: statistics.median(t) for arm, t in times.items()}
    out = {
        "image_size": size, "batch_size": args.batch_size, "images_per_epoch": n, "channels_in": int(images.shape[1]),
        "reps": args.reps,
        "loop_images_per_s_median": round(n / med["loop"], 2),
        "bare_images_per_s_median": round(n / med["bare"], 2),
        "ratio_loop_over_bare_median_of_pairs": round(statistics.median(ratios), 4),
        "ratio_of_medians": round(med["bare"] / med["loop"], 4),
        "ratio_min": round(min(ratios), 4), "ratio_max": round(max(ratios), 4),
        "control_bare_over_bare_median_of_pairs": round(statistics.median(control), 4),
        "control_min": round(min(control), 4), "control_max": round(max(control), 4),
        "seconds": {arm: [round(t, 4) for t in ts] for arm, ts in times.items()},
        "input_prep_s_per_epoch_median": round(statistics.median(prep), 5),
        "input_prep_share_of_loop": round(statistics.median(prep) / med["loop"], 5),
    }
    out["meets_target"] = out["ratio_loop_over_bare_median_of_pairs"] >= TARGET
    if not out["meets_target"] or args.profile:
        out["profile"] = profile_loop(images, labels, args.batch_size, args.seed)
    return out


def write(results: list[dict], args, wall: float, command: str) -> None:
    figures = {
        "command": command, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.is_available(), "torch": torch.__version__, "python": platform.python_version(),
        "machine": f"{os.cpu_count()} cores, no GPU, shared with other jobs (noisy)", "target": TARGET,
        "wall_s": round(wall, 1), "sizes": [{k: v for k, v in r.items() if k != "profile"} for r in results],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "loop.json").write_text(json.dumps(figures, indent=2) + "\n")
    rows = "\n".join(
        f"| {r['image_size']} px | {r['batch_size']} | {r['images_per_epoch']} | {r['loop_images_per_s_median']} | "
        f"{r['bare_images_per_s_median']} | **{r['ratio_loop_over_bare_median_of_pairs']:.3f}** "
        f"({r['ratio_min']:.3f} to {r['ratio_max']:.3f}) | {r['control_bare_over_bare_median_of_pairs']:.3f} "
        f"({r['control_min']:.3f} to {r['control_max']:.3f}) | {r['input_prep_share_of_loop'] * 100:.2f} % | "
        f"{'yes' if r['meets_target'] else 'no'} |"
        for r in results
    )
    short = [r for r in results if not r["meets_target"]]
    ratios = " and ".join(f"{r['ratio_loop_over_bare_median_of_pairs']:.3f}" for r in results)
    sizes = ", ".join(f"{r['image_size']} px" for r in results)
    verdict = f"The loop runs at {ratios} of bare speed ({sizes}; two identical bare runs: " + " and ".join(
        f"{r['control_bare_over_bare_median_of_pairs']:.3f}" for r in results) + "): " + (
        "at or above the 0.9 target at every size." if not short else
        "short of the 0.9 target at " + ", ".join(f"{r['image_size']} px" for r in short) + "; see the profile below.")
    md = [
        "# The shared loop against bare forward + backward + step",
        "",
        f"Command: `{command}` (wall {figures['wall_s']} s)",
        "",
        f"Machine: {figures['machine']}; torch {figures['torch']}, Python {figures['python']}, "
        f"{figures['threads']} intra-op thread(s) (a study trial's default, `--cpus-per-trial 1`).",
        "",
        "What is compared: `study.loop.train_one_epoch` on the animals training split's uint8 tensors (1 grey channel: "
        "shuffle, index, uint8 -> float in [0, 1], expand to 3 channels, forward, loss, backward, Adam step, loss and "
        "predictions kept) against a bare loop of forward, cross-entropy, `zero_grad`, backward and Adam step over the "
        "same batches already converted to float tensors. Same ResNet-18 (`build_model(2)`, same seed; the model "
        "normalises its input itself, in both arms), batch size and "
        f"images per epoch. One warm-up epoch each, then {args.reps} repetitions, each running the three arms back to "
        "back in a rotating order; images/s are medians, the ratio is the median of the per-repetition bare-time / "
        "loop-time ratios (range in brackets). The control arm is a second, identical bare run (its own model from the "
        "same seed): its ratio to bare shows how far two identical runs disagree on this machine, the noise floor.",
        "",
        "| image size | batch | images/epoch | loop img/s | bare img/s | loop / bare | control / bare (noise floor) "
        "| input prep share of the loop | >= 0.9 |",
        "|---|---|---|---|---|---|---|---|---|",
        rows,
        "",
        verdict,
        "",
        "Input prep share: cutting the batches from uint8 and converting them to float, timed alone, as a share of "
        "the loop's epoch time: the part of the loop that bare does not do (the rest it adds per batch, an argmax "
        "and a running loss sum, is smaller still). Whatever separates loop from bare beyond that is noise from the "
        "other jobs on this machine: compare the loop's range with the control's.",
    ]
    for r in results:
        if "profile" in r:
            md += ["", f"## Profile of one loop epoch at {r['image_size']} px (torch.profiler, self CPU time)", "", "```",
                   r["profile"].rstrip(), "```"]
    (args.out / "loop.md").write_text("\n".join(md) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="image sizes in pixels (default 32 64)")
    ap.add_argument("--batch-size", type=int, default=64, help="batch size (default 64, the study's)")
    ap.add_argument("--batches", type=int, default=6, help="batches per timed epoch (default 6)")
    ap.add_argument("--reps", type=int, default=9, help="timed repetitions per size (default 9)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1, as a trial)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="profile the loop even when it meets the target")
    ap.add_argument("--out", type=Path, default=OUT, help="folder for loop.json and loop.md (default results/bench)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = ".venv/bin/python benchmarks/bench_loop.py" + ("" if argv is None and len(sys.argv) == 1 else
                                                             " " + " ".join(sys.argv[1:] if argv is None else argv))
    start = time.perf_counter()
    results = []
    for size in args.sizes:
        print(f"benchmarking the loop at {size} px ...", flush=True)
        results.append(bench_size(size, args))
    write(results, args, time.perf_counter() - start, command)
    for r in results:
        print(f"{r['image_size']} px: loop {r['loop_images_per_s_median']} img/s, bare {r['bare_images_per_s_median']} "
              f"img/s, loop/bare {r['ratio_loop_over_bare_median_of_pairs']:.3f}")
    print(f"wrote {args.out / 'loop.json'} and {args.out / 'loop.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
