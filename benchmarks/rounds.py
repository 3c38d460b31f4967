"""Benchmark the rounds of ``fleet run``: what a round costs beyond the training, against Flower's default
Deployment Engine, an idle SuperNode's requests, and 16 and 32 collaborators; all in one run.

Per round, *overhead* is the round's wall time less the slowest collaborator's train plus evaluate time, both
from the same run's ``metrics.json``: the ServerApp times the round, and each ClientApp reply carries its
handler's own span (``started-at``/``finished-at``, data loading included). Every run is a real local
federation (hub CA and identities, mutual TLS, SuperNode authentication, one SuperNode per collaborator,
server-side evaluation on the held-out split), on the example's app over two data sets: scikit-learn's 8x8
digits (training takes a fraction of a second: the round is nearly all overhead) and real MNIST from the verified
cache. *flower default* runs the same job on Flower's own Deployment Engine (its SuperExec starting a new
``flwr-serverapp``/``flwr-clientapp`` process per task, its 1 s task poll, its SuperNode's fixed waits). Peak
memory is the summed PSS of every process of the federation, sampled every 0.25 s.

The idle SuperNode: a SuperLink and one SuperNode, nothing to run; every request is counted where it arrives,
in the SuperLink's own access log (uvicorn's, which Flower logs at DEBUG), between 10 s and 40 s after the
SuperNode's first request; fleet's launcher and Flower's own SuperNode side by side.

    .venv/bin/python benchmarks/rounds.py            # writes benchmarks/rounds.md
    .venv/bin/python benchmarks/rounds.py --quick    # 8x8 digits, 3 collaborators, both engines

Needs the MNIST cache of the set-up (``make mnist``) except with --quick. Run it from a clean export of the
commit it measures, so that nobody's unfinished edits are measured.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from federation import MNIST_CACHE, MemorySampler, QuietObserver, machine_lines  # noqa: E402

from fleet.data import Source, mnist_source, prepare, sklearn_digits_source  # noqa: E402
from fleet.federation.local import RunSettings, plan_run, run_federation  # noqa: E402
from fleet.federation.processes import free_port  # noqa: E402
from fleet.models import Phase  # noqa: E402
from fleet.repository import load_repository  # noqa: E402

RESULTS = ROOT / "benchmarks" / "rounds.md"
DATA: dict[str, tuple[Callable[[], Source], int]] = {
    "8x8 digits": (sklearn_digits_source, 1400),
    "MNIST": (lambda: mnist_source(MNIST_CACHE), 7000),
}
"""Data set -> its source and the images the collaborators hold in all, split evenly."""
OVERHEAD_TARGETS = {3: 0.5, 16: 1.0}
"""Collaborators -> the most overhead a steady round may have (seconds)."""
SPEED_UP_TARGET = 8.0
IDLE_TARGET = 1.0
"""Requests per second an idle SuperNode may send after 10 s idle."""
MEMORY_TARGET_GIB = 3.0
"""Peak memory of the whole federation with 32 collaborators."""
IDLE_FROM, IDLE_UNTIL = 10.0, 40.0
_ACCESS = re.compile(r'^(\S+Z) \w+ \[uvicorn\.access\] (\S+) - "(\w+) (/v1/fleet/\S+)')


@dataclass(frozen=True)
class Case:
    data: str
    collaborators: int
    engine: str
    rounds: int
    local_epochs: int


@dataclass
class Measured:
    case: Case
    wall: float
    peak_gib: float
    rounds: list[dict[str, Any]] = field(default_factory=list)
    """metrics.json's rounds: ``seconds`` and ``spans`` of each."""
    accuracy: float | None = None
    failure: str = ""

    def steady(self) -> list[dict[str, Any]]:
        """Rounds 2 on: the first round also waits for the ServerApp's first pulls and the model's first build."""
        return self.rounds[1:] or self.rounds

    def seconds(self, key: str, rounds: list[dict[str, Any]] | None = None) -> list[float]:
        return [float(r["seconds"][key]) for r in (self.steady() if rounds is None else rounds) if key in r["seconds"]]


