"""Chaos run (issue 18, part 2): a tiny two-approach study on a simulated cluster (head + 2 one-CPU worker nodes,
a real MLflow server on 127.0.0.1) while a killer SIGKILLs random trial worker processes and removes a worker node
once (a fresh node joins so work goes on), and the driver itself is SIGKILLed or sent SIGINT at random moments,
each followed at once by ``--resume``, until a resume exits 0. Then the records are checked: exact trial counts,
every confirmation seed once, no duplicate child run, no metric step twice, nothing RUNNING, a complete summary.

    python benchmarks/chaos.py                 # the long run; writes results/bench/chaos.md
    python benchmarks/chaos.py --short --no-write
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPACE = "chaos"
APPROACHES = ("baseline", "chaos_focal")
APPROACH = """\
description: chaos run approach
defaults: {epochs: EPOCHS, num_samples: TRIALS, grace_period: EPOCHS, reduction_factor: 2, batch_size: 32}
fixed: {loss: LOSS, sampler: none, model: scratch}
params:
  lr: {type: float, low: 1.0e-3, high: 3.0e-3, log: true}
"""
TRAINABLE_MARKS = ("ImplicitFunc", "train_trial")  # what Ray's trial actors show in their command line
PAUSED = 130  # the driver's exit code after SIGINT


@dataclass
class Config:
    """One chaos run's size and schedule."""

    trials: int = 4  # search trials per approach
    epochs: int = 6
    seeds: list[str] = field(default_factory=lambda: ["--confirm-min-seeds", "2", "--confirm-max-seeds", "3"])
    extra: list[str] = field(default_factory=lambda: ["--confirm-top", "2", "--confirm-race-seeds", "1"])
    # an idle machine ran the 3 x 4 study in 200 s: too short for 10 kills (a digits trial lasts seconds)
    driver_events: list[str] = field(default_factory=lambda: ["kill", "int"] * 3)
    event_delay: tuple[float, float] = (5.0, 60.0)  # seconds after the driver's first Tuner line
    worker_kills: int = 10  # at most
    warmup: float = 30.0
    interval: float = 4.0
    chance: float = 0.6
    remove_node: bool = True
    seed: int = 0
    deadline: float = 3000.0


@dataclass
class Tally:
    """What the chaos did."""

    worker_kills: int = 0
    nodes_removed: int = 0
    driver_sigkills: int = 0
    driver_sigints: int = 0
    resumes: int = 0
    exits: list[int] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def log(self, text: str, start: float) -> None:
        line = f"{time.time() - start:7.1f} s  {text}"
        self.events.append(line)
        print(line, flush=True)


def write_spaces(work: Path, cfg: Config) -> Path:
    spaces = work / "spaces"
    spaces.mkdir(parents=True, exist_ok=True)
    for name, loss in zip(APPROACHES, ("ce", "focal"), strict=False):
        text = APPROACH.replace("EPOCHS", str(cfg.epochs)).replace("TRIALS", str(cfg.trials)).replace("LOSS", loss)
        (spaces / f"{name}.yaml").write_text(text)
    budget = APPROACH.splitlines()[1].replace("EPOCHS", str(cfg.epochs)).replace("TRIALS", str(cfg.trials))
    # the group's own budget: without it the group's defaults (8 trials x 10 epochs) override the approaches'
    (spaces / f"{SPACE}.yaml").write_text(f"description: the chaos run\napproaches: [{', '.join(APPROACHES)}]\n{budget}\n")
    return spaces


def start_mlflow(work: Path, port: int) -> tuple[subprocess.Popen, str]:
    """A real MLflow server on 127.0.0.1 (multi-node studies refuse SQLite)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{work / 'server.db'}", "--artifacts-destination", str(work / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2):
                return proc, uri
        except OSError:
            time.sleep(1)
    stop(proc)
    raise RuntimeError("the MLflow server did not start")


def stop(proc: subprocess.Popen) -> None:
    """Stop a process group we started: SIGTERM, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(30)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def is_trial(proc: Any) -> bool:
    """A Ray worker process running a trial (the trainable's actor), by its command line."""
    try:
        cmd = " ".join(proc.cmdline())
    except Exception:  # noqa: BLE001 - it ended meanwhile
        return False
    return cmd.startswith("ray::") and any(m in cmd for m in TRAINABLE_MARKS)


def trial_workers(nodes: list) -> list[Any]:
    """The trial workers of these Ray nodes only (children of their raylets): never another cluster's on the same
    machine, e.g. another test's."""
    import ray  # noqa: F401, I001  (puts Ray's vendored psutil on the path: it comes first)
    import psutil

    found = []
    for node in nodes:
        try:
            raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
            found += [k for k in raylet.children(recursive=True) if is_trial(k)]
        except (psutil.NoSuchProcess, KeyError, IndexError):  # a node removed meanwhile
            continue
    return found


