"""study.board: the analysis across data sets on a synthetic table (no study runs), its files, and the command
line's bad-input rows (one line, exit 2, nothing written)."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from study import board
from study.stats import BETTER, EQUIVALENT, UNDECIDED, WORSE

NSAMPLES = 10_000  # baycomp's posterior samples: enough for probabilities far from the threshold, fast


def synthetic(n_data: int = 6) -> dict[str, dict[str, float]]:
    """Data sets x 4 approaches: ``strong`` 0.08 above baseline everywhere, ``same`` identical to it, ``noisy``
    scattered around it by more than the rope in both directions."""
    rng = np.random.default_rng(7)
    base = rng.uniform(0.55, 0.85, n_data)
    noise = np.where(np.arange(n_data) % 2 == 0, 0.05, -0.05)
    return {f"d{i}": {"baseline": float(b), "same": float(b), "strong": float(b + 0.08), "noisy": float(b + e)}
            for i, (b, e) in enumerate(zip(base, noise, strict=False))}


@pytest.fixture(scope="module")
def ranking() -> board.Ranking:
    return board.rank_approaches(synthetic(), rope=0.02, nsamples=NSAMPLES)


def test_the_clearly_better_approach_ranks_first_and_the_friedman_test_sees_it(ranking: board.Ranking) -> None:
    assert list(ranking.mean_ranks)[0] == "strong" and ranking.mean_ranks["strong"] == 1.0
    # baseline and same tie on every data set (2.5 or 3.5 each, by where noisy falls): they share a mean rank
    assert ranking.mean_ranks["baseline"] == ranking.mean_ranks["same"]
    assert ranking.omnibus == "friedman" and ranking.p_value < 0.01
    assert ranking.cd == pytest.approx(1.915, abs=0.01)  # Nemenyi: q(0.05, k=4) * sqrt(k (k+1) / (6 N)), N = 6
    assert all(a == "strong" for a, _ in ranking.differ) and ("strong", "baseline") in ranking.differ


def test_the_bayesian_verdicts_against_baseline(ranking: board.Ranking) -> None:
    verdicts = {c.approach: c for c in ranking.comparisons}
    assert set(verdicts) == {"same", "strong", "noisy"}
    assert verdicts["strong"].verdict == BETTER and verdicts["strong"].p_better > 0.95
    assert verdicts["strong"].mean_delta == pytest.approx(0.08)
    assert verdicts["same"].verdict == EQUIVALENT and verdicts["same"].p_equivalent == pytest.approx(1.0)
    assert verdicts["noisy"].verdict == UNDECIDED  # three data sets 0.05 above, three 0.05 below
    for c in ranking.comparisons:
        assert c.p_better + c.p_equivalent + c.p_worse == pytest.approx(1.0)


def test_a_clearly_worse_approach_is_worse() -> None:
    means = {d: {**per, "strong": per["baseline"] - 0.08} for d, per in synthetic().items()}
    worse = next(c for c in board.rank_approaches(means, nsamples=NSAMPLES).comparisons if c.approach == "strong")
    assert worse.verdict == WORSE and worse.p_worse > 0.95


@pytest.mark.parametrize(("p", "word"), [((0.95, 0.05, 0.0), BETTER), ((0.0, 0.04, 0.96), WORSE),
                                          ((0.02, 0.97, 0.01), EQUIVALENT), ((0.6, 0.3, 0.1), UNDECIDED),
                                          ((0.949, 0.051, 0.0), UNDECIDED)])
def test_verdict_words_at_the_threshold(p: tuple[float, float, float], word: str) -> None:
    assert board.verdict_of(*p) == word


def test_fewer_than_five_data_sets_get_mean_ranks_and_no_friedman_test() -> None:
    means = dict(list(synthetic().items())[:4])
    ranking = board.rank_approaches(means, nsamples=NSAMPLES)
    assert list(ranking.mean_ranks)[0] == "strong" and ranking.omnibus == "" and math.isnan(ranking.p_value)
    assert ranking.note == "no Friedman test: 4 data sets (it needs at least 5)"
    assert board.cd_figure(ranking) is None


def test_an_approach_missing_on_a_data_set_is_left_out_and_named() -> None:
    means = synthetic()
    del means["d3"]["noisy"]
    means["d4"]["same"] = float("nan")
    ranking = board.rank_approaches(means, nsamples=NSAMPLES)
    assert ranking.left_out == {"same": ["d4"], "noisy": ["d3"]}
    assert list(ranking.table.columns) == ["baseline", "strong"]
    assert ranking.note == "no Friedman test: 2 approaches (it needs 3)"


def test_the_board_files(ranking: board.Ranking, tmp_path: Path) -> None:
    means = synthetic()
    seeds = {d: {a: {0: v - 0.01, 1: v + 0.01} for a, v in per.items()} for d, per in means.items()}
    studies = {d: f"core-{d}" for d in means}
    written = board.write_board(tmp_path, ranking, means, seeds, studies, {"broken": "the study exited with code 2"},
                                "python -m study.board ...")
    assert [p.name for p in written] == ["board.md", "board.csv", "cd_diagram.png"]
    assert (tmp_path / "cd_diagram.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "board.md").read_text()
    assert "Left out (the study failed): **broken**: the study exited with code 2" in md
    assert re.search(r"\| strong \| \+0\.080 \| 1\.000 \| 0\.000 \| 0\.000 \| better \|", md), md
    assert re.search(r"\| same \| \+0\.000 \| 0\.000 \| 1\.000 \| 0\.000 \| practically equivalent \|", md), md
    assert re.search(r"Friedman test over 6 data sets and 4 approaches: p = \S+ \(level 0\.05\)\. Nemenyi post-hoc: "
                     r"critical difference 1\.91 in mean rank; pairs further apart: strong > ", md), md
    rows = list(csv.DictReader(open(tmp_path / "board.csv")))
    assert len(rows) == 6 * 4 + 1 and rows[-1]["status"] == "failed: the study exited with code 2"
    d0 = {r["approach"]: r for r in rows if r["data_set"] == "d0"}
    assert d0["strong"]["rank"] == "1.0" and d0["strong"]["n_seeds"] == "2" and d0["strong"]["study_id"] == "core-d0"
    assert float(d0["strong"]["test_macro_f1_mean"]) == pytest.approx(means["d0"]["strong"])


# ---------------------------------------------------------------- the command line

BOARD = ["--space", "baseline", "--smoke", "--data", "digits,digits_lt", "--confirm-seeds", "2"]


def _one_error_line(capsys: pytest.CaptureFixture[str], message: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(message, err), err


@pytest.mark.parametrize(("argv", "message"), [
    (["--space", "core", "--data", "animals"],
     r"^error: --data needs at least 2 data sets, e.g. animals,digits \(the Friedman test and its diagram need 5\), "
     r"got 'animals'$"),
    (["--space", "core", "--data", "digits,digits"], r"^error: --data lists a data set twice: 'digits,digits'$"),
    (["--space", "core", "--data", "digits,nope"], r"^error: unknown data set 'nope'; choose one of: animals, "),
    (["--space", "core", "--data", "a/x,b/x"],
     r"^error: --data: 'a/x' and 'b/x' would both be called 'x' on the board; give the folders different names$"),
    (["--space", "core", "--data", "digits,digits_lt", "--counts", "3=1"],
     r"^error: --counts cannot be used on a board: it names one data set's classes$"),
    (["--space", "core", "--data", "digits,digits_lt", "--plan", "p.json"],
     r"^error: --plan cannot be used on a board: a plan holds one data set$"),
    (["--space", "core", "--data", "digits,digits_lt", "--resume"],
     r"^error: --resume: no board to resume in \S+/results/board \(no board.json\); start it without --resume$"),
    (["--space", "core"], r"^error: the following arguments are required: --data$"),
    (["--data", "digits,digits_lt"], r"^error: --space is required, e.g. --space core$"),
    (["--space", "nope", "--data", "digits,digits_lt"], r"^error: unknown space 'nope'; choose one of: "),
    (["--space", "core", "--data", "digits,digits_lt", "--num-samples", "0"],
     r"^error: --num-samples must be in 1..10000, got 0$"),
    (["--space", "core", "--data", "digits,digits_lt", "--out", "file"],
     r"^error: --out file: \S+/file is not a folder \(a regular file\)$"),
])
def test_bad_boards_are_one_line_exit_2_and_write_nothing(argv: list[str], message: str, capsys, tmp_path: Path,
                                                          monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("file").write_text("mine")
    assert board.main(argv) == 2
    _one_error_line(capsys, message)
    assert [p.name for p in tmp_path.iterdir()] == ["file"] and Path("file").read_text() == "mine"


@pytest.fixture()
def studies(monkeypatch, tmp_path: Path):
    """Each data set's study replaced by a fake that returns the next code given, and its scores read from a
    synthetic table instead of MLflow (the store itself real); the calls. Signal handlers restored after."""
    import signal

    from study import runner
    from study.engine import SIGNALS

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(board, "NSAMPLES", NSAMPLES)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    calls: list[dict] = []
    codes: list = []
    table = synthetic(2)

    def fake(plan) -> int:
        calls.append({"data": plan.data, "study_id": plan.study_id, "resume": plan.resume,
                      "parent_run": plan.parent_run})
        code = codes.pop(0)
        if isinstance(code, Exception):
            raise code
        return code

    def scores(uri: str, space: str, study_id: str):
        i = next(n for n, c in enumerate(calls) if c["study_id"] == study_id) % 2
        return table[f"d{i}"], {a: {0: v} for a, v in table[f"d{i}"].items()}

    monkeypatch.setattr(runner, "run_study", fake)
    monkeypatch.setattr(board, "read_scores", scores)
    yield calls, codes
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    SIGNALS.received, SIGNALS.deferred, SIGNALS.in_fit = None, False, False


def _board_runs(tmp_path: Path) -> dict[str, str]:
    """'board' and each data set's run: its status; each data set's run checked to nest under the board's."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    found = c.search_runs([c.get_experiment_by_name("baseline").experiment_id], "tags.board_id != ''")
    top = next(r for r in found if r.data.tags["role"] == "board")
    data = [r for r in found if r.data.tags["role"] == "board_data"]
    assert all(r.data.tags["mlflow.parentRunId"] == top.info.run_id for r in data)
    return {"board": top.info.status, **{r.data.tags["data_set"]: r.info.status for r in data}}