def _repository(root: Path, case: Case) -> str:
    """The example's policies and one job placing ``case.collaborators`` EU clusters that share the data."""
    shutil.copytree(ROOT / "policies", root / "policies")
    (root / "jobs").mkdir()
    (root / "clusters").mkdir()
    name = f"bench-{case.collaborators}"
    n = case.collaborators
    (root / "jobs" / f"{name}.yaml").write_text(
        f"name: {name}\nnamespace: fl-{name}\nframework: flower\n"
        "images: {server: example/app:1, client: example/app:1}\n"
        f"rounds: {case.rounds}\nminAvailableClients: {n}\nmaxClients: {n}\ndataset: digits\n"
        "resources: {cpu: 100m, memory: 256Mi}\n"
        f"training: {{strategy: fedavg, localEpochs: {case.local_epochs}, learningRate: 0.02, batchSize: 32, "
        "fractionTrain: 1.0, roundTimeoutSeconds: 300}\n"
        f"storage: {{pvc: {{name: {name}-model, size: 1Gi, path: /models/{name}}}}}\n"
        "listeners: [{name: server, type: NodePort, port: 30093}]\ntls: true\nclusterSets: [synthetic]\n"
    )
    samples = DATA[case.data][1] // n
    for index in range(n):
        cluster = f"syn-{index:02d}"
        (root / "clusters" / f"{cluster}.yaml").write_text(
            f"name: {cluster}\nclusterSet: synthetic\nlabels: {{region: eu-west}}\n"
            f"datasets: {{digits: {{path: /data/digits/{cluster}, samples: {samples}}}}}\n"
            'capacity: {cpu: "8", memory: 32Gi}\n'
        )
    return name


def _measure(scratch: Path, case: Case) -> Measured:
    from fleet.evaluation import evaluate_model

    repo = scratch / f"{case.data.replace(' ', '-')}-{case.collaborators}"
    if not repo.exists():
        job = _repository(repo, case)
        prepare(load_repository(repo), repo / "data", job, source=DATA[case.data][0])
    job = f"bench-{case.collaborators}"
    data_root = repo / "data"
    work_dir = repo / f"runs-{case.engine.replace(' ', '-')}"
    plan = plan_run(load_repository(repo), job, data_root, work_dir)
    settings = (
        RunSettings(executor="warm")
        if case.engine == "fleet"
        else RunSettings(executor="flower", task_poll_interval=1.0, start_timeout=300)
    )
    test_data = data_root / "test" / "digits.npz"
    print(f"  {case.data}, {case.collaborators} collaborators, {case.engine}", flush=True)
    started = time.monotonic()
    with MemorySampler(str(work_dir)) as memory:
        status = run_federation(plan, QuietObserver(), settings, test_data).status
    measured = Measured(case, time.monotonic() - started, memory.peak / 2**30)
    if status.phase is not Phase.COMPLETED:
        measured.failure = status.message.splitlines()[0]
        return measured
    measured.rounds = json.loads((plan.storage_dir / "metrics.json").read_text())["rounds"]
    measured.accuracy = evaluate_model(Path(status.model_path), test_data).accuracy
    return measured


# --- the idle SuperNode -------------------------------------------------------------------------------------


@dataclass
class Idle:
    supernode: str
    requests: list[tuple[float, str]]
    """(seconds since the SuperNode's first request, path) of every Fleet API request the SuperLink served."""

    def rate(self) -> float:
        counted = [t for t, _ in self.requests if IDLE_FROM <= t < IDLE_UNTIL]
        return len(counted) / (IDLE_UNTIL - IDLE_FROM)

    def paths(self) -> str:
        counted: dict[str, int] = {}
        for t, path in self.requests:
            if IDLE_FROM <= t < IDLE_UNTIL:
                counted[path] = counted.get(path, 0) + 1
        return ", ".join(f"{path} {n}" for path, n in sorted(counted.items())) or "none"


def _idle(scratch: Path) -> list[Idle]:
    """A SuperLink and one idle SuperNode each for fleet's launcher and for Flower's own, at the same time."""
    tools = Path(sys.executable).parent
    supernodes = {
        "fleet's launcher": [sys.executable, "-m", "fleet.federation.flower_launcher", "supernode"],
        "Flower's own": [str(tools / "flower-supernode")],
    }
    environment = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    processes: list[subprocess.Popen[bytes]] = []
    logs: dict[str, Path] = {}
    print(f"  idle SuperNodes ({IDLE_UNTIL:.0f} s)", flush=True)
    try:
        for index, (label, supernode) in enumerate(supernodes.items()):
            folder = scratch / f"idle-{index}"
            folder.mkdir()
            link, node = free_port(), free_port()
            logs[label] = folder / "superlink.log"
            superlink = [str(tools / "flower-superlink"), "--insecure", "--isolation", "process"]
            superlink += ["--host", "127.0.0.1", "--port", str(link), "--disable-runtime-dependency-installation"]
            with logs[label].open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        superlink,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env={**environment, "FLWR_LOG_LEVEL": "DEBUG", "FLWR_HOME": str(folder / "superlink")},
                    )
                )
            _wait_for(lambda port=link: _listening(port), f"the SuperLink on port {link}")  # before its SuperNode asks
            argv = [*supernode, "--insecure", "--superlink", f"127.0.0.1:{link}", "--isolation", "process"]
            argv += ["--host", "127.0.0.1", "--port", str(node)]
            with (folder / "supernode.log").open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        argv,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env={**environment, "FLWR_HOME": str(folder / "supernode")},
                    )
                )
        for label, log in logs.items():
            _wait_for(lambda log=log: bool(_requests(log)), f"the first request of {label} SuperNode")
        time.sleep(IDLE_UNTIL + 2)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    return [Idle(label, _requests(log)) for label, log in logs.items()]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(0.1)