class Killer(threading.Thread):
    """Ray's release-test killer scaled down: after a warm-up, each interval, a chance to SIGKILL a random trial
    worker; once, a worker node removed while it runs a trial and a fresh one added."""

    def __init__(self, cfg: Config, cluster: Any, workers: list, tally: Tally, start: float) -> None:
        super().__init__(daemon=True)
        self.cfg, self.cluster, self.workers, self.tally, self.start_time = cfg, cluster, workers, tally, start
        self.rng = random.Random(cfg.seed + 1)
        self.done = threading.Event()
        self.node_due = threading.Event()

    def run(self) -> None:
        if self.done.wait(self.cfg.warmup):
            return
        while not self.done.wait(self.cfg.interval):
            if self.rng.random() >= self.cfg.chance:
                continue
            if self.cfg.remove_node and not self.tally.nodes_removed and not self.node_due.is_set() and self.node_busy():
                self.node_due.set()  # the main thread removes it: Ray's add_node installs signal handlers
            elif self.tally.worker_kills < self.cfg.worker_kills:
                self.kill_worker()

    def node_busy(self) -> bool:
        """Whether the first worker node runs a trial now."""
        return bool(trial_workers(self.workers[:1]))

    def tick(self) -> None:
        """In the main thread: the node removal the killer asked for, if any."""
        if self.node_due.is_set() and not self.tally.nodes_removed:
            self.remove_node()

    def remove_node(self) -> None:
        self.cluster.remove_node(self.workers[0])
        self.tally.nodes_removed += 1
        self.tally.log("removed worker node 1 while it ran a trial", self.start_time)
        self.workers[0] = self.cluster.add_node(num_cpus=1)
        self.tally.log("added a fresh worker node", self.start_time)

    def kill_worker(self) -> None:
        victims = trial_workers([self.cluster.head_node, *self.cluster.worker_nodes])
        if not victims:
            return
        victim = self.rng.choice(victims)
        try:
            victim.send_signal(signal.SIGKILL)
        except Exception:  # it ended between the listing and the kill
            return
        self.tally.worker_kills += 1
        self.tally.log(f"SIGKILL trial worker pid {victim.pid}", self.start_time)


def study_args(cfg: Config, spaces: Path, address: str, uri: str, storage: Path) -> list[str]:
    return ["--space", SPACE, "--spaces-dir", str(spaces), "--data", "digits", "--ratio", "0.5",
            "--address", address, "--tracking-uri", uri, "--storage-path", str(storage), *cfg.seeds, *cfg.extra]


def under_way(log: Path) -> bool:
    """Whether the driver is past its start-up: Ray up, a Tuner running (its status line or a round's line). The
    lock file alone says nothing: a killed driver's stays behind."""
    text = log.read_text(errors="replace")
    return any(mark in text for mark in ("trials (", "race on validation", "confirmation round"))


def drive(cfg: Config, work: Path, args: list[str], killer: Killer, start: float) -> None:
    """Drivers in turn: each may get the next event (SIGKILL or SIGINT) at a random moment, then ``--resume``
    at once; until a driver exits 0 with no event left for it."""
    rng, events, tally = random.Random(cfg.seed), list(cfg.driver_events), killer.tally
    resume = False
    while True:
        if time.time() - start > cfg.deadline:
            raise RuntimeError(f"no driver finished within {cfg.deadline:.0f} s")
        log = open(work / f"driver-{len(tally.exits)}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "study.tune", *args, *(["--resume"] if resume else [])],
                                cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                # its SIGINT is a pause even when this runs as a background job (SIGINT ignored)
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        tally.log(f"driver {len(tally.exits)} started{' (--resume)' if resume else ''}", start)
        event = events.pop(0) if events else None
        if event:
            while proc.poll() is None and not under_way(Path(log.name)):
                killer.tick()
                time.sleep(0.5)
            fire = time.time() + rng.uniform(*cfg.event_delay)
            while proc.poll() is None and time.time() < fire:
                killer.tick()
                time.sleep(0.2)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL if event == "kill" else signal.SIGINT)
                tally.driver_sigkills += event == "kill"
                tally.driver_sigints += event == "int"
                tally.log(f"driver {'SIGKILL' if event == 'kill' else 'SIGINT'}", start)
        while proc.poll() is None and time.time() - start < cfg.deadline:
            killer.tick()
            time.sleep(0.5)
        rc = proc.wait(60)
        log.close()
        tally.exits.append(rc)
        tally.log(f"driver exit {rc}", start)
        if rc == 0 and (resume or not event):
            return
        if rc not in (0, PAUSED, -signal.SIGKILL):
            raise RuntimeError(f"driver exit {rc}: see {log.name}\n" + Path(log.name).read_text()[-3000:])
        resume = True
        tally.resumes += 1


