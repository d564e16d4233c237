"""Chaos on a simulated cluster (benchmarks/chaos.py): trial workers SIGKILLed, the driver SIGKILLed and sent
SIGINT, each followed at once by --resume; the records must come out exact."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import chaos  # noqa: E402


def _checked(cfg: chaos.Config, work: Path) -> chaos.Tally:
    tally, checks, _, _ = chaos.run(cfg, work)
    assert chaos.failures(checks) == [], "\n".join(tally.events)
    return tally


@pytest.mark.e2e  # 149 s idle at 3 epochs with a SIGINT too, 117 s at 2 (make test, 2026-12-06); the SIGINT went
def test_a_study_survives_a_worker_kill_and_a_driver_sigkill(tmp_path: Path) -> None:
    tally = _checked(chaos.short_config(), tmp_path)
    assert tally.driver_sigkills + tally.driver_sigints >= 1 and tally.resumes >= 1, tally.events
    assert tally.exits[-1] == 0 and set(tally.exits[:-1]) <= {chaos.PAUSED, -9}, tally.exits


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_the_long_chaos_run_keeps_the_records_exact(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    expr = request.config.option.markexpr
    if "slow" not in expr or "not slow" in expr:  # make test runs every marker: this one only with -m slow
        pytest.skip("the long chaos run: make test-slow")
    tally = _checked(chaos.Config(), tmp_path)
    kills = tally.worker_kills + tally.nodes_removed + tally.driver_sigkills + tally.driver_sigints
    assert kills >= 10, tally.events


def test_the_report_lists_each_check_and_the_run_statuses_apart() -> None:
    """The long run's report once died on the statuses entry (a dict, not a check) after 484 s of chaos."""
    checks = {"no run RUNNING": (True, "RUNNING: []"), "no child run FAILED": (False, "FAILED: ['search:t1']"),
              "_statuses": {"search:FINISHED": 5, "search:FAILED": 1}}
    text = chaos.markdown(chaos.Config(), chaos.Tally(exits=[-9, 0]), checks, 484.0, ["--space", "chaos"], "python x")
    assert "| no run RUNNING | pass | RUNNING: [] |" in text
    assert "| no child run FAILED | **FAIL** | FAILED: ['search:t1'] |" in text
    assert 'Run statuses (phase:status): {"search:FAILED": 1, "search:FINISHED": 5}' in text
    assert chaos.failures(checks) == ["no child run FAILED: FAILED: ['search:t1']"]