def _requests(log: Path) -> list[tuple[float, str]]:
    stamps: list[tuple[float, str]] = []
    for line in log.read_text(errors="replace").splitlines():
        match = _ACCESS.match(line)
        if match:
            at = datetime.datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp()
            stamps.append((at, match.group(4)))
    if not stamps:
        return []
    first = stamps[0][0]
    return [(at - first, path) for at, path in stamps]


# --- the report ---------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _breakdown(measured: Measured) -> dict[str, float | None]:
    """Means over the steady rounds of where the overhead went."""
    delivery, back, server = [], [], []
    for r in measured.steady():
        seconds, spans = r["seconds"], r.get("spans", {})
        trains = [s["train"] for s in spans.values() if "train" in s]
        if trains:
            pushed = float(seconds["waiting_for_nodes"])
            delivery.append(max(began for began, _, _ in trains) - pushed)
            back.append(max(received - ended for _, ended, received in trains))
        server.append(float(seconds["round"]) - float(seconds["waiting_for_nodes"]) - float(seconds["train_exchange"]))
    return {
        "waiting for nodes": _mean(measured.seconds("waiting_for_nodes")),
        "to the last ClientApp": _mean(delivery),
        "reply back (slowest)": _mean(back),
        "server steps": _mean(server),
    }


