"""On the hub: a run whose aggregator died is submitted again from its last round checkpoint, and the job goes on.

The job's SuperLink keeps its state (runs, nodes, their keys) in ``.superlink.db`` and the ServerApp its round
checkpoints, both on the job's model storage (the PVC), so a SuperLink pod that Kubernetes restarts comes back
knowing its collaborators. What Flower 1.41 does not keep is the run: the SuperLink fails a ServerApp task whose
heartbeats stopped after about 60 s ("No heartbeat received from the task"), and a SuperLink that lost its
database no longer knows the run at all. Either way, when the run failed and the ServerApp wrote no last event
(a ServerApp that fails writes why, and that job fails), the controller submits the run again with the run
config of `fleet.app.resume`: the checkpoint of the last round the job's status recorded, and the round after it.
The ServerApp writes a round's checkpoint before its progress event, so that checkpoint exists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.app.resume import ResumePoint, resume_run_config
from fleet.claims import API_GROUP
from fleet.federation.progress import Completed, Event, Failed, RoundFinished

RESUMES_ANNOTATION = f"{API_GROUP}/resumes"
"""How often the job's run was resumed: it outlives a restart of the controller."""
MAX_RESUMES = 3
_LOST = ("No heartbeat received from the task", "no longer knows run")
"""What the run state says when the ServerApp died (Flower's detail) or the SuperLink lost the run (ours)."""


@dataclass(frozen=True)
class Resume:
    config: dict[str, str | int]
    """The run config keys that start the new run where the lost one left off."""
    resumes: int
    """The job's resumes with this one."""
    message: str


def resume_lost_run(
    failure: str | None, events: Sequence[Event], resource: Mapping[str, Any], model_dir: str
) -> Resume | None:
    """How to resume the job's run, when ``failure`` says its aggregator died without a last event and the job
    has resumes left; None otherwise (the job fails as before)."""
    if failure is None or not any(sign in failure for sign in _LOST):
        return None
    if any(isinstance(event, Completed | Failed) for event in events):
        return None  # the ServerApp had its last word: completed, or failed with a reason
    done = resumes(resource)
    if done >= MAX_RESUMES:
        return None
    recorded = int(((resource.get("status") or {}).get("currentRound")) or 0)
    last = max([recorded, *(e.round for e in events if isinstance(e, RoundFinished))])
    point = None
    if last >= 1:
        point = ResumePoint(Path(model_dir) / "checkpoints" / f"round-{last}.pt", last + 1)
    where = f"round {last + 1} from the checkpoint of round {last}" if point else "round 1 (no round had completed)"
    message = f"the aggregator died ({failure}); resuming the run at {where} ({done + 1} of {MAX_RESUMES} resumes)"
    return Resume(resume_run_config(point), done + 1, message)


def resumes(resource: Mapping[str, Any]) -> int:
    value = ((resource.get("metadata") or {}).get("annotations") or {}).get(RESUMES_ANNOTATION, "0")
    return int(value) if str(value).isdigit() else 0


__all__ = ["MAX_RESUMES", "RESUMES_ANNOTATION", "Resume", "resume_lost_run", "resumes"]