def check(uri: str, work: Path, storage: Path, cfg: Config) -> dict[str, Any]:
    """The end checks; each entry is (ok, detail)."""
    from mlflow.tracking import MlflowClient

    from study import race

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name(SPACE)
    runs = c.search_runs([exp.experiment_id], "", max_results=5000)
    [study_dir] = [p for p in storage.glob(f"{SPACE}-*") if p.is_dir()]
    ledger = race.Ledger.from_json((study_dir / race.LEDGER).read_text())
    out: dict[str, Any] = {}
    children = [r for r in runs if r.data.tags.get("role") == "child"]
    parents = {r.info.run_id: r.data.tags["approach"] for r in runs if r.data.tags.get("role") == "parent"}
    out["one FINISHED parent per approach"] = (
        sorted(parents.values()) == sorted(APPROACHES)
        and all(r.info.status == "FINISHED" for r in runs if r.data.tags.get("role") == "parent"), sorted(parents.values()))
    expected = race.trial_count(cfg.trials, 1, 0)
    for a in APPROACHES:
        mine = [r for r in children if parents.get(r.data.tags.get("mlflow.parentRunId")) == a]
        search = [r for r in mine if r.data.tags.get("phase") == "search"]
        ids = {r.data.tags["trial_id"] for r in search}
        out[f"{a}: search trials"] = (len(ids) == expected and len(search) == expected,
                                      f"{len(ids)} trial ids in {len(search)} runs, expected {expected}; "
                                      f"statuses {dict(Counter(r.info.status for r in search))}")
        seeds = [r.data.tags.get("confirm_seed", "untagged") for r in mine
                 if r.data.tags.get("phase") == "confirm" and r.info.status == "FINISHED"]
        want = sorted(str(s) for s in ledger.seeds(a))
        out[f"{a}: confirmation seeds once"] = (sorted(seeds) == want and len(want) >= 2,
                                                f"finished confirm seeds {sorted(seeds)}, ledger {want}")
    keys = Counter((r.data.tags.get("mlflow.parentRunId"), r.data.tags.get("phase"), r.data.tags.get("trial_id"))
                   for r in children)
    dups = [k for k, n in keys.items() if n > 1]
    out["no duplicate child runs"] = (not dups, f"{len(children)} child runs, duplicates {dups}")
    twice = {}
    for r in children:
        steps = [m.step for m in c.get_metric_history(r.info.run_id, "val_macro_f1")]
        if len(steps) != len(set(steps)):
            twice[r.data.tags.get("trial_id")] = steps
    out["no metric step twice"] = (not twice, f"runs with a repeated val_macro_f1 step: {twice}")
    # Ray's chaos bar: every trial ends at its last iteration; a trial killed past max_failures ends FAILED
    failed = [f"{r.data.tags.get('phase')}:{r.data.tags.get('trial_id')}" for r in children if r.info.status == "FAILED"]
    out["no child run FAILED"] = (not failed, f"FAILED: {failed}")
    running = [r.data.tags.get("trial_id", r.info.run_id) for r in runs if r.info.status == "RUNNING"]
    out["no run RUNNING"] = (not running, f"RUNNING: {running}")
    out["summary from complete data"] = summary_check(work / "results" / SPACE / "summary.csv", ledger)
    out["_statuses"] = dict(Counter(f"{r.data.tags.get('phase', 'parent')}:{r.info.status}" for r in runs))
    return out


def summary_check(path: Path, ledger: Any) -> tuple[bool, str]:
    """summary.csv: every approach with the ledger's seed count; every non-baseline verdict over all its seeds."""
    if not path.exists():
        return False, f"{path} missing"
    rows = {r["approach"]: r for r in csv.DictReader(path.open())}
    want = {a: len(ledger.seeds(a)) for a in APPROACHES}
    got = {a: int(rows[a]["n_seeds"]) if a in rows else None for a in APPROACHES}
    verdicts = {a: (rows[a]["verdict"], rows[a]["paired_seeds"]) for a in APPROACHES if a in rows and a != "baseline"}
    ok = got == want and all(v and len(p.split()) == min(want.values()) for v, p in verdicts.values())
    return ok, f"n_seeds {got} (ledger {want}); verdict, paired seeds {verdicts}"