def _write(results: list[Measured], idle: list[Idle], machine: list[str], elapsed: float, command: str) -> None:
    lines = [
        "# Benchmark: the rounds of `fleet run`",
        "",
        "Written by `benchmarks/rounds.py`, every row in one run (`" + command + "`). " + __doc__.split("\n\n")[1],
        "",
        "## Machine",
        "",
        *machine,
        "",
        "## Rounds",
        "",
        "Times in seconds. *round*, *slowest collaborator* (its train plus evaluate handlers) and *overhead* (the",
        "round less the slowest collaborator) are means over the steady rounds (2 on); *max* is the largest steady",
        "overhead; round 1 also waits for the ServerApp's first pulls.",
        "",
        "| data | collaborators | engine | rounds x epochs | end to end | round | slowest collaborator | overhead "
        "| max overhead | round 1 overhead | peak memory (GiB) | accuracy |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        c = m.case
        if m.failure:
            lines.append(f"| {c.data} | {c.collaborators} | {c.engine} | FAILED: {m.failure} |||||||||")
            continue
        overhead = m.seconds("overhead")
        first = m.seconds("overhead", m.rounds[:1])
        lines.append(
            f"| {c.data} | {c.collaborators} | {c.engine} | {c.rounds} x {c.local_epochs} | {m.wall:.1f} | "
            f"{_num(_mean(m.seconds('round')))} | {_num(_mean(m.seconds('client_max')))} | {_num(_mean(overhead))} | "
            f"{_num(max(overhead, default=None))} | {_num(first[0] if first else None)} | {m.peak_gib:.2f} | "
            f"{_num(m.accuracy, 4)} |"
        )
    lines += [
        "",
        "Where the steady overhead goes (means): *waiting for nodes* until the ServerApp sees enough connected;",
        "*to the last ClientApp* from the push to the last collaborator's handler starting (the SuperNode's pull,",
        "the object transfer, the fork); *reply back* from the slowest handler's end until the ServerApp pulled its",
        "reply; *server steps* aggregation, evaluation on the held-out split and the checkpoint.",
        "",
        "| data | collaborators | engine | overhead | waiting for nodes | to the last ClientApp | reply back (slowest) "
        "| server steps |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        if m.failure:
            continue
        parts = _breakdown(m)
        lines.append(
            f"| {m.case.data} | {m.case.collaborators} | {m.case.engine} | {_num(_mean(m.seconds('overhead')))} | "
            + " | ".join(_num(v) for v in parts.values())
            + " |"
        )
    lines += [
        "",
        "## An idle SuperNode",
        "",
        f"Fleet API requests the SuperLink served from one SuperNode with nothing to run, {IDLE_FROM:.0f} s to "
        f"{IDLE_UNTIL:.0f} s after its first request (plain HTTP on loopback: the loop's waits do not depend on TLS).",
        "",
        "| SuperNode | requests per second | requests (path: count) |",
        "|---|---:|---|",
    ]
    lines += [f"| {i.supernode} | {i.rate():.2f} | {i.paths()} |" for i in idle]
    lines += [
        "",
        "## Targets (2 cores)",
        "",
        *_targets(results, idle),
        "",
        f"Benchmark wall time: {elapsed:.0f} s.",
        "",
    ]
    RESULTS.write_text("\n".join(lines))


def _targets(results: list[Measured], idle: list[Idle]) -> list[str]:
    lines = []
    done = [m for m in results if not m.failure]
    for m in done:
        target = OVERHEAD_TARGETS.get(m.case.collaborators)
        overhead = _mean(m.seconds("overhead"))
        if m.case.engine == "fleet" and target is not None and overhead is not None:
            verdict = "met" if overhead <= target else "NOT met"
            lines.append(
                f"- overhead at most {target} s per round, {m.case.data}, {m.case.collaborators} collaborators: "
                f"{overhead:.2f} s: {verdict}"
            )
    for m in done:
        if m.case.engine != "flower default":
            continue
        ours = next((f for f in done if f.case == Case(**{**m.case.__dict__, "engine": "fleet"})), None)
        if ours is not None:
            ratio = m.wall / ours.wall
            per_round = (_mean(m.seconds("round")) or 0) / (_mean(ours.seconds("round")) or 1)
            lines.append(
                f"- speed-up over Flower's default Deployment Engine at least {SPEED_UP_TARGET:g}x end to end, "
                f"{m.case.data}, {m.case.collaborators} collaborators, {m.case.rounds} rounds: {m.wall:.1f} s / "
                f"{ours.wall:.1f} s = {ratio:.1f}x: {'met' if ratio >= SPEED_UP_TARGET else 'NOT met'} "
                f"(a steady round {per_round:.1f}x)"
            )
    for i in idle:
        if i.supernode == "fleet's launcher" and not i.requests:
            lines.append("- an idle SuperNode's requests: NOT measured (the SuperLink saw none)")
        elif i.supernode == "fleet's launcher":
            lines.append(
                f"- an idle SuperNode at most {IDLE_TARGET:g} request per second after {IDLE_FROM:.0f} s idle: "
                f"{i.rate():.2f}: {'met' if i.rate() <= IDLE_TARGET else 'NOT met'}"
            )
    for m in done:
        if m.case.collaborators == 32 and m.case.engine == "fleet":
            lines.append(
                f"- peak memory of all processes at most {MEMORY_TARGET_GIB:g} GiB with 32 collaborators "
                f"({m.case.data}): {m.peak_gib:.2f} GiB: {'met' if m.peak_gib <= MEMORY_TARGET_GIB else 'NOT met'}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8x8 digits, 3 collaborators, both engines")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    r = args.rounds
    cases = [Case("8x8 digits", 3, "fleet", r, 1), Case("8x8 digits", 3, "flower default", r, 1)]
    if not args.quick:
        cases += [
            Case("8x8 digits", 16, "fleet", r, 1),
            Case("MNIST", 3, "fleet", r, 1),
            Case("MNIST", 3, "flower default", r, 1),
            Case("MNIST", 16, "fleet", r, 1),
            Case("MNIST", 32, "fleet", r, 1),
        ]
    machine = machine_lines()
    started = time.monotonic()
    command = "benchmarks/rounds.py" + (" --quick" if args.quick else "") + (f" --rounds {r}" if r != 5 else "")
    scratch = Path(tempfile.mkdtemp(prefix="fleet-rounds-bench-"))
    results: list[Measured] = []
    try:
        for case in cases:
            results.append(_measure(scratch, case))
            # Written after every row: a run stopped half-way (a long one on a busy machine) keeps what it measured.
            partial = [*machine, f"- partial: {len(results)} of {len(cases)} runs so far, no idle SuperNode yet"]
            _write(results, [], partial, time.monotonic() - started, command)
        idle = _idle(scratch)
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    end_load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    machine.append(f"- load average at the end: {end_load} (above 2, the rows' times include other sessions' work)")
    _write(results, idle, machine, time.monotonic() - started, command)
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()
