"""The phase machine: every transition and failure, as pure function calls."""

from __future__ import annotations

import datetime
from dataclasses import replace

import pytest

from fleet.federation.progress import Completed, Failed, RoundFinished, Started
from fleet.lifecycle import (
    DeployCollaborators,
    EmitEvent,
    EnsureFederation,
    Observation,
    Problem,
    RemoveCollaborators,
    ScaleDownFederation,
    Step,
    StopRun,
    SubmitRun,
    step,
)
from fleet.models import (
    MAX_ROUND_HISTORY,
    FederatedLearningSpec,
    FederatedLearningStatus,
    Phase,
)
from tests.fleet.specs import T0, job_spec


def _spec(min_clients: int = 2, rounds: int = 3, wait: int = 600) -> FederatedLearningSpec:
    return job_spec(min_clients, rounds, wait)


def _obs(seconds: float = 0, **changes: object) -> Observation:
    base = Observation(
        now=T0 + datetime.timedelta(seconds=seconds),
        selected_clusters=("a", "b", "c"),
        available_clusters=frozenset({"a", "b", "c"}),
        federation_ready=True,
        model_path="/models/digits/model.pt",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def _condition(status: FederatedLearningStatus, kind: str) -> tuple[str, str, str]:
    found = {c.type: c for c in status.conditions}[kind]
    return found.status, found.reason, found.last_transition_time


def _reasons(result: Step) -> list[str]:
    return [e.reason for e in result.events()]


def _running(spec: FederatedLearningSpec) -> FederatedLearningStatus:
    first = step(spec, FederatedLearningStatus(), _obs())
    return step(spec, first.status, _obs(1, run_submitted=True)).status


def test_a_new_job_waits_for_placement_and_creates_the_federation() -> None:
    spec = _spec()
    result = step(spec, FederatedLearningStatus(), _obs(placement_decided=False, selected_clusters=()))
    assert result.status.phase is Phase.WAITING
    assert result.status.total_rounds == 3
    assert result.status.observed_generation == 1
    assert _condition(result.status, "PlacementSatisfied")[:2] == ("Unknown", "PlacementPending")
    assert _condition(result.status, "Training")[:2] == ("False", "PlacementPending")
    assert EnsureFederation() in result.actions
    assert DeployCollaborators(()) in result.actions
    assert not any(isinstance(a, SubmitRun) for a in result.actions)


def test_waits_for_the_federation_then_for_collaborators() -> None:
    spec = _spec()
    result = step(spec, FederatedLearningStatus(), _obs(federation_ready=False))
    assert _condition(result.status, "Training")[:2] == ("False", "WaitingForFederation")
    assert DeployCollaborators(("a", "b", "c")) in result.actions
    result = step(spec, result.status, _obs(5, available_clusters=frozenset({"a"})))
    assert result.status.phase is Phase.WAITING
    assert _condition(result.status, "Training")[1] == "WaitingForCollaborators"
    assert "1 of 2 required collaborators available (a)" in result.status.message


def test_enough_collaborators_submit_the_run_once_and_go_running() -> None:
    spec = _spec()
    first = step(spec, FederatedLearningStatus(), _obs(available_clusters=frozenset({"a", "c"})))
    assert first.status.phase is Phase.RUNNING
    assert SubmitRun(("a", "c")) in first.actions
    assert first.status.participating_clusters == ("a", "c")
    assert first.status.started_at == "2026-01-01T00:00:00Z"
    assert {"RunSubmitted", "Running"} <= set(_reasons(first))
    again = step(spec, first.status, _obs(3, available_clusters=frozenset({"a", "c"}), run_submitted=True))
    assert not any(isinstance(a, SubmitRun) for a in again.actions)
    assert again.status == first.status  # nothing new observed: nothing changes
    assert not again.events()


def test_rounds_are_recorded_and_merge_by_number() -> None:
    spec = _spec()
    status = _running(spec)
    events = (Started(3), RoundFinished(1, ("a", "b"), {"loss": 0.5}, "2026-01-01T00:00:10Z"))
    result = step(spec, status, _obs(10, run_submitted=True, events=events))
    assert result.status.current_round == 1
    assert result.status.rounds[0].metrics == {"loss": 0.5}
    assert _reasons(result) == ["RoundCompleted"]
    # The same events read again (for example after a controller restart) change nothing.
    again = step(spec, result.status, _obs(11, run_submitted=True, events=events))
    assert again.status == result.status and not again.events()


def test_round_history_is_bounded() -> None:
    spec = _spec(rounds=MAX_ROUND_HISTORY + 20)
    events = tuple(RoundFinished(n, ("a",), {"loss": 1.0 / n}, None) for n in range(1, MAX_ROUND_HISTORY + 21))
    result = step(spec, _running(spec), _obs(10, run_submitted=True, events=events))
    assert len(result.status.rounds) == MAX_ROUND_HISTORY
    assert result.status.rounds[0].round == 21
    assert result.status.current_round == MAX_ROUND_HISTORY + 20


def test_completion_reports_the_model_and_frees_everything() -> None:
    spec = _spec()
    events = (RoundFinished(3, ("a", "b"), {"accuracy": 0.9}, None), Completed({"accuracy": 0.91}))
    result = step(spec, _running(spec), _obs(20, run_submitted=True, events=events))
    status = result.status
    assert status.phase is Phase.COMPLETED
    assert status.model_path == "/models/digits/model.pt"
    assert status.final_metrics == {"accuracy": 0.91}
    assert [r.round for r in status.rounds] == [3]  # the last round, read with the completion, is kept
    assert status.current_round == 3
    assert status.finished_at == "2026-01-01T00:00:20Z"
    assert _condition(status, "Succeeded")[:2] == ("True", "RunCompleted")
    assert RemoveCollaborators() in result.actions and ScaleDownFederation() in result.actions
    assert not any(isinstance(a, EnsureFederation | DeployCollaborators) for a in result.actions)
    assert "Completed" in _reasons(result)
    # Terminal is terminal: later steps only keep things cleaned up.
    later = step(spec, status, _obs(30, selected_clusters=(), run_submitted=True))
    assert later.status == status
    assert later.actions == (RemoveCollaborators(), ScaleDownFederation())


def test_completion_names_who_trained_and_who_left_during_the_run() -> None:
    spec = _spec()
    status = _running(spec)
    rounds = (RoundFinished(1, ("a", "b", "c"), {}, None), RoundFinished(2, ("a", "b"), {}, None))
    status = step(spec, status, _obs(5, available_clusters=frozenset({"a", "b"}), run_submitted=True, events=rounds))
    status = status.status
    done = step(spec, status, _obs(9, run_submitted=True, events=(Completed({"accuracy": 0.9}),))).status
    assert done.message == "completed: 2 rounds with a, b, c (c left during the run): accuracy=0.9"
    whole = step(spec, _running(spec), _obs(9, run_submitted=True, events=(*rounds[:1], Completed({})))).status
    assert whole.message == "completed: 1 round with a, b, c"


def test_a_failed_run_fails_the_job_with_its_reason() -> None:
    spec = _spec()
    result = step(spec, _running(spec), _obs(20, run_submitted=True, events=(Failed("out of memory"),)))
    assert result.status.phase is Phase.FAILED
    assert _condition(result.status, "Succeeded")[:2] == ("False", "RunFailed")
    assert "out of memory" in result.status.message
    assert not any(isinstance(a, StopRun) for a in result.actions)  # the run is over already
    lost = step(spec, _running(spec), _obs(20, run_submitted=True, run_failure="the run ended (stopped)"))
    assert lost.status.phase is Phase.FAILED and "the run ended (stopped)" in lost.status.message


def test_placement_change_above_the_minimum_continues_and_is_recorded() -> None:
    spec = _spec()
    status = _running(spec)
    result = step(spec, status, _obs(5, selected_clusters=("a", "c"), run_submitted=True))
    assert result.status.phase is Phase.RUNNING
    assert result.status.participating_clusters == ("a", "c")
    assert DeployCollaborators(("a", "c")) in result.actions
    assert _reasons(result) == ["CollaboratorsChanged"]


def test_below_the_minimum_mid_run_waits_then_fails_after_the_timeout() -> None:
    spec = _spec(wait=100)
    status = _running(spec)
    down = step(spec, status, _obs(10, selected_clusters=("a",), run_submitted=True))
    assert down.status.phase is Phase.WAITING
    assert _condition(down.status, "PlacementSatisfied")[:2] == ("False", "TooFewClusters")
    assert _condition(down.status, "Training") == ("False", "TooFewClusters", "2026-01-01T00:00:10Z")
    assert "BackToWaiting" in _reasons(down)
    assert not any(isinstance(a, SubmitRun) for a in down.actions)  # the run stays submitted
    # Back above the minimum in time: Running again, without a second submission.
    back = step(spec, down.status, _obs(50, run_submitted=True))
    assert back.status.phase is Phase.RUNNING and not any(isinstance(a, SubmitRun) for a in back.actions)
    # Still below after the timeout (counted from entering Waiting at t=10): Failed, the run stopped.
    still = step(spec, down.status, _obs(105, selected_clusters=("a",), run_submitted=True))
    assert still.status.phase is Phase.WAITING
    failed = step(spec, still.status, _obs(111, selected_clusters=("a",), run_submitted=True))
    assert failed.status.phase is Phase.FAILED
    assert _condition(failed.status, "Succeeded")[1] == "TooFewClusters"
    assert "waitTimeoutSeconds=100" in failed.status.message
    assert StopRun() in failed.actions and RemoveCollaborators() in failed.actions


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"placement_decided": False, "selected_clusters": ()}, "PlacementPending"),
        ({"selected_clusters": ("a",)}, "TooFewClusters"),
        ({"federation_ready": False}, "WaitingForFederation"),
        ({"available_clusters": frozenset()}, "WaitingForCollaborators"),
    ],
)
def test_waiting_too_long_fails_with_what_it_waited_for(changes: dict[str, object], reason: str) -> None:
    spec = _spec(wait=60)
    first = step(spec, FederatedLearningStatus(), _obs(0, **changes))
    assert first.status.phase is Phase.WAITING
    failed = step(spec, first.status, _obs(61, **changes))
    assert failed.status.phase is Phase.FAILED
    assert _condition(failed.status, "Succeeded")[1] == reason
    assert not any(isinstance(a, StopRun) for a in failed.actions)  # nothing was submitted


