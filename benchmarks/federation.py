"""Benchmark ``fleet run`` on real MNIST: the example job (as `make example` runs it, twice), and 2, 4 and 8
synthetic collaborators, each beside central training on the union of its partitions.

For each federated run: end-to-end wall time (credentials, start-up, rounds, stopping), time per round, peak
memory of all the federation's processes together (sum of PSS, sampled every 0.25 s), final accuracy and
per-digit accuracy on the held-out split (fleet.evaluation). Measured in the same run: central training on the
union of the collaborators' partitions (the same model and training, rounds x local epochs in all), a second run
of the example on the same data (the same model.pt, byte for byte?), `make example`'s commands end to end as
subprocesses, and Flower's default Deployment Engine configuration (SuperExec subprocess isolation, a new
flwr-clientapp/flwr-serverapp process per task, the default 1 s task poll).

Needs the MNIST cache of the set-up (`make mnist`). Run it from a clean export of the commit it measures, so that
nobody's unfinished edits are measured:

    .venv/bin/python benchmarks/federation.py            # writes benchmarks/federation.md
    .venv/bin/python benchmarks/federation.py --quick    # the example job only, no anchors
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleet.data import mnist_source, prepare  # noqa: E402
from fleet.federation.local import RunSettings, plan_run, run_federation  # noqa: E402
from fleet.federation.progress import RoundFinished  # noqa: E402
from fleet.models import Phase  # noqa: E402
from fleet.repository import load_repository  # noqa: E402

EXAMPLE_JOB = "mnist-digits"
TARGET = 0.95
"""Every digit at least this on the held-out split."""
SYNTHETIC_SAMPLES = 7000
"""What the synthetic collaborators hold in all: as much as the example's three placed clusters."""
MNIST_CACHE = ROOT / ".fleet" / "cache" / "mnist"
FINDINGS = [
    "## Where the time goes (Flower 1.41, found in its source; nothing patched)",
    "",
    "Measured on the earlier 8x8 example (0.3-0.6 s of training per round); Flower's share of a round does not",
    "depend on the data, the training's does (see the rounds above).",
    "",
    "- Flower starts a new `flwr-clientapp` process for every message and a new `flwr-serverapp` per run",
    "  (`supercore/superexec/executor/subprocess_executor.py`): ~2 s of Flower imports plus ~3.5 s of torch,",
    "  and torch's optimizer imports `torch._dynamo` on its first step (2-8 s more). One process serves one",
    "  message (`supernode/runtime/run_clientapp.py`). fleet runs the SuperLink and the SuperNodes with the",
    "  public `--isolation process` and one warm executor (`fleet/federation/executor.py`) that imports",
    "  Flower, torch, `torch._dynamo` and the app once and forks Flower's own `flwr-clientapp` /",
    "  `flwr-serverapp` entry points per task, with the arguments `flower-superexec` would pass.",
    "- Measured before fleet's launcher changed Flower's waits (one steady round of the 8x8 example, from the",
    "  SuperNodes' DEBUG logs): 3.0 s asleep after the last reply (the SuperNode's fixed `time.sleep(3)`), 0.2-0.6 s",
    "  pulling the message's objects, 0.1-0.3 s until the ClientApp was forked, 0.5-0.9 s in it, up to 0.5 s until",
    "  the SuperNode saw the reply, 0.4-0.5 s sending it. The launcher and the executor now cut those waits",
    "  (README, launcher section); `benchmarks/rounds.md` measures what a round costs beyond the training now,",
    "  from each run's own spans, beside Flower's default Deployment Engine.",
    "- `Grid.send_and_receive` sleeps 3 s between pulls; fleet's ServerApp pulls in its own loop every",
    "  0.05 s. `FLWR_SUPEREXEC_TASK_POLL_INTERVAL` (default 1 s) sets Flower's SuperExec poll; fleet sets it",
    "  to 0.05 s when it uses Flower's SuperExec.",
    "- Under the example's label skew the final model depends on the local shuffles. The same training run",
    "  in one process with 30 random sets of per-node shuffle seeds (node ids, which Flower draws per run):",
    "  accuracy at least 0.969 (median 0.978), lowest digit at least 0.857 (median 0.914); one real run drew",
    "  seeds that ended at 0.925 with digit 8 at 0.343. The shuffles now follow the cluster names and the",
    "  updates are summed in cluster order, so a job trains the same model in every run (the example: 0.9806,",
    "  lowest digit 8 at 0.857, the same model.pt byte for byte in two runs).",
    "- On 2 cores the start-up (SuperLink, one SuperNode per collaborator, the executor's imports) is CPU-bound:",
    "  each Flower process imports for ~2 s of CPU; the machine being shared adds to it.",
]
RESULTS = ROOT / "benchmarks" / "federation.md"


