"""The chaos suite's short pass, for CI: at least 50 kills of each kind, and no violation.

Random workflows (seeded from ``FIRST_SEED``) run through the real command while the engine
kills the orchestrator, the shim, both, or signals the orchestrator, at random moments from
start-up on, then resumes until each run ends, and checks what ``engine`` lists. The full pass
(500 kills of each kind) is ``bench/chaos.py``; a violation names its seed, and
``python bench/chaos.py --seed N --runs 1`` runs that one again.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.chaos.engine import KINDS, Settings, Tally, chaos

pytestmark = pytest.mark.slow

KILLS_EACH = 50
FIRST_SEED = 1000
#: Stop starting runs after this long even if a kind is short (the assertion then says so).
MAX_S = 540.0


def enough(tally: Tally) -> bool:
    return min(tally.kills[k] for k in KINDS) >= KILLS_EACH or tally.seconds > MAX_S


def test_every_kind_of_kill_at_any_moment_loses_nothing_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    tally = chaos(itertools.count(FIRST_SEED), tmp_path, Settings(), lanes=2, enough=enough)
    print(f"{tally.runs} runs, kills {dict(tally.kills)}, {tally.seconds:.0f} s")  # -s shows it
    assert tally.violations == [], "\n".join(tally.violations[:30])
    assert all(tally.kills[k] >= KILLS_EACH for k in KINDS), dict(tally.kills)
    assert sum(tally.states.values()) == tally.runs  # every run ended
