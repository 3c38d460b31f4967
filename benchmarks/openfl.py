"""Benchmark the OpenFL runtime beside Flower: the example job (`jobs/mnist-digits.yaml`) and its OpenFL twin
(`jobs/mnist-digits-openfl.yaml`: the same data, placement, model and training), each a real `fleet run` on the
same machine in the same run, measured as `benchmarks/federation.py` measures (end to end, per round, peak memory of
every process of the federation, accuracy and every digit on the held-out split, by `fleet.evaluation`).

Writes the section "OpenFL beside Flower" of benchmarks/federation.md (the rest of that file is
federation.py's). Needs the MNIST cache (`make mnist`) and OpenFL's environment (`make openfl-env`). Run it from a
clean export of the commit it measures:

    .venv/bin/python benchmarks/openfl.py
"""

from __future__ import annotations

import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from federation import Result, _example_repository, _federated, _num, machine_lines  # noqa: E402

OPENFL_JOB = "mnist-digits-openfl"
FLOWER_JOB = "mnist-digits"
REPORT = ROOT / "benchmarks" / "federation.md"
HEADING = "## OpenFL beside Flower"


def main() -> None:
    machine = machine_lines()
    began = time.monotonic()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="fleet-openfl-bench-") as folder:
        repo = Path(folder)
        _example_repository(repo)
        print("OpenFL beside Flower, the example's data", flush=True)
        flower = _federated("example", repo, FLOWER_JOB, "fleet")
        flower.engine = "flower (fleet run)"
        results.append(flower)
        openfl = _federated("example", repo, OPENFL_JOB, "fleet")
        openfl.engine = "openfl (fleet run)"
        results.append(openfl)
    _write(results, machine, time.monotonic() - began)


def _write(results: list[Result], machine: list[str], elapsed: float) -> None:
    lines = [
        HEADING,
        "",
        f"Written by `benchmarks/openfl.py`, both rows in one run ({elapsed:.0f} s), on the example's data and",
        "training (5 rounds of 3 local epochs, 3 collaborators, mutual TLS with the run's hub CA). *flower* is",
        "`fleet run mnist-digits`; *openfl* is `fleet run mnist-digits-openfl`: OpenFL 1.9's aggregator and",
        "collaborators from `.venv-openfl`, the aggregator's idle sleep at 1 s through `fleet.app_openfl.launcher`",
        "(OpenFL's own: 10 s). End to end includes OpenFL's `fx plan initialize` and each process's imports.",
        "",
        *machine,
        "",
        "| run | engine | collaborators | end to end (s) | per round (s) | steady round (s) | peak memory (GiB) "
        "| accuracy | lowest digit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lowest = min(r.per_digit.items(), key=lambda item: item[1]) if r.per_digit else None
        low = f"{lowest[0]}: {lowest[1]:.3f}" if lowest else "-"
        lines.append(
            f"| {r.name} | {r.engine} | {r.collaborators} | {_num(r.wall)} | {_num(r.per_round)} | "
            f"{_num(r.steady_round)} | {_num(r.peak_gib, 2)} | {_num(r.accuracy, 4)} | {low}{r.note} |"
        )
    lines += ["", "| run | engine | " + " | ".join(str(d) for d in range(10)) + " |", "|---|---|" + "---|" * 10]
    for r in results:
        digits = " | ".join(f"{r.per_digit[d]:.3f}" if d in r.per_digit else "-" for d in range(10))
        lines.append(f"| {r.name} | {r.engine} | {digits} |")
    flower, openfl = results
    if flower.accuracy is not None and openfl.accuracy is not None and openfl.per_digit:
        bar = min(flower.per_digit.values())
        lines += [
            "",
            f"- accuracy: openfl {openfl.accuracy:.4f}, flower {flower.accuracy:.4f} "
            f"({openfl.accuracy / flower.accuracy:.1%} of Flower's); every digit at least 0.95: "
            f"{'met' if min(openfl.per_digit.values()) >= 0.95 else 'NOT met'} (lowest "
            f"{min(openfl.per_digit.values()):.3f}; Flower's {bar:.3f})",
            f"- end to end: openfl {openfl.wall / flower.wall:.2f}x Flower's, measured one after the other",
        ]
    lines.append(f"- date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}")
    section = "\n".join(lines) + "\n"
    text = REPORT.read_text(encoding="utf-8")
    if HEADING in text:
        start = text.index(HEADING)
        rest = text[start + len(HEADING) :]
        end = rest.find("\n## ")
        text = text[:start] + section + (rest[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    REPORT.write_text(text, encoding="utf-8")
    print(section)


if __name__ == "__main__":
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    main()