def run(cfg: Config, work: Path) -> tuple[Tally, dict[str, Any], float, list[str]]:
    """The whole chaos run in ``work``: its tally, its checks, its wall time and the study's flags."""
    from ray.cluster_utils import Cluster

    sys.path.insert(0, str(ROOT / "tests"))
    from studyutil import free_port

    work.mkdir(parents=True, exist_ok=True)
    spaces, storage = write_spaces(work, cfg), work / "storage"
    server, uri = start_mlflow(work, free_port())
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    tally, start = Tally(), time.time()
    killer = None
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        args = study_args(cfg, spaces, cluster.address, uri, storage)
        killer = Killer(cfg, cluster, workers, tally, start)
        killer.start()
        try:
            drive(cfg, work, args, killer, start)
            ended: dict[str, Any] = {}
        except RuntimeError as err:  # a driver that neither finished nor paused: a finding, the records still checked
            ended = {"every driver finished or paused": (False, str(err).splitlines()[0])}
        wall = time.time() - start
        killer.done.set()
        killer.join(60)
        try:
            return tally, {**ended, **check(uri, work, storage, cfg)}, wall, args
        except Exception as err:  # noqa: BLE001 - e.g. no ledger: reported as a failed check, not a traceback
            return tally, {**ended, "records readable": (False, f"{type(err).__name__}: {err}")}, wall, args
    finally:
        if killer:
            killer.done.set()
        cluster.shutdown()
        stop(server)


def failures(checks: dict[str, Any]) -> list[str]:
    return [f"{k}: {detail}" for k, (ok, detail) in ((k, v) for k, v in checks.items() if not k.startswith("_")) if not ok]


def markdown(cfg: Config, tally: Tally, checks: dict[str, Any], wall: float, args: list[str], command: str) -> str:
    kills = tally.worker_kills + tally.nodes_removed + tally.driver_sigkills + tally.driver_sigints
    lines = ["# Chaos run (issue 18, part 2)", "", f"Command: `{command}`", "",
             "A two-approach study (`baseline`, `chaos_focal`: one `lr` param each) on a simulated cluster (head + 2 "
             "worker nodes, one CPU each, `ray.cluster_utils.Cluster`) with a real MLflow server on 127.0.0.1, "
             f"{cfg.trials} trials x {cfg.epochs} epochs per approach, the race and confirmation "
             f"(`{' '.join(cfg.seeds + cfg.extra)}`). Study flags: `{' '.join(args)}` (paths of the run's scratch folder).",
             "", "| what | count |", "|---|---|",
             f"| trial worker processes SIGKILLed | {tally.worker_kills} |",
             f"| worker nodes removed (a fresh one added) | {tally.nodes_removed} |",
             f"| driver SIGKILLs | {tally.driver_sigkills} |", f"| driver SIGINTs | {tally.driver_sigints} |",
             f"| kills in total | {kills} |", f"| `--resume` runs | {tally.resumes} |",
             f"| driver exit codes in turn | {', '.join(map(str, tally.exits))} |", f"| wall time | {wall:.0f} s |", "",
             "## Checks", "", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {k} | {'pass' if v[0] else '**FAIL**'} | {str(v[1]).replace('|', '/')} |"
              for k, v in checks.items() if not k.startswith("_")]
    lines += ["", f"Run statuses (phase:status): {json.dumps(checks.get('_statuses', {}), sort_keys=True)}", "",
              "## Events", "", "```", *tally.events, "```", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true", help="the test's size: one worker kill, one driver SIGKILL")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, help="scratch folder (default: a new temporary folder)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "chaos.md")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    cfg = short_config(a.seed) if a.short else Config(seed=a.seed)
    import tempfile

    work = a.work or Path(tempfile.mkdtemp(prefix="chaos-"))
    tally, checks, wall, args = run(cfg, work)
    bad = failures(checks)
    text = markdown(cfg, tally, checks, wall, args, "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]))
    if not a.no_write:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
    print(text)
    return 1 if bad else 0


def short_config(seed: int = 0) -> Config:
    """The test's size: one worker kill and one driver SIGKILL (make test's interrupt test pauses with SIGINT;
    the long run does both here), fixed confirmation seeds, no race."""
    return Config(trials=2, epochs=2, seeds=["--confirm-seeds", "2"], extra=["--confirm-top", "1"],
                  driver_events=["kill"], event_delay=(2.0, 8.0), worker_kills=1, warmup=5.0, interval=3.0,
                  chance=0.5, remove_node=False, seed=seed, deadline=800.0)


if __name__ == "__main__":
    sys.exit(main())
