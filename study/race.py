"""Racing: how candidates are chosen after the search and how approaches race over paired seeds.

Pure bookkeeping (standard library and the verdict rule of ``study.stats``); the runner runs the Tuners.

1. *Candidates at equal length.* ASHA lets the first trial to reach each rung run on while later ones
   stop early, so a best-over-epochs ranking favours the longest runs. Trials are compared by their
   validation macro-F1 *at* the highest rung that at least ``top`` of them reached.
2. *Within an approach* its ``top`` candidates retrain over ``race_seeds`` paired seeds on the search
   split; the best mean validation macro-F1 goes on (no test image chooses anything).
3. *Across approaches* every approach's chosen candidate gets ``min_seeds`` paired seeds (one Tuner
   per round), then each round adds one seed to every approach whose verdict against ``baseline``
   is still open, until ``max_seeds``. ``baseline`` runs every seed anyone needs. Decisions are taken
   only on complete rounds, recorded in a ledger the driver writes atomically after each round, so an
   interrupt at any moment resumes to the same verdict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

BASELINE = "baseline"
LEDGER = "race.json"


# ---------------------------------------------------------------- the search's trial count


def searched_trials(num_samples: int, n_params: int) -> int:
    """Trials drawn by the searcher (after the fixed points) for an approach searching ``n_params``:
    ``num_samples`` for one parameter, and every further parameter adds half of it (rounded up).
    A fixed configuration (no parameter) is one trial: nothing to search, the race gives it its seeds."""
    if n_params == 0:
        return 0
    return math.ceil(num_samples * (1 + (n_params - 1) / 2))


def trial_count(num_samples: int, n_params: int, n_points: int, cap: int | None = None) -> int:
    """An approach's whole search: its fixed points first, then the searched part (at least one trial);
    ``cap`` (``--smoke``) cuts it to its first trials."""
    count = max(1, n_points + searched_trials(num_samples, n_params))
    return min(count, cap) if cap else count


def rungs(grace_period: int, reduction_factor: int, max_t: int) -> list[int]:
    """ASHA's milestones (epochs at which a trial may be stopped), ascending, with ``max_t`` itself."""
    out, t = [], min(grace_period, max_t)
    while t < max_t:
        out.append(t)
        t *= reduction_factor
    return out + [max_t]


# ---------------------------------------------------------------- candidates at equal training length


@dataclass(frozen=True)
class Trial:
    """What ranking needs of one finished search trial."""

    trial_id: str
    config: dict[str, Any]
    history: dict[int, float]  # epoch -> validation macro-F1


def comparison_epoch(trials: Sequence[Trial], milestones: Sequence[int], top: int) -> int:
    """The highest milestone that at least ``min(top, len(trials))`` trials reached (0: no trial reported)."""
    need = min(top, len(trials))
    reached = [e for e in milestones if sum(1 for t in trials if e in t.history) >= need]
    return max(reached, default=0) if need else 0


def rank_candidates(trials: Sequence[Trial], milestones: Sequence[int], top: int) -> tuple[int, list[Trial]]:
    """``(epoch, ranked)``: trials that reached ``epoch`` by their validation macro-F1 at that epoch, best first
    (ties: the earlier trial id), then the others by their value at their own last milestone."""
    epoch = comparison_epoch(trials, milestones, top)
    if epoch == 0:
        return 0, []
    level = sorted((t for t in trials if epoch in t.history), key=lambda t: (-t.history[epoch], t.trial_id))

    def last_milestone(t: Trial) -> float:
        seen = [e for e in milestones if e in t.history]
        return t.history[seen[-1]] if seen else float("-inf")

    rest = sorted((t for t in trials if epoch not in t.history and t.history), key=lambda t: (-last_milestone(t), t.trial_id))
    return epoch, level + rest


# ---------------------------------------------------------------- the race across approaches


@dataclass
class Ledger:
    """The race's record, written after every complete round: ``--resume`` continues from it."""

    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)  # approach -> its chosen config
    chosen_by: dict[str, dict[str, float]] = field(default_factory=dict)  # approach -> candidate rank -> race val mean
    rounds: list[dict[str, Any]] = field(default_factory=list)  # [{"round": k, "seeds": {approach: [seed, ...]}}]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # approach -> str(seed) -> test macro-F1
    verdicts: dict[str, str] = field(default_factory=dict)  # approach -> verdict when decided
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # approach -> {val, run_id} of its logged network
    finished: bool = False

    def seeds(self, approach: str) -> list[int]:
        return sorted(int(s) for s in self.scores.get(approach, {}))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Ledger:
        return cls(**json.loads(text)) if text else cls()


Decide = Callable[[list[float]], tuple[str, bool]]  # paired differences -> (verdict, still open)


def paired_differences(ledger: Ledger, approach: str, baseline: str = BASELINE) -> list[float]:
    mine, base = ledger.scores.get(approach, {}), ledger.scores.get(baseline, {})
    return [mine[s] - base[s] for s in sorted(set(mine) & set(base), key=int)]


def open_approaches(ledger: Ledger, decide: Decide, baseline: str = BASELINE) -> list[str]:
    """Approaches whose verdict against ``baseline`` is still open (the baseline itself never is)."""
    return [a for a in ledger.candidates if a != baseline and decide(paired_differences(ledger, a, baseline))[1]]


def next_round(ledger: Ledger, approaches: Sequence[str], min_seeds: int, max_seeds: int, decide: Decide | None,
               baseline: str = BASELINE) -> dict[str, list[int]]:
    """The seeds each approach runs in the next round (empty: the race is over).

    The first round gives everyone ``min_seeds``; then one more seed for every approach still open,
    and for ``baseline`` whatever seed an open approach needs. Without a baseline (or ``decide`` None)
    every approach stops at ``min_seeds``."""
    have = {a: ledger.seeds(a) for a in approaches}
    if not ledger.rounds:
        return {a: list(range(min_seeds)) for a in approaches}
    if decide is None or baseline not in approaches:
        return {}
    out: dict[str, list[int]] = {}
    for a in open_approaches(ledger, decide, baseline):
        if len(have[a]) < max_seeds:
            out[a] = [len(have[a])]
    needed = sorted({s for seeds in out.values() for s in seeds} - set(have.get(baseline, [])))
    if needed:
        out[baseline] = needed
    return out
