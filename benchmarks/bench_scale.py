"""The study's bookkeeping at scale: our engine against plain Ray Tune, on a null trainable.

    .venv/bin/python benchmarks/bench_scale.py                  # 100 and 1,000 trials, SQLite and an MLflow server
    .venv/bin/python benchmarks/bench_scale.py --big            # and 10,000 (hours on 2 cores)
    .venv/bin/python benchmarks/bench_scale.py --sizes 8 --stores sqlite --out /tmp/b   # a smoke run
    .venv/bin/python benchmarks/bench_scale.py --render --findings reading.md    # scale.md again, with a reading

Each size runs plain Ray Tune (one OptunaSearch with TPE over every approach, one ASHA, no callbacks) and then
our engine (``study.engine.search``: an Optuna TPE search and an ASHA per approach, checkpoint pruning, the MLflow
callback, the status line) once per MLflow store: an SQLite file, and a real ``mlflow server`` started here on
127.0.0.1 (and stopped, also on failure). Both sides share the trainable (``scale_trainable.null_trial``),
``reuse_actors``, concurrency, checkpoint and failure config and storage. Every run is its own driver process
(peak memory is a process's lifetime peak), timed around the search alone (Ray's start is left out).

Figures per run: trials per second, driver CPU seconds per trial, MLflow writes per second, peak driver memory,
wall time against the theoretical minimum (epochs run x epoch length / slots); ours / plain per size; and the
growth exponent of each total between sizes (log-log slope: 1.0 is linear). Writes results/bench/scale.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = ROOT / "results" / "bench"
APPROACHES = ["ce", "focal", "weighted", "smote"]  # a four-approach study
SLOTS = 8  # concurrent trials (logical CPUs given to Ray; the trials sleep)
WRITES = ("create_run", "log_batch", "log_metric", "log_param", "set_tag", "set_terminated", "update_run",
          "log_dict", "log_text", "log_figure", "log_artifact", "create_experiment")
READS = ("search_runs", "get_run", "get_metric_history", "get_experiment_by_name", "search_experiments")
TARGET_RATIO, TARGET_EXPONENT = 1.2, 1.1


# ---------------------------------------------------------------- one run (a driver process of its own)


def count_client_calls() -> dict[str, int]:
    """Wrap MlflowClient's write and read methods with counters (the outermost call only: log_dict calls
    log_artifact inside)."""
    from mlflow.tracking import MlflowClient

    counts, depth = {"writes": 0, "reads": 0}, [0]

    def wrap(name: str, kind: str) -> None:
        method = getattr(MlflowClient, name)

        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            depth[0] += 1
            try:
                return method(self, *args, **kwargs)
            finally:
                depth[0] -= 1
                counts[kind] += depth[0] == 0

        setattr(MlflowClient, name, counted)

    for name in WRITES:
        wrap(name, "writes")
    for name in READS:
        wrap(name, "reads")
    return counts


def prepare_ours(spec: dict[str, Any], storage: Path) -> Callable[[], tuple[int, int]]:
    """``study.engine.search`` as ``study.runner`` drives it, the store and parent runs made first (untimed, as
    the study makes them before its search); the search -> (finished trials, epochs run)."""
    from scale_trainable import CHECKPOINT_FILE, Space, null_trial

    from study import engine, store
    from study.plan import Budget

    uri, study_id = spec["uri"], f"scale-{spec['size']}-{spec['store']}"
    settings = {a: {"uri": uri, "experiment": "scale", "study_id": study_id, "approach": a,
                    "artifact_root": Path(spec["workdir"]) / "mlartifacts" if uri.startswith("sqlite:") else None,
                    "classes": ["major", "minor"], "minority": "minor", "data": "null", "parent_run": None}
                for a in APPROACHES}
    store.prepare_store(uri)
    trackers = {a: store.Tracker(**s) for a, s in settings.items()}  # parent runs first, as in a study
    store.confusion_figure([[1, 0], [0, 1]], ["a", "b"], "warm-up")  # matplotlib's import: once per study, not timed
    setup = engine.TuneSetup(trainable=null_trial, data={}, eval_costs=None, bank={}, cpus=1, gpus=0,
                             max_concurrent=SLOTS, local=True, storage=str(storage / study_id), trackers=settings,
                             checkpoint_file=CHECKPOINT_FILE, verbose=False)
    spaces = {a: Space({"approach": a, "epochs": spec["epochs"], "sleep_s": spec["sleep_s"]}) for a in APPROACHES}
    budget = Budget(spec["epochs"], spec["size"] // len(APPROACHES), 0, 0, 1, 2)
    def run() -> tuple[int, int]:
        if hasattr(engine, "Search"):  # the engine's signature from the racing change on
            searches = {a: engine.Search(define, [], budget.num_samples) for a, define in spaces.items()}
            result = engine.search(setup, "search", searches, budget, 0, False)
        else:
            result = engine.search(setup, "search", spaces, {}, budget, 0, False)
        for tracker in trackers.values():  # what runner.finish_approach does with MLflow after the search
            tracker.close_children({o.trial_id: o.status for o in result.outcomes})
            tracker.end(tracker.parent_id, "FINISHED", {"trials": str(budget.num_samples)})
        return (sum(o.status == "FINISHED" for o in result.outcomes),
                sum(int(o.last.get("training_iteration", 0)) for o in result.outcomes))

    return run


def prepare_plain(spec: dict[str, Any], storage: Path) -> Callable[[], tuple[int, int]]:
    """Plain Ray Tune: one TPE search over every approach, one ASHA, no callbacks -> (finished trials, epochs run)."""
    from optuna.samplers import TPESampler
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch
    from scale_trainable import Space, null_trial

    from study.engine import MAX_FAILURES

    size, metric = spec["size"], "val_macro_f1"
    space = Space({"epochs": spec["epochs"], "sleep_s": spec["sleep_s"]}, APPROACHES)
    searcher = OptunaSearch(space, metric=metric, mode="max", sampler=TPESampler(seed=0, n_startup_trials=max(2, size // 3)))
    asha = ASHAScheduler(metric=metric, mode="max", time_attr="training_iteration", max_t=spec["epochs"],
                         grace_period=1, reduction_factor=2)
    trainable = tune.with_resources(tune.with_parameters(null_trial, data={}, eval_costs=None, weights={}), {"cpu": 1})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=asha, reuse_actors=True, num_samples=size,
                                    max_concurrent_trials=SLOTS),
        run_config=tune.RunConfig(
            name=f"plain-{size}", storage_path=str(storage), verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=metric,
                                                    checkpoint_score_order="max"),
            failure_config=tune.FailureConfig(max_failures=MAX_FAILURES)),
    )

    def run() -> tuple[int, int]:
        grid = tuner.fit()
        return (sum(r.error is None for r in grid), sum(int(r.metrics.get("training_iteration", 0)) for r in grid))

    return run


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the driver (Ray's core worker included)
    return usage.ru_utime + usage.ru_stime


def one_run(spec: dict[str, Any]) -> dict[str, Any]:
    """One driver: Ray up, the search timed (wall and CPU), Ray down; the figures as a dict."""
    import ray

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # as the study sets it
    counts = count_client_calls()
    ray.init(address="local", num_cpus=SLOTS, include_dashboard=False, logging_level="WARNING")
    storage = Path(spec["workdir"]) / "storage"
    profiler = None
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
    try:
        run = (prepare_ours if spec["mode"] == "ours" else prepare_plain)(spec, storage)
        cpu0, wall0 = cpu_s(), time.perf_counter()
        if profiler:
            profiler.enable()
        finished, epochs = run()
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall0, cpu_s() - cpu0
    finally:
        ray.shutdown()
    if profiler:
        import pstats

        with open(spec["profile"], "w") as f:
            pstats.Stats(profiler, stream=f).sort_stats("cumulative").print_stats(45)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"mode": spec["mode"], "store": spec["store"], "size": spec["size"], "finished": finished, "epochs_run": epochs,
            "wall_s": round(wall, 2), "driver_cpu_s": round(cpu, 2), "peak_driver_mb": round(peak_mb, 1),
            "mlflow_writes": counts["writes"], "mlflow_reads": counts["reads"]}


# ---------------------------------------------------------------- the MLflow server and the runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its live descendants, from /proc (the server's workers do the writing)."""
    tick, parent, total = os.sysconf("SC_CLK_TCK"), {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)], total[int(stat.parent.name)] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
    mine, grew = {pid}, True
    while grew:
        more = {p for p, pp in parent.items() if pp in mine} - mine
        mine, grew = mine | more, bool(more)
    return sum(total.get(p, 0.0) for p in mine)


