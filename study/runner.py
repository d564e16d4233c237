"""Run a validated study plan: data once, the search (every approach side by side), the race (each approach's
candidates on validation, then every approach against ``baseline`` over paired seeds, round by round), MLflow
parent runs, results/<space>/.

One guard at the top ends every open MLflow run of the study: KILLED on SIGINT/SIGTERM (a pause:
``--resume`` finishes the study), FAILED on any other exception. One driver per study (``study.lock``).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from study import race
from study.costs import binary_cost_matrix, random_cost_matrix
from study.data import DataError, Dataset, load_dataset, subset
from study.errors import StudyError
from study.names import VAL_MACRO_F1
from study.plan import Plan
from study.spaces import Space

SMOKE_LARGEST_CLASS = 40  # --smoke: at most this many images per class and split
SMOKE_TRIALS = 2  # --smoke: search trials per approach (its first points)
EVAL_COST_N = 10.0  # more than two classes: the third seed's generator, largest cost n = 10 as in its paper


# ---------------------------------------------------------------- before Ray


def resplits(plan: Plan) -> bool:
    """Confirmation seeds redraw the split unless told not to, or the folder brings its own test/ (not resplit)."""
    return plan.confirm.resplit and not (Path(plan.data) / "test").is_dir()


def split_seed(plan: Plan, confirm_seed: int) -> int:
    """The split a confirmation seed trains on: its own (seeds above the study's) or the study's."""
    return plan.seed + 1 + confirm_seed if resplits(plan) else plan.seed


def load_splits(plan: Plan) -> dict[int, Dataset]:
    """The study split (the search and the race choose on it) and, when resplitting, one split per confirmation
    seed, redrawn from the same decoded pool with the search's validation images kept out of every test set."""
    from study.resplit import resplit

    data = load_dataset(plan.data, image_size=plan.budget.image_size, seed=plan.seed, ratio=plan.ratio,
                        counts=plan.counts, cache_dir=plan.cache_dir)
    data = subset(data, SMOKE_LARGEST_CLASS, plan.seed) if plan.smoke else data
    out = {plan.seed: data}
    if resplits(plan):
        out.update({split_seed(plan, i): resplit(data, split_seed(plan, i)) for i in range(plan.confirm.max_seeds)})
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
    from study.models import check_weight_keys, load_weights
    from study.pretrain import pretrain

    bank = {}
    for key, path in plan.weights.items():
        name, backbone = key.split("@")
        if name == "source" and not path.exists():
            print(f"no source-task checkpoint at {path}: pretraining it once now (python -m study.pretrain)")
            pretrain(path, image_size=plan.budget.image_size, seed=plan.seed, smoke=plan.smoke,
                     epochs=1 if plan.smoke else 6, cache_dir=plan.cache_dir)
        check_weight_keys(name, backbone, path)  # foreign keys: one error line now, not a trial failing 4 times
        bank[key] = load_weights(name, backbone, path)
    return bank


# ---------------------------------------------------------------- the two phases


def constants(plan: Plan, space: Space) -> dict[str, Any]:
    b, r = plan.budget, plan.resources
    return {"approach": space.name, "seed": plan.seed, "split_seed": plan.seed, "phase": "search", "epochs": b.epochs,
            "batch_size": b.batch_size, "image_size": b.image_size, "cpus": r.cpus_per_trial, "gpus": r.gpus_per_trial}


def point_context(plan: Plan, data: Dataset, eval_costs: np.ndarray) -> dict[str, float]:
    """The values of the data symbols a space's points may name (``study.spaces.SYMBOLS``)."""
    counts = data.train.counts(data.num_classes)
    minority = data.minority
    off = [eval_costs[minority, c] for c in range(data.num_classes) if c != minority]
    wrong = [eval_costs[c, minority] for c in range(data.num_classes) if c != minority]
    return {"inverse_frequency": max(counts) / counts[minority], "eval_cost": float(max(off) / max(min(wrong), 1e-12)),
            "drw_paper": max(1, round(0.8 * plan.budget.epochs))}


def searches(plan: Plan, data: Dataset, eval_costs: np.ndarray) -> dict[str, Any]:
    """Every approach's search: its resolved points first (ranges widened to hold them), then its searched part,
    whose size grows with the parameters it searches (``race.trial_count``)."""
    from study.engine import Search

    context, out = point_context(plan, data, eval_costs), {}
    for space in plan.spaces:
        points, resolved, widened = space.resolve_points(context)
        for line in widened:
            print(line, flush=True)
        trials = race.trial_count(plan.budget.num_samples, len(space.params), len(points),
                                  cap=SMOKE_TRIALS if plan.smoke else None)
        out[space.name] = Search(resolved.define_by_run(constants(plan, space)), points, trials)
    return out


def candidates(plan: Plan, outcomes: list) -> dict[str, list[dict[str, Any]]]:
    """Per approach, its finished search trials' configs compared at equal training length (``race.rank_candidates``),
    best first."""
    b = plan.budget
    milestones = race.rungs(b.grace_period, b.reduction_factor, b.epochs)
    out: dict[str, list] = {}
    for space in plan.spaces:
        trials = [race.Trial(o.trial_id, o.config, o.history) for o in outcomes
                  if o.config.get("approach") == space.name and o.status == "FINISHED" and o.history]
        _, ranked = race.rank_candidates(trials, milestones, plan.confirm.top)
        if ranked:
            out[space.name] = [t.config for t in ranked]
    return out


def race_configs(plan: Plan, ranked: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The within-approach race: each approach's top candidates (when it has several: ``--confirm-top 1`` races
    none) x the race seeds, on the study split; validation alone decides."""
    from study.engine import trial_seed

    return [{**config, "phase": "race", "race_seed": j, "config_rank": rank,
             "trial_seed": trial_seed(plan.seed, "race", j), "split_seed": plan.seed}
            for j in range(plan.confirm.race_seeds) for configs in ranked.values() if min(len(configs), plan.confirm.top) > 1
            for rank, config in enumerate(configs[: plan.confirm.top])]


def choose(ranked: dict[str, list[dict[str, Any]]], raced: list) -> tuple[dict[str, dict], dict[str, dict[str, float]]]:
    """Each approach's candidate: the best mean validation macro-F1 over the race seeds (ties: the higher-ranked)."""
    chosen, means = {}, {}
    for approach, configs in ranked.items():
        mine = [o for o in raced if o.config["approach"] == approach and o.status == "FINISHED"]
        by_rank = {r: [o.best_val for o in mine if o.config["config_rank"] == r] for r in range(len(configs))}
        means[approach] = {str(r): float(np.mean(v)) for r, v in by_rank.items() if v}
        best = max(means[approach], key=lambda r: (means[approach][r], -int(r)), default="0")
        chosen[approach] = {**configs[int(best)], "config_rank": int(best)}
    return chosen, means


def decider(plan: Plan, rho: float) -> race.Decide:
    from study.stats import race_open, verdict

    c = plan.confirm
    return lambda diffs: (verdict(diffs, c.rope, rho=rho).verdict, race_open(diffs, c.min_seeds, c.max_seeds, c.rope,
                                                                              rho=rho))


def round_configs(plan: Plan, ledger: race.Ledger, seeds: dict[str, list[int]], k: int) -> list[dict[str, Any]]:
    from study.engine import trial_seed

    return [{**ledger.candidates[a], "phase": "confirm", "confirm_seed": i, "round": k,
             "trial_seed": trial_seed(plan.seed, "confirm", i), "split_seed": split_seed(plan, i)}
            for a, seeds_ in seeds.items() for i in seeds_]


def log_networks(plan: Plan, setup: Any, ledger: race.Ledger, outcomes: list, trackers: dict) -> None:
    """Each approach's best confirmation run so far (by validation macro-F1) logs its network at its selected epoch
    (``mlflow.pytorch``, with the temperature fitted on validation): the winner becomes a model you load."""
    from study import publish
    from study.models import build_model

    data = setup.data[plan.seed]
    for approach in {o.config["approach"] for o in outcomes}:
        mine = [o for o in outcomes if o.config["approach"] == approach and o.load_best_state is not None]
        best = max(mine, key=lambda o: o.best_val, default=None)
        if best is None or best.best_val <= ledger.models.get(approach, {}).get("val", float("-inf")):
            continue
        cfg = best.config
        state = best.load_best_state()
        net = build_model(data.num_classes, cfg["model"], cfg["weights"], cfg["freeze"],
                          setup.bank.get(f"{cfg['weights']}@{cfg['backbone']}"), backbone=cfg["backbone"])
        net.load_state_dict(state["model"])
        run_id = trackers[approach].existing_child(best.trial_id, "confirm")
        if run_id is None:  # the Tune callback logs every confirmation run; without one there is nowhere to log
            continue
        publish.log_model(plan.tracking_uri, run_id, net, classes=list(data.classes), image_size=plan.budget.image_size,
                          channels=int(data.train.images.shape[1]), minority=data.minority, eval_costs=setup.eval_costs,
                          temperature=float(best.last.get("val_temperature", 1.0)), config=cfg)
        ledger.models[approach] = {"val": best.best_val, "run_id": run_id}


def register_winner(plan: Plan, ledger: race.Ledger) -> str | None:
    """The verdict's winner into MLflow's model registry as ``<space>-<approach>``: of the approaches better than
    ``baseline``, the best mean test macro-F1; none better: ``baseline``; a space without one: the best mean."""
    from study import publish

    means = {a: float(np.mean(list(v.values()))) for a, v in ledger.scores.items() if v and a in ledger.models}
    better = [a for a, v in ledger.verdicts.items() if v == "better" and a in means]
    pool = better or ([race.BASELINE] if race.BASELINE in means else list(means))
    if not pool:
        return None
    winner = max(pool, key=means.__getitem__)
    with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints two lines of its own; ours names the model
        return publish.register(plan.tracking_uri, ledger.models[winner]["run_id"], f"{plan.space}-{winner}")


def run_race(plan: Plan, setup: Any, ledger: race.Ledger, rho: float, save: Any, trackers: dict) -> list:
    """Rounds of paired confirmation seeds until no verdict against ``baseline`` is open; one Tuner per round, the
    ledger saved after each complete round (decisions only on complete rounds)."""
    from study import engine

    approaches = list(ledger.candidates)
    decide = decider(plan, rho) if race.BASELINE in approaches else None
    outcomes = []
    for done_round in ledger.rounds:  # a resumed study: the rounds it finished before, read back from their Tuners
        k = done_round["round"]
        configs = round_configs(plan, ledger, done_round["seeds"], k)
        outcomes += engine.retrain(setup, f"{plan.space}-confirm-r{k}", configs, plan.budget.epochs, resume=True,
                                   keep_best=True, only_restore=True).outcomes
    while seeds := race.next_round(ledger, approaches, plan.confirm.min_seeds, plan.confirm.max_seeds, decide):
        k = len(ledger.rounds)
        configs = round_configs(plan, ledger, seeds, k)
        print(f"confirmation round {k}: {len(configs)} runs (" + ", ".join(f"{a} {len(v)}" for a, v in seeds.items())
              + f"), {plan.budget.epochs} epochs each", flush=True)
        done = engine.retrain(setup, f"{plan.space}-confirm-r{k}", configs, plan.budget.epochs, resume=True,
                              keep_best=True)
        for o in done.outcomes:
            if o.status == "FINISHED" and "test_macro_f1" in o.last:
                ledger.scores.setdefault(o.config["approach"], {})[str(o.config["confirm_seed"])] = o.last["test_macro_f1"]
        log_networks(plan, setup, ledger, done.outcomes, trackers)
        ledger.rounds.append({"round": k, "seeds": seeds})
        save(ledger)
        engine.prune_experiment(setup.storage, f"{plan.space}-confirm-r{k}")  # what was worth keeping is logged
        outcomes += done.outcomes
    if decide is not None:
        ledger.verdicts = {a: decide(race.paired_differences(ledger, a))[0] for a in approaches if a != race.BASELINE}
    return outcomes


def summarise(values: list[float], upper: float | None = 1.0) -> dict[str, float]:
    """Mean over seeds with a 95 % interval that stays in the metric's range (``stats.bounded_interval``)."""
    from study.stats import bounded_interval

    mean, sd, low, high = bounded_interval(values, upper)
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


def finish_approach(plan: Plan, space: Space, tracker: Any, search: list, confirm: list, config: dict[str, Any] | None,
                    single_test: dict[str, Any] | None) -> dict[str, Any] | None:
    """The approach's parent run: its final config, search figures, confirmation figures, description."""
    tracker.close_children({o.trial_id: o.status for o in search + confirm})
    if config is None:
        tracker.end(tracker.parent_id, "FAILED", {"trials": str(len(search))})
        return None
    runs = [o for o in confirm if o.status == "FINISHED" and "test_macro_f1" in o.last]
    tracker.log_params(tracker.parent_id, {f"best.{k}": str(v) for k, v in config.items()
                                           if v is not None and not isinstance(v, dict)})
    best = max(search, key=lambda o: o.best_val)
    metrics: dict[str, float] = {VAL_MACRO_F1: best.best_val, "best_epoch": best.best_epoch}
    test = None
    if runs:
        for key in ("test_macro_f1", "test_minority_recall", "test_balanced_accuracy", "test_expected_cost",
                    "test_mec_expected_cost"):
            if all(key in o.last for o in runs):
                stats = summarise([o.last[key] for o in runs], None if key.endswith("expected_cost") else 1.0)
                metrics.update({f"{key}_{k}": v for k, v in stats.items() if np.isfinite(v)})
                test = stats if key == "test_macro_f1" else test
        metrics["val_macro_f1_confirm_mean"] = float(np.mean([o.best_val for o in runs]))
    elif single_test is not None:
        metrics.update({k: v for k, v in single_test.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        test = {"mean": single_test["test_macro_f1"]}
    tracker.log_metrics(tracker.parent_id, metrics)
    tracker.client.log_dict(tracker.parent_id, config, "final_config.json")
    tracker.end(tracker.parent_id, "FINISHED", {
        "final_config_rank": str(config.get("config_rank", 0)), "trials": str(len(search)),
        "confirm_runs": str(len(runs)), "searched": ",".join(space.params),
        "mlflow.note.content": describe(space.name, config, space, test, len(runs))})
    return {"approach": space.name, "config": config, "val": metrics[VAL_MACRO_F1], "test": test, "n": len(runs)}


def test_single(outcomes: list, ranked: dict[str, list[dict[str, Any]]], data: Dataset, eval_costs: np.ndarray,
                bank: dict) -> dict[str, dict]:
    """Without confirmation runs: each approach's top candidate's best-epoch checkpoint on the test split (when
    checkpoint pruning kept it)."""
    from study.trainable import build_parts, test_figures

    out = {}
    for approach, configs in ranked.items():
        best = next(o for o in outcomes if o.config == configs[0])
        if best.load_best_state is None:
            continue
        state = best.load_best_state()
        parts = build_parts(best.config, data, bank)
        parts.model.load_state_dict(state["model"])
        figures = test_figures(parts, data, eval_costs)
        out[approach] = {k: v for k, v in figures.items() if not isinstance(v, list)} | {"selected_epoch": state["epoch"]}
    return out


def _ledger_io(plan: Plan) -> tuple[race.Ledger, Any]:
    """The race's ledger (``<storage>/<study id>/race.json``) as saved so far, and a function that saves it."""
    from study import paths
    from study.plan import study_file

    where = study_file(plan.storage, plan.study_id, race.LEDGER)
    if "://" not in where:
        text = Path(where).read_text() if Path(where).is_file() else None
        return race.Ledger.from_json(text), lambda ledger: paths.write_atomic(where, ledger.to_json().encode(), "ledger")
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(where)
    found = fs.get_file_info(path).type == pyarrow.fs.FileType.File

    def save(ledger: race.Ledger) -> None:
        with fs.open_output_stream(path) as f:  # one object put: atomic on object storage
            f.write(ledger.to_json().encode())

    with (fs.open_input_stream(path) if found else open(os.devnull, "rb")) as f:
        return race.Ledger.from_json(f.read().decode() or None), save


def _phases(plan: Plan, splits: dict[int, Dataset], eval_costs: np.ndarray, bank: dict, trackers: dict) -> list:
    from study import engine
    from study.resplit import overlap_rho
    from study.trainable import CHECKPOINT_FILE, train_trial

    data = splits[plan.seed]
    setup = engine.TuneSetup(
        trainable=train_trial, data=splits, eval_costs=eval_costs, bank=bank, cpus=plan.resources.cpus_per_trial,
        gpus=plan.resources.gpus_per_trial, max_concurrent=plan.resources.max_concurrent,
        local=plan.resources.address is None, storage=f"{plan.storage}/{plan.study_id}",
        trackers=tracker_settings(plan, data), checkpoint_file=CHECKPOINT_FILE, verbose=plan.verbose)
    searched = engine.search(setup, plan.space, searches(plan, data, eval_costs), plan.budget, plan.seed, plan.resume)
    ranked = candidates(plan, searched.outcomes)
    ledger, save = _ledger_io(plan)
    raced: list = []
    single: dict[str, dict] = {}
    if plan.confirm.enabled:
        configs = race_configs(plan, ranked)
        if configs:
            print(f"race on validation: {len(configs)} runs (up to {plan.confirm.top} candidates per approach x "
                  f"{plan.confirm.race_seeds} seeds)", flush=True)
            raced = engine.retrain(setup, f"{plan.space}-race", configs, plan.budget.epochs, plan.resume).outcomes
        if not ledger.candidates:
            ledger.candidates, ledger.chosen_by = choose(ranked, raced)
            save(ledger)
        rho = overlap_rho(data) if resplits(plan) else 0.0
        confirmed = run_race(plan, setup, ledger, rho, save, trackers)
        if not ledger.finished:
            registered = register_winner(plan, ledger)
            ledger.finished = True
            save(ledger)
            if registered:
                print(f"model: {registered} (python -m study.predict --model {registered} <folder or image>)", flush=True)
    else:
        confirmed = []
        single = test_single(searched.outcomes, ranked, data, eval_costs, bank)
    results = []
    for s in plan.spaces:
        mine = [o for o in searched.outcomes + raced if o.config.get("approach") == s.name]
        theirs = [o for o in confirmed if o.config.get("approach") == s.name]
        config = ledger.candidates.get(s.name) if plan.confirm.enabled else (ranked.get(s.name) or [None])[0]
        results.append(finish_approach(plan, s, trackers[s.name], mine, theirs, config, single.get(s.name)))
    return results


def tracker_settings(plan: Plan, data: Dataset) -> dict[str, dict[str, Any]]:
    local = plan.tracking_uri.startswith("sqlite:")
    return {s.name: {"uri": plan.tracking_uri, "experiment": plan.space, "study_id": plan.study_id, "approach": s.name,
                     "artifact_root": plan.results_dir / "mlartifacts" if local else None,
                     "classes": list(data.classes), "minority": data.minority_name, "data": data.name,
                     "parent_run": plan.parent_run}
            for s in plan.spaces}


def _prepare(plan: Plan) -> tuple[dict[int, Dataset], np.ndarray]:
    splits = load_splits(plan)
    check_samplers(plan, splits[plan.seed])
    return splits, evaluation_costs(plan, splits[plan.seed])


def run_study(plan: Plan) -> int:
    """Exit code: 0 done, 1 an approach had no finished trial or the run failed, 2 bad input, 130/143 paused."""
    from study.engine import SIGNALS, Interrupted
    from study.lock import StudyLock, lock_path

    SIGNALS.reset()
    SIGNALS.install()  # Ctrl-C while the data loads is a pause too
    try:
        splits, eval_costs = _prepare(plan)
        bank = weight_bank(plan)
        with StudyLock(lock_path(plan.storage, plan.study_id, plan.results_dir), plan.study_id):
            return _guarded(plan, splits, eval_costs, bank)
    except Interrupted as stop:
        print(f"interrupted: study {plan.study_id} paused before it started; run the same command again",
              file=sys.stderr)
        return stop.code
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _guarded(plan: Plan, splits: dict[int, Dataset], eval_costs: np.ndarray, bank: dict) -> int:
    """Ray, the study's records and its phases inside the guard that closes every open run."""
    from study import engine, paths, store
    from study.plan import PLAN_FILE, mark_finished, save_plan, study_file
    from study.resplit import overlap_rho

    data = splits[plan.seed]
    print(f"data: {data.summary()}; minority: {data.minority_name}", flush=True)
    plan.results_dir.mkdir(parents=True, exist_ok=True)
    store.prepare_store(plan.tracking_uri)
    save_plan(plan, study_file(plan.storage, plan.study_id, PLAN_FILE))  # before any run: --resume finds the study
    try:
        engine.init_ray(plan.resources.address, plan.verbose)
        engine.SIGNALS.install()  # after ray.init, which sets a SIGTERM handler of its own
        gpus = engine.resolve_gpus(plan.resources.gpus_per_trial, plan.budget.image_size, plan.budget.batch_size)
        plan = replace(plan, resources=replace(plan.resources, gpus_per_trial=gpus))
        engine.check_cluster(plan.resources.gpus_per_trial, plan.resources.cpus_per_trial, plan.tracking_uri,
                             plan.storage)
        trackers = {a: store.Tracker(**t) for a, t in tracker_settings(plan, data).items()}  # parent runs first
        for tracker in trackers.values():
            tracker.client.set_tag(tracker.parent_id, "rope", str(plan.confirm.rope))
            tracker.client.set_tag(tracker.parent_id, "split_rho", str(overlap_rho(data) if resplits(plan) else 0.0))
            tracker.client.log_dict(tracker.parent_id, {"eval_costs": eval_costs.tolist(), "classes": list(data.classes)},
                                    "eval_costs.json")
            tracker.client.log_text(tracker.parent_id, plan.to_json(), PLAN_FILE)
        results = _phases(plan, splits, eval_costs, bank, trackers)
        engine.SIGNALS.deferred = True  # the finish runs to its end; a signal now waits for it
    except engine.Interrupted as stop:
        store.end_open_runs(plan.tracking_uri, plan.study_id, "KILLED")
        print(f"interrupted: study {plan.study_id} paused; finish it with the same command and --resume", file=sys.stderr)
        return stop.code
    except StudyError as err:  # a user error met after Ray started (a trial's, the cluster's): one line, exit 2
        store.end_open_runs(plan.tracking_uri, plan.study_id, "FAILED")
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BaseException:
        store.end_open_runs(plan.tracking_uri, plan.study_id, "FAILED")
        raise
    finally:
        engine.shutdown_ray()
    code = write_results(plan, results)
    paths.write_atomic((plan.report_dir or plan.results_dir / plan.space) / PLAN_FILE, plan.to_json().encode(), "plan")
    mark_finished(plan.storage, plan.study_id)
    engine.SIGNALS.deferred = False
    if engine.SIGNALS.received is not None:
        print(f"a signal arrived while study {plan.study_id} was finishing; it finished first", file=sys.stderr)
        return engine.SIGNALS.code
    return code


def write_results(plan: Plan, results: list) -> int:
    """results/<space>/ from MLflow (study.report), and the driver's last lines: each approach, the link."""
    from study import store
    from study.report import runs_table_link, write_report

    out = write_report(plan.tracking_uri, plan.space, plan.report_dir or plan.results_dir / plan.space, plan.study_id)
    verdicts = {p.approach: p.tags.get("verdict") for p in store.parents(plan.tracking_uri, plan.space, plan.study_id)}
    for r in filter(None, results):
        space = next(s for s in plan.spaces if s.name == r["approach"])
        searched = {k: r["config"][k] for k in space.params if k in r["config"]}
        test = r["test"]
        shown = "no test figures" if test is None else (
            f"test macro-F1 {test['mean']:.4f} [{test['ci_low']:.4f}, {test['ci_high']:.4f}] over {r['n']} seeds"
            if r["n"] > 1 else f"test macro-F1 {test['mean']:.4f} (one run)")
        verdict = f"; {verdicts[r['approach']]} against baseline" if verdicts.get(r["approach"]) else ""
        print(f"{r['approach']}: {shown}{verdict}; config {searched}")
    print(f"summary: {out}")
    print(f"MLflow runs table (make ui): {runs_table_link(plan.tracking_uri, plan.space, plan.study_id)}")
    return 0 if all(results) else 1