def test_an_image_pull_error_fails_at_once_when_the_minimum_cannot_be_met() -> None:
    spec = _spec()
    problem = Problem("ImagePullError", "ErrImagePull: app:1 not found")
    one = step(
        spec,
        FederatedLearningStatus(),
        _obs(available_clusters=frozenset(), collaborator_problems={"a": problem}),
    )
    assert one.status.phase is Phase.WAITING  # b and c can still make the minimum
    two = step(
        spec,
        one.status,
        _obs(1, available_clusters=frozenset(), collaborator_problems={"a": problem, "b": problem}),
    )
    assert two.status.phase is Phase.FAILED
    assert _condition(two.status, "Succeeded")[1] == "ImagePullError"
    assert "a: ErrImagePull: app:1 not found" in two.status.message


def test_condition_transition_time_changes_only_with_its_status() -> None:
    spec = _spec()
    first = step(spec, FederatedLearningStatus(), _obs(0, federation_ready=False))
    second = step(spec, first.status, _obs(30, federation_ready=False, available_clusters=frozenset({"a"})))
    assert _condition(second.status, "FederationReady")[2] == "2026-01-01T00:00:00Z"
    assert _condition(second.status, "PlacementSatisfied")[2] == "2026-01-01T00:00:00Z"
    third = step(spec, second.status, _obs(40, available_clusters=frozenset({"a"})))
    assert _condition(third.status, "FederationReady")[:3:2] == ("True", "2026-01-01T00:00:40Z")


def test_spec_change_while_waiting_is_applied_and_during_a_run_refused() -> None:
    spec = _spec()
    waiting = step(spec, FederatedLearningStatus(), _obs(federation_ready=False)).status
    changed = step(spec, waiting, _obs(1, generation=2, federation_ready=False)).status
    assert changed.observed_generation == 2
    running = step(spec, changed, _obs(2, generation=2)).status
    refused = step(spec, running, _obs(3, generation=3, run_submitted=True))
    assert refused.status.observed_generation == 2
    assert _condition(refused.status, "SpecAccepted")[:2] == ("False", "ChangedDuringRun")
    assert _reasons(refused) == ["SpecChangeRefused"]
    again = step(spec, refused.status, _obs(4, generation=3, run_submitted=True))
    assert not again.events()  # refused once, not on every step


def test_events_are_plain_kubernetes_event_fields() -> None:
    result = step(_spec(), FederatedLearningStatus(), _obs())
    for event in result.events():
        assert isinstance(event, EmitEvent)
        assert event.type in ("Normal", "Warning") and event.reason.isalnum() and event.message
