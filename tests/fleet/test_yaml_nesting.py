"""Deep nesting is a clean problem on both of PyYAML's parser paths: libyaml's and the pure-Python one.

PyYAML 6.0.4's libyaml refuses 1,001 levels with its own error; 6.0.3's takes them; the pure-Python composer
exhausts Python's stack near 500. The depth check must give the same answer whichever is installed, so each
test runs with libyaml and without it (the pure-Python path forced, in-process or in a fresh interpreter).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fleet import yaml_nesting
from fleet.errors import EXIT_INVALID
from fleet.repository import MAX_NESTING
from fleet.yaml_nesting import first_too_deep
from tests.conftest import ROOT

PARSER_PATHS = {
    "libyaml": (getattr(yaml, "CSafeLoader", None),),
    "pure-python": (yaml.SafeLoader,),
}

_WITHOUT_LIBYAML = "import sys; sys.modules['yaml._yaml'] = None\n"
"""Run first in a fresh interpreter: PyYAML then imports without its C extension, as where libyaml is missing."""


@pytest.fixture(params=sorted(PARSER_PATHS))
def parser_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    parsers = PARSER_PATHS[request.param]
    if parsers[0] is None:
        pytest.skip("this PyYAML has no libyaml")
    monkeypatch.setattr(yaml_nesting, "_PARSERS", parsers)
    return str(request.param)


def _nested(levels: int) -> str:
    return "x: " + "[" * (levels - 1) + "]" * (levels - 1) + "\n"  # the mapping is the first level


@pytest.mark.parametrize("levels", [1, 2, 10, 63, 64])
def test_within_the_limit_is_not_too_deep(parser_path: str, levels: int) -> None:
    assert first_too_deep(_nested(levels), 64) is None


@pytest.mark.parametrize("levels", [65, 999])  # deeper: libyaml's own limit, in the next test
def test_past_the_limit_is_too_deep(parser_path: str, levels: int) -> None:
    assert first_too_deep(_nested(levels), 64) == 1


def test_the_libyaml_refusal_falls_back_to_the_pure_python_parser() -> None:
    """PyYAML 6.0.4's libyaml errors past 1,000 levels, 6.0.3's does not: the answer is the same."""
    assert first_too_deep(_nested(1001), 64) == 1
    assert first_too_deep(_nested(100_000), 64) == 1


def test_block_nesting_names_the_line_of_the_first_level_too_deep(parser_path: str) -> None:
    text = "".join("  " * level + f"k{level}:\n" for level in range(70)) + "  " * 70 + "leaf\n"
    assert first_too_deep(text, 64) == 65  # line 65 opens the 65th mapping


def test_invalid_yaml_within_the_limit_is_left_to_the_composer(parser_path: str) -> None:
    assert first_too_deep("a: [1, 2\nb: }\n", 64) is None


def test_the_limit_is_far_from_what_python_tolerates() -> None:
    """The pure-Python composer composes four times the limit; past it, it would crash."""
    yaml.compose(_nested(4 * MAX_NESTING), Loader=yaml.SafeLoader)
    with pytest.raises(RecursionError):
        yaml.compose(_nested(2000), Loader=yaml.SafeLoader)


# --- from outside: the fleet command on the 2 KB file ---------------------------------------------------------

DEEP_CLUSTER = "name: deep\nclusterSet: research-eu\nx-deep: " + "[" * 1001 + "]" * 1001 + "\n"

COMMANDS = {
    "render": ["render"],
    "plan": ["plan"],
    "run": ["run", "mnist-digits"],
    "data prepare": ["data", "prepare"],
}


@pytest.mark.parametrize("libyaml", [True, False], ids=["libyaml", "pure-python"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_exits_2_naming_the_file_and_line(tmp_path: Path, command: str, libyaml: bool) -> None:
    repo = tmp_path / "repo"
    for folder in ("jobs", "clusters", "policies"):
        shutil.copytree(ROOT / folder, repo / folder)
    (repo / "clusters" / "deep.yaml").write_text(DEEP_CLUSTER, encoding="utf-8")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    prelude = "" if libyaml else _WITHOUT_LIBYAML
    code = prelude + "from fleet.cli import main\nmain()\n"
    options = ["--repo", str(repo)]
    if command == "render":
        options += ["--out", str(repo / "manifests")]
    if command in ("run", "data prepare"):
        options += ["--data-root", str(tmp_path / "data")]
    if command == "run":
        options += ["--work-dir", str(tmp_path / "runs")]

    result = subprocess.run(
        [sys.executable, "-c", code, *COMMANDS[command], *options],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )

    assert result.returncode == EXIT_INVALID, result.stderr
    assert "Traceback" not in result.stderr
    assert f"clusters/deep.yaml:3: expected YAML nested at most {MAX_NESTING} levels" in result.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


def test_the_pure_python_prelude_really_drops_libyaml() -> None:
    code = _WITHOUT_LIBYAML + "import yaml\nprint(yaml.__with_libyaml__, hasattr(yaml, 'CSafeLoader'))\n"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert shown.split() == ["False", "False"]