@dataclass
class Result:
    name: str
    engine: str
    collaborators: int
    rounds: int
    wall: float
    per_round: float | None = None
    steady_round: float | None = None
    peak_gib: float | None = None
    accuracy: float | None = None
    per_digit: dict[int, float] = field(default_factory=dict)
    note: str = ""
    model_sha256: str = ""
    group: str = "example"
    """Whose partitions it trained on: the central row of the same group is its anchor."""


class QuietObserver:
    def phase(self, message: str) -> None: ...

    def warning(self, message: str) -> None:
        print(f"    warning: {message.splitlines()[0]}", flush=True)

    def started(self, rounds: int, clusters: tuple[str, ...]) -> None: ...

    def round(self, event: RoundFinished) -> None:
        print(f"    round {event.round}: {event.metrics.get('accuracy', float('nan')):.3f}", flush=True)


class MemorySampler:
    """Peak of the summed PSS of every process whose command line names the run's folder."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            total = 0
            for process in psutil.process_iter():
                with contextlib.suppress(psutil.Error):
                    if process.pid != os.getpid() and any(self.marker in part for part in process.cmdline()):
                        total += process.memory_full_info().pss
            self.peak = max(self.peak, total)


def _synthetic_repository(root: Path, collaborators: int, rounds: int) -> str:
    """The example's policy with ``collaborators`` EU clusters sharing the digits training data."""
    for folder in ("policies", "jobs"):
        shutil.copytree(ROOT / folder, root / folder)
    job = (root / "jobs" / f"{EXAMPLE_JOB}.yaml").read_text()
    name = f"digits-{collaborators}"
    job = job.replace(f"name: {EXAMPLE_JOB}", f"name: {name}")
    job = job.replace("minAvailableClients: 2", f"minAvailableClients: {collaborators}")
    job = job.replace("maxClients: 3", f"maxClients: {collaborators}")
    job = job.replace("rounds: 5", f"rounds: {rounds}")
    job = job.replace("  - research-eu\n  - research-us", "  - synthetic")
    (root / "jobs" / f"{EXAMPLE_JOB}.yaml").unlink()
    (root / "jobs" / f"{name}.yaml").write_text(job)
    (root / "clusters").mkdir()
    samples = SYNTHETIC_SAMPLES // collaborators
    for index in range(collaborators):
        (root / "clusters" / f"syn-{index:02d}.yaml").write_text(
            f"name: syn-{index:02d}\nclusterSet: synthetic\nlabels: {{region: eu-west}}\n"
            f"datasets: {{digits: {{path: /data/digits/syn-{index:02d}, samples: {samples}}}}}\n"
            'capacity: {cpu: "8", memory: 32Gi}\n'
        )
    return name


def _example_repository(root: Path) -> str:
    for folder in ("jobs", "clusters", "policies"):
        shutil.copytree(ROOT / folder, root / folder)
    return EXAMPLE_JOB


