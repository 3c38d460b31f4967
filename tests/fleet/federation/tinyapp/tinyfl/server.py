"""ServerApp: a round sends one message to every connected node and waits for replies up to round-timeout."""

from __future__ import annotations

import datetime
import json
import os
import time
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    model_dir = Path(str(config["model-dir"]))
    model_dir.mkdir(parents=True, exist_ok=True)
    rounds, minimum = int(config["num-rounds"]), int(config["min-available-clients"])
    timeout = float(config["round-timeout"])

    def emit(**event: Any) -> None:
        with (model_dir / "progress.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps(event) + "\n")

    # A resumed run (fleet.app.resume) starts after the lost run's last checkpoint, which holds its total.
    first = int(config.get("first-round", 1))
    resumed = {"resumed_from_round": first - 1} if first > 1 else {}
    emit(
        event="started",
        rounds=rounds,
        min_available_clients=minimum,
        round_timeout=timeout,
        pid=os.getpid(),
        time=_now(),
        **resumed,
    )
    while len(list(grid.get_node_ids())) < minimum:
        time.sleep(0.1)
    total = float(Path(str(config["resume-from"])).read_text()) if first > 1 else 0.0
    for number in range(first, rounds + 1):
        started = time.monotonic()
        nodes = list(grid.get_node_ids())
        messages = [
            Message(RecordDict({"config": ConfigRecord({"round": number})}), dst_node_id=n, message_type="train")
            for n in nodes
        ]
        waiting = set(grid.push_messages(messages))
        replies: list[Message] = []
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            for reply in grid.pull_messages(waiting):
                waiting.discard(reply.metadata.reply_to_message_id)
                replies.append(reply)
            time.sleep(0.05)
        good = [r for r in replies if not r.has_error()]
        errors = [r.error.reason for r in replies if r.has_error()]
        if len(good) < minimum:
            emit(
                event="failed",
                reason=f"round {number}: {len(good)} of {minimum} collaborators replied; {errors}",
            )
            return
        total = sum(float(r.content["metrics"]["files"]) for r in good)
        names = sorted(str(r.content["identity"]["cluster"]) for r in good)
        (model_dir / "checkpoints").mkdir(exist_ok=True)
        (model_dir / "checkpoints" / f"round-{number}.pt").write_text(str(total))
        # Progress lines as fleet's ServerApp writes them, with made-up accuracy and losses that improve.
        emit(
            event="round",
            round=number,
            participants=names,
            metrics={"files": total, "accuracy": number / rounds, "train_loss": 1 / number, "eval_loss": 2 / number},
            seconds=round(time.monotonic() - started, 3),
            received_bytes={
                str(r.content["identity"]["cluster"]): sum(
                    len(a.data) for a in r.content.array_records["arrays"].values()
                )
                for r in good
            },
            time=_now(),
        )
    (model_dir / "model.pt").write_text(str(total))
    (model_dir / "metrics.json").write_text(json.dumps({"files": total}))
    emit(event="completed", metrics={"files": total})


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()
