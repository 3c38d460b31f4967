"""The OpenFL workspace code of fleet's OpenFL runtime (`fleet.federation.openfl_runtime`).

It runs inside OpenFL's own environment (``.venv-openfl``: OpenFL 1.9 cannot share one with Flower), staged into
each run's workspace with `fleet.app` (the model, training and the data reader both runtimes share), so it imports
OpenFL, torch and numpy only, never the rest of ``fleet``:

- `loader`: the collaborator's data loader, reading only its cluster's claimed data path (``plan/data.yaml``);
- `runner`: the task runner: fleet's small CNN trained and evaluated with `fleet.app.task`;
- `aggregator`: OpenFL's aggregator, writing what `fleet run` follows (``progress.jsonl``, checkpoints, the
  model as a torch file, ``metrics.json``), the same contract as the Flower ServerApp's;
- `launcher`: starts OpenFL's own ``fx`` entry point with the one wait it changes.
"""