@contextmanager
def mlflow_server(workdir: Path) -> Iterator[tuple[str, int]]:
    """A real ``mlflow server`` on 127.0.0.1 (its own SQLite file and artifact folder); stopped on the way out."""
    port = free_port()
    log = open(workdir / "mlflow-server.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{workdir}/server.db",
                             "--artifacts-destination", str(workdir / "server-artifacts")],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        uri, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log_text = (workdir / "mlflow-server.log").read_text()[-2000:]
                    raise RuntimeError(f"mlflow server did not start: {log_text}") from None
                time.sleep(0.5)
        yield uri, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def launch(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """One run in a driver process of its own; its figures."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log = Path(spec["workdir"]) / "driver.log"
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(spec)], env=env,
                              stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, cwd=spec["workdir"])
    lines = log.read_text().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("{"):
        raise RuntimeError(f"{spec['mode']} run of {spec['size']} trials ({spec['store']}) failed:\n" + "\n".join(lines[-40:]))
    return json.loads(lines[-1])


def measure(mode: str, store: str, size: int, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    workdir = scratch / f"{mode}-{store}-{size}"
    workdir.mkdir()
    spec = {"mode": mode, "store": store, "size": size, "epochs": args.epochs, "sleep_s": args.sleep_s,
            "workdir": str(workdir), "uri": f"sqlite:///{workdir}/mlflow.db"}
    if args.profile and mode == "ours":
        spec["profile"] = str(scratch / f"profile-{store}-{size}.txt")
    print(f"[{time.strftime('%H:%M:%S')}] {mode} {store} {size} trials ...", flush=True)
    if store != "server":
        row = launch(spec, args.timeout_s)
    else:
        with mlflow_server(workdir) as (uri, pid):
            cpu0 = tree_cpu_s(pid)
            row = launch({**spec, "uri": uri}, args.timeout_s)
            row["server_cpu_s"] = round(tree_cpu_s(pid) - cpu0, 2)
    row.update(derived(row, args))
    print(f"    {json.dumps(row)}", flush=True)
    return row


def derived(row: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    minimum = row["epochs_run"] * args.sleep_s / SLOTS
    return {"trials_per_s": round(row["size"] / row["wall_s"], 3),
            "driver_cpu_s_per_trial": round(row["driver_cpu_s"] / row["size"], 4),
            "mlflow_writes_per_s": round(row["mlflow_writes"] / row["wall_s"], 2),
            "theoretical_min_s": round(minimum, 2), "wall_over_min": round(row["wall_s"] / minimum, 2)}


# ---------------------------------------------------------------- figures


def slope(small: dict[str, Any], large: dict[str, Any], key: str) -> float | None:
    """The log-log slope of a total between two sizes (1.0: grows linearly with the trials)."""
    if small[key] <= 0 or large[key] <= 0:
        return None
    return round(math.log(large[key] / small[key]) / math.log(large["size"] / small["size"]), 3)


GROWN = ("wall_s", "driver_cpu_s", "mlflow_writes", "peak_driver_mb")


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """ours / plain per size and store, and the growth exponents between consecutive sizes."""
    plain = {r["size"]: r for r in runs if r["mode"] == "plain"}
    ratios = [{"size": r["size"], "store": r["store"],
               "wall": round(r["wall_s"] / plain[r["size"]]["wall_s"], 3),
               "driver_cpu": round(r["driver_cpu_s"] / plain[r["size"]]["driver_cpu_s"], 3)}
              for r in runs if r["mode"] == "ours" and r["size"] in plain]
    exponents = []
    for (mode, store) in dict.fromkeys((r["mode"], r["store"]) for r in runs):
        mine = sorted((r for r in runs if (r["mode"], r["store"]) == (mode, store)), key=lambda r: r["size"])
        for small, large in pairwise(mine):
            exponents.append({"mode": mode, "store": store, "from": small["size"], "to": large["size"],
                              **{k: slope(small, large, k) for k in GROWN}})
    worst_exponent = max((e[k] for e in exponents for k in GROWN if e[k] is not None and e["mode"] == "ours"), default=None)
    return {"ratios": ratios, "exponents": exponents,
            "ratio_target_met": all(r["wall"] <= TARGET_RATIO for r in ratios),
            "exponent_target_met": worst_exponent is not None and worst_exponent <= TARGET_EXPONENT}


def markdown(figures: dict[str, Any]) -> str:
    s, runs = figures["summary"], figures["runs"]
    lines = [
        "# Bookkeeping at scale: our engine against plain Ray Tune",
        "",
        f"`{figures['command']}` on {figures['machine']}, {figures['when']}. A null trainable (`benchmarks/scale_trainable.py`):",
        f"{figures['epochs']} epochs of {figures['sleep_s']} s sleep, a synthetic validation macro-F1 fixed by the config, "
        f"a tiny checkpoint per epoch; {SLOTS} concurrent trials; {len(APPROACHES)} approaches (ours: a TPE search and an "
        "ASHA each; plain: one TPE search over all of them, one ASHA, no callbacks). Each run is its own driver process; "
        "timed around the search alone. "
        + figures["note"],
        "",
        "| size | run | MLflow | finished | wall s | trials/s | driver CPU s/trial | MLflow writes/s | peak driver MB "
        "| theoretical min s | wall / min |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(f"| {r['size']} | {r['mode']} | {r['store']} | {r['finished']} | {r['wall_s']:.1f} | "
                     f"{r['trials_per_s']:.2f} | {r['driver_cpu_s_per_trial']:.3f} | {r['mlflow_writes_per_s']:.1f} | "
                     f"{r['peak_driver_mb']:.0f} | {r['theoretical_min_s']:.1f} | {r['wall_over_min']:.2f} |")
    lines += ["", f"## Ours / plain (target: wall <= {TARGET_RATIO} at every size)", "",
              "| size | MLflow | wall | driver CPU |", "|---:|---|---:|---:|"]
    lines += [f"| {r['size']} | {r['store']} | {r['wall']:.2f} | {r['driver_cpu']:.2f} |" for r in s["ratios"]]
    lines += ["", f"Target met: {'yes' if s['ratio_target_met'] else 'no'}.", "",
              f"## Growth exponents of the totals (log-log slope; target <= {TARGET_EXPONENT})", "",
              "| run | MLflow | sizes | wall | driver CPU | MLflow writes | peak memory |", "|---|---|---|---:|---:|---:|---:|"]
    for e in s["exponents"]:
        cells = " | ".join("-" if e[k] is None else f"{e[k]:.2f}" for k in GROWN)
        lines.append(f"| {e['mode']} | {e['store']} | {e['from']} -> {e['to']} | {cells} |")
    lines += ["", f"Target met (ours): {'yes' if s['exponent_target_met'] else 'no'}.", ""]
    return "\n".join(lines + figures.get("findings", [])) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,1000", help="trial counts, comma-separated (multiples of 4)")
    ap.add_argument("--big", action="store_true",
                    help="add 10,000 trials (an idle 2-core machine ended 4,863 in 34 minutes, "
                         "its driver falling from 6 to 1.2 trials/s: results/bench/scale.md)")
    ap.add_argument("--stores", default="sqlite,server", help="MLflow stores for our runs: sqlite, server")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--sleep-s", type=float, default=0.25, help="one epoch's sleep")
    ap.add_argument("--timeout-s", type=float, default=1800, help="per run")
    ap.add_argument("--profile", action="store_true", help="cProfile our driver; the text goes beside the report")
    ap.add_argument("--note", default="", help="a sentence for the report (e.g. how busy the machine was)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--findings", type=Path, help="a markdown file: the reading of the figures, after the tables")
    ap.add_argument("--render", action="store_true", help="rewrite scale.md from --out's scale.json (and --findings)")
    ap.add_argument("--append", action="store_true", help="keep --out's runs of other sizes (a size run on its own)")
    ap.add_argument("--no-plain", action="store_true", help="our runs only (plain Ray Tune's one TPE over every "
                    "trial is what does not fit at 10,000 here)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_run(json.loads(args.one))), flush=True)
        return 0
    findings = args.findings.read_text().splitlines() if args.findings else None
    if args.render:
        figures = json.loads((args.out / "scale.json").read_text())
        if findings is not None:
            figures["findings"] = findings
        write(figures, args.out)
        return 0
    sizes = [int(n) for n in args.sizes.split(",")] + ([10_000] if args.big else [])
    stores = [s for s in args.stores.split(",") if s]
    if bad := [s for s in stores if s not in ("sqlite", "server")] or [n for n in sizes if n % len(APPROACHES)]:
        print(f"error: bad --stores or --sizes value(s): {bad}", file=sys.stderr)
        return 2
    started, runs = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), []
    scratch = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    figures = {"command": "python benchmarks/bench_scale.py " + shlex.join(sys.argv[1:]), "when": started,
               "machine": f"{os.cpu_count()} CPUs ({os.uname().nodename})", "epochs": args.epochs, "sleep_s": args.sleep_s,
               "slots": SLOTS, "approaches": APPROACHES, "note": args.note, "runs": runs, "findings": findings or []}
    if args.append and (args.out / "scale.json").exists():
        before = json.loads((args.out / "scale.json").read_text())
        runs += [r for r in before["runs"] if r["size"] not in sizes]
        figures["command"] = f"{before['command']}; then {figures['command']}"
        figures["note"] = " ".join(filter(None, [before.get("note", ""), args.note]))
        figures["findings"] = findings or before.get("findings", [])
    try:
        for size in sizes:
            for mode, store in ([] if args.no_plain else [("plain", "none")]) + [("ours", s) for s in stores]:
                runs.append(measure(mode, store, size, args, scratch))
                write(figures, args.out, scratch)  # after every run: a long benchmark stopped halfway keeps its rows
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(markdown(figures))
    return 0


def write(figures: dict[str, Any], out: Path, scratch: Path | None = None) -> None:
    figures["summary"] = summarise(figures["runs"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(figures, indent=1) + "\n")
    (out / "scale.md").write_text(markdown(figures))
    for profile in scratch.glob("profile-*.txt") if scratch else []:
        (out / f"scale-{profile.name}").write_text(profile.read_text())


if __name__ == "__main__":
    sys.exit(main())
