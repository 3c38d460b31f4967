"""The controller's image installs only the controller's requirements: its import path must not need the
local runtime's (psutil) or the training app's (torch)."""

from __future__ import annotations

import subprocess
import sys


def test_the_controller_imports_without_psutil_or_torch() -> None:
    code = (
        "import sys\n"
        "sys.modules['psutil'] = None\n"
        "sys.modules['torch'] = None\n"
        "import fleet.controller.operator, fleet.cli.controller\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
