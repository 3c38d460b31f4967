"""Benchmark what the privacy options cost on real MNIST: the example job as `fleet run` runs it, plain, with
central differential privacy at two noise levels, and with SecAgg+ secure aggregation, all in one run.

Each row is a real local federation (`benchmarks/federation.py`'s runner: hub CA, SuperLink with mutual TLS,
one SuperNode per placed cluster, the held-out split evaluated on the server). The DP rows clip each update on
the aggregator (server-side, fixed clipping norm) and add Gaussian noise of standard deviation noise multiplier
x clipping norm / collaborators to the mean; the epsilon they spend (Flower's RDP accountant, delta 1e-5, no
amplification by sampling) is read from the run's status. Writes its section of `benchmarks/federation.md`
(between the privacy markers; the rest of the file is left as it is).

Needs the MNIST cache of the set-up (`make mnist`). Run it from a clean export of the commit it measures:

    .venv/bin/python benchmarks/privacy.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import federation as base  # benchmarks/federation.py: the runner, the machine

FEDERATION_MD = base.ROOT / "benchmarks" / "federation.md"
BEGIN, END = "<!-- privacy:begin (benchmarks/privacy.py) -->", "<!-- privacy:end -->"
CLIPPING_NORM = 2.0
NOISE_LEVELS = (0.01, 0.03)
SECURE = "privacy:\n  secureAggregation: {shares: 3, reconstructionThreshold: 2}\n"


@dataclass
class Row:
    name: str
    privacy: str
    result: base.Result
    epsilon: float | None = None


def _dp(noise: float) -> str:
    return (
        "privacy:\n  differentialPrivacy:\n    side: server\n    clipping: fixed\n"
        f"    noiseMultiplier: {noise}\n    clippingNorm: {CLIPPING_NORM}\n    targetDelta: 1.0e-5\n"
    )


def _run(root: Path, name: str, privacy: str, described: str) -> Row:
    print(f"{name}: {described}", flush=True)
    repo = root / name.replace(" ", "-")
    job = base._example_repository(repo)
    definition = repo / "jobs" / f"{job}.yaml"
    definition.write_text(definition.read_text() + privacy)
    result = base._federated(name, repo, job, "fleet")
    status_file = repo / ".fleet" / f"runs-fleet-{name.replace(' ', '-')}" / job / "status.json"
    final = json.loads(status_file.read_text()).get("finalMetrics", {}) if status_file.is_file() else {}
    return Row(name, described, result, final.get("privacy_epsilon"))


def _section(rows: list[Row], machine: list[str], elapsed: float) -> list[str]:
    plain = rows[0].result.accuracy
    lines = [
        BEGIN,
        "## Privacy options (benchmarks/privacy.py)",
        "",
        "The example job (3 collaborators, 5 rounds of 3 local epochs, server-side evaluation on the held-out",
        f"split) with central differential privacy (server-side clipping to an L2 norm of {CLIPPING_NORM:g}, Gaussian",
        "noise of standard deviation noise multiplier x norm / 3 on each round's mean; epsilon from Flower's RDP",
        "accountant at delta 1e-5, no amplification by sampling) and with SecAgg+ (3 shares, threshold 2; every",
        "collaborator weighs the same, where the plain run weighs them by examples). Each privacy row is a real",
        "`fleet run` (the runner of `benchmarks/federation.py`); the two DP runs ran at the same time (one",
        "process each), SecAgg+ after them. The plain row is the example's row of the table above: the same job",
        "on the same data trains the same model.pt byte for byte, so its accuracy is the plain run's; its time is",
        "from that quieter run.",
        "",
        *machine,
        f"- the longest privacy run took {elapsed / 60:.1f} min",
        "",
        "| run | privacy | end to end (s) | per round (s) | accuracy | vs plain | lowest digit | epsilon spent |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r = row.result
        if r.accuracy is None:
            lines.append(f"| {row.name} | {row.privacy} | {r.wall:.1f} | - | {r.note} | - | - | - |")
            continue
        worst = min(r.per_digit.items(), key=lambda item: item[1])
        ratio = f"{r.accuracy / plain:.3f}" if plain else "-"
        epsilon = f"{row.epsilon:,.0f}" if row.epsilon is not None else "-"
        lines.append(
            f"| {row.name} | {row.privacy} | {r.wall:.1f} | {base._num(r.per_round)} | {r.accuracy:.4f} | {ratio} | "
            f"{worst[0]}: {worst[1]:.3f} | {epsilon} |"
        )
    lines += [
        "",
        "Times are not comparable across rows: the privacy runs shared the 2 cores with each other and with",
        "other sessions' work (the load average above). What the rows say: at noise this light the model keeps",
        "its accuracy, and the privacy it buys is none to speak of (an epsilon in the thousands bounds nothing).",
        "The noise on the mean falls as 1/collaborators: a noise multiplier of 1 (epsilon 12.3 after 5 rounds at",
        f"delta 1e-5) would put noise of standard deviation {CLIPPING_NORM / 3:.2f} on every weight of this",
        f"3-collaborator mean, {1 / max(NOISE_LEVELS):.0f} times the strongest here; DP with a meaningful epsilon",
        "needs many more collaborators per round than this example has.",
        END,
    ]
    return lines


def _write(section: list[str]) -> None:
    text = FEDERATION_MD.read_text() if FEDERATION_MD.is_file() else ""
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        text = before + "\n".join(section) + after
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(section) + "\n"
    FEDERATION_MD.write_text(text)


RUNS = {
    "plain": ("", "none"),
    **{f"dp {noise:g}": (_dp(noise), f"DP, noise multiplier {noise:g}") for noise in NOISE_LEVELS},
    "secure": (SECURE, "SecAgg+"),
}


def _item(row: Row) -> dict[str, object]:
    r = row.result
    return {
        "name": row.name,
        "privacy": row.privacy,
        "epsilon": row.epsilon,
        "wall": r.wall,
        "per_round": r.per_round,
        "accuracy": r.accuracy,
        "per_digit": r.per_digit,
        "note": r.note,
    }


def _row(item: dict[str, Any]) -> Row:
    result = base.Result(item["name"], "fleet", 3, 5, item["wall"], per_round=item["per_round"])
    result.accuracy, result.note = item["accuracy"], item["note"]
    result.per_digit = {int(k): v for k, v in item["per_digit"].items()}
    return Row(item["name"], item["privacy"], result, item["epsilon"])


def _recorded_plain() -> base.Result | None:
    """The plain example's row as `benchmarks/federation.py` recorded it (its model is the same in every run:
    the same job on the same data trains the same model.pt, byte for byte)."""
    for line in FEDERATION_MD.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 10 and cells[:3] == ["example", "fleet", "3"]:
            digit, _, accuracy = cells[8].partition(": ")
            result = base.Result("plain", "fleet", 3, 5, float(cells[3]), per_round=float(cells[4]))
            result.accuracy = float(cells[7])
            result.per_digit = {int(digit): float(accuracy)}
            result.note = "recorded by benchmarks/federation.py"
            return result
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", default=list(RUNS), help=f"which of {', '.join(RUNS)}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--rows-out", type=Path, help="also write the rows as JSON (to merge runs made at once)")
    parser.add_argument("--merge", type=Path, nargs="*", help="write the section from rows of --rows-out files")
    parser.add_argument("--load", default="", help="with --merge: the load the runs saw, for the machine lines")
    args = parser.parse_args()
    machine = base.machine_lines()
    started = time.monotonic()
    if args.merge:
        rows = [_row(item) for path in args.merge for item in json.loads(path.read_text())]
        rows.insert(0, Row("plain (recorded)", "none", _recorded_plain() or base.Result("plain", "fleet", 3, 5, 0.0)))
        # The machine as it is now, but the load the runs saw (given), not the load at merge time.
        machine = [line for line in machine if not line.startswith("- load average at start")]
        machine += [f"- load average while the privacy runs ran: {args.load}"] if args.load else []
        _write(_section(rows, machine, max(row.result.wall for row in rows)))
        print(f"wrote {FEDERATION_MD}")
        return
    root = Path(tempfile.mkdtemp(prefix="fleet-privacy-bench-"))
    rows = [_run(root, name, *RUNS[name]) for name in args.runs]
    if args.rows_out:
        args.rows_out.write_text(json.dumps([_item(row) for row in rows], indent=2))
    if "plain" not in args.runs and (plain := _recorded_plain()) is not None:
        rows.insert(0, Row("plain (recorded)", "none", plain))
    _write(_section(rows, machine, time.monotonic() - started))
    print(f"wrote {FEDERATION_MD}" + (f"; runs kept in {root}" if args.keep else ""))
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
