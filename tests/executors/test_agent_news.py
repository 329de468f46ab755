"""``agent_commits``: the checkpoints an AWS agent's status names, as events (its save times
included, and an older agent's status without them)."""

from __future__ import annotations

from stormproof.core.events import CheckpointCommitted
from stormproof.executors._agent_news import agent_commits


def test_each_new_checkpoint_of_the_status_is_a_commit_with_the_agents_save_time() -> None:
    status = {
        "checkpoints": [
            {"seq": 1, "files": 2, "bytes": 300, "save_s": 0.75},
            {"seq": 2, "files": 2, "bytes": 400},  # an agent from before save times
            {"seq": 3, "files": 1, "bytes": 10, "save_s": "soon"},  # not a number
            {"seq": 4, "files": 1, "bytes": 10, "save_s": -1},
        ]
    }
    reported: set[int] = set()
    events = agent_commits(reported, "t/1", status, 50.0)
    assert events == [
        CheckpointCommitted(50.0, "t/1", 1, 2, 300, save_s=0.75),
        CheckpointCommitted(50.0, "t/1", 2, 2, 400, save_s=0.0),
        CheckpointCommitted(50.0, "t/1", 3, 1, 10, save_s=0.0),
        CheckpointCommitted(50.0, "t/1", 4, 1, 10, save_s=0.0),
    ]
    assert agent_commits(reported, "t/1", status, 60.0) == []  # each is reported once