def _federated(name: str, repo: Path, job: str, engine: str) -> Result:
    from fleet.evaluation import evaluate_model

    data_root = repo / ".fleet" / "data"
    if not data_root.exists():
        prepare(load_repository(repo), data_root, job, source=lambda: mnist_source(MNIST_CACHE))
    repository = load_repository(repo)
    work_dir = repo / ".fleet" / f"runs-{engine}-{name.replace(' ', '-')}"
    plan = plan_run(repository, job, data_root, work_dir)
    settings = (
        RunSettings(executor="warm") if engine == "fleet" else RunSettings(executor="flower", task_poll_interval=1.0)
    )
    test_data = data_root / "test" / "digits.npz"
    print(f"  {name} ({engine}, {len(plan.collaborators)} collaborators)", flush=True)
    started = time.monotonic()
    with MemorySampler(str(plan.job_dir)) as memory:
        status = run_federation(plan, QuietObserver(), settings, test_data).status
    wall = time.monotonic() - started
    result = Result(name, engine, len(plan.collaborators), plan.job.rounds, wall, peak_gib=memory.peak / 2**30)
    if status.phase is not Phase.COMPLETED:
        result.note = f"FAILED: {status.message.splitlines()[0]}"
        return result
    times = _progress_times(plan.storage_dir / "progress.jsonl")
    if len(times) >= 2:
        result.per_round = (times[-1] - times[0]) / (len(times) - 1)
    if len(times) >= 3:
        result.steady_round = (times[-1] - times[1]) / (len(times) - 2)
    evaluation = evaluate_model(Path(status.model_path), test_data)
    result.accuracy = evaluation.accuracy
    result.per_digit = dict(evaluation.per_class_accuracy)
    result.model_sha256 = hashlib.sha256(Path(status.model_path).read_bytes()).hexdigest()
    return result


