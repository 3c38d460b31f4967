"""The warm executor's schedule of asks for tasks: soon after a task ended, rarely when nothing is expected.

Its forks run in every real local federation (`test_local.py`, `test_mutual_tls.py`).
"""

from __future__ import annotations

import itertools

from fleet.federation import executor
from fleet.federation.executor import _POLL_FIRST, _POLL_LAST, _Polls

NODE = ("flwr-clientapp", "127.0.0.1:9094")
OTHER = ("flwr-clientapp", "127.0.0.1:9095")


def _asks(polls: _Polls, key: tuple[str, str], start: float, until: float, step: float = 0.001) -> list[float]:
    """The times at which the executor's loop would ask ``key`` between ``start`` and ``until``, finding nothing."""
    asked = []
    for tick in range(int((until - start) / step)):
        now = start + tick * step
        if polls.due(key, now):
            polls.asked(key, now, found=False)
            asked.append(now)
    return asked


def test_a_component_is_asked_at_once_and_then_less_often_up_to_the_limit() -> None:
    polls = _Polls([NODE])
    asked = _asks(polls, NODE, 0.0, 10.0)
    gaps = [later - earlier for earlier, later in itertools.pairwise(asked)]
    assert asked[0] == 0.0
    assert gaps[0] < 2 * _POLL_FIRST + 0.002
    assert all(later >= earlier - 0.002 for earlier, later in itertools.pairwise(gaps))
    assert max(gaps) <= _POLL_LAST + 0.002
    # Idle, at most 1 / _POLL_LAST asks a second (a fixed 0.1 s poll asked 10 times a second).
    assert sum(1 for at in asked if 5 <= at < 10) <= 5 / _POLL_LAST + 1


def test_after_a_task_ends_its_component_is_asked_again_within_the_first_wait() -> None:
    polls = _Polls([NODE, OTHER])
    _asks(polls, NODE, 0.0, 3.0)
    _asks(polls, OTHER, 0.0, 3.0)
    polls.asked(NODE, 3.0, found=True)  # a task: its ClientApp runs now
    assert not polls.due(NODE, 3.0 + _POLL_LAST - 0.001)
    assert polls.due(NODE, 3.0 + _POLL_LAST)  # still asked while it runs, at the limit
    polls.task_ended(NODE, 5.0)
    assert not polls.due(NODE, 5.0 + _POLL_FIRST / 2)
    assert polls.due(NODE, 5.0 + _POLL_FIRST)
    assert not polls.due(OTHER, 3.0 + 0.001)  # the other component keeps its own schedule


def test_an_unreachable_component_is_asked_again_after_the_retry_wait() -> None:
    polls = _Polls([NODE])
    polls.failed(NODE, 1.0)
    assert not polls.due(NODE, 1.0 + executor._RETRY_SECONDS - 0.001)
    assert polls.due(NODE, 1.0 + executor._RETRY_SECONDS)
