"""The phase machine of a federated-learning job: one for the hub and for this machine.

The in-cluster controller drives each FederatedLearning resource with it (Kubernetes objects); ``fleet run``
drives its local federation with it through `fleet.federation.status.StatusRecorder` (processes). Both write
the same phases, conditions, reasons and messages, and both submit the run when `step` says `SubmitRun`.

Contract: `step` is a pure function. Given the job's spec, its current `FederatedLearningStatus` and an
`Observation` of the world (which clusters Placement selected, which of them have a collaborator up, whether
the federation is ready, whether a run was submitted, the progress events read since the last step, the
time), it returns a `Step`: the next status and the `Action`\\s the caller must carry out. It does no I/O
and reads no clock; calling it again with the same inputs gives the same result, and feeding its status back
in with nothing new observed changes nothing (so a caller may run it as often as it likes, and after a
restart).

The caller owns the I/O: the controller turns actions into Kubernetes objects and API calls (a local caller
would turn them into processes). A caller must tell `step` the run was submitted (``run_submitted``) once it has acted
on `SubmitRun`, and keep feeding progress events; events already applied may be fed again (rounds merge by
number).

Phases: Waiting -> Running -> Completed | Failed. Running needs the federation ready and at least
``minAvailableClients`` selected clusters with an available collaborator. When clusters come and go mid-run
the job continues while the minimum holds, and falls back to Waiting below it; the run stays submitted. A
job Waiting for longer than ``waitTimeoutSeconds`` (counted from when it last entered Waiting, kept as the
Training condition's lastTransitionTime) fails with the reason it was waiting for. A collaborator whose
image cannot be pulled fails the job at once if the clusters left cannot reach the minimum.

Spec changes: handled while the job waits and no run was submitted (the new generation is observed, the
caller re-creates what it derives from the spec); refused once a run was submitted: the running job keeps
the generation it started with, ``observedGeneration`` stays there and the SpecAccepted condition says so.
To change a running job, delete it and create it anew.

Conditions: PlacementSatisfied, FederationReady, Training, Succeeded, SpecAccepted; lastTransitionTime
changes only when a condition's status does.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from fleet.federation.progress import Completed, Event, Failed, RoundFinished, Started
from fleet.models import (
    MAX_ROUND_HISTORY,
    Condition,
    FederatedLearningSpec,
    FederatedLearningStatus,
    Phase,
    RoundStatus,
)

PLACEMENT_SATISFIED = "PlacementSatisfied"
FEDERATION_READY = "FederationReady"
TRAINING = "Training"
SUCCEEDED = "Succeeded"
SPEC_ACCEPTED = "SpecAccepted"

TERMINAL = frozenset({Phase.COMPLETED, Phase.FAILED})

ConditionStatus = Literal["True", "False", "Unknown"]
EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Problem:
    """Why one collaborator cannot start (from its workload's status): a reason in CamelCase and a message."""

    reason: str
    message: str


@dataclass(frozen=True)
class Observation:
    now: datetime.datetime
    """The time of this observation (aware, UTC)."""
    generation: int = 1
    """The spec's generation (``metadata.generation``; a local run has only 1)."""
    placement_decided: bool = True
    """False while the Placement has made no decision yet."""
    selected_clusters: tuple[str, ...] = ()
    """Clusters the Placement selected, in decision order."""
    available_clusters: frozenset[str] = frozenset()
    """Clusters whose collaborator reports available (may include clusters no longer selected)."""
    collaborator_problems: Mapping[str, Problem] = field(default_factory=dict)
    """Cluster -> why its collaborator cannot start (for example an image that cannot be pulled)."""
    federation_ready: bool = False
    """The aggregator (Flower's SuperLink, OpenFL's aggregator) is up and reachable."""
    run_submitted: bool = False
    events: tuple[Event, ...] = ()
    """Progress events read since the last step (re-reading old ones is harmless)."""
    run_failure: str | None = None
    """The run ended without a ``completed`` event, or could not be submitted: why."""
    model_path: str = ""
    """Where the final model is written, reported once the run completes."""


@dataclass(frozen=True)
class EnsureFederation:
    """Create (or keep) the aggregator: certificates, its Deployment and Service, listeners, model storage."""


@dataclass(frozen=True)
class DeployCollaborators:
    """Run a collaborator on exactly these clusters; remove it from any other."""

    clusters: tuple[str, ...]


@dataclass(frozen=True)
class SubmitRun:
    """Start the run (once; then report ``run_submitted``): submitted to Flower's SuperLink; OpenFL's aggregator
    runs its plan from its start."""

    clusters: tuple[str, ...]


@dataclass(frozen=True)
class StopRun:
    """Stop a submitted run that is still going (the job failed for another reason)."""


@dataclass(frozen=True)
class RemoveCollaborators:
    """Remove every collaborator, freeing the clusters."""


@dataclass(frozen=True)
class ScaleDownFederation:
    """Stop the aggregator, keeping the model storage."""


@dataclass(frozen=True)
class EmitEvent:
    type: EventType
    reason: str
    message: str


Action = (
    EnsureFederation | DeployCollaborators | SubmitRun | StopRun | RemoveCollaborators | ScaleDownFederation | EmitEvent
)


@dataclass(frozen=True)
class Step:
    status: FederatedLearningStatus
    actions: tuple[Action, ...]

    def events(self) -> list[EmitEvent]:
        return [a for a in self.actions if isinstance(a, EmitEvent)]


def rfc3339(moment: datetime.datetime) -> str:
    """``2026-11-21T05:50:00Z``: the form Kubernetes writes times in."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def step(spec: FederatedLearningSpec, status: FederatedLearningStatus, observation: Observation) -> Step:
    """The next status of a job and what to do about it; see the module docstring for the contract."""
    return _Stepper(spec, status, observation).run()


class _Stepper:
    def __init__(self, spec: FederatedLearningSpec, status: FederatedLearningStatus, observation: Observation) -> None:
        self.spec = spec
        self.before = status
        self.obs = observation
        self.now = rfc3339(observation.now)
        self.minimum = spec.server.min_available_clients
        self.phase = status.phase
        self.fields: dict[str, object] = {}
        self.conditions = {c.type: c for c in status.conditions}
        self.actions: list[Action] = []
        self.rounds = {r.round: r for r in status.rounds}

    # --- the machine --------------------------------------------------------------------------------------

    def run(self) -> Step:
        if self.before.phase in TERMINAL:
            self._spec_generation(running=True)
            self.actions += [RemoveCollaborators(), ScaleDownFederation()]
            return self._result()
        if not self.before.total_rounds:
            self.fields["total_rounds"] = self.spec.server.rounds
        self._spec_generation(running=self.obs.run_submitted)

        selected = self.obs.selected_clusters
        self.actions += [EnsureFederation(), DeployCollaborators(selected)]
        self._placement_condition(selected)
        self._federation_condition()

        outcome = self._apply_events()
        if isinstance(outcome, Completed):
            return self._complete(outcome)
        if isinstance(outcome, Failed):
            return self._fail("RunFailed", f"the run failed: {outcome.reason}", stop_run=False)
        if self.obs.run_failure is not None:
            return self._fail("RunFailed", self.obs.run_failure, stop_run=False)

        problem = self._collaborator_failure(selected)
        if problem is not None:
            return self._fail(*problem, stop_run=True)

        available = tuple(c for c in selected if c in self.obs.available_clusters)
        if self.obs.federation_ready and len(available) >= self.minimum:
            self._running(available)
        else:
            waited_too_long = self._waiting(selected, available)
            if waited_too_long is not None:
                return self._fail(*waited_too_long, stop_run=True)
        return self._result()

    def _running(self, available: tuple[str, ...]) -> None:
        if not self.obs.run_submitted:
            self.actions.append(SubmitRun(available))
            self._event("Normal", "RunSubmitted", f"submitting the run with {_names(available)}")
        if self.phase is not Phase.RUNNING:
            self._event("Normal", "Running", f"training with {_names(available)} ({self.spec.server.rounds} rounds)")
        elif available != self.before.participating_clusters:
            self._event(
                "Normal",
                "CollaboratorsChanged",
                f"continuing with {_names(available)} (was {_names(self.before.participating_clusters)}; "
                f"minimum {self.minimum})",
            )
        self.phase = Phase.RUNNING
        self.fields["participating_clusters"] = available
        if self.before.started_at is None:
            self.fields["started_at"] = self.now
        current = self.fields.get("current_round", self.before.current_round)
        message = f"round {current} of {self.spec.server.rounds} done; training with {_names(available)}"
        self._condition(TRAINING, "True", "Training", message)
        self.fields["message"] = message

    def _waiting(self, selected: tuple[str, ...], available: tuple[str, ...]) -> tuple[str, str] | None:
        """Set the Waiting status; the failure (reason, message) once the job has waited too long."""
        if not self.obs.placement_decided:
            reason, message = "PlacementPending", "waiting for the Placement to decide"
        elif len(selected) < self.minimum:
            reason = "TooFewClusters"
            message = (
                f"placement selected {len(selected)} cluster(s) ({_names(selected)}); "
                f"minAvailableClients is {self.minimum}"
            )
        elif not self.obs.federation_ready:
            reason, message = (
                "WaitingForFederation",
                "waiting for the aggregator to become available",
            )
        else:
            reason = "WaitingForCollaborators"
            message = (
                f"{len(available)} of {self.minimum} required collaborators available ({_names(available)}); "
                f"waiting for {_names([c for c in selected if c not in available])}"
            )
        if self.phase is Phase.RUNNING:
            self._event("Warning", "BackToWaiting", f"below the minimum, the job waits: {message}")
        self.phase = Phase.WAITING
        self.fields["participating_clusters"] = available
        self._condition(TRAINING, "False", reason, message)
        self.fields["message"] = message

        since = parse_time(self.conditions[TRAINING].last_transition_time)
        waited = (self.obs.now - since).total_seconds()
        timeout = self.spec.wait_timeout_seconds
        if waited < timeout:
            return None
        hints = {
            "PlacementPending": "check the Placement's events and the namespace's ManagedClusterSetBindings",
            "TooFewClusters": "add clusters that claim the dataset, or lower minAvailableClients",
            "WaitingForFederation": "check the aggregator Deployment's pods and events on the hub",
            "WaitingForCollaborators": "check the ManifestWork status of the collaborators not available",
        }
        return reason, f"waited {waited:.0f} s (waitTimeoutSeconds={timeout}): {message}; {hints[reason]}"

    def _collaborator_failure(self, selected: tuple[str, ...]) -> tuple[str, str] | None:
        problems = {c: p for c, p in self.obs.collaborator_problems.items() if c in selected}
        if not problems or len(selected) < self.minimum:
            return None
        healthy = [c for c in selected if c not in problems]
        if len(healthy) >= self.minimum:
            return None
        reasons = sorted({p.reason for p in problems.values()})
        details = "; ".join(f"{c}: {p.message}" for c, p in sorted(problems.items()))
        return (
            reasons[0] if len(reasons) == 1 else "CollaboratorsFailed",
            f"only {len(healthy)} of {len(selected)} selected clusters can start a collaborator "
            f"(minAvailableClients {self.minimum}): {details}",
        )

    def _apply_events(self) -> Completed | Failed | None:
        for event in self.obs.events:
            if isinstance(event, Started):
                continue
            if isinstance(event, RoundFinished):
                is_new = event.round not in self.rounds
                self.rounds[event.round] = RoundStatus(
                    round=event.round,
                    participants=event.participants,
                    metrics=event.metrics,
                    finished_at=event.time or self.now,
                )
                if is_new:
                    metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(event.metrics.items()))
                    self._event(
                        "Normal",
                        "RoundCompleted",
                        f"round {event.round}/{self.spec.server.rounds} aggregated from "
                        f"{_names(event.participants)}" + (f": {metrics}" if metrics else ""),
                    )
            else:
                self._keep_rounds()
                return event
        self._keep_rounds()
        return None

    def _keep_rounds(self) -> None:
        if self.rounds:
            kept = tuple(self.rounds[n] for n in sorted(self.rounds))[-MAX_ROUND_HISTORY:]
            self.fields["rounds"] = kept
            self.fields["current_round"] = max(self.before.current_round, kept[-1].round)

    def _complete(self, event: Completed) -> Step:
        rounds = self.fields.get("current_round", self.before.current_round)
        participants = sorted({p for r in self.rounds.values() for p in r.participants})
        plural = "" if rounds == 1 else "s"
        message = f"{rounds} round{plural} with {_names(participants or self.before.participating_clusters)}"
        remaining = self.before.participating_clusters
        left = [c for c in participants if c not in remaining]
        if left and remaining:
            message += f" ({_names(left)} left during the run)"
        if event.metrics:
            message += ": " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(event.metrics.items()))
        self.phase = Phase.COMPLETED
        self.fields.update(
            model_path=self.obs.model_path,
            final_metrics=event.metrics,
            finished_at=self.now,
            message=f"completed: {message}",
        )
        self._condition(TRAINING, "False", "Completed", message)
        self._condition(SUCCEEDED, "True", "RunCompleted", f"model at {self.obs.model_path}: {message}")
        self._event("Normal", "Completed", f"model at {self.obs.model_path}: {message}")
        self.actions = [a for a in self.actions if isinstance(a, EmitEvent)]
        self.actions += [RemoveCollaborators(), ScaleDownFederation()]
        return self._result()

    def _fail(self, reason: str, message: str, *, stop_run: bool) -> Step:
        self.phase = Phase.FAILED
        self.fields.update(finished_at=self.now, message=f"failed: {message}")
        self._condition(TRAINING, "False", reason, message)
        self._condition(SUCCEEDED, "False", reason, message)
        self._event("Warning", reason, message)
        self.actions = [a for a in self.actions if isinstance(a, EmitEvent)]
        if stop_run and self.obs.run_submitted:
            self.actions.append(StopRun())
        self.actions += [RemoveCollaborators(), ScaleDownFederation()]
        return self._result()

    # --- conditions and bookkeeping -----------------------------------------------------------------------

    def _placement_condition(self, selected: Sequence[str]) -> None:
        if not self.obs.placement_decided:
            self._condition(PLACEMENT_SATISFIED, "Unknown", "PlacementPending", "the Placement has not decided yet")
        elif len(selected) >= self.minimum:
            self._condition(
                PLACEMENT_SATISFIED,
                "True",
                "EnoughClusters",
                f"{len(selected)} cluster(s) selected ({_names(selected)}); minimum {self.minimum}",
            )
        else:
            self._condition(
                PLACEMENT_SATISFIED,
                "False",
                "TooFewClusters",
                f"{len(selected)} cluster(s) selected ({_names(selected)}); minimum {self.minimum}",
            )

    def _federation_condition(self) -> None:
        if self.obs.federation_ready:
            self._condition(FEDERATION_READY, "True", "AggregatorAvailable", "the aggregator is available")
        else:
            self._condition(FEDERATION_READY, "False", "AggregatorStarting", "the aggregator is not available yet")

    def _spec_generation(self, *, running: bool) -> None:
        observed = self.before.observed_generation
        generation = self.obs.generation
        if generation <= observed:
            return
        if running and observed:
            message = (
                f"generation {generation} is not applied: the job runs generation {observed} "
                "(delete and re-create the job to change it)"
            )
            if self.conditions.get(SPEC_ACCEPTED, None) is None or self.conditions[SPEC_ACCEPTED].status != "False":
                self._event("Warning", "SpecChangeRefused", message)
            self._condition(SPEC_ACCEPTED, "False", "ChangedDuringRun", message)
            return
        self.fields["observed_generation"] = generation
        self._condition(SPEC_ACCEPTED, "True", "Applied", f"generation {generation} applied")

    def _condition(self, kind: str, state: ConditionStatus, reason: str, message: str) -> None:
        old = self.conditions.get(kind)
        since = old.last_transition_time if old is not None and old.status == state else self.now
        self.conditions[kind] = Condition(
            type=kind, status=state, reason=reason, message=message, last_transition_time=since
        )

    def _event(self, kind: EventType, reason: str, message: str) -> None:
        self.actions.append(EmitEvent(kind, reason, message))

    def _result(self) -> Step:
        self.fields["phase"] = self.phase
        order = [PLACEMENT_SATISFIED, FEDERATION_READY, TRAINING, SUCCEEDED, SPEC_ACCEPTED]
        conditions = sorted(
            self.conditions.values(), key=lambda c: (order.index(c.type) if c.type in order else 99, c.type)
        )
        self.fields["conditions"] = tuple(conditions)
        status = self.before.model_copy(update=self.fields)
        # Re-validate: model_copy does not, and a status must always be one the CRD accepts.
        status = FederatedLearningStatus.model_validate(status.model_dump())
        return Step(status, tuple(self.actions))


def _names(clusters: Iterable[str]) -> str:
    names = list(clusters)
    return ", ".join(names) if names else "none"