def _make_example(repo: Path) -> Result:
    """`make example`'s commands, one process each, in a copy of the example: fetch check, render, prepare,
    run, evaluate with its report (make's own venv check adds nothing once the venv is there)."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's fleet, also in every Flower process
    storage = ".fleet/runs/mnist-digits/storage/models/mnist-digits"
    fleet = [sys.executable, "-m", "fleet"]
    steps = [
        ["data", "fetch-mnist", "--cache-dir", str(MNIST_CACHE)],
        ["render"],
        ["data", "prepare", "--job", EXAMPLE_JOB, "--cache-dir", str(MNIST_CACHE)],
        ["run", EXAMPLE_JOB],
        ["evaluate", f"{storage}/model.pt", "--report", f"{storage}/evaluation", "--output", "json"],
    ]
    print(f"  make example's commands in {repo}", flush=True)
    started = time.monotonic()
    step_seconds = []
    with MemorySampler(str(repo / ".fleet" / "runs")) as memory:
        for step in steps:
            begun = time.monotonic()
            done = subprocess.run([*fleet, *step], cwd=repo, env=environment, capture_output=True, text=True)
            step_seconds.append(
                f"{step[0] if step[0] != 'data' else 'data ' + step[1]} {time.monotonic() - begun:.1f} s"
            )
            if done.returncode != 0:
                raise SystemExit(f"fleet {' '.join(step)} failed ({done.returncode}):\n{done.stderr}")
    wall = time.monotonic() - started
    report = json.loads(done.stdout)
    result = Result("make example", "fleet", 3, 5, wall, peak_gib=memory.peak / 2**30)
    result.accuracy = report["accuracy"]
    result.per_digit = {int(d): a for d, a in report["per_class_accuracy"].items()}
    result.model_sha256 = hashlib.sha256((repo / storage / "model.pt").read_bytes()).hexdigest()
    times = _progress_times(repo / storage / "progress.jsonl")
    result.per_round = (times[-1] - times[0]) / (len(times) - 1)
    result.steady_round = (times[-1] - times[1]) / (len(times) - 2)
    result.note = "its commands, end to end: " + "; ".join(step_seconds)
    return result


def _progress_times(path: Path) -> list[float]:
    """Seconds of the ``started`` event and of each ``round`` event."""
    times = []
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event.get("event") in ("started", "round") and event.get("time"):
            stamp = event["time"].replace("Z", "+00:00")
            times.append(datetime.datetime.fromisoformat(stamp).timestamp())
    return times


def _central(repo: Path, job_name: str, label: str) -> Result:
    from fleet.app.data import concatenate, load_dataset
    from fleet.app.task import train_centrally

    repository = load_repository(repo)
    job = repository.jobs[job_name]
    data_root = repo / ".fleet" / "data"
    plan = plan_run(repository, job_name, data_root, repo / ".fleet" / "runs-central")
    train = concatenate(load_dataset(c.data_path) for c in plan.collaborators)
    test = load_dataset(data_root / "test" / "digits.npz")
    epochs = job.rounds * job.training.local_epochs
    print(f"  central training ({epochs} epochs on {len(train.labels)} images)", flush=True)
    started = time.monotonic()
    central = train_centrally(
        train, test, epochs=epochs, learning_rate=job.training.learning_rate, batch_size=job.training.batch_size
    )
    result = Result(f"central for {label}", "one process", 1, job.rounds, time.monotonic() - started)
    result.accuracy = central.evaluation.accuracy
    result.per_digit = dict(central.evaluation.per_class_accuracy)
    result.note = (
        f"{epochs} epochs over the union of the {len(plan.collaborators)} partitions, {len(train.labels)} images"
    )
    return result


def machine_lines() -> list[str]:
    import torch

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; RAM {psutil.virtual_memory().total / 2**30:.1f} GiB",
        f"- Python {platform.python_version()}, torch {torch.__version__}, flwr {_version('flwr')}",
        f"- load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())} (the machine is shared: "
        "other sessions' work runs at the same time, so times vary from run to run)",
        f"- date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}",
    ]


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _write(results: list[Result], machine: list[str], elapsed: float) -> None:
    centrals = {r.group: r for r in results if r.engine == "one process"}
    lines = [
        "# Benchmark: `fleet run` on real MNIST, a real local Flower federation",
        "",
        "Written by `benchmarks/federation.py`, all rows in one run. Data: the 10,000 MNIST digits (28x28) of npm's",
        "`mnist@1.1.0` from the verified cache; 2000 held out, stratified by digit; the collaborators' partitions",
        "label-skewed as `fleet data prepare` documents (cluster i favours digits 3i..3i+2, four times each other",
        "digit's share). Training: the example job's, for every row: FedAvg, 5 rounds of 3 local epochs (15",
        "epochs in all), SGD lr 0.02 momentum 0.9, batch 32, each image moved by up to 2 pixels. Each federated",
        "row is a real run: hub CA and cluster identities, SuperLink with TLS and SuperNode authentication, one",
        "SuperNode per collaborator, server-side evaluation on the held-out split. *central* trains the same model",
        "the same 15 epochs on the union of that group's partitions, in one process (2 threads). *fleet* is",
        "`fleet run`'s default (one warm executor forking the ServerApp and each ClientApp); *flower default* is",
        "Flower's own Deployment Engine configuration (a new `flwr-serverapp`/`flwr-clientapp` process per task,",
        "1 s task poll). *make example* runs `make example`'s commands one process each, as `make example` does",
        "(fetch check, render, prepare, run, evaluate with its report); *example* is `fleet run` of the same job",
        "again on the same data. Time per round: from the ServerApp's `started` event to the last round, divided",
        "by the rounds; *steady*: rounds 2 to 5. Peak memory: the summed PSS of every process of the federation.",
        "",
        "## Machine",
        "",
        *machine,
        "",
        "## Results",
        "",
        "| run | engine | collaborators | end to end (s) | per round (s) | steady round (s) | peak memory (GiB) "
        "| accuracy | lowest digit | vs central |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lowest = min(r.per_digit.items(), key=lambda item: item[1]) if r.per_digit else None
        central = centrals.get(r.group)
        ratio = f"{r.accuracy / central.accuracy:.3f}" if central and central.accuracy and r.accuracy else "-"
        lines.append(
            f"| {r.name} | {r.engine} | {r.collaborators} | {r.wall:.1f} | {_num(r.per_round)} | "
            f"{_num(r.steady_round)} | {_num(r.peak_gib, 2)} | {_num(r.accuracy, 4)} | "
            f"{f'{lowest[0]}: {lowest[1]:.3f}' if lowest else '-'} | {ratio} |"
        )
    lines += ["", "Per-digit accuracy:", "", "| run | engine | " + " | ".join(str(d) for d in range(10)) + " |"]
    lines += ["|---|---|" + "---|" * 10]
    for r in results:
        if r.per_digit:
            digits = " | ".join(f"{r.per_digit.get(d, float('nan')):.3f}" for d in range(10))
            lines.append(f"| {r.name} | {r.engine} | {digits} |")
    notes = [f"- {r.name} ({r.engine}): {r.note}" for r in results if r.note]
    if notes:
        lines += ["", "Notes:", "", *notes]
    lines += ["", "## Targets (2 cores)", "", *_targets(results, centrals.get("example"))]
    lines += ["", *FINDINGS, "", f"Benchmark wall time: {elapsed:.0f} s.", ""]
    RESULTS.write_text("\n".join(lines))


def _targets(results: list[Result], central: Result | None) -> list[str]:
    made = next((r for r in results if r.name == "make example"), None)
    again = next((r for r in results if r.name == "example" and r.engine == "fleet"), None)
    lines = []
    if made is None or made.accuracy is None:
        return lines
    lines.append(f"- `make example` on 2 cores (set up, cache fetched): {made.wall:.0f} s end to end")
    if central and central.accuracy:
        ratio = made.accuracy / central.accuracy
        lines.append(
            f"- federated accuracy at least 98% of central: {made.accuracy:.4f} vs {central.accuracy:.4f} "
            f"({ratio:.1%}): {'met' if ratio >= 0.98 else 'NOT met'}"
        )
    lowest = min(made.per_digit.items(), key=lambda item: item[1])
    lines.append(
        f"- every digit at least {TARGET}: lowest {lowest[0]} at {lowest[1]:.3f}: "
        f"{'met' if lowest[1] >= TARGET else 'NOT met'}"
    )
    if again is not None:
        same = again.model_sha256 == made.model_sha256 and again.per_digit == made.per_digit
        lines.append(
            f"- identical results across two runs on the same data: model.pt sha256 {made.model_sha256[:16]}... "
            f"and {again.model_sha256[:16]}..., per-digit accuracy {'equal' if same else 'DIFFERENT'}: "
            f"{'met' if same else 'NOT met'}"
        )
    for r in results:
        if r.group.startswith("synthetic") and r.engine == "fleet" and r.per_digit:
            digit, value = min(r.per_digit.items(), key=lambda item: item[1])
            lines.append(
                f"- {r.name} collaborators: accuracy {_num(r.accuracy, 4)}, lowest digit {digit} at {value:.3f}"
            )
    return lines


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the example job only, no anchors")
    parser.add_argument("--sizes", type=int, nargs="*", default=[2, 4, 8], help="synthetic collaborator counts")
    parser.add_argument(
        "--anchor-sizes", type=int, nargs="*", default=[], help="synthetic sizes also run on Flower's defaults"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    machine = machine_lines()
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="fleet-federation-bench-"))
    results: list[Result] = []
    try:
        example = scratch / "example"
        job = _example_repository(example)
        results.append(_make_example(example))
        if not args.quick:
            results.append(_federated("example", example, job, "fleet"))
            results.append(_central(example, job, "the example"))
            results.append(_federated("example", example, job, "flower default"))
            for size in args.sizes:
                repo = scratch / f"synthetic-{size}"
                name = _synthetic_repository(repo, size, rounds=5)
                group = f"synthetic {size}"
                runs = [_federated(group, repo, name, "fleet"), _central(repo, name, group)]
                if size in args.anchor_sizes:
                    runs.append(_federated(group, repo, name, "flower default"))
                for run in runs:
                    run.group = group
                results += runs
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"kept {scratch}")
    end_load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    machine.append(f"- load average at the end: {end_load} (above 2, the rows' times include other sessions' work)")
    _write(results, machine, time.monotonic() - started)
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()