def test_a_paused_board_resumes_the_current_data_set_and_names_those_that_fail(studies, capsys, tmp_path: Path) -> None:
    calls, codes = studies
    argv = [a if a != "digits,digits_lt" else "digits,digits_lt,animals" for a in BOARD]
    codes += [0, 130]  # digits finishes, digits_lt pauses (Ctrl-C in its study)
    assert board.main(argv) == 130
    state = json.loads((tmp_path / "results" / "board" / "board.json").read_text())
    assert capsys.readouterr().err.endswith(
        f"interrupted: board {state['board_id']} paused at data set digits_lt; finish it with the same command and "
        "--resume (finished data sets are skipped, digits_lt resumes)\n")
    assert _board_runs(tmp_path) == {"board": "KILLED", "digits": "FINISHED", "digits_lt": "KILLED"}
    assert calls[0]["parent_run"] == state["runs"]["digits"]["run_id"]
    assert not (tmp_path / "results" / "board" / "board.md").exists()

    codes += [RuntimeError("CUDA out of memory"), 2]  # the resumed digits_lt crashes, animals' study exits 2
    assert board.main([*argv, "--resume"]) == 1
    assert len(calls) == 4 and calls[2] == {**calls[1], "resume": True}  # the same study under the same run
    captured = capsys.readouterr()
    assert "board: data set digits done" in captured.out
    assert "RuntimeError: CUDA out of memory" in captured.err  # the traceback, for whoever fixes it
    assert captured.out.endswith("(2 data sets failed: digits_lt, animals)\n")
    assert _board_runs(tmp_path) == {"board": "FINISHED", "digits": "FINISHED", "digits_lt": "FAILED",
                                     "animals": "FAILED"}
    md = (tmp_path / "results" / "board" / "board.md").read_text()
    assert "Command: `python -m study.board --space baseline --smoke --data digits,digits_lt,animals" in md
    assert "Left out (the study failed): **digits_lt**: RuntimeError: CUDA out of memory" in md
    assert "Left out (the study failed): **animals**: the study exited with code 2" in md
    assert "No Friedman test: 1 data sets (it needs at least 5); the mean ranks above are all there is." in md
    rows = list(csv.DictReader(open(tmp_path / "results" / "board" / "board.csv")))
    assert {r["data_set"] for r in rows if r["status"] == "ranked"} == {"digits"}

    assert board.main([*argv, "--resume"]) == 0  # finished: says so, runs nothing
    assert len(calls) == 4 and "is already finished; nothing to resume" in capsys.readouterr().out
