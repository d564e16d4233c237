"""Run a validated study plan: data once, the search (every approach side by side), the confirmation
phase (each approach's top configs retrained over several seeds), MLflow parent runs, results/<space>/.

One guard at the top ends every open MLflow run of the study: KILLED on SIGINT/SIGTERM (a pause:
``--resume`` finishes the study), FAILED on any other exception.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import numpy as np

from study.costs import binary_cost_matrix, random_cost_matrix
from study.data import DataError, Dataset, load_dataset, subset
from study.names import VAL_MACRO_F1
from study.plan import Plan
from study.spaces import Space

SMOKE_LARGEST_CLASS = 40  # --smoke: at most this many images per class and split
EVAL_COST_N = 10.0  # more than two classes: the third seed's generator, largest cost n = 10 as in its paper


class Interrupted(Exception):
    """SIGINT or SIGTERM: the study pauses (runs KILLED, exit 130 or 143)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"interrupted (exit {code})")
        self.code = code


_signal: dict[str, int | None] = {"received": None}


def _on_sigterm(signum: int, frame: Any) -> None:
    _signal["received"] = signum
    # Ray Tune stops a run gracefully on SIGINT (its handler while a Tuner runs; KeyboardInterrupt elsewhere)
    os.kill(os.getpid(), signal.SIGINT)


def _exit_code() -> int:
    return 128 + (_signal["received"] or signal.SIGINT)


# ---------------------------------------------------------------- before Ray


def load_splits(plan: Plan) -> dict[int, Dataset]:
    """The data set for the study seed and, with --confirm-resplit, one more split per confirmation seed."""
    seeds = [plan.seed] + ([plan.seed + i for i in range(1, plan.confirm.seeds)] if plan.confirm.resplit else [])
    out = {}
    for seed in seeds:
        data = load_dataset(plan.data, image_size=plan.budget.image_size, seed=seed, ratio=plan.ratio, counts=plan.counts,
                            cache_dir=plan.cache_dir)
        out[seed] = subset(data, SMOKE_LARGEST_CLASS, seed) if plan.smoke else data
    return out


def check_samplers(plan: Plan, data: Dataset) -> None:
    """A sampler that cannot work on this training split (SMOTE with too few minority samples) fails now."""
    from study.names import SAMPLER_OPTIONS
    from study.sampling import SAMPLERS

    labels = data.train.labels.numpy()
    for space in plan.spaces:
        for name in space.values("sampler"):
            options = {k: max(space.values(k)) for k in SAMPLER_OPTIONS.get(name, ())}  # the most demanding value
            SAMPLERS[name](1.0, labels, plan.seed, **options)


def evaluation_costs(plan: Plan, data: Dataset) -> np.ndarray:
    """The study's evaluation cost matrix: every approach's expected cost is scored under it.

    Two classes: FN:FP from --eval-costs, by default the training imbalance ratio (majority / minority).
    More classes: the third seed's generator (consistent, seeded by --seed)."""
    counts = data.train.counts(data.num_classes)
    if data.num_classes == 2:
        fn, fp = plan.eval_costs or (max(counts) / counts[data.minority], 1.0)
        return binary_cost_matrix(fn / fp, positive=data.minority)
    if plan.eval_costs is not None:
        raise DataError(f"--eval-costs FN:FP is for two classes; {data.name} has {data.num_classes} "
                        "(their matrix comes from the third seed's generator)")
    return random_cost_matrix(counts, np.random.default_rng(plan.seed), kind="consistent", n=EVAL_COST_N)


def weight_bank(plan: Plan) -> dict[str, dict]:
    """Pretrained state dicts by ``<weights>@<backbone>``, loaded once in the driver; trials get them through the
    object store, so nodes need no copy of the files."""
    from study.models import load_weights
    from study.pretrain import pretrain

    bank = {}
    for key, path in plan.weights.items():
        name, backbone = key.split("@")
        if name == "source" and not path.exists():
            print(f"no source-task checkpoint at {path}: pretraining it once now (python -m study.pretrain)")
            pretrain(path, image_size=plan.budget.image_size, seed=plan.seed, smoke=plan.smoke,
                     epochs=1 if plan.smoke else 6, cache_dir=plan.cache_dir)
        bank[key] = load_weights(name, backbone, path)
    return bank


# ---------------------------------------------------------------- the two phases


def constants(plan: Plan, space: Space) -> dict[str, Any]:
    b, r = plan.budget, plan.resources
    return {"approach": space.name, "seed": plan.seed, "split_seed": plan.seed, "phase": "search", "epochs": b.epochs,
            "batch_size": b.batch_size, "image_size": b.image_size, "cpus": r.cpus_per_trial, "gpus": r.gpus_per_trial}


