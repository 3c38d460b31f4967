"""The launcher's changes to Flower's waits, and what in Flower 1.41's own code they rely on.

The mutual TLS it adds is tested from outside the process in `test_mutual_tls.py`.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import subprocess
import sys
from typing import Any

import pytest

from fleet.federation import flower_launcher
from fleet.federation.flower_launcher import (
    IDLE_POLL_FIRST,
    IDLE_POLL_LAST,
    LOCAL_POLL,
    PULL_BACKOFF_LIMIT,
    PULL_FIRST_BACKOFF,
    AdaptiveWaits,
    LauncherError,
    check_flower_version,
)


def test_the_waits_it_changes_are_flowers_literals_in_the_loop_it_changes() -> None:
    """The stand-in matches Flower's waits by value: these are all the waits of that module in flwr 1.41.0."""
    source = inspect.getsource(importlib.import_module("flwr.supernode.start_client_internal"))
    assert source.count("time.sleep(") == 3
    assert source.count("time.sleep(3)") == 1  # after an empty pull
    assert source.count("time.sleep(0.5)") == 2  # waiting for a reply, and for an object, in local state
    assert "def _push_messages(" in source


def test_an_idle_supernode_backs_off_to_flowers_three_seconds_and_a_message_resets_it() -> None:
    slept: list[float] = []
    waits = AdaptiveWaits(sleep=slept.append)
    for _ in range(16):
        waits.sleep(3)
    assert slept[:4] == pytest.approx([0.05, 0.075, 0.1125, 0.16875])
    assert slept[0] == IDLE_POLL_FIRST and max(slept) == IDLE_POLL_LAST
    assert all(later >= earlier for earlier, later in itertools.pairwise(slept))
    # Idle for 10 s, a SuperNode pulls at most once every 3 s: no more often than Flower's own.
    elapsed = [sum(slept[: n + 1]) for n in range(len(slept))]
    assert all(wait == IDLE_POLL_LAST for wait, at in zip(slept, elapsed, strict=True) if at - wait >= 10)
    assert sum(1 for at in elapsed if 10 <= at < 20) <= 4
    waits.activity()
    slept.clear()
    waits.sleep(3)
    waits.sleep(0.5)
    waits.sleep(1.25)  # any other wait is Flower's, kept
    assert slept == [IDLE_POLL_FIRST, LOCAL_POLL, 1.25]


def test_object_pulls_start_retrying_sooner_unless_a_caller_chose_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []

    def pull_objects(*args: Any, **options: Any) -> None:
        seen.append(options)

    shortened = flower_launcher._with_short_pull_backoff(pull_objects)
    shortened(["id"], print)
    # Flower's defaults, passed on explicitly by its helpers (pull_and_inflate_object_from_tree)
    shortened(["id"], print, initial_backoff=1, backoff_cap=10)
    shortened(["id"], print, initial_backoff=0.3, backoff_cap=2)
    assert [options["initial_backoff"] for options in seen] == [PULL_FIRST_BACKOFF, PULL_FIRST_BACKOFF, 0.3]
    assert [options["backoff_cap"] for options in seen] == [PULL_BACKOFF_LIMIT, PULL_BACKOFF_LIMIT, 2]
    # Flower counts tries (500 at its 10 s cap); at the short limit the same patience needs 50 times as many: with
    # 500 an object 32 collaborators' uploads delay past ~100 s was given up on (the failed 32-collaborator row).
    assert [options.get("max_tries_per_object") for options in seen] == [25_000, 25_000, None]
    assert flower_launcher.pull_tries(500, 10) * PULL_BACKOFF_LIMIT >= 500 * 10


def test_a_missing_object_is_asked_for_again_within_the_short_limit() -> None:
    """Flower's own pull loop, wrapped: an object that turns up after 0.6 s is pulled within 0.2 s of it."""
    import time

    from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError, pull_objects

    appears = time.monotonic() + 0.6
    asked: list[float] = []

    def pull_object(object_id: str) -> bytes:
        asked.append(time.monotonic())
        if asked[-1] < appears:
            raise ObjectUnavailableError(object_id)
        return b"content"

    pulled = flower_launcher._with_short_pull_backoff(pull_objects)(["id"], pull_object)
    assert pulled == {"id": b"content"}
    gaps = [later - earlier for earlier, later in itertools.pairwise(asked)]
    assert max(gaps) < PULL_BACKOFF_LIMIT * 1.2 + 0.05  # Flower's jitter is 20%; without the limit: 0.4 s, 0.8 s
    assert asked[-1] - appears < PULL_BACKOFF_LIMIT * 1.2 + 0.05


def test_the_pull_helpers_it_wraps_call_pull_objects_by_their_module_global() -> None:
    """Wrapping a module's ``pull_objects`` only reaches callers that look the name up at call time."""
    for name in ("flwr.supercore.inflatable.inflatable_utils", "flwr.supernode.start_client_internal"):
        module = importlib.import_module(name)
        assert "pull_objects(" in inspect.getsource(module)
        assert callable(module.pull_objects)
    from flwr.supercore.constant import PULL_INITIAL_BACKOFF

    assert PULL_INITIAL_BACKOFF == 1


def test_another_flower_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flower_launcher, "version", lambda _: "1.42.0")
    with pytest.raises(LauncherError, match=r"written for flwr 1\.41\.0, found 1\.42\.0"):
        check_flower_version()


def test_an_unknown_component_exits_2() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "fleet.federation.flower_launcher", "superexec"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 2 and "usage:" in shown.stderr


def _beats_then_fails_once(calls: list[float]) -> Any:
    import time

    import httpx

    def beat() -> bool:
        calls.append(time.monotonic())
        if len(calls) == 1:  # what a busy SuperLink answers: neither a transport error nor a 502-504
            request = httpx.Request("POST", "https://superlink/v1/fleet/send-node-heartbeat")
            raise httpx.HTTPStatusError("500", request=request, response=httpx.Response(500, request=request))
        return True

    return beat


def test_a_heartbeat_answered_with_an_error_is_retried_instead_of_ending_the_heartbeat_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    connection = importlib.import_module("flwr.supernode.fleet_http_connection")
    flowers = connection.HeartbeatSender
    monkeypatch.setattr(connection, "HeartbeatSender", flowers)  # restored after the test
    # Flower's own sender: the error ends its thread, silently, and no heartbeat follows.
    calls: list[float] = []
    original = flowers(_beats_then_fails_once(calls))
    original.start()
    deadline = time.monotonic() + 5
    while original.is_running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not original.is_running and len(calls) == 1
    # Through the launcher: the failed heartbeat is retried with Flower's back-off, and the thread goes on.
    flower_launcher.keep_heartbeats_alive()
    calls = []
    sender = connection.HeartbeatSender(_beats_then_fails_once(calls))
    sender.start()
    try:
        deadline = time.monotonic() + 30
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(calls) >= 2 and sender.is_running
    finally:
        sender.stop()
