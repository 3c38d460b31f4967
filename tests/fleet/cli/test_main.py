"""``fleet`` itself: one line per command in its help, and listing them imports no command."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from fleet.cli import _COMMANDS, SUMMARIES, main


def test_every_command_has_a_one_line_summary() -> None:
    assert SUMMARIES.keys() == _COMMANDS.keys()
    for name, summary in SUMMARIES.items():
        assert summary.endswith(".") and "\n" not in summary and len(summary) <= 80, name


def test_each_summary_names_what_its_command_takes() -> None:
    """The summary stays true to the command: its arguments appear in both, and the command exists."""
    runner = CliRunner()
    for name, summary in SUMMARIES.items():
        shown = runner.invoke(main, [name, "--help"])
        assert shown.exit_code == 0, (name, shown.output)
        usage = shown.output.splitlines()[0]
        for argument in [word for word in usage.split() if word.isupper() and word.isalpha()]:
            assert argument in summary or argument in {"COMMAND", "ARGS", "OPTIONS", "PATHS", "JOBS", "MODEL"}, (
                name,
                argument,
            )


def test_the_help_lists_every_command_without_importing_any() -> None:
    probe = (
        "import sys\n"
        "from fleet.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('fleet.cli.') and m != 'fleet.cli._options'))\n"
    )
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    *help_lines, imported = shown.stdout.splitlines()
    assert imported == "[]"
    listed = [line.split()[0] for line in help_lines if line.startswith("  ") and not line.startswith("   ")]
    assert [name for name in listed if name in _COMMANDS] == sorted(_COMMANDS)