def confirm_configs(plan: Plan, ranked: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each approach's top configs x the confirmation seeds. Seed i trains with the same trial seed in every
    approach, so runs pair across approaches (and, with --confirm-resplit, on the same split)."""
    from study.engine import trial_seed

    out = []
    for i in range(plan.confirm.seeds):
        for approach, configs in ranked.items():
            for rank, config in enumerate(configs[: plan.confirm.top]):
                out.append({**config, "phase": "confirm", "confirm_seed": i, "config_rank": rank,
                            "trial_seed": trial_seed(plan.seed, "confirm", i),
                            "split_seed": plan.seed + i if plan.confirm.resplit else plan.seed})
    return out


def ranked_configs(outcomes: list) -> dict[str, list[dict[str, Any]]]:
    """Per approach, the configs of its finished search trials, best validation macro-F1 first."""
    out: dict[str, list] = {}
    for o in sorted(outcomes, key=lambda o: (o.best_val, o.trial_id), reverse=True):
        if o.status == "FINISHED" and o.best_val > float("-inf"):
            out.setdefault(o.config["approach"], []).append(o.config)
    return out


def summarise(values: list[float]) -> dict[str, float]:
    from study.stats import t_interval

    mean, sd, low, high = t_interval(values)
    return {"mean": mean, "sd": sd, "ci_low": low, "ci_high": high}


def describe(approach: str, config: dict[str, Any], space: Space, test: dict[str, float] | None, n: int) -> str:
    searched = ", ".join(f"{k}={_short(config.get(k))}" for k in space.params) or "fixed configuration"
    if test is None:
        return f"{approach}: {searched}. No test figures (no trial finished)."
    if n > 1:
        return (f"{approach}: {searched}. Test macro-F1 {test['mean']:.4f} "
                f"(95 % CI {test['ci_low']:.4f}–{test['ci_high']:.4f}) over {n} confirmation seeds.")
    return f"{approach}: {searched}. Test macro-F1 {test['mean']:.4f} from ONE run (no confirmation seeds: not a verdict)."


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def finish_approach(plan: Plan, space: Space, tracker: Any, search: list, confirm: list,
                    single_test: dict[str, Any] | None) -> dict[str, Any] | None:
    """The approach's parent run: its final config, search figures, confirmation figures, description."""
    tracker.close_children({o.trial_id: o.status for o in search + confirm})
    ranked = ranked_configs(search).get(space.name, [])
    if not ranked:
        tracker.end(tracker.parent_id, "FAILED", {"trials": str(len(search))})
        return None
    final_rank, runs = 0, []
    if confirm:
        by_rank: dict[int, list] = {}
        for o in confirm:
            if o.status == "FINISHED" and "test_macro_f1" in o.last:
                by_rank.setdefault(o.config["config_rank"], []).append(o)
        if by_rank:
            final_rank = max(by_rank, key=lambda r: (np.mean([o.best_val for o in by_rank[r]]), -r))
            runs = by_rank[final_rank]
    config = ranked[final_rank]
    client, run = tracker.client, tracker.parent_id
    tracker.log_params(run, {f"best.{k}": str(v) for k, v in config.items() if v is not None and not isinstance(v, dict)})
    best = max((o for o in search if o.config["approach"] == space.name), key=lambda o: o.best_val)
    metrics: dict[str, float] = {VAL_MACRO_F1: best.best_val, "best_epoch": best.best_epoch}
    test = None
    if runs:
        for key in ("test_macro_f1", "test_minority_recall", "test_balanced_accuracy", "test_expected_cost"):
            stats = summarise([o.last[key] for o in runs])
            metrics.update({f"{key}_{k}": v for k, v in stats.items() if np.isfinite(v)})
            test = stats if key == "test_macro_f1" else test
        metrics["val_macro_f1_confirm_mean"] = float(np.mean([o.best_val for o in runs]))
    elif single_test is not None:
        metrics.update({k: v for k, v in single_test.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        test = {"mean": single_test["test_macro_f1"]}
    tracker.log_metrics(run, metrics)
    client.log_dict(run, config, "final_config.json")
    tracker.end(run, "FINISHED", {"final_config_rank": str(final_rank), "trials": str(len(ranked)),
                                  "confirm_runs": str(len(runs)), "searched": ",".join(space.params),
                                  "mlflow.note.content": describe(space.name, config, space, test, len(runs))})
    return {"approach": space.name, "config": config, "val": metrics[VAL_MACRO_F1], "test": test, "n": len(runs)}


def test_single(plan: Plan, outcomes: list, data: Dataset, eval_costs: np.ndarray, bank: dict) -> dict[str, dict]:
    """Without confirmation runs: each approach's best search trial's best-epoch checkpoint on the test split."""
    from study.trainable import build_parts, test_figures

    out = {}
    for approach, configs in ranked_configs(outcomes).items():
        best = next(o for o in outcomes if o.config is configs[0] or o.config == configs[0])
        if best.load_best_state is None:
            continue
        state = best.load_best_state()
        parts = build_parts(best.config, data, bank)
        parts.model.load_state_dict(state["model"])
        figures = test_figures(parts, data, eval_costs)
        out[approach] = {k: v for k, v in figures.items() if not k.startswith("test_y_")} | {"selected_epoch": state["epoch"]}
    return out


def _phases(plan: Plan, splits: dict[int, Dataset], eval_costs: np.ndarray, bank: dict, trackers: dict) -> list:
    from study import engine
    from study.trainable import CHECKPOINT_FILE, train_trial

    data = splits[plan.seed]
    setup = engine.TuneSetup(train_trial, splits, eval_costs, bank, plan.resources.cpus_per_trial,
                             plan.resources.gpus_per_trial, plan.resources.max_concurrent, plan.resources.address is None,
                             f"{plan.storage}/{plan.study_id}", {a: t for a, t in tracker_settings(plan, data).items()},
                             CHECKPOINT_FILE, plan.verbose)
    spaces = {s.name: s.define_by_run(constants(plan, s)) for s in plan.spaces}
    searched = engine.search(setup, plan.space, spaces, {}, plan.budget, plan.seed, plan.resume)
    if searched.interrupted:
        raise Interrupted(_exit_code())
    confirmed = engine.PhaseResult([], False)
    single: dict[str, dict] = {}
    if plan.confirm.seeds > 0:
        configs = confirm_configs(plan, ranked_configs(searched.outcomes))
        print(f"confirmation: {len(configs)} runs ({plan.confirm.top} config(s) per approach x {plan.confirm.seeds} seeds, "
              f"{plan.budget.epochs} epochs each, no early stopping)", flush=True)
        confirmed = engine.confirm(setup, f"{plan.space}-confirm", configs, plan.budget.epochs, plan.resume)
        if confirmed.interrupted:
            raise Interrupted(_exit_code())
    else:
        single = test_single(plan, searched.outcomes, data, eval_costs, bank)
    results = []
    for s in plan.spaces:
        mine = [o for o in searched.outcomes if o.config.get("approach") == s.name]
        theirs = [o for o in confirmed.outcomes if o.config.get("approach") == s.name]
        results.append(finish_approach(plan, s, trackers[s.name], mine, theirs, single.get(s.name)))
    return results


def tracker_settings(plan: Plan, data: Dataset) -> dict[str, dict[str, Any]]:
    local = plan.tracking_uri.startswith("sqlite:")
    return {s.name: {"uri": plan.tracking_uri, "experiment": plan.space, "study_id": plan.study_id, "approach": s.name,
                     "artifact_root": plan.results_dir / "mlartifacts" if local else None,
                     "classes": list(data.classes), "minority": data.minority_name, "data": data.name,
                     "parent_run": plan.parent_run}
            for s in plan.spaces}


def run_study(plan: Plan) -> int:
    """Exit code: 0 done, 1 an approach had no finished trial, 2 bad input, 130/143 interrupted (resume later)."""
    from study.losses import LossError
    from study.models import ModelError

    try:
        splits = load_splits(plan)
        data = splits[plan.seed]
        check_samplers(plan, data)
        eval_costs = evaluation_costs(plan, data)
    except (DataError, LossError, ModelError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"data: {data.summary()}; minority: {data.minority_name}", flush=True)
    bank = weight_bank(plan)
    from study import engine, store

    plan.results_dir.mkdir(parents=True, exist_ok=True)
    store.prepare_store(plan.tracking_uri)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        engine.init_ray(plan.resources.address)
        try:
            engine.check_cluster(plan.resources.gpus_per_trial, plan.resources.cpus_per_trial, plan.tracking_uri,
                                 plan.storage)
        except engine.ClusterError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        trackers = {a: store.Tracker(**t) for a, t in tracker_settings(plan, data).items()}  # parent runs first
        for tracker in trackers.values():
            tracker.client.log_dict(tracker.parent_id, {"eval_costs": eval_costs.tolist(), "classes": list(data.classes)},
                                    "eval_costs.json")
        results = _phases(plan, splits, eval_costs, bank, trackers)
    except (Interrupted, KeyboardInterrupt) as stop:
        code = stop.code if isinstance(stop, Interrupted) else _exit_code()
        store.end_open_runs(plan.tracking_uri, plan.study_id, "KILLED")
        print(f"interrupted: study {plan.study_id} paused; finish it with the same command and --resume", file=sys.stderr)
        return code
    except BaseException:
        store.end_open_runs(plan.tracking_uri, plan.study_id, "FAILED")
        raise
    finally:
        engine.shutdown_ray()
        signal.signal(signal.SIGTERM, previous)
    return report(plan, results)


def report(plan: Plan, results: list) -> int:
    from study.report import write_report

    out = write_report(plan.tracking_uri, plan.space, plan.report_dir or plan.results_dir / plan.space, plan.study_id)
    for r in filter(None, results):
        space = next(s for s in plan.spaces if s.name == r["approach"])
        searched = {k: r["config"][k] for k in space.params if k in r["config"]}
        test = r["test"]
        shown = "no test figures" if test is None else (
            f"test macro-F1 {test['mean']:.4f} [{test['ci_low']:.4f}, {test['ci_high']:.4f}] over {r['n']} seeds"
            if r["n"] > 1 else f"test macro-F1 {test['mean']:.4f} (one run)")
        print(f"{r['approach']}: search validation macro-F1 {r['val']:.4f}; {shown}; config {searched}")
    print(f"summary: {out}")
    return 0 if all(results) else 1

